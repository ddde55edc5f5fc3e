package nn

import (
	"fmt"
	"math"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/wgsl"
)

// Shape letters: N rows (B*T tokens), C channels, K input features, O output
// features, H heads, KV key/value heads, D head size, F FFN size, V vocab.

// activation allocates an activation of dtype dt. Activations follow the
// dtype of the op's input, which the embedding sets (ActivationDType):
// 16-bit models keep 16-bit activations and activation gradients, with f32
// arithmetic in every kernel, as the reference does; per-row statistics
// (rstd, lse), logits and losses stay f32.
func (t *Tape) activation(dt gpu.DType, shape ...int) (*Tensor, error) {
	return NewTensor(t.D, gpu.TagActivation, dt, shape...)
}

// ActivationDType is the dtype of the activations of a model whose
// embedding table is of dtype table: f16 for an f16 table on adapters that
// write f16 (shader-f16), bf16 for a bf16 table (written on every adapter,
// wgsl.outSubst), f32 otherwise.
func ActivationDType(d *gpu.Device, table gpu.DType) gpu.DType {
	switch {
	case table == gpu.F16 && d.Caps.F16:
		return gpu.F16
	case table == gpu.BF16:
		return gpu.BF16
	}
	return gpu.F32
}

func rows(x *Tensor) int { return x.Len() / x.Shape[len(x.Shape)-1] }

// Linear: y (N,O) = x (N,K) · Wᵀ, W (O,K) as stored by Hugging Face; y
// has x's dtype. Backward: dW += dyᵀ·x, dx += dy·W. Saves x.
func (t *Tape) Linear(x *Tensor, w *Param) (*Tensor, error) {
	return t.linear(nil, x, w, true, x.DType)
}

// LinearAdd: y (N,O) = r (N,O) + x (N,K) · Wᵀ, the residual added in the
// matmul's epilogue (one dispatch, and one tensor of N x O, fewer than
// Linear and Add); y has r's dtype. Backward: Linear's, and r's gradient is
// y's, handed over where r has none yet (else added). Saves x.
func (t *Tape) LinearAdd(r, x *Tensor, w *Param) (*Tensor, error) {
	return t.linear(r, x, w, true, r.DType)
}

// LinearF32 is Linear with an f32 output whatever x's dtype (the logits).
func (t *Tape) LinearF32(x *Tensor, w *Param) (*Tensor, error) {
	return t.linear(nil, x, w, true, gpu.F32)
}

// linearNoWeightGrad is LinearF32 whose backward computes dx only; the
// caller supplies W's gradient another way (Tape.DeferGrad) and W's use is
// not counted here.
func (t *Tape) linearNoWeightGrad(x *Tensor, w *Param) (*Tensor, error) {
	return t.linear(nil, x, w, false, gpu.F32)
}

// linear is Linear, LinearAdd with r, and LinearF32.
func (t *Tape) linear(r, x *Tensor, w *Param, weightGrad bool, yt gpu.DType) (*Tensor, error) {
	n, k := rows(x), x.Shape[len(x.Shape)-1]
	o := w.Shape[0]
	if w.Cols() != k || r != nil && (rows(r) != n || r.Shape[len(r.Shape)-1] != o) {
		return nil, fmt.Errorf("%w: linear %s: x %v, W %v, residual %v", ErrShape, w.Name, x.Shape, w.Shape, shapeOf(r))
	}
	y, err := t.activation(yt, n, o)
	if err != nil {
		return nil, err
	}
	// x (N,K) · W (O,K)ᵀ (+ r) -> y (N,O)
	ym, xm, wm := wgsl.Mat{Buf: y.Buf, DType: y.DType}, wgsl.Mat{Buf: x.Buf, DType: x.DType}, wgsl.Mat{Buf: w.Buf, DType: w.DType, T: true}
	if r != nil {
		err = wgsl.MatmulAdd(t.D, ym, xm, wm, wgsl.Mat{Buf: r.Buf, DType: r.DType}, n, o, k, 1, 1)
	} else {
		err = wgsl.Matmul(t.D, ym, xm, wm, n, o, k, 1, 1, 0)
	}
	if err != nil {
		y.Release()
		return nil, fmt.Errorf("linear %s: %w", w.Name, err)
	}
	wg := w.Tensor
	var ps []*Param
	if weightGrad {
		ps = []*Param{w}
	} else {
		wg = nil
	}
	if !t.needs(x, wg, r) {
		t.countParams(ps...)
		return y, nil
	}
	x.Retain()
	saved := true
	releaseX := func() {
		if saved {
			saved = false
			x.Release()
		}
	}
	t.record(&op{
		name: "linear " + w.Name, outputs: []*Tensor{y}, params: ps, release: releaseX,
		backward: func() error {
			if y.grad == nil {
				return nil
			}
			if weightGrad && !w.Frozen {
				dw, acc, err := t.gradOf(w.Tensor)
				if err != nil {
					return err
				}
				// dyᵀ (O,N) · x (N,K) -> dW (O,K)
				if err := wgsl.Matmul(t.D, wgsl.Mat{Buf: dw, DType: w.GradDType()}, wgsl.Mat{Buf: y.grad, DType: y.GradDType(), T: true}, wgsl.Mat{Buf: x.Buf, DType: x.DType}, o, k, n, 1, 1, beta(acc)); err != nil {
					return err
				}
			}
			// dx needs W, not x: x goes before dx is allocated, so that the
			// two are never alive together (at the down projection of a
			// LLaMA block both are N x FFN; dx may take x's memory, which
			// the recorded dW matmul has read by then).
			releaseX()
			if x.needsGrad {
				dx, acc, err := t.gradOf(x)
				if err != nil {
					return err
				}
				// dy (N,O) · W (O,K) -> dx (N,K)
				if err := wgsl.Matmul(t.D, wgsl.Mat{Buf: dx, DType: x.GradDType()}, wgsl.Mat{Buf: y.grad, DType: y.GradDType()}, wgsl.Mat{Buf: w.Buf, DType: w.DType}, n, k, o, 1, 1, beta(acc)); err != nil {
					return err
				}
			}
			if r != nil && r.needsGrad {
				return t.passGradTo(r, y)
			}
			return nil
		},
	})
	return y, nil
}

