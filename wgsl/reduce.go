package wgsl

import (
	"fmt"
	"math"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
)

// ReduceParams mirrors Params in reduce.wgsl (shared by its kernels).
type ReduceParams struct {
	N, Index, Groups, Bits, Off uint32
	_, _                        uint32
	Scale                       float32
}

// sectionMarker opens a section of a multi-kernel .wgsl file at the start
// of a line (the same convention as attention.wgsl).
const sectionMarker = "\n// ==== section "

// wgslSections returns the shared part of a family's WGSL (the text before
// its first section) followed by the named sections in the order given, with
// subst applied. The sections of a file bind different buffers under the
// same numbers, so each kernel is compiled from the shared part and only the
// sections it needs.
func wgslSections(family string, subst map[string]string, names ...string) string {
	parts := strings.Split(Source(family, subst), sectionMarker)
	var b strings.Builder
	b.WriteString(parts[0])
	for _, name := range names {
		found := false
		for _, part := range parts[1:] {
			if n, _, _ := strings.Cut(part, " ===="); n == name {
				b.WriteString(sectionMarker + part)
				found = true
				break
			}
		}
		if !found {
			panic(fmt.Sprintf("wgsl: %s.wgsl has no section %q", family, name)) // programmer error
		}
	}
	return b.String()
}

// sectionKernel compiles (once) the kernel made of a family's shared part and
// the named sections; the cache name is family/variant.
func sectionKernel(d *gpu.Device, family, variant string, subst map[string]string, sections []string, bindings []gpu.Access, params any) (*gpu.Kernel, error) {
	return d.Kernel(gpu.KernelSpec{
		Name:       family + "/" + variant,
		Source:     wgslSections(family, subst, sections...),
		Bindings:   bindings,
		ParamsSize: gpu.ParamsSize(params),
	})
}

// reduceWG is the workgroup size of reduce.wgsl; reduceMaxGroups caps the
// stage-1 workgroups of SumSquares (enough to fill an H100: 132 SMs x 2048
// threads / 256), so that stage 2 folds at most 1024 partials.
const (
	reduceWG        = 256
	reduceMaxGroups = 1024
)

// reduceGroups is the number of stage-1 workgroups for `items` items: a
// function of the size only, which keeps the sums deterministic.
func reduceGroups(items int) int {
	return max(1, min(reduceMaxGroups, (items+reduceWG-1)/reduceWG))
}

// reduceNeed checks that buf holds `bytes` bytes.
func reduceNeed(op, name string, buf *gpu.Buffer, bytes int64) error {
	if buf == nil {
		return fmt.Errorf("wgsl: %s: nil %s buffer", op, name)
	}
	if bytes > buf.Size() {
		return fmt.Errorf("wgsl: %s: %s needs %d bytes, buffer holds %d", op, name, bytes, buf.Size())
	}
	return nil
}

// SumSquares records out[outIndex] += sum_i (x[i]*scale)^2 over n elements
// of x (f32, or f16 by xt); out is f32. Two dispatches: workgroup partials
// into a scratch buffer (gpu.TagScratch, released once recorded), then one
// workgroup folds them into out. Deterministic: the partition depends on n.
func SumSquares(d *gpu.Device, out *gpu.Buffer, outIndex int, x *gpu.Buffer, xt gpu.DType, n int, scale float32) error {
	return sumSquares(d, out, outIndex, -1, x, xt, n, scale, 0)
}

// GradStats is SumSquares into stats[0] and CheckFinite(x, scale 1,
// limit) into stats[1] in SumSquares' two dispatches: the statistics of a
// gradient that LOMO's norm pass needs (sum of squares, overflow), with
// their bits.
func GradStats(d *gpu.Device, stats *gpu.Buffer, x *gpu.Buffer, xt gpu.DType, n int, scale, limit float32) error {
	if !(limit >= 0) {
		return fmt.Errorf("wgsl: grad stats: limit %v must be >= 0", limit)
	}
	return sumSquares(d, stats, 0, 1, x, xt, n, scale, limit)
}

