package wgsl

import (
	"fmt"
	"math"

	"github.com/lomo-dev/lomo/gpu"
)

// XentParams mirrors Params in xent.wgsl.
type XentParams struct {
	N, V, ComputeGrad, Row0 uint32
	GradScale, ClipLoss     float32
	_, _                    uint32
}

// CrossEntropy records the fused log-softmax cross-entropy of n rows of v
// logits, in place (xent.wgsl):
//
//	loss (N) f32   <- -log softmax(logits[r])[labels[r]], clamped to at most
//	                  clipLoss when clipLoss > 0 (REFERENCE §1.1)
//	logits (N,V)   <- gradScale * (softmax(logits) - onehot(label))
//
// labels (N) are i32; a negative label (-100) is ignored: loss 0, gradient 0.
// A token whose loss was clamped gets a zero gradient (the clamp's slope).
// gradScale is what the caller folds in: 1/(number of counted tokens) for a
// mean, times the loss scale. If computeGrad is false only loss is written
// and logits are left bit-identical (evaluation). A label >= v is a caller
// bug that the kernel reports as a NaN loss (no read-back happens here).
func CrossEntropy(d *gpu.Device, loss, logits, labels *gpu.Buffer, n, v int, gradScale, clipLoss float32, computeGrad bool) error {
	return CrossEntropyRows(d, loss, logits, labels, 0, n, v, gradScale, clipLoss, computeGrad)
}

// CrossEntropyRows is CrossEntropy on a chunk of rows: logits (n,V) are
// rows row0..row0+n-1 of the batch, whose labels and losses sit at row0 on
// in labels and loss.
func CrossEntropyRows(d *gpu.Device, loss, logits, labels *gpu.Buffer, row0, n, v int, gradScale, clipLoss float32, computeGrad bool) error {
	if n <= 0 || v <= 0 || row0 < 0 {
		return fmt.Errorf("wgsl: cross entropy: empty shape N=%d V=%d (from row %d)", n, v, row0)
	}
	if int64(n)*int64(v) > math.MaxUint32 {
		return fmt.Errorf("wgsl: cross entropy: N*V = %d beyond u32 indexing", int64(n)*int64(v))
	}
	for _, b := range []struct {
		name string
		buf  *gpu.Buffer
		n    int64
	}{{"loss", loss, int64(row0 + n)}, {"logits", logits, int64(n) * int64(v)}, {"labels", labels, int64(row0 + n)}} {
		if b.buf == nil {
			return fmt.Errorf("wgsl: cross entropy: nil %s buffer", b.name)
		}
		if 4*b.n > b.buf.Size() {
			return fmt.Errorf("wgsl: cross entropy: %s needs %d elements, buffer holds %d", b.name, b.n, b.buf.Size()/4)
		}
	}
	if loss == logits || loss == labels || logits == labels {
		return fmt.Errorf("wgsl: cross entropy: loss, logits and labels must be distinct buffers")
	}
	return crossEntropy(d, rowPerThread(d), loss, logits, labels, row0, n, v, gradScale, clipLoss, computeGrad)
}

// crossEntropy records CrossEntropyRows with one workgroup per row, or with
// byRows one thread per row (CPU adapters, where the workgroup's barriers
// cost more than a row's arithmetic; the same bits).
func crossEntropy(d *gpu.Device, byRows bool, loss, logits, labels *gpu.Buffer, row0, n, v int, gradScale, clipLoss float32, computeGrad bool) error {
	p := XentParams{N: uint32(n), V: uint32(v), ComputeGrad: b2u(computeGrad), Row0: uint32(row0), GradScale: gradScale, ClipLoss: clipLoss}
	entry, perWG := "", 1
	if byRows {
		entry, perWG = "main_rows", 64
	}
	k, err := entryKernel(d, "xent", entry, "", nil, []gpu.Access{rw, rw, ro}, p)
	if err != nil {
		return err
	}
	// loss (N), logits (N,V) -> dlogits (N,V).
	x, y, z := d.Grid(n, perWG)
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{loss, logits, labels}, x, y, z)
}