// passGradTo adds y's gradient to r's, y = r + f(...): it hands y's
// buffer over where r has no gradient yet (the reads of y's gradient
// recorded before stay valid: later writes to r's gradient are recorded
// after them), else adds it.
func (t *Tape) passGradTo(r, y *Tensor) error {
	if r.grad == nil && r.param == nil && r.GradDType() == y.GradDType() {
		r.grad, y.grad = y.grad, nil
		return nil
	}
	dr, acc, err := t.gradOf(r)
	if err != nil {
		return err
	}
	return wgsl.Axpy(t.D, dr, y.grad, r.Len(), r.GradDType(), 1, beta(acc))
}

// shapeOf is x's shape, nil for no tensor.
func shapeOf(x *Tensor) []int {
	if x == nil {
		return nil
	}
	return x.Shape
}

func beta(accumulate bool) float32 {
	if accumulate {
		return 1
	}
	return 0
}

// RMSNorm: y (N,C) = x / rms(x) * w. Saves x and rstd (N).
func (t *Tape) RMSNorm(x *Tensor, w *Param, eps float32) (*Tensor, error) {
	n, c := rows(x), x.Shape[len(x.Shape)-1]
	if w.Len() != c {
		return nil, fmt.Errorf("%w: rmsnorm %s: x %v, w %v", ErrShape, w.Name, x.Shape, w.Shape)
	}
	y, err := t.activation(x.DType, n, c)
	if err != nil {
		return nil, err
	}
	rstd, err := t.activation(gpu.F32, n)
	if err != nil {
		y.Release()
		return nil, err
	}
	if err := wgsl.RMSNormForward(t.D, y.Buf, rstd.Buf, x.Buf, w.Buf, x.DType, w.DType, n, c, eps); err != nil {
		y.Release()
		rstd.Release()
		return nil, fmt.Errorf("rmsnorm %s: %w", w.Name, err)
	}
	if !t.needs(x, w.Tensor) {
		t.countParams(w)
		rstd.Release()
		return y, nil
	}
	x.Retain()
	t.record(&op{
		name: "rmsnorm " + w.Name, outputs: []*Tensor{y}, params: []*Param{w},
		release: func() { x.Release(); rstd.Release() },
		backward: func() error {
			if y.grad == nil {
				return nil
			}
			var dw *gpu.Buffer
			var acc bool
			var err error
			if w.Frozen {
				// The kernel writes dw whatever happens: a frozen weight
				// gets a scratch buffer, not a gradient.
				if dw, err = t.D.NewBuffer(gpu.TagScratch, w.GradDType().Bytes(c)); err != nil {
					return err
				}
				defer dw.Release()
			} else if dw, acc, err = t.gradOf(w.Tensor); err != nil {
				return err
			}
			if !x.needsGrad {
				tmp, err := t.D.NewBuffer(gpu.TagActivation, x.GradDType().Bytes(x.Len()))
				if err != nil {
					return err
				}
				defer tmp.Release()
				return wgsl.RMSNormBackward(t.D, tmp, dw, y.grad, x.Buf, w.Buf, rstd.Buf, x.DType, w.DType, n, c, acc)
			}
			dx, accX, err := t.gradOf(x)
			if err != nil {
				return err
			}
			if accX {
				// The residual stream's gradient, from the layer above:
				// added in the kernel.
				return wgsl.RMSNormBackwardAdd(t.D, dx, dw, y.grad, x.Buf, w.Buf, rstd.Buf, x.DType, w.DType, n, c, acc)
			}
			return wgsl.RMSNormBackward(t.D, dx, dw, y.grad, x.Buf, w.Buf, rstd.Buf, x.DType, w.DType, n, c, acc)
		},
	})
	return y, nil
}

// Embedding: out (N,C) = table[ids]. ids is a u32 buffer of N token ids,
// validated against the vocabulary by the caller.
func (t *Tape) Embedding(table *Param, ids *gpu.Buffer, n int) (*Tensor, error) {
	return t.embeddingOp(table, ids, n, nil)
}

// embedding is Embedding of a batch's ids, whose distinct rows allow the
// table a row-sparse gradient (RowGrads).
func (t *Tape) embedding(table *Param, in *Inputs, n int) (*Tensor, error) {
	return t.embeddingOp(table, in.IDs, n, in)
}

func (t *Tape) embeddingOp(table *Param, ids *gpu.Buffer, n int, in *Inputs) (*Tensor, error) {
	v, c := table.Shape[0], table.Shape[1]
	out, err := t.activation(ActivationDType(t.D, table.DType), n, c)
	if err != nil {
		return nil, err
	}
	if err := wgsl.EmbeddingForward(t.D, out.Buf, table.Buf, ids, table.DType, out.DType, n, c, v); err != nil {
		out.Release()
		return nil, fmt.Errorf("embedding %s: %w", table.Name, err)
	}
	if !t.needs(table.Tensor) {
		t.countParams(table)
		return out, nil
	}
	sparse := t.RowGrads
	t.record(&op{
		name: "embedding " + table.Name, outputs: []*Tensor{out}, params: []*Param{table},
		backward: func() error {
			if out.grad == nil {
				return nil
			}
			// Row-sparse: a gradient of the batch's rows, when nothing
			// else adds to the table's gradient (a tied head does) and f16
			// rows hold whole u32 pairs.
			if sparse && in != nil && in.Rows != nil && len(t.deferred[table]) == 0 && (!table.DType.Half() || c%2 == 0) &&
				(table.grad == nil || table.gradRows != nil && table.gradRows.Rows == in.Rows) {
				acc := table.grad != nil
				if !acc {
					// Sized for the most rows a batch of n tokens can
					// touch, so that the memory does not depend on the
					// data and the plan stays exact.
					b, err := t.D.NewBuffer(gpu.TagGrad, 4*int64(min(n, v))*int64(c))
					if err != nil {
						return err
					}
					table.grad = b
					table.gradRows = &GradRows{Rows: in.Rows, N: in.NumRows}
				}
				return wgsl.EmbeddingBackward(t.D, table.grad, out.grad, in.Slots, out.GradDType(), n, c, in.NumRows, acc)
			}
			if table.gradRows != nil && table.grad != nil {
				return fmt.Errorf("embedding %s: a dense gradient onto a row-sparse one", table.Name)
			}
			table.gradRows = nil
			dt, acc, err := t.gradOf(table.Tensor)
			if err != nil {
				return err
			}
			return wgsl.EmbeddingBackward(t.D, dt, out.grad, ids, out.GradDType(), n, c, v, acc)
		},
	})
	return out, nil
}

