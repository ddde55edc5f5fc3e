package wgsl

import (
	"fmt"
	"strings"

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
	"swiglu": "swiglu(x, y)",
}

func checkLen(op string, n int, dt gpu.DType, bufs ...*gpu.Buffer) error {
	if n <= 0 {
		return fmt.Errorf("wgsl: %s: %d elements", op, n)
	}
	for i, b := range bufs {
		if b.Size() < dt.Bytes(n) {
			return fmt.Errorf("wgsl: %s: operand %d holds %d bytes, needs %d for %d %v", op, i, b.Size(), dt.Bytes(n), n, dt)
		}
	}
	return nil
}

// elementSubst sets X_T and each binding's reader and writer for dtype dt:
// written are the read_write bindings' WGSL names, read the others'; keys
// are their upper case.
func elementSubst(d *gpu.Device, m map[string]string, dt gpu.DType, written []string, read ...string) map[string]string {
	m = dtypeSubst(d, m, "X", "x", dt)
	for _, v := range written {
		outSubst(d, m, strings.ToUpper(v), v, dt)
	}
	for _, v := range read {
		dtypeSubst(d, m, strings.ToUpper(v), v, dt)
	}
	return m
}

func elementwise(d *gpu.Device, op string, out, a, b *gpu.Buffer, n int, dt gpu.DType) error {
	if err := checkLen(op, n, dt, out, a, b); err != nil {
		return err
	}
	if err := f16Writable(d, op, "out", dt); err != nil {
		return err
	}
	p := ElementwiseParams{N: uint32(n)}
	subst := elementSubst(d, map[string]string{"OP": elementwiseOps[op], useSwiGLU: "1"}, dt, []string{"out"}, "a", "b")
	k, err := kernel(d, "elementwise", op+"/"+dt.String(), subst, []gpu.Access{rw, ro, ro}, p)
	if err != nil {
		return err
	}
	x, y, z := d.Grid(n, 256)
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{out, a, b}, x, y, z)
}

// Add records out = a + b over n elements of dtype dt.
func Add(d *gpu.Device, out, a, b *gpu.Buffer, n int, dt gpu.DType) error {
	return elementwise(d, "add", out, a, b, n, dt)
}

// SwiGLU records h = silu(g) * u over n elements of dtype dt.
func SwiGLU(d *gpu.Device, h, g, u *gpu.Buffer, n int, dt gpu.DType) error {
	return elementwise(d, "swiglu", h, g, u, n, dt)
}

// SwiGLUBackward records dg, du from dh for h = silu(g)*u, all of dtype
// dt; accG/accU add into the existing dg/du instead of overwriting them.
func SwiGLUBackward(d *gpu.Device, dg, du, dh, g, u *gpu.Buffer, n int, dt gpu.DType, accG, accU bool) error {
	if err := checkLen("swiglu backward", n, dt, dg, du, dh, g, u); err != nil {
		return err
	}
	if err := f16Writable(d, "swiglu backward", "dg", dt); err != nil {
		return err
	}
	p := SwiGLUBackwardParams{N: uint32(n), AccG: b2u(accG), AccU: b2u(accU)}
	k, err := kernel(d, "swiglu", dt.String(), swigluSubst(d, dt), []gpu.Access{rw, rw, ro, ro, ro}, p)
	if err != nil {
		return err
	}
	x, y, z := d.Grid(n, 256)
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{dg, du, dh, g, u}, x, y, z)
}

// swigluSubst sets the readers and writers of swiglu.wgsl's bindings (both
// entry points').
func swigluSubst(d *gpu.Device, dt gpu.DType) map[string]string {
	return elementSubst(d, map[string]string{useSwiGLU: "1"}, dt, []string{"dg", "du", "gw", "uw"}, "dh", "g", "u")
}

// SwiGLUBackwardInPlace is SwiGLUBackward writing dg over g and du over u
// (entry point in_place of swiglu.wgsl), for a caller that needs g and u
// for nothing else; the results equal SwiGLUBackward's without
// accumulation bit for bit.
func SwiGLUBackwardInPlace(d *gpu.Device, g, u, dh *gpu.Buffer, n int, dt gpu.DType) error {
	if err := checkLen("swiglu backward in place", n, dt, g, u, dh); err != nil {
		return err
	}
	if g == u {
		return fmt.Errorf("wgsl: swiglu backward in place: g and u are one buffer")
	}
	if err := f16Writable(d, "swiglu backward in place", "g", dt); err != nil {
		return err
	}
	p := SwiGLUBackwardParams{N: uint32(n)}
	k, err := entryKernel(d, "swiglu", "in_place", dt.String(), swigluSubst(d, dt), []gpu.Access{rw, rw, ro}, p)
	if err != nil {
		return err
	}
	x, y, z := d.Grid(n, 256)
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{g, u, dh}, x, y, z)
}

// Axpy records y = alpha*x + beta*y over n elements, both of dtype dt.
func Axpy(d *gpu.Device, y, x *gpu.Buffer, n int, dt gpu.DType, alpha, beta float32) error {
	if err := checkLen("axpy", n, dt, y, x); err != nil {
		return err
	}
	if err := f16Writable(d, "axpy", "y", dt); err != nil {
		return err
	}
	p := AxpyParams{N: uint32(n), Alpha: alpha, Beta: beta}
	// x's reader is XX_AT: X_T names the element type.
	subst := elementSubst(d, nil, dt, []string{"y"})
	dtypeSubst(d, subst, "XX", "x", dt)
	k, err := kernel(d, "axpy", dt.String(), subst, []gpu.Access{rw, ro}, p)
	if err != nil {
		return err
	}
	gx, gy, gz := d.Grid(n, 256)
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{y, x}, gx, gy, gz)
}
