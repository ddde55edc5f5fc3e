package wgsl

import (
	"fmt"

	"github.com/lomo-dev/lomo/gpu"
)

// MatmulParams mirrors Params in matmul.wgsl.
type MatmulParams struct {
	M, N, K, TA, TB, AOff, BOff, COff uint32
	ABatch, BBatch, CBatch, _         uint32
	Alpha, Beta                       float32
	_, _                              uint32
}

// Mat describes how an operand is laid out in its buffer.
type Mat struct {
	Buf   *gpu.Buffer
	DType gpu.DType // F16 for A and C needs shader-f16 (see dtypeSubst)
	Off   int       // element offset of the first batch
	Batch int       // elements between batches (0: the same matrix for all)
	T     bool      // stored transposed (see matmul.wgsl)
}

// Matmul records C = alpha * op(A)·op(B) + beta*C for `batches` batches,
// with op(A) (M,K), op(B) (K,N) and C (M,N) row-major. Each operand is f32
// or f16; arithmetic and accumulation are f32, C is rounded once.
func Matmul(d *gpu.Device, c, a, b Mat, m, n, k, batches int, alpha, beta float32) error {
	if err := f16Writable(d, "matmul", "C", c.DType); err != nil {
		return err
	}
	if m <= 0 || n <= 0 || k <= 0 || batches <= 0 {
		return fmt.Errorf("wgsl: matmul: empty shape M=%d N=%d K=%d batches=%d", m, n, k, batches)
	}
	cBatch := c.Batch
	if cBatch == 0 {
		cBatch = m * n
	}
	last := func(x Mat, size int) int64 { return int64(x.Off + (batches-1)*x.Batch + size) }
	if x := last(a, m*k); a.DType.Bytes(int(x)) > a.Buf.Size() {
		return fmt.Errorf("wgsl: matmul: A needs %d %v elements, buffer holds fewer", x, a.DType)
	}
	if x := last(b, k*n); b.DType.Bytes(int(x)) > b.Buf.Size() {
		return fmt.Errorf("wgsl: matmul: B needs %d elements, buffer holds fewer", x)
	}
	if x := int64(c.Off + (batches-1)*cBatch + m*n); c.DType.Bytes(int(x)) > c.Buf.Size() {
		return fmt.Errorf("wgsl: matmul: C needs %d %v elements, buffer holds fewer", x, c.DType)
	}
	p := MatmulParams{
		M: uint32(m), N: uint32(n), K: uint32(k), TA: b2u(a.T), TB: b2u(b.T),
		AOff: uint32(a.Off), BOff: uint32(b.Off), COff: uint32(c.Off),
		ABatch: uint32(a.Batch), BBatch: uint32(b.Batch), CBatch: uint32(cBatch),
		Alpha: alpha, Beta: beta,
	}
	subst := dtypeSubst(d, nil, "A", "a", a.DType)
	dtypeSubst(d, subst, "B", "b", b.DType)
	dtypeSubst(d, subst, "C", "c", c.DType)
	variant := b.DType.String() // the all-f32 and f16-weight kernels keep their names
	if a.DType != gpu.F32 || c.DType != gpu.F32 {
		variant = dtypeName("a", a.DType, "b", b.DType, "c", c.DType)
	}
	kern, err := kernel(d, "matmul", variant, subst, []gpu.Access{rw, ro, ro}, p)
	if err != nil {
		return err
	}
	return d.Dispatch(kern, gpu.Params(p), []*gpu.Buffer{c.Buf, a.Buf, b.Buf}, uint32((n+63)/64), uint32((m+63)/64), uint32(batches))
}