// RoPE2 rotates x (N, heads*headDim) and y (N, heads2*headDim) in place by
// each row's position (pos, u32 per row), in one dispatch (a layer's
// queries and keys). Backward rotates their gradients back, in place. No
// op recorded before may have saved x or y: their values change.
func (t *Tape) RoPE2(x, y *Tensor, pos *gpu.Buffer, heads, heads2, headDim int, theta float32) error {
	n := rows(x)
	if x.Shape[len(x.Shape)-1] != heads*headDim || y.Shape[len(y.Shape)-1] != heads2*headDim || rows(y) != n || x.DType != y.DType {
		return fmt.Errorf("%w: rope: x %v %v, y %v %v for %d and %d heads of %d", ErrShape, x.Shape, x.DType, y.Shape, y.DType, heads, heads2, headDim)
	}
	if err := wgsl.RoPE2(t.D, x.Buf, y.Buf, pos, x.DType, n, heads, heads2, headDim, theta, false); err != nil {
		return fmt.Errorf("rope: %w", err)
	}
	if !t.needs(x, y) {
		return nil
	}
	// The op's outputs are x and y themselves: their gradients are rotated
	// back in place and stay theirs for the ops that produced them.
	t.ops = append(t.ops, &op{
		name: "rope",
		backward: func() error {
			switch {
			case x.grad != nil && y.grad != nil && x.GradDType() == y.GradDType():
				return wgsl.RoPE2(t.D, x.grad, y.grad, pos, x.GradDType(), n, heads, heads2, headDim, theta, true)
			case x.grad != nil && y.grad != nil:
				if err := wgsl.RoPE(t.D, x.grad, pos, x.GradDType(), n, heads, headDim, theta, true); err != nil {
					return err
				}
				return wgsl.RoPE(t.D, y.grad, pos, y.GradDType(), n, heads2, headDim, theta, true)
			case x.grad != nil:
				return wgsl.RoPE(t.D, x.grad, pos, x.GradDType(), n, heads, headDim, theta, true)
			case y.grad != nil:
				return wgsl.RoPE(t.D, y.grad, pos, y.GradDType(), n, heads2, headDim, theta, true)
			}
			return nil
		},
	})
	return nil
}

// AttentionShape is the geometry of one attention call.
type AttentionShape struct{ B, T, H, KV, D int }

// Attention: causal self-attention with grouped KV heads. q (N, H*D),
// k, v (N, KV*D), N = B*T; start (B, u32) masks left padding. Saves q, k, v,
// the output and the log-sum-exp (B,H,T).
func (t *Tape) Attention(q, k, v *Tensor, start *gpu.Buffer, s AttentionShape) (*Tensor, error) {
	n := s.B * s.T
	if rows(q) != n || q.Len() != n*s.H*s.D || k.Len() != n*s.KV*s.D || v.Len() != k.Len() {
		return nil, fmt.Errorf("%w: attention q %v k %v v %v for %+v", ErrShape, q.Shape, k.Shape, v.Shape, s)
	}
	out, err := t.activation(q.DType, n, s.H*s.D)
	if err != nil {
		return nil, err
	}
	lse, err := t.activation(gpu.F32, s.B, s.H, s.T)
	if err != nil {
		out.Release()
		return nil, err
	}
	scale := float32(1 / math.Sqrt(float64(s.D)))
	if err := wgsl.AttentionForward(t.D, out.Buf, lse.Buf, q.Buf, k.Buf, v.Buf, start, q.DType, s.B, s.T, s.H, s.KV, s.D, scale); err != nil {
		out.Release()
		lse.Release()
		return nil, fmt.Errorf("attention: %w", err)
	}
	if !t.needs(q, k, v) {
		lse.Release()
		return out, nil
	}
	q.Retain()
	k.Retain()
	v.Retain()
	out.Retain()
	t.record(&op{
		name: "attention", outputs: []*Tensor{out},
		release: func() { q.Release(); k.Release(); v.Release(); out.Release(); lse.Release() },
		backward: func() error {
			if out.grad == nil {
				return nil
			}
			var dq, dk, dv *gpu.Buffer
			var tmps []*gpu.Buffer
			defer func() {
				for _, b := range tmps {
					b.Release()
				}
			}()
			// The kernel overwrites dq, dk, dv: write straight into fresh
			// gradients, or into temporaries added onto existing ones.
			dst := func(x *Tensor) (*gpu.Buffer, error) {
				if x.grad == nil && x.needsGrad {
					b, _, err := t.gradOf(x)
					return b, err
				}
				b, err := t.D.NewBuffer(gpu.TagActivation, x.GradDType().Bytes(x.Len()))
				tmps = append(tmps, b)
				return b, err
			}
			var err error
			if dq, err = dst(q); err != nil {
				return err
			}
			if dk, err = dst(k); err != nil {
				return err
			}
			if dv, err = dst(v); err != nil {
				return err
			}
			if err := wgsl.AttentionBackward(t.D, dq, dk, dv, out.grad, q.Buf, k.Buf, v.Buf, out.Buf, lse.Buf, start, q.DType, s.B, s.T, s.H, s.KV, s.D, scale); err != nil {
				return err
			}
			for _, p := range []struct {
				x *Tensor
				b *gpu.Buffer
			}{{q, dq}, {k, dk}, {v, dv}} {
				// An input without a gradient (the keys of a frozen layer
				// whose input has none) got a temporary, dropped here.
				if p.b != p.x.grad && p.x.needsGrad {
					if err := wgsl.Axpy(t.D, p.x.grad, p.b, p.x.Len(), p.x.GradDType(), 1, 1); err != nil {
						return err
					}
				}
			}
			return nil
		},
	})
	return out, nil
}

