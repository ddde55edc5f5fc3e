package wgsl

import (
	"fmt"
	"math"

	"github.com/lomo-dev/lomo/gpu"
)

// RMSNormParams mirrors Params in rmsnorm.wgsl (forward and backward).
type RMSNormParams struct {
	Rows, Cols uint32
	Eps        float32
	Accumulate uint32 // bit 0: backward_dw's dw +=, bit 1: backward_dx's dx +=, instead of =
}

// rmsnormWG is the workgroup size of every rmsnorm entry point; rmsnormDWCols
// the columns one backward_dw workgroup covers (rmsnorm.wgsl).
const (
	rmsnormWG     = 256
	rmsnormDWCols = 32
)

func rmsnormKernel(d *gpu.Device, entry string, xt, wt gpu.DType, bindings []gpu.Access) (*gpu.Kernel, error) {
	name := "rmsnorm/" + entry + "/" + wt.String()
	if xt != gpu.F32 {
		name += "/x" + xt.String()
	}
	if k, ok := d.CachedKernel(name); ok {
		return k, nil
	}
	subst := pairSubst(nil, "W", "w", wt)
	dtypeSubst(d, subst, "X", "x", xt)
	dtypeSubst(d, subst, "XX", "x", xt)
	outSubst(d, subst, "Y", "y", xt)
	outSubst(d, subst, "DX", "dx", xt)
	dtypeSubst(d, subst, "DY", "dy", xt)
	return d.Kernel(gpu.KernelSpec{
		Name:       name,
		Source:     Source("rmsnorm", subst),
		Entry:      entry,
		Bindings:   bindings,
		ParamsSize: gpu.ParamsSize(RMSNormParams{}),
	})
}

// rmsnormCheck validates the shapes and buffer sizes shared by forward and
// backward: the (rows, cols) buffers of dtype xt named in names, rstd
// (rows) f32, w (cols).
func rmsnormCheck(op string, rows, cols int, xt, wt gpu.DType, w, rstd *gpu.Buffer, names []string, rowsByCols ...*gpu.Buffer) error {
	if rows <= 0 || cols <= 0 {
		return fmt.Errorf("wgsl: %s: empty shape rows=%d cols=%d", op, rows, cols)
	}
	if int64(rows)*int64(cols) > math.MaxUint32 {
		return fmt.Errorf("wgsl: %s: rows*cols = %d exceeds u32 indexing", op, int64(rows)*int64(cols))
	}
	for i, b := range rowsByCols {
		name := names[i]
		if need := xt.Bytes(rows * cols); b.Size() < need {
			return fmt.Errorf("wgsl: %s: %s needs %d bytes for (%d,%d) %v, buffer holds %d", op, name, need, rows, cols, xt, b.Size())
		}
	}
	if need := 4 * int64(rows); rstd.Size() < need {
		return fmt.Errorf("wgsl: %s: rstd needs %d bytes for %d rows, buffer holds %d", op, need, rows, rstd.Size())
	}
	if need := wt.Bytes(cols); w.Size() < need {
		return fmt.Errorf("wgsl: %s: w needs %d bytes for %d %v, buffer holds %d", op, need, cols, wt, w.Size())
	}
	return nil
}

// rmsnormDistinct fails when a buffer appears twice: WebGPU forbids binding
// one buffer twice in a dispatch where one binding is writable.
func rmsnormDistinct(op string, names []string, bufs ...*gpu.Buffer) error {
	for i := range bufs {
		for j := i + 1; j < len(bufs); j++ {
			if bufs[i] == bufs[j] {
				return fmt.Errorf("wgsl: %s: %s and %s are the same buffer (no in-place variant)", op, names[i], names[j])
			}
		}
	}
	return nil
}

// RMSNormForward records y = x / sqrt(mean(x²) + eps) * w over each row of
// x (rows, cols), and saves rstd (rows) f32 = 1/sqrt(mean(x²) + eps) for
// the backward. x and y are of dtype xt, w (cols) of wt (f32 or f16).
// y, rstd, x, w must be distinct buffers.
func RMSNormForward(d *gpu.Device, y, rstd, x, w *gpu.Buffer, xt, wt gpu.DType, rows, cols int, eps float32) error {
	const op = "rmsnorm"
	if err := rmsnormCheck(op, rows, cols, xt, wt, w, rstd, []string{"y", "x"}, y, x); err != nil {
		return err
	}
	if err := f16Writable(d, op, "y", xt); err != nil {
		return err
	}
	if !(eps >= 0) || math.IsInf(float64(eps), 0) {
		return fmt.Errorf("wgsl: %s: eps %v, want a finite value >= 0", op, eps)
	}
	if err := rmsnormDistinct(op, []string{"y", "rstd", "x", "w"}, y, rstd, x, w); err != nil {
		return err
	}
	return rmsnormForward(d, rowPerThread(d), y, rstd, x, w, xt, wt, rows, cols, eps)
}

