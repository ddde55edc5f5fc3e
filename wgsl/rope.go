package wgsl

import (
	"fmt"
	"math"

	"github.com/lomo-dev/lomo/gpu"
)

// RoPEParams mirrors Params in rope.wgsl.
type RoPEParams struct {
	Rows, Heads, HeadDim, Inverse uint32
	Log2FreqStep                  float32 // -2*log2(theta)/headDim: freq_i = 2^(i*Log2FreqStep)
	_, _, _                       uint32
}

// RoPE records the rotary embedding of x (rows, heads*headDim) of dtype xt
// (f32 or f16) in place, HF rotate_half layout: in each head, with half = headDim/2 and
// i < half, freq_i = theta^(-2i/headDim), a = pos[r]*freq_i, and
//
//	out[i] = x[i]*cos a - x[i+half]*sin a, out[i+half] = x[i+half]*cos a + x[i]*sin a.
//
// pos is a u32 buffer of rows positions. inverse rotates by -a (the
// transposed rotation), which is the backward: dx = RoPE(dout, inverse).
// Angles are computed in f32 in the kernel, as HF does; their rounding
// grows with pos (rope_test.go states the bound).
func RoPE(d *gpu.Device, x, pos *gpu.Buffer, xt gpu.DType, rows, heads, headDim int, theta float32, inverse bool) error {
	const op = "rope"
	if rows <= 0 || heads <= 0 || headDim <= 0 {
		return fmt.Errorf("wgsl: %s: empty shape rows=%d heads=%d headDim=%d", op, rows, heads, headDim)
	}
	if headDim%2 != 0 {
		return fmt.Errorf("wgsl: %s: headDim %d is odd (rotate_half pairs i with i+headDim/2)", op, headDim)
	}
	if !(theta > 1) || math.IsInf(float64(theta), 0) {
		return fmt.Errorf("wgsl: %s: theta %v, want a finite base > 1", op, theta)
	}
	n := int64(rows) * int64(heads) * int64(headDim)
	if n > math.MaxUint32 {
		return fmt.Errorf("wgsl: %s: %d elements exceed u32 indexing", op, n)
	}
	if need := xt.Bytes(int(n)); x.Size() < need {
		return fmt.Errorf("wgsl: %s: x needs %d bytes for (%d, %d*%d) %v, buffer holds %d", op, need, rows, heads, headDim, xt, x.Size())
	}
	if err := f16Writable(d, op, "x", xt); err != nil {
		return err
	}
	if need := 4 * int64(rows); pos.Size() < need {
		return fmt.Errorf("wgsl: %s: pos needs %d bytes for %d rows, buffer holds %d", op, need, rows, pos.Size())
	}
	if err := rmsnormDistinct(op, []string{"x", "pos"}, x, pos); err != nil {
		return err
	}
	subst := dtypeSubst(d, nil, "X", "x", xt)
	outSubst(d, subst, "XX", "x", xt)
	variant := ""
	if xt != gpu.F32 {
		variant = xt.String()
	}
	k, err := kernel(d, "rope", variant, subst, []gpu.Access{rw, ro}, RoPEParams{})
	if err != nil {
		return err
	}
	p := RoPEParams{
		Rows: uint32(rows), Heads: uint32(heads), HeadDim: uint32(headDim), Inverse: b2u(inverse),
		Log2FreqStep: float32(-2 * math.Log2(float64(theta)) / float64(headDim)),
	}
	gx, gy, gz := d.Grid(int(n/2), 256) // one thread per rotated pair
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{x, pos}, gx, gy, gz)
}