// SwiGLU: h = silu(g) * u, all (N,F). Saves g and u.
func (t *Tape) SwiGLU(g, u *Tensor) (*Tensor, error) {
	if g.Len() != u.Len() {
		return nil, fmt.Errorf("%w: swiglu g %v u %v", ErrShape, g.Shape, u.Shape)
	}
	h, err := t.activation(g.DType, g.Shape...)
	if err != nil {
		return nil, err
	}
	if err := wgsl.SwiGLU(t.D, h.Buf, g.Buf, u.Buf, g.Len(), g.DType); err != nil {
		h.Release()
		return nil, err
	}
	if !t.needs(g, u) {
		return h, nil
	}
	g.Retain()
	u.Retain()
	t.record(&op{
		name: "swiglu", outputs: []*Tensor{h},
		release: func() { g.Release(); u.Release() },
		backward: func() error {
			if h.grad == nil {
				return nil
			}
			if ownedOnlyBy(g) && ownedOnlyBy(u) && g != u && g.needsGrad && u.needsGrad && g.GradDType() == g.DType && u.GradDType() == u.DType {
				// This op holds g and u for nothing else: their gradients
				// take their memory (see wgsl.SwiGLUBackwardInPlace).
				if err := wgsl.SwiGLUBackwardInPlace(t.D, g.Buf, u.Buf, h.grad, g.Len(), g.DType); err != nil {
					return err
				}
				g.becomeGrad()
				u.becomeGrad()
				return nil
			}
			return t.swigluBackward(g, u, h.grad)
		},
	})
	return h, nil
}

// swigluBackward adds the gradients of g and u, given dh of h = silu(g)·u,
// into their gradients (allocated where they have none).
func (t *Tape) swigluBackward(g, u *Tensor, dh *gpu.Buffer) error {
	// The kernel writes both: an input without a gradient (a frozen
	// layer's output on an input without one) gets a temporary.
	var tmps []*gpu.Buffer
	defer func() { // after the dispatch is recorded, which keeps them valid
		for _, b := range tmps {
			b.Release()
		}
	}()
	grad := func(x *Tensor) (*gpu.Buffer, bool, error) {
		if x.needsGrad {
			return t.gradOf(x)
		}
		b, err := t.D.NewBuffer(gpu.TagActivation, x.GradDType().Bytes(x.Len()))
		if err == nil {
			tmps = append(tmps, b)
		}
		return b, false, err
	}
	dg, accG, err := grad(g)
	if err != nil {
		return err
	}
	du, accU, err := grad(u)
	if err != nil {
		return err
	}
	return wgsl.SwiGLUBackward(t.D, dg, du, dh, g.Buf, u.Buf, g.Len(), g.GradDType(), accG, accU)
}

// SwiGLULinearAdd: y (N,O) = r (N,O) + (silu(g)·u) (N,F) · Wᵀ, r optional:
// a LLaMA MLP's down projection, whose input, SwiGLU's product of g and u,
// the matmul computes as it loads its tiles (wgsl.Mat.Up) and never
// stores. Backward: dW += dyᵀ·(silu(g)·u) the same way; the input's
// gradient dy·W gets SwiGLU's backward in its epilogue, which writes g's
// and u's gradients over their values where this op is their only holder
// (wgsl.MatmulSwiGLUGrad), and else goes to a buffer of its own first. At
// a LLaMA block's MLP backward, one N x F buffer fewer than SwiGLU and then
// LinearAdd, and two dispatches fewer per pass; the same bits. Saves g and
// u. Where the adapter cannot write g's dtype (f16 without shader-f16) it
// is SwiGLU and LinearAdd.
func (t *Tape) SwiGLULinearAdd(r, g, u *Tensor, w *Param) (*Tensor, error) {
	n, f := rows(g), g.Shape[len(g.Shape)-1]
	o := w.Shape[0]
	if g.Len() != u.Len() || g.DType != u.DType || g == u || w.Cols() != f || r != nil && (rows(r) != n || r.Shape[len(r.Shape)-1] != o) {
		return nil, fmt.Errorf("%w: swiglu linear %s: g %v %v, u %v %v, W %v, residual %v", ErrShape, w.Name, g.Shape, g.DType, u.Shape, u.DType, w.Shape, shapeOf(r))
	}
	if g.DType == gpu.F16 && !t.D.Caps.F16 && !t.D.Dry() {
		h, err := t.SwiGLU(g, u)
		if err != nil {
			return nil, err
		}
		defer h.Release()
		if r != nil {
			return t.LinearAdd(r, h, w)
		}
		return t.Linear(h, w)
	}
	yt := g.DType
	if r != nil {
		yt = r.DType
	}
	y, err := t.activation(yt, n, o)
	if err != nil {
		return nil, err
	}
	// silu(g)·u (N,F) · W (O,F)ᵀ (+ r) -> y (N,O)
	ym, hm, wm := wgsl.Mat{Buf: y.Buf, DType: y.DType}, wgsl.Mat{Buf: g.Buf, Up: u.Buf, DType: g.DType}, wgsl.Mat{Buf: w.Buf, DType: w.DType, T: true}
	if r != nil {
		err = wgsl.MatmulAdd(t.D, ym, hm, wm, wgsl.Mat{Buf: r.Buf, DType: r.DType}, n, o, f, 1, 1)
	} else {
		err = wgsl.Matmul(t.D, ym, hm, wm, n, o, f, 1, 1, 0)
	}
	if err != nil {
		y.Release()
		return nil, fmt.Errorf("swiglu linear %s: %w", w.Name, err)
	}
	if !t.needs(g, u, w.Tensor, r) {
		t.countParams(w)
		return y, nil
	}
	g.Retain()
	u.Retain()
	t.record(&op{
		name: "swiglu linear " + w.Name, outputs: []*Tensor{y}, params: []*Param{w},
		release: func() { g.Release(); u.Release() },
		backward: func() error {
			if y.grad == nil {
				return nil
			}
			if !w.Frozen {
				dw, acc, err := t.gradOf(w.Tensor)
				if err != nil {
					return err
				}
				// dyᵀ (O,N) · silu(g)·u (N,F) -> dW (O,F)
				if err := wgsl.Matmul(t.D, wgsl.Mat{Buf: dw, DType: w.GradDType()}, wgsl.Mat{Buf: y.grad, DType: y.GradDType(), T: true}, hm, o, f, n, 1, 1, beta(acc)); err != nil {
					return err
				}
			}
			dy, wn := wgsl.Mat{Buf: y.grad, DType: y.GradDType()}, wgsl.Mat{Buf: w.Buf, DType: w.DType}
			switch {
			case ownedOnlyBy(g) && ownedOnlyBy(u) && g.needsGrad && u.needsGrad && g.GradDType() == g.DType && u.GradDType() == u.DType:
				// dy (N,O) · W (O,F) -> dh, and SwiGLU's backward over g and u
				if err := wgsl.MatmulSwiGLUGrad(t.D, wgsl.Mat{Buf: g.Buf, DType: g.DType}, wgsl.Mat{Buf: u.Buf, DType: u.DType}, dy, wn, n, f, o); err != nil {
					return err
				}
				g.becomeGrad()
				u.becomeGrad()
			case g.needsGrad || u.needsGrad:
				dh, err := t.D.NewBuffer(gpu.TagActivation, g.GradDType().Bytes(n*f))
				if err != nil {
					return err
				}
				defer dh.Release() // recorded dispatches keep it valid
				if err := wgsl.Matmul(t.D, wgsl.Mat{Buf: dh, DType: g.GradDType()}, dy, wn, n, f, o, 1, 1, 0); err != nil {
					return err
				}
				if err := t.swigluBackward(g, u, dh); err != nil {
					return err
				}
			}
			if r != nil && r.needsGrad {
				return t.passGradTo(r, y)
			}
			return nil
		},
	})
	return y, nil
}

