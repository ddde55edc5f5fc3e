package wgsl

import (
	"fmt"

	"github.com/lomo-dev/lomo/gpu"
)

// ElementwiseParams mirrors Params in elementwise.wgsl.
type ElementwiseParams struct{ N, _, _, _ uint32 }

// AxpyParams mirrors Params in axpy.wgsl.
type AxpyParams struct {
	N           uint32
	Alpha, Beta float32
	_           uint32
}

// SwiGLUBackwardParams mirrors Params in swiglu.wgsl.
type SwiGLUBackwardParams struct{ N, AccG, AccU, _ uint32 }

var elementwiseOps = map[string]string{
	"add":    "x + y",
	"swiglu": "silu(x) * y",
}

func checkLen(op string, n int, bufs ...*gpu.Buffer) error {
	if n <= 0 {
		return fmt.Errorf("wgsl: %s: %d elements", op, n)
	}
	for i, b := range bufs {
		if b.Size() < int64(4*n) {
			return fmt.Errorf("wgsl: %s: operand %d holds %d bytes, needs %d", op, i, b.Size(), 4*n)
		}
	}
	return nil
}

func elementwise(d *gpu.Device, op string, out, a, b *gpu.Buffer, n int) error {
	if err := checkLen(op, n, out, a, b); err != nil {
		return err
	}
	p := ElementwiseParams{N: uint32(n)}
	k, err := kernel(d, "elementwise", op, map[string]string{"OP": elementwiseOps[op]}, []gpu.Access{rw, ro, ro}, p)
	if err != nil {
		return err
	}
	x, y, z := d.Grid(n, 256)
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{out, a, b}, x, y, z)
}

// Add records out = a + b over n f32 elements.
func Add(d *gpu.Device, out, a, b *gpu.Buffer, n int) error {
	return elementwise(d, "add", out, a, b, n)
}

// SwiGLU records h = silu(g) * u over n f32 elements.
func SwiGLU(d *gpu.Device, h, g, u *gpu.Buffer, n int) error {
	return elementwise(d, "swiglu", h, g, u, n)
}

// SwiGLUBackward records dg, du from dh for h = silu(g)*u; accG/accU add
// into the existing dg/du instead of overwriting them.
func SwiGLUBackward(d *gpu.Device, dg, du, dh, g, u *gpu.Buffer, n int, accG, accU bool) error {
	if err := checkLen("swiglu backward", n, dg, du, dh, g, u); err != nil {
		return err
	}
	p := SwiGLUBackwardParams{N: uint32(n), AccG: b2u(accG), AccU: b2u(accU)}
	k, err := kernel(d, "swiglu", "", nil, []gpu.Access{rw, rw, ro, ro, ro}, p)
	if err != nil {
		return err
	}
	x, y, z := d.Grid(n, 256)
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{dg, du, dh, g, u}, x, y, z)
}

// Axpy records y = alpha*x + beta*y over n f32 elements.
func Axpy(d *gpu.Device, y, x *gpu.Buffer, n int, alpha, beta float32) error {
	if err := checkLen("axpy", n, y, x); err != nil {
		return err
	}
	p := AxpyParams{N: uint32(n), Alpha: alpha, Beta: beta}
	k, err := kernel(d, "axpy", "", nil, []gpu.Access{rw, ro}, p)
	if err != nil {
		return err
	}
	gx, gy, gz := d.Grid(n, 256)
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{y, x}, gx, gy, gz)
}
