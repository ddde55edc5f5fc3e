package wgsl

import (
	"fmt"
	"math"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
)

// RoPEParams mirrors Params in rope.wgsl.
type RoPEParams struct {
	Rows, Heads, HeadDim, Inverse uint32
	Log2FreqStep                  float32 // -2*log2(theta)/headDim: freq_i = 2^(i*Log2FreqStep)
	Heads2                        uint32  // RoPE2's second tensor
	_, _                          uint32
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
	return rope(d, x, nil, pos, xt, rows, heads, 0, headDim, theta, inverse)
}

// RoPE2 is RoPE of x (rows, heads*headDim) and of y (rows,
// heads2*headDim), both of dtype xt, in one dispatch (a layer's queries and
// keys), each with RoPE's bits.
func RoPE2(d *gpu.Device, x, y, pos *gpu.Buffer, xt gpu.DType, rows, heads, heads2, headDim int, theta float32, inverse bool) error {
	if y == nil || heads2 <= 0 {
		return fmt.Errorf("wgsl: rope: no second tensor (y %v, %d heads)", y != nil, heads2)
	}
	return rope(d, x, y, pos, xt, rows, heads, heads2, headDim, theta, inverse)
}

func rope(d *gpu.Device, x, y, pos *gpu.Buffer, xt gpu.DType, rows, heads, heads2, headDim int, theta float32, inverse bool) error {
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
	n2 := int64(rows) * int64(heads2) * int64(headDim)
	if n+n2 > math.MaxUint32 {
		return fmt.Errorf("wgsl: %s: %d elements exceed u32 indexing", op, n+n2)
	}
	if need := xt.Bytes(int(n)); x.Size() < need {
		return fmt.Errorf("wgsl: %s: x needs %d bytes for (%d, %d*%d) %v, buffer holds %d", op, need, rows, heads, headDim, xt, x.Size())
	}
	if y != nil {
		if need := xt.Bytes(int(n2)); y.Size() < need {
			return fmt.Errorf("wgsl: %s: y needs %d bytes for (%d, %d*%d) %v, buffer holds %d", op, need, rows, heads2, headDim, xt, y.Size())
		}
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
	bufs, access := []*gpu.Buffer{x, pos}, []gpu.Access{rw, ro}
	subst["Y_DECL"], subst["Y_ROTATE"], subst["POS_B"], subst["P_B"] = "", "", "1", "2"
	if y != nil {
		if err := rmsnormDistinct(op, []string{"x", "y", "pos"}, x, y, pos); err != nil {
			return err
		}
		// y's pairs come after x's: main's branch for them, which the
		// kernel without y leaves empty.
		outSubst(d, subst, "Y", "y", xt)
		subst["Y_DECL"] = fmt.Sprintf("@group(0) @binding(1) var<storage, read_write> y: array<%s>;\n%s\n%s", subst["Y_T"], subst["Y_AT"], subst["Y_ST"])
		subst["Y_ROTATE"] = `let q = pair_at(t - nx, p.heads2);
		let v = rotate(y_at(q.j), y_at(q.j + hd), q.cs);
		y_st(q.j, v.x);
		y_st(q.j + hd, v.y);`
		subst["POS_B"], subst["P_B"] = "2", "3"
		bufs, access = []*gpu.Buffer{x, y, pos}, []gpu.Access{rw, rw, ro}
		variant = strings.TrimPrefix(variant+"/y", "/")
	}
	k, err := kernel(d, "rope", variant, subst, access, RoPEParams{})
	if err != nil {
		return err
	}
	p := RoPEParams{
		Rows: uint32(rows), Heads: uint32(heads), HeadDim: uint32(headDim), Inverse: b2u(inverse),
		Log2FreqStep: float32(-2 * math.Log2(float64(theta)) / float64(headDim)), Heads2: uint32(heads2),
	}
	gx, gy, gz := d.Grid(int((n+n2)/2), 256) // one thread per rotated pair
	return d.Dispatch(k, gpu.Params(p), bufs, gx, gy, gz)
}