// LossOptions configure CrossEntropy.
type LossOptions struct {
	// GradScale multiplies the gradient: loss scale / number of counted
	// tokens, so that the gradient is that of the (scaled) mean loss.
	GradScale float32
	// ClipLoss clamps each token's loss (REFERENCE §1.1); 0 is off.
	ClipLoss float32
}

// CrossEntropy returns the per-row loss (N) of logits (N,V) against labels
// (i32 per row, -100 ignored). On a tape with grad, the logits buffer is
// overwritten in place by dlogits (scaled by GradScale): the logits tensor
// must not be read afterwards. The result is the tensor to call Backward on.
func (t *Tape) CrossEntropy(logits *Tensor, labels *gpu.Buffer, opt LossOptions) (*Tensor, error) {
	n, v := rows(logits), logits.Shape[len(logits.Shape)-1]
	if logits.DType != gpu.F32 {
		return nil, fmt.Errorf("cross entropy: logits are %v, want f32 (Tape.LinearF32)", logits.DType)
	}
	loss, err := t.activation(gpu.F32, n)
	if err != nil {
		return nil, err
	}
	grad := t.needs(logits)
	if err := wgsl.CrossEntropy(t.D, loss.Buf, logits.Buf, labels, n, v, opt.GradScale, opt.ClipLoss, grad); err != nil {
		loss.Release()
		return nil, fmt.Errorf("cross entropy: %w", err)
	}
	if !grad {
		return loss, nil
	}
	logits.Retain()
	t.record(&op{
		name: "cross entropy", outputs: []*Tensor{loss},
		backward: func() error {
			// dlogits were written over the logits by the forward: the
			// buffer becomes the logits' gradient.
			if logits.grad != nil {
				return fmt.Errorf("logits already have a gradient")
			}
			logits.grad = logits.Buf
			logits.Buf.Retag(gpu.TagActivation)
			logits.Buf = nil
			logits.refs-- // the buffer now lives as the gradient
			return nil
		},
		release: func() {
			if logits.Buf != nil {
				logits.Release()
			}
		},
	})
	return loss, nil
}

// headChunkBytes bounds the f32 logits of one chunk of rows in HeadLoss
// (a variable for tests).
var headChunkBytes = 64 << 20

// HeadGradBlockBytes bounds a block of the LM head's weight gradient
// delivered by rows (Tape.HeadBlocks): 32 MiB, 8 blocks of f16 at LLaMA-7B
// (a variable for tests of the optimizers that take the blocks).
var HeadGradBlockBytes = 32 << 20

// headChunkRows is how many rows of v logits HeadLoss takes at a time:
// from 128 rows on, a multiple of 128, the rows of the matmuls' largest
// tiles: 524 rows of LLaMA's 32000 logits would leave the last of five
// 128-row tiles nine tenths idle.
func headChunkRows(n, v int) int {
	r := headChunkBytes / (4 * v)
	if r >= 128 {
		r &^= 127
	}
	return max(1, min(n, r))
}

