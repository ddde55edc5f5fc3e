package wgsl

import (
	"fmt"

	"github.com/lomo-dev/lomo/gpu"
)

// ProbeParams mirrors Params in probe.wgsl.
type ProbeParams struct {
	Threads, Iters uint32
	A, B           float32
}

// ProbeFMAFlops is the flops one thread of ProbeFMA does per iteration.
func ProbeFMAFlops(dt gpu.DType) int {
	if dt == gpu.F16 {
		return 32 // 8 chains of vec2<f16>, 2 flops per lane
	}
	return 16
}

// ProbeFMA records threads × iters rounds of 8 fma chains in dt (f32, or
// f16 on adapters with shader-f16) and writes each thread's sum to out
// (threads f32): ProbeFMAFlops(dt) * iters flops per thread.
func ProbeFMA(d *gpu.Device, out *gpu.Buffer, dt gpu.DType, threads, iters int, a, b float32) error {
	if threads <= 0 || iters <= 0 {
		return fmt.Errorf("wgsl: probe fma: %d threads of %d iterations", threads, iters)
	}
	if dt != gpu.F32 && dt != gpu.F16 {
		return fmt.Errorf("wgsl: probe fma: %v arithmetic does not exist in WGSL (f32 or f16)", dt)
	}
	if out.Size() < 4*int64(threads) {
		return fmt.Errorf("wgsl: probe fma: out holds %d bytes, needs %d", out.Size(), 4*threads)
	}
	subst := map[string]string{"T": "f32", "S": "f32", "SUM": ""}
	if dt == gpu.F16 {
		if !d.Caps.F16 {
			return fmt.Errorf("wgsl: probe fma: f16 needs shader-f16, which this adapter lacks")
		}
		subst = map[string]string{"T": "vec2<f16>", "S": "f16", "SUM": "probe_sum", enableF16: "1"}
	}
	src := Source("probe", subst)
	if dt == gpu.F16 {
		src += "\nfn probe_sum(v: vec2<f16>) -> f32 { return f32(v.x) + f32(v.y); }\n"
	}
	k, err := probeKernel(d, "fma_loop", dt.String(), src, []gpu.Access{rw})
	if err != nil {
		return err
	}
	p := ProbeParams{Threads: uint32(threads), Iters: uint32(iters), A: a, B: b}
	gx, gy, gz := d.Grid(threads, 256)
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{out}, gx, gy, gz)
}

// ProbeCopy records dst = src over n vec4<f32> (16*n bytes each way).
func ProbeCopy(d *gpu.Device, dst, src *gpu.Buffer, n int) error {
	if n <= 0 || dst.Size() < 16*int64(n) || src.Size() < 16*int64(n) {
		return fmt.Errorf("wgsl: probe copy: %d vec4 between buffers of %d and %d bytes", n, dst.Size(), src.Size())
	}
	k, err := probeKernel(d, "copy", "", Source("probe", map[string]string{"T": "f32", "S": "f32", "SUM": ""}), []gpu.Access{rw, ro})
	if err != nil {
		return err
	}
	gx, gy, gz := d.Grid(n, 256)
	return d.Dispatch(k, gpu.Params(ProbeParams{Threads: uint32(n)}), []*gpu.Buffer{dst, src}, gx, gy, gz)
}

func probeKernel(d *gpu.Device, entry, variant, src string, bindings []gpu.Access) (*gpu.Kernel, error) {
	name := "probe/" + entry
	if variant != "" {
		name += "/" + variant
	}
	if k, ok := d.CachedKernel(name); ok {
		return k, nil
	}
	return d.Kernel(gpu.KernelSpec{Name: name, Source: src, Entry: entry, Bindings: bindings, ParamsSize: gpu.ParamsSize(ProbeParams{})})
}
