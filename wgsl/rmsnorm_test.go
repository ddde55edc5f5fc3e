package wgsl

import (
	"fmt"
	"math"
	"testing"
	"unsafe"

	"github.com/lomo-dev/lomo/gpu"
)

// rmsnormU is the f32 unit roundoff, 2^-24: the scale of every rmsnorm tolerance.
const rmsnormU = 0x1p-24

// refRMSNorm: y = x / sqrt(mean(x²) + eps) * w per row, in float64, with
// rstd = 1/sqrt(mean(x²) + eps).
func refRMSNorm(x, w []float64, rows, cols int, eps float64) (y, rstd []float64) {
	y = make([]float64, rows*cols)
	rstd = make([]float64, rows)
	for r := 0; r < rows; r++ {
		row := x[r*cols : (r+1)*cols]
		ss := 0.0
		for _, v := range row {
			ss += v * v
		}
		rstd[r] = 1 / math.Sqrt(ss/float64(cols)+eps)
		for j, v := range row {
			y[r*cols+j] = v * rstd[r] * w[j]
		}
	}
	return y, rstd
}

// refRMSNormBackward: dx and dw = sum over rows of dy*x*rstd, in float64.
// With s = sum_j dy_j w_j x_j, dx_j = rstd*w_j*dy_j - rstd³ x_j s / C.
func refRMSNormBackward(dy, x, w []float64, rows, cols int, eps float64) (dx, dw []float64) {
	_, rstd := refRMSNorm(x, w, rows, cols, eps)
	dx = make([]float64, rows*cols)
	dw = make([]float64, cols)
	for r := 0; r < rows; r++ {
		rs := rstd[r]
		s := 0.0
		for j := 0; j < cols; j++ {
			i := r*cols + j
			s += dy[i] * w[j] * x[i]
			dw[j] += dy[i] * x[i] * rs
		}
		for j := 0; j < cols; j++ {
			i := r*cols + j
			dx[i] = rs*w[j]*dy[i] - rs*rs*rs*x[i]*s/float64(cols)
		}
	}
	return dx, dw
}