// sumSquares is SumSquares, and with flagIndex >= 0 GradStats' check of
// x into out[flagIndex] (as u32).
func sumSquares(d *gpu.Device, out *gpu.Buffer, outIndex, flagIndex int, x *gpu.Buffer, xt gpu.DType, n int, scale, limit float32) error {
	const op = "sum squares"
	if n <= 0 || outIndex < 0 || n > math.MaxUint32 {
		return fmt.Errorf("wgsl: %s: n=%d, outIndex=%d", op, n, outIndex)
	}
	if err := reduceNeed(op, "x", x, xt.Bytes(n)); err != nil {
		return err
	}
	if err := reduceNeed(op, "out", out, int64(4*(max(outIndex, flagIndex)+1))); err != nil {
		return err
	}
	if out == x {
		return fmt.Errorf("wgsl: %s: out and x must be distinct buffers", op)
	}
	words := n
	if xt.Half() {
		words = (n + 1) / 2
	}
	groups := reduceGroups(words)
	p := ReduceParams{N: uint32(n), Index: uint32(outIndex), Groups: uint32(groups), Scale: scale}
	variant, access, subst := "sumsq_", []gpu.Access{rw, ro}, reduceSubst(xt)
	if flagIndex >= 0 {
		variant, access = "sumsq_check_", []gpu.Access{rw, ro, rw}
		p.Off, p.Bits = uint32(flagIndex), math.Float32bits(limit)
		subst["FLAGS_DECL"] = "@group(0) @binding(2) var<storage, read_write> flags: array<atomic<u32>>;"
		subst["PB"] = "3"
		subst["FLAG_STORE"] = "if (flag) { atomicStore(&flags[p.off], 1u); }"
	}
	stage1, err := sectionKernel(d, "reduce", variant+xt.String(), subst, []string{"sumsq_" + reduceSection(xt)}, access, p)
	if err != nil {
		return err
	}
	fold, err := sectionKernel(d, "reduce", "sumsq_fold", reduceSubst(gpu.F32), []string{"sumsq_fold"}, []gpu.Access{rw, ro}, p)
	if err != nil {
		return err
	}
	part, err := d.NewBuffer(gpu.TagScratch, int64(4*groups))
	if err != nil {
		return fmt.Errorf("wgsl: %s: %w", op, err)
	}
	defer part.Release() // the recorded dispatches keep their order on the queue
	// x (n) -> part (groups) [, out[flagIndex]] -> out[outIndex]
	bufs := []*gpu.Buffer{part, x}
	if flagIndex >= 0 {
		bufs = append(bufs, out)
	}
	if err := d.Dispatch(stage1, gpu.Params(p), bufs, uint32(groups), 1, 1); err != nil {
		return err
	}
	return d.Dispatch(fold, gpu.Params(p), []*gpu.Buffer{out, part}, 1, 1, 1)
}

// CheckFinite records flags[flagIndex] = 1 (u32) if any |x[i]*scale| over n
// elements of x (f32, f16 or bf16) is not <= limit: NaN, ±inf, or beyond limit.
// limit = +inf checks only for non-finite values; 65504 models an fp16
// overflow. The flag is never cleared here (Fill clears it). The optimizers
// check gradients with it (overflow) and the weights they have just updated.
func CheckFinite(d *gpu.Device, flags *gpu.Buffer, flagIndex int, x *gpu.Buffer, xt gpu.DType, n int, scale, limit float32) error {
	const op = "check finite"
	if n <= 0 || flagIndex < 0 || n > math.MaxUint32-1 {
		return fmt.Errorf("wgsl: %s: n=%d, flagIndex=%d", op, n, flagIndex)
	}
	if !(limit >= 0) {
		return fmt.Errorf("wgsl: %s: limit %v must be >= 0", op, limit)
	}
	if err := reduceNeed(op, "x", x, xt.Bytes(n)); err != nil {
		return err
	}
	if err := reduceNeed(op, "flags", flags, int64(4*(flagIndex+1))); err != nil {
		return err
	}
	if flags == x {
		return fmt.Errorf("wgsl: %s: flags and x must be distinct buffers", op)
	}
	p := ReduceParams{N: uint32(n), Index: uint32(flagIndex), Bits: math.Float32bits(limit), Scale: scale}
	k, err := sectionKernel(d, "reduce", "check_finite_"+xt.String(), reduceSubst(xt), []string{"check_finite_" + reduceSection(xt)}, []gpu.Access{rw, ro}, p)
	if err != nil {
		return err
	}
	threads := n
	if xt.Half() {
		threads = (n + 1) / 2 // one per word of two halves
	}
	// x (n) -> flags[flagIndex]
	gx, gy, gz := d.Grid(threads, reduceWG)
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{flags, x}, gx, gy, gz)
}

// reduceSection is the section of reduce.wgsl for x of dtype xt.
func reduceSection(xt gpu.DType) string {
	if xt.Half() {
		return "pairs"
	}
	return "f32"
}

// reduceSubst sets X_UNPACK and X_EXP, the pairs' conversion and exponent
// mask (f16's for f32: unused).
func reduceSubst(xt gpu.DType) map[string]string {
	m := pairSubst(nil, "X", "x", xt)
	m["FLAGS_DECL"], m["PB"], m["FLAG_STORE"] = "", "2", "" // SumSquares without GradStats' check
	m["X_EXP"] = "0x7c00u"
	if xt == gpu.BF16 {
		m["X_EXP"] = "0x7f80u"
	}
	return m
}

// Fill records x[off+i] = bits for i < n, over a buffer of 32-bit elements
// (f32 or u32): Fill(d, acc, 0, n, 0) zeroes an accumulator;
// math.Float32bits(v) fills with an f32 value.
func Fill(d *gpu.Device, x *gpu.Buffer, off, n int, bits uint32) error {
	const op = "fill"
	if n <= 0 || off < 0 || off+n > math.MaxUint32 {
		return fmt.Errorf("wgsl: %s: off=%d n=%d", op, off, n)
	}
	if err := reduceNeed(op, "x", x, int64(4*(off+n))); err != nil {
		return err
	}
	p := ReduceParams{N: uint32(n), Off: uint32(off), Bits: bits}
	k, err := sectionKernel(d, "reduce", "fill", reduceSubst(gpu.F32), []string{"fill"}, []gpu.Access{rw}, p)
	if err != nil {
		return err
	}
	gx, gy, gz := d.Grid(n, reduceWG)
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{x}, gx, gy, gz)
}