// HeadLoss is the LM head and the cross-entropy at once: the per-row losses
// (N) f32 of h (N,C) · Wᵀ against labels (N, i32; -100 ignored), W (V,C).
// It runs in chunks of rows so that the (N,V) f32 logits never exist
// whole: each chunk makes its logits (at most 64 MiB), its losses and, in
// backward, recomputed from h, its dlogits, then drops them. Backward adds
// dh = dlogits·W and, with weightGrad, dW = Σ dlogitsᵀ·h (else the caller
// supplies W's gradient, see Llama.Loss). Saves h. The result is the
// tensor to call Backward on.
func (t *Tape) HeadLoss(h *Tensor, w *Param, labels *gpu.Buffer, opt LossOptions, weightGrad bool) (*Tensor, error) {
	n, c := rows(h), h.Shape[len(h.Shape)-1]
	v := w.Shape[0]
	if w.Cols() != c {
		return nil, fmt.Errorf("%w: head %s: h %v, W %v", ErrShape, w.Name, h.Shape, w.Shape)
	}
	loss, err := t.activation(gpu.F32, n)
	if err != nil {
		return nil, err
	}
	chunk := headChunkRows(n, v)
	// With HeadBlocks, W's gradient may come in blocks of vocabulary rows,
	// so that no (V,C) gradient exists; the op then counts W's use
	// itself.
	byRows := t.HeadBlocks && weightGrad && !w.Frozen && (!w.GradDType().Half() || c%2 == 0)
	if byRows && int64(4*n) <= w.GradDType().Bytes(c) && 4*int64(n)*int64(v) <= 128<<20 {
		// The logits of all rows take no more memory than W's whole
		// gradient, which one chunk lets come in blocks of rows
		// (headRowBlocks): one chunk, if it binds on every adapter (128 MiB
		// is WebGPU's default storage binding limit; a constant, so that
		// plans do not depend on the adapter).
		chunk = n
	}
	// More rows than a chunk: the backward takes the blocks of vocabulary
	// rows in turn, each over the chunks of rows (headVocabBlocks), from
	// each row's log-sum-exp and gradient scale kept from here (8 bytes a
	// row).
	var stats *gpu.Buffer
	if byRows && n > chunk && t.needs(h, w.Tensor) {
		if stats, err = t.D.NewBuffer(gpu.TagActivation, 8*int64(n)); err != nil {
			loss.Release()
			return nil, err
		}
	}
	if err := t.headChunks(h, w, labels, loss.Buf, stats, opt, chunk, nil); err != nil {
		loss.Release()
		if stats != nil {
			stats.Release()
		}
		return nil, fmt.Errorf("head %s: %w", w.Name, err)
	}
	var ps []*Param
	if weightGrad {
		ps = []*Param{w}
	}
	wt := w.Tensor
	if !weightGrad {
		wt = nil
	}
	if !t.needs(h, wt) {
		t.countParams(ps...)
		return loss, nil
	}
	h.Retain()
	if byRows {
		if t.countUses {
			t.uses[w]++
		}
		ps = nil
	}
	release := h.Release
	if stats != nil {
		release = func() { h.Release(); stats.Release() }
	}
	t.record(&op{
		name: "head+loss " + w.Name, outputs: []*Tensor{loss}, params: ps, release: release,
		backward: func() error {
			if byRows {
				if t.uses[w] == 1 && w.grad == nil && len(t.deferred[w]) == 0 && t.callback != nil {
					switch {
					case n <= chunk:
						delete(t.uses, w)
						return t.headBackward(h, w, labels, loss.Buf, opt, chunk, headRowBlocks)
					case h.grad == nil:
						delete(t.uses, w)
						return t.headVocabBlocks(h, w, labels, stats, chunk)
					}
				}
				// W has other uses to come (or h a gradient already): its
				// gradient is summed whole, and its callback comes after
				// the last use, as usual.
				if err := t.headBackward(h, w, labels, loss.Buf, opt, chunk, headWholeGrad); err != nil {
					return err
				}
				return t.used(w, t.callback)
			}
			wg := headNoWeightGrad
			if weightGrad {
				wg = headWholeGrad
			}
			return t.headBackward(h, w, labels, loss.Buf, opt, chunk, wg)
		},
	})
	return loss, nil
}

// headGrad says what HeadLoss's backward does with W's gradient.
type headGrad int

const (
	headNoWeightGrad headGrad = iota // the caller supplies it (Llama.Loss)
	headWholeGrad                    // summed whole over the chunks
	// headRowBlocks: in blocks of vocabulary rows (Tape.HeadBlocks), for rows
	// of h that fit one chunk. Each block's dW rows go to the callback
	// (Param.GradRows) and are freed before the next block's: no (V,C)
	// gradient exists. dh is recorded before any block's update, which
	// changes W.
	headRowBlocks
)

// headBackward is HeadLoss's backward: dh, and W's gradient as wg says.
func (t *Tape) headBackward(h *Tensor, w *Param, labels, loss *gpu.Buffer, opt LossOptions, chunk int, wg headGrad) error {
	n, c := rows(h), h.Shape[len(h.Shape)-1]
	v := w.Shape[0]
	var dh, dw, ids *gpu.Buffer
	var accH, accW bool
	var err error
	if h.needsGrad {
		if dh, accH, err = t.gradOf(h); err != nil {
			return err
		}
	}
	switch {
	case wg == headWholeGrad && !w.Frozen:
		if dw, accW, err = t.gradOf(w.Tensor); err != nil {
			return err
		}
	case wg == headRowBlocks:
		// The rows' ids, 0..V-1, for all blocks (GradRows.Off picks a block's).
		if ids, err = t.D.NewBuffer(gpu.TagScratch, int64(4*v)); err != nil {
			return err
		}
		defer ids.Release() // recorded dispatches keep it valid
		iota := make([]int, v)
		for i := range iota {
			iota[i] = i
		}
		if err := t.D.Write(ids, 0, u32Bytes(iota)); err != nil {
			return err
		}
	}
	return t.headChunks(h, w, labels, loss, nil, opt, chunk, func(logits *gpu.Buffer, r0, r int) error {
		// dlogits (r,V) · W (V,C) -> dh rows r0.. (r,C)
		if dh != nil {
			if err := wgsl.Matmul(t.D, wgsl.Mat{Buf: dh, DType: h.GradDType(), Off: r0 * c}, wgsl.Mat{Buf: logits}, wgsl.Mat{Buf: w.Buf, DType: w.DType}, r, c, v, 1, 1, beta(accH)); err != nil {
				return err
			}
		}
		// dlogitsᵀ (V,r) · h rows r0.. (r,C) -> dW (V,C), summed over chunks
		if dw != nil {
			return wgsl.Matmul(t.D, wgsl.Mat{Buf: dw, DType: w.GradDType()}, wgsl.Mat{Buf: logits, T: true}, wgsl.Mat{Buf: h.Buf, DType: h.DType, Off: r0 * c}, v, c, r, 1, 1, beta(accW || r0 > 0))
		}
		if ids == nil {
			return nil
		}
		if r0 != 0 || r != n {
			return fmt.Errorf("head %s: %d of %d rows in a chunk, want all", w.Name, r, n)
		}
		block := max(1, min(v, HeadGradBlockBytes/int(w.GradDType().Bytes(c))))
		for v0 := 0; v0 < v; v0 += block {
			if err := t.headRowBlock(h, w, logits, ids, v0, min(block, v-v0)); err != nil {
				return err
			}
		}
		return nil
	})
}