// rmsnormWithin fails where |got-want| > bound[i] (an error bound computed
// per element from the magnitudes of the terms that make it), NaN-aware.
func rmsnormWithin(t *testing.T, what string, got, want, bound []float64) {
	t.Helper()
	bad := 0
	for i := range want {
		g, w := got[i], want[i]
		ok := math.Abs(g-w) <= bound[i]
		if math.IsNaN(g) || math.IsNaN(w) {
			ok = math.IsNaN(g) && math.IsNaN(w)
		}
		if !ok {
			if bad < 5 {
				t.Errorf("%s[%d]: got %.8g, want %.8g (bound %.2e)", what, i, g, w, bound[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values out of bound", what, bad, len(want))
	}
}

func TestRMSNormParamsLayout(t *testing.T) {
	// Params in rmsnorm.wgsl: rows, cols, eps, accumulate; 4 bytes each.
	if got := unsafe.Sizeof(RMSNormParams{}); got != 16 {
		t.Errorf("RMSNormParams is %d bytes, WGSL Params is 16", got)
	}
	if got := unsafe.Offsetof(RMSNormParams{}.Eps); got != 8 {
		t.Errorf("Eps at %d, WGSL at 8", got)
	}
	if got := unsafe.Offsetof(RMSNormParams{}.Accumulate); got != 12 {
		t.Errorf("Accumulate at %d, WGSL at 12", got)
	}
}

var rmsnormCases = []struct {
	rows, cols int
	wt         gpu.DType
	xscale     float64
	xt         gpu.DType // x, y, dy, dx
}{
	{1, 64, gpu.F32, 1, gpu.F32},
	{3, 100, gpu.F32, 1, gpu.F32},   // cols not a multiple of the workgroup
	{5, 257, gpu.F16, 1, gpu.F32},   // one element past the workgroup
	{2, 1000, gpu.F32, 30, gpu.F32}, // large activations
	{7, 513, gpu.F16, 0.01, gpu.F32},
	{33, 70, gpu.F32, 1, gpu.F32}, // dw: rows not a multiple of 8 lanes, cols of 32
	{2, 8192, gpu.F16, 1, gpu.F32},
	// 16-bit activations
	{3, 100, gpu.F32, 1, gpu.F16},
	{5, 257, gpu.F16, 1, gpu.F16},
	{33, 70, gpu.F16, 30, gpu.F16},
	// bf16 models (odd C: rows share a u32 pair of y and dx)
	{5, 257, gpu.BF16, 1, gpu.BF16},
	{33, 70, gpu.BF16, 30, gpu.BF16},
	{3, 100, gpu.BF16, 1, gpu.F32},
}

func TestRMSNormForward(t *testing.T) {
	for ci, tc := range rmsnormCases {
		t.Run(fmt.Sprintf("R%d_C%d_%v_x%v", tc.rows, tc.cols, tc.wt, tc.xt), func(t *testing.T) {
			needF16(t, tc.xt)
			r := rng(uint64(100 + ci))
			R, C := tc.rows, tc.cols
			const eps = 1e-5
			x := roundTo(randn(r, R*C, tc.xscale), tc.xt)
			w := randn(r, C, 0.2)
			for i := range w {
				w[i] += 1
			}
			w = roundTo(w, tc.wt)
			xb, wb := upload(t, x, tc.xt), upload(t, w, tc.wt)
			yb, rb := outputOf(t, R*C, tc.xt), output(t, R)
			if err := RMSNormForward(dev, yb, rb, xb, wb, tc.xt, tc.wt, R, C, eps); err != nil {
				t.Fatal(err)
			}
			y, rstd := refRMSNorm(x, w, R, C, eps)
			// Sum of C positive squares: C/256 serial adds per thread, 8 tree
			// levels, each a relative 2^-24; inverseSqrt 2 ulp (Vulkan), then
			// two products and the rounding of y. Twice that, for margin.
			rtol := 2 * (float64(C)/256 + 8 + 8) * rmsnormU
			assertClose(t, "rstd", download(t, rb, R, gpu.F32), rstd, tol{Atol: 0, Rtol: rtol})
			// A 16-bit y adds its rounding (and f16's subnormals an
			// absolute 2^-25).
			ytol := tol{Atol: 0, Rtol: rtol}
			if tc.xt == gpu.F16 {
				ytol = tol{Atol: 0x1p-25, Rtol: rtol + 0x1p-11}
			} else if tc.xt == gpu.BF16 {
				ytol = tol{Atol: 0, Rtol: rtol + 0x1p-8}
			}
			assertClose(t, "y", download(t, yb, R*C, tc.xt), y, ytol)
		})
	}
}

func TestRMSNormBackward(t *testing.T) {
	for ci, tc := range rmsnormCases {
		for _, acc := range []bool{false, true} {
			t.Run(fmt.Sprintf("R%d_C%d_%v_x%v_acc%v", tc.rows, tc.cols, tc.wt, tc.xt, acc), func(t *testing.T) {
				needF16(t, tc.xt)
				r := rng(uint64(200 + ci))
				R, C := tc.rows, tc.cols
				const eps = 1e-5
				x := roundTo(randn(r, R*C, tc.xscale), tc.xt)
				w := roundTo(randn(r, C, 1), tc.wt)
				dy := roundTo(randn(r, R*C, 1), tc.xt)
				dw0 := roundTo(randn(r, C, 1), gpu.F32)
				// rstd as the forward computes it in f32 would differ from the
				// float64 one by ~rtol above; feed the float64 one, rounded.
				_, rstd := refRMSNorm(x, w, R, C, eps)
				rstd = roundTo(rstd, gpu.F32)
				xb, wb, dyb, rb := upload(t, x, tc.xt), upload(t, w, tc.wt), upload(t, dy, tc.xt), upload(t, rstd, gpu.F32)
				// acc: dw accumulates, and dx too (RMSNormBackwardAdd,
				// onto the residual stream's gradient dx0).
				dx0 := roundTo(randn(r, R*C, 1), tc.xt)
				dxb := outputOf(t, R*C, tc.xt)
				dwb := output(t, C)
				backward := RMSNormBackward
				if acc {
					dwb = outputWith(t, dw0)
					dxb = upload(t, dx0, tc.xt)
					backward = RMSNormBackwardAdd
				}
				if err := backward(dev, dxb, dwb, dyb, xb, wb, rb, tc.xt, tc.wt, R, C, acc); err != nil {
					t.Fatal(err)
				}
				dx, dw := refRMSNormBackward(dy, x, w, R, C, eps)
				if acc {
					for j := range dw {
						dw[j] += dw0[j]
					}
				}
				// dx_j = r*(w_j dy_j - x_j k), k = r² s / C: s sums C terms
				// that may cancel, so its error is bounded by the sum of
				// |terms| times (C/256 + 8) roundings; the bound of dx_j is
				// that carried through, plus a few roundings of each term.
				dxBound := make([]float64, R*C)
				for row := 0; row < R; row++ {
					rs := rstd[row]
					abs := 0.0
					for j := 0; j < C; j++ {
						i := row*C + j
						abs += math.Abs(dy[i] * w[j] * x[i])
					}
					kAbs := rs * rs * abs / float64(C)
					for j := 0; j < C; j++ {
						i := row*C + j
						terms := rs * (math.Abs(w[j]*dy[i]) + math.Abs(x[i])*kAbs)
						dxBound[i] = 2 * (float64(C)/256 + 8 + 8) * rmsnormU * terms
					}
				}
				// dw_j: each of 8 lanes sums R/8 products, then 8 lanes in
				// order, (+ dw0): (R/8 + 8 + 4) roundings of sum |terms|.
				dwBound := make([]float64, C)
				for j := 0; j < C; j++ {
					abs := math.Abs(dw0[j])
					if !acc {
						abs = 0
					}
					for row := 0; row < R; row++ {
						i := row*C + j
						abs += math.Abs(dy[i] * x[i] * rstd[row])
					}
					dwBound[j] = 2 * (float64(R)/8 + 8 + 4) * rmsnormU * abs
				}
				if acc { // dx0 + dx, one more rounding
					for i := range dx {
						dx[i] += dx0[i]
						dxBound[i] += rmsnormU * math.Abs(dx[i])
					}
				}
				if tc.xt.Half() { // dx's own rounding to 16 bits
					for i := range dxBound {
						dxBound[i] += rounding(tc.xt)*math.Abs(dx[i]) + 0x1p-25
					}
				}
				rmsnormWithin(t, "dx", download(t, dxb, R*C, tc.xt), dx, dxBound)
				rmsnormWithin(t, "dw", download(t, dwb, C, gpu.F32), dw, dwBound)
			})
		}
	}
}

// TestRMSNormBackwardCentralDiff checks the formula: with L = sum(y * g)
// for random g (so dy = g), dL/dx and dL/dw by central differences of the
// float64 forward against the float64 backward, and against the kernel.
func TestRMSNormBackwardCentralDiff(t *testing.T) {
	for ci, tc := range []struct {
		rows, cols int
		wt         gpu.DType
	}{{1, 4, gpu.F32}, {3, 5, gpu.F32}, {2, 7, gpu.F16}, {2, 7, gpu.BF16}} {
		t.Run(fmt.Sprintf("R%d_C%d_%v", tc.rows, tc.cols, tc.wt), func(t *testing.T) {
			r := rng(uint64(300 + ci))
			R, C := tc.rows, tc.cols
			const eps = 1e-5
			x := roundTo(randn(r, R*C, 1), gpu.F32)
			w := roundTo(randn(r, C, 1), tc.wt)
			g := roundTo(randn(r, R*C, 1), gpu.F32)
			lossX := func(xx []float64) float64 { y, _ := refRMSNorm(xx, w, R, C, eps); return dot(y, g) }
			lossW := func(ww []float64) float64 { y, _ := refRMSNorm(x, ww, R, C, eps); return dot(y, g) }
			// h = 1e-4: truncation error ~h² * (third derivative ~1) = 1e-8,
			// cancellation ~1e-16/h = 1e-12.
			numDx := centralDiff(lossX, x, 1e-4)
			numDw := centralDiff(lossW, w, 1e-4)
			dx, dw := refRMSNormBackward(g, x, w, R, C, eps)
			assertClose(t, "ref dx vs central diff", dx, numDx, tol{Atol: 1e-7, Rtol: 1e-6})
			assertClose(t, "ref dw vs central diff", dw, numDw, tol{Atol: 1e-7, Rtol: 1e-6})

			_, rstd := refRMSNorm(x, w, R, C, eps)
			xb, wb, gb, rb := upload(t, x, gpu.F32), upload(t, w, tc.wt), upload(t, g, gpu.F32), upload(t, rstd, gpu.F32)
			dxb, dwb := output(t, R*C), output(t, C)
			if err := RMSNormBackward(dev, dxb, dwb, gb, xb, wb, rb, gpu.F32, tc.wt, R, C, false); err != nil {
				t.Fatal(err)
			}
			// f32 kernel on unit-scale data of a few terms: ~1e-6 absolute;
			// 1e-5 leaves room for the 1e-8 of the difference quotient.
			assertClose(t, "dx vs central diff", download(t, dxb, R*C, gpu.F32), numDx, tol{Atol: 1e-5, Rtol: 1e-5})
			assertClose(t, "dw vs central diff", download(t, dwb, C, gpu.F32), numDw, tol{Atol: 1e-5, Rtol: 1e-5})
		})
	}
}

// TestRMSNormRowsFold runs more rows than one grid dimension holds when the
// device limit is 65535 workgroups: rows fold into y.
func TestRMSNormRowsFold(t *testing.T) {
	if testing.Short() {
		t.Skip("66000 rows take ~1 s on a CPU adapter; skipped in -short")
	}
	R, C := 66000, 2
	if _, gy, _ := dev.Grid(R*rmsnormWG, rmsnormWG); gy < 2 {
		t.Logf("this adapter allows %d workgroups per dimension: %d rows do not fold", dev.Limits().MaxWorkgroupsPerDimension, R)
	}
	r := rng(400)
	x := roundTo(randn(r, R*C, 1), gpu.F32)
	w := []float64{1, -2}
	xb, wb := upload(t, x, gpu.F32), upload(t, w, gpu.F32)
	yb, rb := output(t, R*C), output(t, R)
	if err := RMSNormForward(dev, yb, rb, xb, wb, gpu.F32, gpu.F32, R, C, 1e-6); err != nil {
		t.Fatal(err)
	}
	y, rstd := refRMSNorm(x, w, R, C, 1e-6)
	// Two squares: a few roundings, the same bound as TestRMSNormForward.
	assertClose(t, "rstd", download(t, rb, R, gpu.F32), rstd, tol{Rtol: 40 * rmsnormU})
	assertClose(t, "y", download(t, yb, R*C, gpu.F32), y, tol{Rtol: 40 * rmsnormU})
}

func TestRMSNormRejects(t *testing.T) {
	x := output(t, 12)
	y := output(t, 12)
	rs := output(t, 3)
	w := output(t, 4)
	dw := output(t, 4)
	if err := RMSNormForward(dev, y, rs, x, w, gpu.F32, gpu.F32, 3, 5, 1e-5); err == nil {
		t.Error("forward with x too small for (3,5) succeeded")
	}
	if err := RMSNormForward(dev, y, rs, x, w, gpu.F32, gpu.F32, 4, 3, 1e-5); err == nil {
		t.Error("forward with rstd too small for 4 rows succeeded")
	}
	if err := RMSNormForward(dev, x, rs, x, w, gpu.F32, gpu.F32, 3, 4, 1e-5); err == nil {
		t.Error("forward in place (y == x) succeeded")
	}
	if err := RMSNormForward(dev, y, rs, x, w, gpu.F32, gpu.F32, 3, 4, -1); err == nil {
		t.Error("forward with eps < 0 succeeded")
	}
	if err := RMSNormBackward(dev, y, dw, x, x, w, rs, gpu.F32, gpu.F32, 3, 4, false); err == nil {
		t.Error("backward with dy == x succeeded")
	}
	if err := RMSNormBackward(dev, y, dw, x, output(t, 12), w, rs, gpu.F32, gpu.F32, 3, 4, false); err != nil {
		t.Errorf("backward with valid buffers: %v", err)
	}
	if err := RMSNormBackward(dev, y, output(t, 3), x, output(t, 12), w, rs, gpu.F32, gpu.F32, 3, 4, false); err == nil {
		t.Error("backward with dw too small for 4 columns succeeded")
	}
	sync(t)
}

// TestRMSNormRowKernels: the one-thread-per-row forward and backward_dx
// (CPU adapters) give the workgroup kernels' bits, y, rstd and dx, also
// added to a gradient (RMSNormBackwardAdd), on every case (columns below,
// at and past the 256 partial sums, f16 included); in f32 the added dx is
// dx0 + dx.
func TestRMSNormRowKernels(t *testing.T) {
	for ci, tc := range rmsnormCases {
		t.Run(fmt.Sprintf("R%d_C%d_%v_x%v", tc.rows, tc.cols, tc.wt, tc.xt), func(t *testing.T) {
			needF16(t, tc.xt)
			r := rng(uint64(500 + ci))
			R, C := tc.rows, tc.cols
			x := roundTo(randn(r, R*C, tc.xscale), tc.xt)
			w := roundTo(randn(r, C, 1), tc.wt)
			dy := roundTo(randn(r, R*C, 1), tc.xt)
			xb, wb, dyb := upload(t, x, tc.xt), upload(t, w, tc.wt), upload(t, dy, tc.xt)
			dx0 := roundTo(randn(r, R*C, 1), tc.xt)
			var got [2][4][]float64
			for i, byRows := range []bool{false, true} {
				yb, rb := outputOf(t, R*C, tc.xt), output(t, R)
				if err := rmsnormForward(dev, byRows, yb, rb, xb, wb, tc.xt, tc.wt, R, C, 1e-5); err != nil {
					t.Fatal(err)
				}
				dxb, dwb := outputOf(t, R*C, tc.xt), output(t, C)
				if err := rmsnormBackward(dev, byRows, dxb, dwb, dyb, xb, wb, rb, tc.xt, tc.wt, R, C, false, false); err != nil {
					t.Fatal(err)
				}
				addb := upload(t, dx0, tc.xt)
				if err := rmsnormBackward(dev, byRows, addb, output(t, C), dyb, xb, wb, rb, tc.xt, tc.wt, R, C, true, false); err != nil {
					t.Fatal(err)
				}
				got[i] = [4][]float64{download(t, yb, R*C, tc.xt), download(t, rb, R, gpu.F32), download(t, dxb, R*C, tc.xt), download(t, addb, R*C, tc.xt)}
			}
			for k, name := range []string{"y", "rstd", "dx", "dx added"} {
				assertSameBits(t, name+" by rows against by workgroups", got[1][k], got[0][k])
			}
			if tc.xt == gpu.F32 {
				sum := make([]float64, R*C)
				for i := range sum {
					sum[i] = float64(float32(dx0[i]) + float32(got[0][2][i]))
				}
				assertSameBits(t, "dx added against dx0 + dx", got[0][3], sum)
			}
		})
	}
}
