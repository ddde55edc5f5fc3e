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
	V0                      uint32 // CrossEntropyBlockGrad's first column
	_                       uint32
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
	if err := checkXent(loss, logits, labels, row0, n, v); err != nil {
		return err
	}
	return crossEntropy(d, rowPerThread(d), loss, logits, labels, row0, n, v, gradScale, clipLoss, computeGrad)
}

// checkXent checks CrossEntropyRows's buffers and shape.
func checkXent(loss, logits, labels *gpu.Buffer, row0, n, v int) error {
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
	return nil
}

// xentBindings places Params and row_stats's stats for every entry point of
// xent.wgsl but row_stats.
var xentBindings = map[string]string{"P_BINDING": "3", "STATS_BINDING": "4"}

// crossEntropy records CrossEntropyRows with one workgroup per row, or with
// byRows one thread per row (CPU adapters, where the workgroup's barriers
// cost more than a row's arithmetic; the same bits).
func crossEntropy(d *gpu.Device, byRows bool, loss, logits, labels *gpu.Buffer, row0, n, v int, gradScale, clipLoss float32, computeGrad bool) error {
	p := XentParams{N: uint32(n), V: uint32(v), ComputeGrad: b2u(computeGrad), Row0: uint32(row0), GradScale: gradScale, ClipLoss: clipLoss}
	entry, perWG := "", 1
	if byRows {
		entry, perWG = "main_rows", 64
	}
	k, err := entryKernel(d, "xent", entry, "", xentBindings, []gpu.Access{rw, rw, ro}, p)
	if err != nil {
		return err
	}
	// loss (N), logits (N,V) -> dlogits (N,V).
	x, y, z := d.Grid(n, perWG)
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{loss, logits, labels}, x, y, z)
}

// CrossEntropyStats is CrossEntropyRows without the gradient (logits are
// left as they are) that also writes two f32 per row into stats, at
// 2*(row0+r): the row's log-sum-exp and its gradient scale (gradScale; 0
// for an ignored or clamped token; NaN for a label >= v), from which
// CrossEntropyBlockGrad computes the gradient of any block of its columns
// later. The losses are CrossEntropyRows's bit for bit. (One workgroup per
// row on every adapter: its bits are those of the row per thread too.)
func CrossEntropyStats(d *gpu.Device, loss, stats, logits, labels *gpu.Buffer, row0, n, v int, gradScale, clipLoss float32) error {
	if err := checkXent(loss, logits, labels, row0, n, v); err != nil {
		return err
	}
	if stats == nil || stats == loss || stats == logits || stats == labels {
		return fmt.Errorf("wgsl: cross entropy: stats must be a buffer of its own")
	}
	if need := 8 * int64(row0+n); need > stats.Size() {
		return fmt.Errorf("wgsl: cross entropy: stats needs %d bytes for rows up to %d, buffer holds %d", need, row0+n, stats.Size())
	}
	p := XentParams{N: uint32(n), V: uint32(v), Row0: uint32(row0), GradScale: gradScale, ClipLoss: clipLoss}
	k, err := entryKernel(d, "xent", "row_stats", "", map[string]string{"P_BINDING": "4", "STATS_BINDING": "3"}, []gpu.Access{rw, rw, ro, rw}, p)
	if err != nil {
		return err
	}
	x, y, z := d.Grid(n, 1)
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{loss, logits, labels, stats}, x, y, z)
}

// CrossEntropyBlockGrad turns logits (n, vb), columns v0..v0+vb-1 of rows
// row0..row0+n-1, into their gradients, in place, from the stats that
// CrossEntropyStats wrote for those rows: the values CrossEntropyRows
// writes in those columns, bit for bit.
func CrossEntropyBlockGrad(d *gpu.Device, logits, stats, labels *gpu.Buffer, row0, n, v0, vb int) error {
	if n <= 0 || vb <= 0 || row0 < 0 || v0 < 0 {
		return fmt.Errorf("wgsl: cross entropy block: empty shape N=%d VB=%d (from row %d, column %d)", n, vb, row0, v0)
	}
	if int64(n)*int64(vb) > math.MaxUint32 {
		return fmt.Errorf("wgsl: cross entropy block: N*VB = %d beyond u32 indexing", int64(n)*int64(vb))
	}
	for _, b := range []struct {
		name string
		buf  *gpu.Buffer
		n    int64
	}{{"logits", logits, int64(n) * int64(vb)}, {"stats", stats, 2 * int64(row0+n)}, {"labels", labels, int64(row0 + n)}} {
		if b.buf == nil {
			return fmt.Errorf("wgsl: cross entropy block: nil %s buffer", b.name)
		}
		if 4*b.n > b.buf.Size() {
			return fmt.Errorf("wgsl: cross entropy block: %s needs %d elements, buffer holds %d", b.name, b.n, b.buf.Size()/4)
		}
	}
	if logits == stats || logits == labels {
		return fmt.Errorf("wgsl: cross entropy block: logits, stats and labels must be distinct buffers")
	}
	p := XentParams{N: uint32(n), V: uint32(vb), Row0: uint32(row0), V0: uint32(v0)}
	k, err := entryKernel(d, "xent", "block_grad", "", xentBindings, []gpu.Access{rw, ro, ro}, p)
	if err != nil {
		return err
	}
	x, y, z := d.Grid(n*vb, 256)
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{logits, stats, labels}, x, y, z)
}