// headRowBlock computes dW rows v0..v0+vb-1 = dlogits[:, v0:v0+vb]ᵀ · h and
// hands them to the callback; ids holds 0..V-1.
func (t *Tape) headRowBlock(h *Tensor, w *Param, logits, ids *gpu.Buffer, v0, vb int) error {
	n, c := rows(h), h.Shape[len(h.Shape)-1]
	v := w.Shape[0]
	dw, err := t.D.NewBuffer(gpu.TagGrad, w.GradDType().Bytes(vb*c))
	if err != nil {
		return err
	}
	defer dw.Release() // recorded dispatches keep it valid
	// dlogits columns v0.. (stored (N,V), read transposed: (vb,N)) · h (N,C) -> dW rows (vb,C)
	if err := wgsl.Matmul(t.D, wgsl.Mat{Buf: dw, DType: w.GradDType()}, wgsl.Mat{Buf: logits, T: true, Off: v0, LD: v}, wgsl.Mat{Buf: h.Buf, DType: h.DType}, vb, c, n, 1, 1, 0); err != nil {
		return err
	}
	w.grad, w.gradRows = dw, &GradRows{Rows: ids, Off: v0, N: vb, Block: true}
	err = t.callback(w, dw)
	w.grad, w.gradRows = nil, nil
	if err != nil {
		return fmt.Errorf("nn: gradient callback for %s (rows %d..%d): %w", w.Name, v0, v0+vb-1, err)
	}
	return nil
}

// headChunks runs the head and the cross-entropy over the rows of h in
// chunks of `chunk`, writing the losses; with grad set, each chunk's
// logits become its dlogits (scaled by opt.GradScale) and are handed to
// grad before the next chunk overwrites them; with stats set (and no
// grad), each row's log-sum-exp and gradient scale go there too
// (wgsl.CrossEntropyStats).
func (t *Tape) headChunks(h *Tensor, w *Param, labels, loss, stats *gpu.Buffer, opt LossOptions, chunk int, grad func(dlogits *gpu.Buffer, r0, r int) error) error {
	n, c := rows(h), h.Shape[len(h.Shape)-1]
	v := w.Shape[0]
	logits, err := t.D.NewBuffer(gpu.TagActivation, 4*int64(chunk)*int64(v))
	if err != nil {
		return err
	}
	// Released when recorded: the dispatches keep it valid (gpu.Buffer.Release).
	defer logits.Release()
	for r0 := 0; r0 < n; r0 += chunk {
		r := min(chunk, n-r0)
		// h rows r0.. (r,C) · W (V,C)ᵀ -> logits (r,V)
		if err := wgsl.Matmul(t.D, wgsl.Mat{Buf: logits}, wgsl.Mat{Buf: h.Buf, DType: h.DType, Off: r0 * c}, wgsl.Mat{Buf: w.Buf, DType: w.DType, T: true}, r, v, c, 1, 1, 0); err != nil {
			return err
		}
		if stats != nil && grad == nil {
			err = wgsl.CrossEntropyStats(t.D, loss, stats, logits, labels, r0, r, v, opt.GradScale, opt.ClipLoss)
		} else {
			err = wgsl.CrossEntropyRows(t.D, loss, logits, labels, r0, r, v, opt.GradScale, opt.ClipLoss, grad != nil)
		}
		if err != nil {
			return err
		}
		if grad != nil {
			if err := grad(logits, r0, r); err != nil {
				return err
			}
		}
	}
	return nil
}

// headVocabBlocks is HeadLoss's backward for more rows of h than one
// chunk (on a tape with HeadBlocks, W's last use, h without a gradient yet):
// W's gradient a block of vocabulary rows at a time, each over the chunks
// of rows, handed to the callback (Param.GradRows) and freed before the
// next block's, so that neither a (V,C) gradient nor the logits of a
// chunk's whole vocabulary exist: per chunk and block, the logits (r,VB)
// are computed again, turned into their gradients from the forward's
// stats (wgsl.CrossEntropyBlockGrad), and give dW's block rows (the whole
// gradient's rows, bit for bit: the same chunks, in the same order) and
// their part of dh, summed over the blocks, in f32 for a 16-bit dh and
// rounded once. A block's rows of W are updated after every chunk has read
// them, and no later block reads them.
func (t *Tape) headVocabBlocks(h *Tensor, w *Param, labels, stats *gpu.Buffer, chunk int) error {
	n, c := rows(h), h.Shape[len(h.Shape)-1]
	v := w.Shape[0]
	block := max(1, min(v, HeadGradBlockBytes/int(w.GradDType().Bytes(c))))
	var dh, sum *gpu.Buffer
	if h.needsGrad {
		var err error
		if dh, _, err = t.gradOf(h); err != nil {
			return err
		}
		if h.GradDType() != gpu.F32 && block < v {
			if sum, err = t.D.NewBuffer(gpu.TagActivation, 4*int64(n)*int64(c)); err != nil {
				return err
			}
			defer sum.Release() // recorded dispatches keep it valid
		}
	}
	ids, err := t.D.NewBuffer(gpu.TagScratch, int64(4*v))
	if err != nil {
		return err
	}
	defer ids.Release()
	iota := make([]int, v)
	for i := range iota {
		iota[i] = i
	}
	if err := t.D.Write(ids, 0, u32Bytes(iota)); err != nil {
		return err
	}
	tile, err := t.D.NewBuffer(gpu.TagActivation, 4*int64(min(chunk, n))*int64(block))
	if err != nil {
		return err
	}
	defer tile.Release()
	for v0 := 0; v0 < v; v0 += block {
		vb := min(block, v-v0)
		dw, err := t.D.NewBuffer(gpu.TagGrad, w.GradDType().Bytes(vb*c))
		if err != nil {
			return err
		}
		wb := wgsl.Mat{Buf: w.Buf, DType: w.DType, Off: v0 * c} // W rows v0.. (vb,C)
		for r0 := 0; r0 < n; r0 += chunk {
			r := min(chunk, n-r0)
			hr := wgsl.Mat{Buf: h.Buf, DType: h.DType, Off: r0 * c}
			// h rows r0.. (r,C) · W rows v0.. ᵀ -> logits (r,vb) -> their gradients
			wt := wb
			wt.T = true
			if err := wgsl.Matmul(t.D, wgsl.Mat{Buf: tile}, hr, wt, r, vb, c, 1, 1, 0); err != nil {
				dw.Release()
				return err
			}
			if err := wgsl.CrossEntropyBlockGrad(t.D, tile, stats, labels, r0, r, v0, vb); err != nil {
				dw.Release()
				return err
			}
			if dh != nil {
				// dlogits (r,vb) · W rows v0.. (vb,C) -> dh rows r0.., summed over the blocks
				var err error
				switch {
				case sum == nil:
					err = wgsl.Matmul(t.D, wgsl.Mat{Buf: dh, DType: h.GradDType(), Off: r0 * c}, wgsl.Mat{Buf: tile}, wb, r, c, vb, 1, 1, beta(v0 > 0))
				case v0+vb < v:
					err = wgsl.Matmul(t.D, wgsl.Mat{Buf: sum, Off: r0 * c}, wgsl.Mat{Buf: tile}, wb, r, c, vb, 1, 1, beta(v0 > 0))
				default: // the last block, rounded once with the others' sum
					err = wgsl.MatmulAdd(t.D, wgsl.Mat{Buf: dh, DType: h.GradDType(), Off: r0 * c}, wgsl.Mat{Buf: tile}, wb, wgsl.Mat{Buf: sum, Off: r0 * c}, r, c, vb, 1, 1)
				}
				if err != nil {
					dw.Release()
					return err
				}
			}
			// dlogitsᵀ (vb,r) · h rows (r,C) -> dW rows v0.. (vb,C), summed over the chunks
			if err := wgsl.Matmul(t.D, wgsl.Mat{Buf: dw, DType: w.GradDType()}, wgsl.Mat{Buf: tile, T: true}, hr, vb, c, r, 1, 1, beta(r0 > 0)); err != nil {
				dw.Release()
				return err
			}
		}
		w.grad, w.gradRows = dw, &GradRows{Rows: ids, Off: v0, N: vb, Block: true}
		err = t.callback(w, dw)
		w.grad, w.gradRows = nil, nil
		dw.Release() // recorded dispatches keep it valid
		if err != nil {
			return fmt.Errorf("nn: gradient callback for %s (rows %d..%d): %w", w.Name, v0, v0+vb-1, err)
		}
	}
	return nil
}