func rmsnormForward(d *gpu.Device, byRows bool, y, rstd, x, w *gpu.Buffer, xt, wt gpu.DType, rows, cols int, eps float32) error {
	entry, wg := "forward", rmsnormWG // one workgroup per row
	if byRows {
		entry, wg = "forward_rows", 1 // one thread per row
	}
	k, err := rmsnormKernel(d, entry, xt, wt, []gpu.Access{rw, rw, ro, ro})
	if err != nil {
		return err
	}
	p := RMSNormParams{Rows: uint32(rows), Cols: uint32(cols), Eps: eps}
	gx, gy, gz := rmsnormGrid(d, rows, wg)
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{y, rstd, x, w}, gx, gy, gz)
}

// rmsnormGrid is the grid of a per-row kernel: workgroups of 256 threads
// per row, or of 64 rows (one thread each) when perRow is 1.
func rmsnormGrid(d *gpu.Device, rows, perRow int) (uint32, uint32, uint32) {
	if perRow == 1 {
		return d.Grid(rows, 64)
	}
	return d.Grid(rows*perRow, perRow)
}

// RMSNormBackward records the gradients of RMSNormForward: dx (rows, cols)
// is overwritten with dL/dx; dw (cols) f32 gets the sum over rows of
// dy*x*rstd, added to its contents if accumulate, else stored. rstd is what
// the forward saved; dx, dy and x are of dtype xt. Two dispatches (dx per
// row, dw per column block), both deterministic. All buffers must be
// distinct.
func RMSNormBackward(d *gpu.Device, dx, dw, dy, x, w, rstd *gpu.Buffer, xt, wt gpu.DType, rows, cols int, accumulate bool) error {
	return rmsnormBackward(d, rowPerThread(d), dx, dw, dy, x, w, rstd, xt, wt, rows, cols, false, accumulate)
}

// RMSNormBackwardAdd is RMSNormBackward with dL/dx added to dx (the
// gradient of a residual stream, which has one already) in the same
// dispatch: no temporary, no separate add.
func RMSNormBackwardAdd(d *gpu.Device, dx, dw, dy, x, w, rstd *gpu.Buffer, xt, wt gpu.DType, rows, cols int, accumulate bool) error {
	return rmsnormBackward(d, rowPerThread(d), dx, dw, dy, x, w, rstd, xt, wt, rows, cols, true, accumulate)
}

func rmsnormBackward(d *gpu.Device, byRows bool, dx, dw, dy, x, w, rstd *gpu.Buffer, xt, wt gpu.DType, rows, cols int, accDX, accumulate bool) error {
	const op = "rmsnorm backward"
	if err := rmsnormCheck(op, rows, cols, xt, wt, w, rstd, []string{"dx", "dy", "x"}, dx, dy, x); err != nil {
		return err
	}
	if err := f16Writable(d, op, "dx", xt); err != nil {
		return err
	}
	if need := 4 * int64(cols); dw.Size() < need {
		return fmt.Errorf("wgsl: %s: dw needs %d bytes for %d f32, buffer holds %d", op, need, cols, dw.Size())
	}
	if err := rmsnormDistinct(op, []string{"dx", "dw", "dy", "x", "w", "rstd"}, dx, dw, dy, x, w, rstd); err != nil {
		return err
	}
	access := []gpu.Access{rw, rw, ro, ro, ro, ro}
	entry, wg := "backward_dx", rmsnormWG
	if byRows {
		entry, wg = "backward_dx_rows", 1
	}
	kdx, err := rmsnormKernel(d, entry, xt, wt, access)
	if err != nil {
		return err
	}
	kdw, err := rmsnormKernel(d, "backward_dw", xt, wt, access)
	if err != nil {
		return err
	}
	p := gpu.Params(RMSNormParams{Rows: uint32(rows), Cols: uint32(cols), Accumulate: b2u(accumulate) | b2u(accDX)<<1})
	bufs := []*gpu.Buffer{dx, dw, x, w, dy, rstd}
	gx, gy, gz := rmsnormGrid(d, rows, wg)
	if err := d.Dispatch(kdx, p, bufs, gx, gy, gz); err != nil {
		return err
	}
	blocks := (cols + rmsnormDWCols - 1) / rmsnormDWCols
	gx, gy, gz = d.Grid(blocks*rmsnormWG, rmsnormWG) // one workgroup per 32 columns
	return d.Dispatch(kdw, p, bufs, gx, gy, gz)
}
