package gpu

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/oliverbestmann/webgpu/wgpu"
)

// Access of one storage binding.
type Access int

const (
	ReadOnly Access = iota
	ReadWrite
)

// KernelSpec describes a compute kernel by the ABI of DESIGN.md: storage
// buffers at bindings 0..len(Bindings)-1 in group 0, then the Params uniform
// at binding len(Bindings).
type KernelSpec struct {
	Name       string   // cache key: family/entry/variant
	Source     string   // complete WGSL
	Entry      string   // entry point, "main" if empty
	Bindings   []Access // one per storage buffer
	ParamsSize int      // bytes of the Params uniform (a multiple of 16)
}

// Kernel is a compiled compute pipeline with its explicit bind group layout
// (the browser binding has no automatic layout lookup).
type Kernel struct {
	Spec     KernelSpec
	module   *wgpu.ShaderModule
	layout   *wgpu.BindGroupLayout
	plLayout *wgpu.PipelineLayout
	pipeline *wgpu.ComputePipeline
}

// CachedKernel returns the kernel compiled under name, if any: launchers
// look it up before building the WGSL source again.
func (d *Device) CachedKernel(name string) (*Kernel, bool) {
	k, ok := d.kernels[name]
	return k, ok
}

// KernelNames lists the kernels compiled on the device so far, sorted.
func (d *Device) KernelNames() []string {
	names := make([]string, 0, len(d.kernels))
	for n := range d.kernels {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Kernel compiles spec once and caches it by spec.Name.
func (d *Device) Kernel(spec KernelSpec) (*Kernel, error) {
	if k, ok := d.kernels[spec.Name]; ok {
		return k, nil
	}
	if spec.Entry == "" {
		spec.Entry = "main"
	}
	if spec.ParamsSize <= 0 || spec.ParamsSize%16 != 0 {
		return nil, fmt.Errorf("gpu: kernel %q: params size %d is not a positive multiple of 16", spec.Name, spec.ParamsSize)
	}
	if n := len(spec.Bindings); uint32(n) > d.limits.MaxStorageBuffersPerStage {
		return nil, fmt.Errorf("gpu: kernel %q: %d storage buffers, the adapter allows %d", spec.Name, n, d.limits.MaxStorageBuffersPerStage)
	}
	k := &Kernel{Spec: spec}
	if d.dry {
		d.kernels[spec.Name] = k
		return k, nil
	}
	if err := d.usable(); err != nil {
		return nil, err
	}
	entries := make([]wgpu.BindGroupLayoutEntry, 0, len(spec.Bindings)+1)
	for i, a := range spec.Bindings {
		t := wgpu.BufferBindingTypeReadOnlyStorage
		if a == ReadWrite {
			t = wgpu.BufferBindingTypeStorage
		}
		entries = append(entries, wgpu.BindGroupLayoutEntry{
			Binding:    uint32(i),
			Visibility: wgpu.ShaderStageCompute,
			Buffer:     wgpu.BufferBindingLayout{Type: t},
		})
	}
	entries = append(entries, wgpu.BindGroupLayoutEntry{
		Binding:    uint32(len(spec.Bindings)),
		Visibility: wgpu.ShaderStageCompute,
		Buffer:     wgpu.BufferBindingLayout{Type: wgpu.BufferBindingTypeUniform, MinBindingSize: uint64(spec.ParamsSize)},
	})
	// Every object carries the kernel's name as its label, so that WebGPU's
	// messages about it (here or when a batch using it is submitted) name it.
	err := d.guard(fmt.Sprintf("compile kernel %q", spec.Name), func() (err error) {
		if k.module, err = d.createModule(spec.Name, spec.Source); err != nil {
			return err
		}
		k.layout, err = d.dev.TryCreateBindGroupLayout(&wgpu.BindGroupLayoutDescriptor{Label: spec.Name, Entries: entries})
		if err != nil {
			return err
		}
		k.plLayout, err = d.dev.TryCreatePipelineLayout(&wgpu.PipelineLayoutDescriptor{Label: spec.Name, BindGroupLayouts: []*wgpu.BindGroupLayout{k.layout}})
		if err != nil {
			return err
		}
		k.pipeline, err = d.dev.TryCreateComputePipeline(pipelineDescriptor(spec.Name, k.plLayout, k.module, spec.Entry))
		return err
	})
	if err != nil {
		k.release()
		if why := d.moduleError(spec.Name, spec.Source); why != nil {
			err = why
		}
		return nil, err
	}
	d.kernels[spec.Name] = k
	return k, nil
}

// CheckSource compiles a kernel's WGSL without building its pipeline and
// returns the compiler's error, if any: for a kernel this adapter does not
// run, whose source must still be valid WGSL for the adapters that do (the
// browser's compiler is stricter than wgpu's).
// It compiles through the binding's checked entry point, which reports the
// compiler's errors, natively and in the browser.
func (d *Device) CheckSource(name, source string) error {
	return d.guard(fmt.Sprintf("compile kernel %q", name), func() error {
		m, err := d.dev.TryCreateShaderModule(&wgpu.ShaderModuleDescriptor{Label: name, WGSLSource: &wgpu.ShaderSourceWGSL{Code: source}})
		if m != nil {
			m.Release()
		}
		return err
	})
}

func (k *Kernel) release() {
	if k.pipeline != nil {
		k.pipeline.Release()
	}
	if k.plLayout != nil {
		k.plLayout.Release()
	}
	if k.layout != nil {
		k.layout.Release()
	}
	if k.module != nil {
		k.module.Release()
	}
}

// Params encodes a Params struct (fields of 4-byte types only, mirroring the
// WGSL struct) as little-endian bytes padded to a multiple of 16.
func Params(p any) []byte {
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, p); err != nil {
		panic(fmt.Sprintf("gpu: params %T: %v", p, err)) // programmer error
	}
	b := buf.Bytes()
	if pad := (16 - len(b)%16) % 16; pad > 0 {
		b = append(b, make([]byte, pad)...)
	}
	return b
}

// ParamsSize is len(Params(p)), for KernelSpec.ParamsSize.
func ParamsSize(p any) int {
	n := binary.Size(p)
	return (n + 15) &^ 15
}

// Grid returns a dispatch grid for n invocations of a 1-D kernel with
// workgroups of size wg. Grids beyond the per-dimension limit fold into y;
// kernels compute the linear index as gid.x + gid.y * (num_workgroups.x * wg).
func (d *Device) Grid(n int, wg int) (x, y, z uint32) {
	groups := (n + wg - 1) / wg
	if groups == 0 {
		groups = 1
	}
	lim := int(d.limits.MaxWorkgroupsPerDimension)
	if lim == 0 {
		lim = 65535
	}
	if groups <= lim {
		return uint32(groups), 1, 1
	}
	y = uint32((groups + lim - 1) / lim)
	x = uint32((groups + int(y) - 1) / int(y))
	return x, y, 1
}

// Dispatch records one dispatch of k with params and the storage buffers in
// binding order. Nothing runs until Flush, Sync or a Read.
func (d *Device) Dispatch(k *Kernel, params []byte, bufs []*Buffer, x, y, z uint32) error {
	if len(bufs) != len(k.Spec.Bindings) {
		return fmt.Errorf("gpu: dispatch %q: %d buffers for %d bindings", k.Spec.Name, len(bufs), len(k.Spec.Bindings))
	}
	if len(params) != k.Spec.ParamsSize {
		return fmt.Errorf("gpu: dispatch %q: params of %d bytes, kernel expects %d", k.Spec.Name, len(params), k.Spec.ParamsSize)
	}
	for i, b := range bufs {
		if err := b.check(fmt.Sprintf("dispatch %q binding %d", k.Spec.Name, i)); err != nil {
			return err
		}
		if uint64(b.size) > d.limits.MaxStorageBufferBindingSize {
			return fmt.Errorf("gpu: dispatch %q binding %d: %d bytes above the adapter's max storage binding %d", k.Spec.Name, i, b.size, d.limits.MaxStorageBufferBindingSize)
		}
	}
	lim := d.limits.MaxWorkgroupsPerDimension
	if x == 0 || y == 0 || z == 0 || (lim > 0 && (x > lim || y > lim || z > lim)) {
		return fmt.Errorf("gpu: dispatch %q: grid %dx%dx%d outside 1..%d", k.Spec.Name, x, y, z, lim)
	}
	if d.prof != nil && !d.dry {
		return d.profiled(k.Spec.Name, func() error { return d.rec.dispatch(k, params, bufs, x, y, z) })
	}
	return d.rec.dispatch(k, params, bufs, x, y, z)
}