// Dropout: y = x * keep / (1-p), keep a pure function of (seed, element)
// (wgsl.Dropout): the backward, and any recompute of a checkpointed block,
// drop the same elements without a stored mask. Saves nothing.
func (t *Tape) Dropout(x *Tensor, p float64, seed uint32) (*Tensor, error) {
	y, err := t.activation(x.DType, x.Shape...)
	if err != nil {
		return nil, err
	}
	scale := float32(1 / (1 - p))
	if err := wgsl.Dropout(t.D, y.Buf, x.Buf, x.Len(), x.DType, p, seed, scale, 0); err != nil {
		y.Release()
		return nil, fmt.Errorf("dropout: %w", err)
	}
	if !t.needs(x) {
		return y, nil
	}
	t.record(&op{
		name: "dropout", outputs: []*Tensor{y},
		backward: func() error {
			if y.grad == nil {
				return nil
			}
			dx, acc, err := t.gradOf(x)
			if err != nil {
				return err
			}
			return wgsl.Dropout(t.D, dx, y.grad, x.Len(), x.GradDType(), p, seed, scale, beta(acc))
		},
	})
	return y, nil
}

// AddLinear adds scale · z · Bᵀ to y in place and returns y: z (N,R),
// B (O,R), y (N,O) (the up projection of a LoRA adapter onto the output
// of the layer it adapts). Backward: dB += scale · dyᵀ·z, dz += scale ·
// dy·B; y's gradient passes through unchanged. Saves z. No op recorded
// before may have saved y: its values change.
func (t *Tape) AddLinear(y, z *Tensor, b *Param, scale float32) (*Tensor, error) {
	n, r := rows(z), z.Shape[len(z.Shape)-1]
	o := b.Shape[0]
	if b.Cols() != r || rows(y) != n || y.Shape[len(y.Shape)-1] != o {
		return nil, fmt.Errorf("%w: add linear %s: y %v, z %v, B %v", ErrShape, b.Name, y.Shape, z.Shape, b.Shape)
	}
	// z (N,R) · B (O,R)ᵀ -> y (N,O), added
	if err := wgsl.Matmul(t.D, wgsl.Mat{Buf: y.Buf, DType: y.DType}, wgsl.Mat{Buf: z.Buf, DType: z.DType}, wgsl.Mat{Buf: b.Buf, DType: b.DType, T: true}, n, o, r, 1, scale, 1); err != nil {
		return nil, fmt.Errorf("add linear %s: %w", b.Name, err)
	}
	if !t.needs(z, b.Tensor) {
		t.countParams(b)
		return y, nil
	}
	z.Retain()
	// The op's output is y itself. When an op produced y with a backward,
	// y's gradient stays y's for that op (as RoPE's does), and is not
	// listed as an output here, so that Tape.run does not free it yet;
	// otherwise (the layer's weight frozen and its input without
	// gradient) this op is the last to use it and frees it.
	var outs []*Tensor
	if !y.needsGrad {
		outs = []*Tensor{y}
	}
	t.record(&op{
		name: "add linear " + b.Name, outputs: outs, params: []*Param{b}, release: z.Release,
		backward: func() error {
			if y.grad == nil {
				return nil
			}
			if !b.Frozen {
				db, acc, err := t.gradOf(b.Tensor)
				if err != nil {
					return err
				}
				// dyᵀ (O,N) · z (N,R) -> dB (O,R)
				if err := wgsl.Matmul(t.D, wgsl.Mat{Buf: db, DType: b.GradDType()}, wgsl.Mat{Buf: y.grad, DType: y.GradDType(), T: true}, wgsl.Mat{Buf: z.Buf, DType: z.DType}, o, r, n, 1, scale, beta(acc)); err != nil {
					return err
				}
			}
			if z.needsGrad {
				dz, acc, err := t.gradOf(z)
				if err != nil {
					return err
				}
				// dy (N,O) · B (O,R) -> dz (N,R)
				return wgsl.Matmul(t.D, wgsl.Mat{Buf: dz, DType: z.GradDType()}, wgsl.Mat{Buf: y.grad, DType: y.GradDType()}, wgsl.Mat{Buf: b.Buf, DType: b.DType}, n, r, o, 1, scale, beta(acc))
			}
			return nil
		},
	})
	y.needsGrad = true
	return y, nil
}
