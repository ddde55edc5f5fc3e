// Package wgsl holds lomo's compute kernels (one <family>.wgsl file per
// family, embedded) and their Go launchers: for each kernel a Params struct
// that mirrors the WGSL one field for field (4-byte fields only; the tests
// check sizes), and a function that records its dispatch on a gpu.Device.
//
// Conventions (DESIGN.md, contract 3, and STYLE.md):
//   - storage buffers at bindings 0..n-1, outputs first, then inputs; the
//     Params uniform last;
//   - offsets and strides in elements; shapes in comments with the letters
//     B batch, T time, C channels, H heads, D head size, V vocab, F FFN size;
//   - f16 storage as u32 pairs read with unpack2x16float (variant "h"),
//     arithmetic in f32; a kernel that writes f16 writes whole pairs;
//   - 1-D grids fold into y beyond 65535 workgroups (gpu.Device.Grid); kernels
//     compute i = gid.x + gid.y * num_workgroups.x * WG.
//
// Every kernel has a float64 reference in the tests and every backward a
// central-difference check (ref_test.go, *_test.go).
package wgsl

import (
	"embed"
	"fmt"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
)

//go:embed *.wgsl
var files embed.FS

// Source returns the WGSL of a family with each {{KEY}} replaced.
func Source(family string, subst map[string]string) string {
	b, err := files.ReadFile(family + ".wgsl")
	if err != nil {
		panic(fmt.Sprintf("wgsl: no kernel family %q", family)) // programmer error
	}
	s := string(b)
	for k, v := range subst {
		s = strings.ReplaceAll(s, "{{"+k+"}}", v)
	}
	if i := strings.Index(s, "{{"); i >= 0 {
		panic(fmt.Sprintf("wgsl: %s.wgsl: unreplaced placeholder near %q", family, s[i:min(len(s), i+30)]))
	}
	return s
}

// dtypeSubst sets the placeholders {{KEY_T}} (the array element type of
// binding `v`) and {{KEY_AT}} (a reader fn v_at(i: u32) -> f32) for dtype t.
func dtypeSubst(m map[string]string, key, v string, t gpu.DType) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	if t == gpu.F16 {
		m[key+"_T"] = "u32"
		m[key+"_AT"] = fmt.Sprintf("fn %s_at(i: u32) -> f32 { return unpack2x16float(%s[i >> 1u])[i & 1u]; }", v, v)
	} else {
		m[key+"_T"] = "f32"
		m[key+"_AT"] = fmt.Sprintf("fn %s_at(i: u32) -> f32 { return %s[i]; }", v, v)
	}
	return m
}

// kernel compiles (once) and returns a family's kernel.
func kernel(d *gpu.Device, family, variant string, subst map[string]string, bindings []gpu.Access, params any) (*gpu.Kernel, error) {
	name := family
	if variant != "" {
		name += "/" + variant
	}
	if k, ok := d.CachedKernel(name); ok {
		return k, nil
	}
	return d.Kernel(gpu.KernelSpec{
		Name:       name,
		Source:     Source(family, subst),
		Bindings:   bindings,
		ParamsSize: gpu.ParamsSize(params),
	})
}

// b2u converts a bool to a WGSL u32 flag.
func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

var (
	ro = gpu.ReadOnly
	rw = gpu.ReadWrite
)
