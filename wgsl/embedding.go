package wgsl

import (
	"fmt"
	"math"

	"github.com/lomo-dev/lomo/gpu"
)

// EmbeddingParams mirrors Params in embedding.wgsl.
type EmbeddingParams struct {
	N, C, Vocab uint32
	_           uint32
}

func embeddingKernel(d *gpu.Device, entry string, tt, xt gpu.DType) (*gpu.Kernel, error) {
	name := "embedding/" + entry + "/" + tt.String()
	if xt != gpu.F32 {
		name += "/x" + xt.String()
	}
	if k, ok := d.CachedKernel(name); ok {
		return k, nil
	}
	subst := pairSubst(nil, "T", "table", tt)
	dtypeSubst(d, subst, "X", "x", xt)
	outSubst(d, subst, "OUT", "out", xt)
	dtypeSubst(d, subst, "DOUT", "dout", xt)
	return d.Kernel(gpu.KernelSpec{
		Name:       name,
		Source:     Source("embedding", subst),
		Entry:      entry,
		Bindings:   []gpu.Access{rw, ro, ro},
		ParamsSize: gpu.ParamsSize(EmbeddingParams{}),
	})
}

func embeddingCheck(op string, n, c, vocab int) error {
	if n <= 0 || c <= 0 || vocab <= 0 {
		return fmt.Errorf("wgsl: %s: empty shape n=%d c=%d vocab=%d", op, n, c, vocab)
	}
	if int64(n)*int64(c) > math.MaxUint32 || int64(vocab)*int64(c) > math.MaxUint32 {
		return fmt.Errorf("wgsl: %s: (%d,%d) or (%d,%d) exceeds u32 indexing", op, n, c, vocab, c)
	}
	return nil
}

// EmbeddingForward records out (n, c) of dtype xt = rows ids[i] of table
// (vocab, c), f32 or f16 (tt); ids is a u32 buffer of n. An id >= vocab
// gives a row of zeros (a kernel cannot fail; the host validates ids
// beforehand).
func EmbeddingForward(d *gpu.Device, out, table, ids *gpu.Buffer, tt, xt gpu.DType, n, c, vocab int) error {
	const op = "embedding"
	if err := embeddingCheck(op, n, c, vocab); err != nil {
		return err
	}
	if need := xt.Bytes(n * c); out.Size() < need {
		return fmt.Errorf("wgsl: %s: out needs %d bytes for (%d,%d) %v, buffer holds %d", op, need, n, c, xt, out.Size())
	}
	if err := f16Writable(d, op, "out", xt); err != nil {
		return err
	}
	if need := tt.Bytes(vocab * c); table.Size() < need {
		return fmt.Errorf("wgsl: %s: table needs %d bytes for (%d,%d) %v, buffer holds %d", op, need, vocab, c, tt, table.Size())
	}
	if need := 4 * int64(n); ids.Size() < need {
		return fmt.Errorf("wgsl: %s: ids needs %d bytes for %d u32, buffer holds %d", op, need, n, ids.Size())
	}
	if err := rmsnormDistinct(op, []string{"out", "table", "ids"}, out, table, ids); err != nil {
		return err
	}
	k, err := embeddingKernel(d, "forward", tt, xt)
	if err != nil {
		return err
	}
	p := EmbeddingParams{N: uint32(n), C: uint32(c), Vocab: uint32(vocab)}
	gx, gy, gz := d.Grid(n*c, 256) // one thread per output element
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{out, table, ids}, gx, gy, gz)
}

// EmbeddingBackward records dtable[ids[i]] += dout[i] for i = 0..n-1, with
// dtable (vocab, c) f32 and dout (n, c) of dtype xt; if !accumulate dtable
// is zeroed first (one more dispatch). Repeated ids sum in f32, in the
// order of i: deterministic, no atomics. Ids >= vocab are skipped.
func EmbeddingBackward(d *gpu.Device, dtable, dout, ids *gpu.Buffer, xt gpu.DType, n, c, vocab int, accumulate bool) error {
	const op = "embedding backward"
	if err := embeddingCheck(op, n, c, vocab); err != nil {
		return err
	}
	if need := 4 * int64(vocab) * int64(c); dtable.Size() < need {
		return fmt.Errorf("wgsl: %s: dtable needs %d bytes for (%d,%d) f32, buffer holds %d", op, need, vocab, c, dtable.Size())
	}
	if need := xt.Bytes(n * c); dout.Size() < need {
		return fmt.Errorf("wgsl: %s: dout needs %d bytes for (%d,%d) %v, buffer holds %d", op, need, n, c, xt, dout.Size())
	}
	// The module's forward writes out in xt: f16 needs shader-f16 even
	// for this read-only use (16-bit activations exist only there).
	if err := f16Writable(d, op, "dout", xt); err != nil {
		return err
	}
	if need := 4 * int64(n); ids.Size() < need {
		return fmt.Errorf("wgsl: %s: ids needs %d bytes for %d u32, buffer holds %d", op, need, n, ids.Size())
	}
	if err := rmsnormDistinct(op, []string{"dtable", "dout", "ids"}, dtable, dout, ids); err != nil {
		return err
	}
	p := gpu.Params(EmbeddingParams{N: uint32(n), C: uint32(c), Vocab: uint32(vocab)})
	bufs := []*gpu.Buffer{dtable, dout, ids}
	if !accumulate {
		kz, err := embeddingKernel(d, "zero", gpu.F32, xt)
		if err != nil {
			return err
		}
		gx, gy, gz := d.Grid(vocab*c, 256) // one thread per table element
		if err := d.Dispatch(kz, p, bufs, gx, gy, gz); err != nil {
			return err
		}
	}
	k, err := embeddingKernel(d, "backward", gpu.F32, xt)
	if err != nil {
		return err
	}
	gx, gy, gz := d.Grid(c, 64) // one thread per column
	return d.Dispatch(k, p, bufs, gx, gy, gz)
}
