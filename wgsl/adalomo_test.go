package wgsl

import (
	"fmt"
	"math"
	"testing"
	"unsafe"

	"github.com/lomo-dev/lomo/gpu"
)

// refAdaLomo is one AdaLomo step in float64 (REFERENCE §3), written after
// HF Adafactor (beta1 off, relative_step off, scale_parameter on):
// _approx_sq_grad's rsqrt(r / mean(r)) outer rsqrt(c), then the RMS clip and
// the parameter-scaled learning rate. c == nil selects the unfactored state
// v = r. r and c are updated in place; the new parameter values (before
// rounding to the storage dtype) are returned.
func refAdaLomo(param, grad, r, c []float64, rows, cols int, s AdaLomoStep) []float64 {
	n := rows * cols
	beta := float64(s.Beta)
	g := make([]float64, n)
	G := make([]float64, n)
	for i := range g {
		g[i] = grad[i] * float64(s.InvScale) * float64(s.ClipCoef)
		G[i] = g[i]*g[i] + float64(s.Eps1)
	}
	u := make([]float64, n)
	if c == nil {
		for i := range u {
			r[i] = beta*r[i] + (1-beta)*G[i]
			u[i] = g[i] / math.Sqrt(r[i])
		}
	} else {
		for i := 0; i < rows; i++ {
			m := 0.0
			for j := 0; j < cols; j++ {
				m += G[i*cols+j]
			}
			r[i] = beta*r[i] + (1-beta)*m/float64(cols)
		}
		for j := 0; j < cols; j++ {
			m := 0.0
			for i := 0; i < rows; i++ {
				m += G[i*cols+j]
			}
			c[j] = beta*c[j] + (1-beta)*m/float64(rows)
		}
		meanR := 0.0
		for _, x := range r {
			meanR += x
		}
		meanR /= float64(rows)
		for i := 0; i < rows; i++ {
			for j := 0; j < cols; j++ {
				u[i*cols+j] = g[i*cols+j] / math.Sqrt(r[i]/meanR) / math.Sqrt(c[j])
			}
		}
	}
	rms := func(v []float64) float64 {
		s := 0.0
		for _, x := range v {
			s += x * x
		}
		return math.Sqrt(s / float64(len(v)))
	}
	div := math.Max(1, rms(u)/float64(s.ClipThreshold))
	lrT := float64(s.LR) * math.Max(float64(s.Eps2), rms(param[:n]))
	out := make([]float64, n)
	for i := range out {
		out[i] = param[i]*(1-lrT*float64(s.WeightDecay)) - lrT*u[i]/div
	}
	return out
}

func TestAdaLomoParamsLayout(t *testing.T) {
	// Params in adalomo.wgsl: 8 u32 (rows .. _p1), then 8 f32 (lr .. clip_coef).
	if got := unsafe.Sizeof(AdaLomoParams{}); got != 64 {
		t.Errorf("AdaLomoParams is %d bytes, WGSL Params is 64", got)
	}
	for _, f := range []struct {
		name     string
		got, off uintptr
	}{
		{"Chunks", unsafe.Offsetof(AdaLomoParams{}.Chunks), 16},
		{"Groups", unsafe.Offsetof(AdaLomoParams{}.Groups), 20},
		{"LR", unsafe.Offsetof(AdaLomoParams{}.LR), 32},
		{"Eps2", unsafe.Offsetof(AdaLomoParams{}.Eps2), 44},
		{"ClipThreshold", unsafe.Offsetof(AdaLomoParams{}.ClipThreshold), 48},
		{"ClipCoef", unsafe.Offsetof(AdaLomoParams{}.ClipCoef), 60},
	} {
		if f.got != f.off {
			t.Errorf("%s at %d, WGSL at %d", f.name, f.got, f.off)
		}
	}
}

func TestAdaLomoUpdate(t *testing.T) {
	// REFERENCE §3 defaults with a larger LR so that each step moves the
	// parameters by ~5% (well above f16 resolution).
	base := AdaLomoStep{LR: 0.05, Eps1: 1e-30, Eps2: 1e-3, ClipThreshold: 1, InvScale: 1, ClipCoef: 1}
	// Loss scale 1024, norm-clip coefficient, weight decay, RMS clip active.
	all := AdaLomoStep{LR: 0.05, Eps1: 1e-30, Eps2: 1e-3, ClipThreshold: 0.5, WeightDecay: 0.1, InvScale: 1.0 / 1024, ClipCoef: 0.6}
	cases := []struct {
		label      string
		rows, cols int
		vector     bool
		pt, gt     gpu.DType // parameter and gradient dtypes
		ps, gs     float64   // parameter and gradient scales
		zeroRow    int       // a gradient row of zeros (-1: none)
		step       AdaLomoStep
	}{
		{"mat", 5, 7, false, gpu.F32, gpu.F32, 1, 1, -1, base},
		{"mat_all", 33, 70, false, gpu.F32, gpu.F32, 1, 1024, 3, all},
		{"mat_chunks", 300, 17, false, gpu.F32, gpu.F32, 1, 1, -1, base},
		{"mat_strided", 520, 600, false, gpu.F32, gpu.F32, 0.5, 0.01, -1, base},
		{"mat_eps2", 7, 9, false, gpu.F32, gpu.F32, 1e-4, 1, -1, base}, // RMS(param) < eps2
		{"mat_one_col", 2, 1, false, gpu.F32, gpu.F32, 1, 1, -1, base},
		{"mat_one_row", 1, 50, false, gpu.F32, gpu.F32, 1, 1, -1, all},
		{"vec", 1, 37, true, gpu.F32, gpu.F32, 1, 1, -1, base},
		{"vec_all", 1, 300, true, gpu.F32, gpu.F32, 1, 1024, -1, all},
		{"mat_f16", 130, 300, false, gpu.F16, gpu.F32, 1, 1, -1, all},
		{"mat_f16_odd", 3, 5, false, gpu.F16, gpu.F32, 1, 1, -1, base},
		{"vec_f16_odd", 1, 1001, true, gpu.F16, gpu.F32, 1, 1, -1, base},
		// f16 gradients (f16 models' matrices), read exactly: same tolerances.
		{"mat_g16", 33, 70, false, gpu.F32, gpu.F16, 1, 1024, 3, all},
		{"mat_strided_g16", 520, 600, false, gpu.F32, gpu.F16, 0.5, 0.01, -1, base},
		{"mat_f16_g16", 130, 300, false, gpu.F16, gpu.F16, 1, 1, -1, all},
		{"mat_f16_odd_g16", 3, 5, false, gpu.F16, gpu.F16, 1, 1, -1, base},
		{"vec_f16_odd_g16", 1, 1001, true, gpu.F16, gpu.F16, 1, 1, -1, base},
		// bf16 parameters and gradients, rounded to nearest even exactly.
		{"mat_bf16", 130, 300, false, gpu.BF16, gpu.BF16, 1, 1, -1, all},
		{"mat_bf16_odd", 3, 5, false, gpu.BF16, gpu.F32, 1, 1, -1, base},
		{"vec_bf16_odd", 1, 1001, true, gpu.BF16, gpu.BF16, 1, 1, -1, base},
	}
	for ci, tc := range cases {
		t.Run(fmt.Sprintf("%s_%dx%d_%v", tc.label, tc.rows, tc.cols, tc.pt), func(t *testing.T) {
			r := rng(uint64(500 + ci))
			rows, cols, n := tc.rows, tc.cols, tc.rows*tc.cols
			param := roundTo(randn(r, n, tc.ps), tc.pt)
			stored := param
			if tc.pt.Half() && n%2 == 1 {
				// The padding half of the last pair must keep its bits.
				stored = append(append([]float64(nil), param...), 7)
			}
			pb := upload(t, stored, tc.pt)
			// State starts at zero, as the optimizer allocates it.
			var rRef, cRef []float64
			var rb, cb *gpu.Buffer
			if tc.vector {
				rRef = make([]float64, n)
			} else {
				rRef, cRef = make([]float64, rows), make([]float64, cols)
				cb = upload(t, cRef, gpu.F32)
			}
			rb = upload(t, rRef, gpu.F32)
			pRef := param // f32: carried in float64; f16: the stored values
			for step := 1; step <= 3; step++ {
				s := tc.step
				s.Beta = float32(1 - math.Pow(float64(step), -0.8))
				grad := roundTo(randn(r, n, tc.gs), tc.gt)
				if tc.zeroRow >= 0 {
					for j := 0; j < cols; j++ {
						grad[tc.zeroRow*cols+j] = 0
					}
				}
				scratch := dev.Stats().Tag(gpu.TagScratch).Live
				gb := upload(t, grad, tc.gt)
				if err := AdaLomoUpdate(dev, pb, gb, rb, cb, tc.pt, tc.gt, rows, cols, s); err != nil {
					t.Fatal(err)
				}
				// From step 2 on: the first dispatch of the process may
				// create the recorder's uniform arena (scratch, kept).
				if got := dev.Stats().Tag(gpu.TagScratch).Live - gb.Size(); step > 1 && got != scratch {
					t.Errorf("step %d: %d scratch bytes live after recording, %d before", step, got, scratch)
				}
				want := refAdaLomo(pRef, grad, rRef, cRef, rows, cols, s)
				what := fmt.Sprintf("step %d ", step)

				// State: f32 sums of at most a few hundred positive terms
				// (per-thread runs, then trees of 8 levels) and a mix with
				// beta: relative error ~ (cols/256 + 16) * 2^-24 < 1e-5.
				assertClose(t, what+"r", download(t, rb, len(rRef), gpu.F32), rRef, tol{Rtol: 1e-5})
				if cb != nil {
					assertClose(t, what+"c", download(t, cb, cols, gpu.F32), cRef, tol{Rtol: 1e-5})
				}
				got := download(t, pb, len(stored), tc.pt)
				if len(stored) > n && got[n] != 7 {
					t.Errorf("%spadding half changed to %v", what, got[n])
				}
				got = got[:n]
				if tc.pt == gpu.F32 {
					// u carries ~1e-6 relative error (sums, inverseSqrt's 2
					// ulp); the step lr_t*u is ~LR*ps*|u| with |u| < 5, so
					// atol 1e-6*ps covers parameters that cancel to ~0, and
					// rtol 1e-5 the rest after three steps carried in float64.
					assertClose(t, what+"param", got, want, tol{Atol: 1e-6 * tc.ps, Rtol: 1e-5})
					pRef = want
				} else if tc.pt == gpu.BF16 {
					// bf16: the f32 result is within ~1e-6 relative of
					// want, then rounded stochastically to one of its two
					// bf16 neighbours.
					assertBF16Neighbour(t, what+"param", got, want, 1e-5)
					pRef = got
				} else {
					// f16: the f32 result is within ~1e-6 relative of want,
					// then pack2x16float rounds to either neighbour (WGSL
					// leaves the direction open): 1 f16 ulp, 2^-10 relative
					// for normals, 2^-24 absolute for subnormals. Each step's
					// reference starts from the stored f16 values.
					assertClose(t, what+"param", got, want, tol{Atol: math.Ldexp(1, -24), Rtol: math.Ldexp(1, -10) + 1e-6})
					pRef = got
				}
			}
		})
	}
}

// TestAdaLomoRows: an update from a gradient by rows (AdaLomoStep.Rows: an
// embedding's, the batch's rows) gives the update from the whole gradient,
// zero in the other rows, bit for bit: weights, r and c, over three steps,
// with and without weight decay (which scales the rows without a gradient
// too), with a weight check, in f32, f16 and bf16 weights and f32 and f16
// gradients; the row ids sit at an offset in a longer buffer. Absent
// rows' state decays, so their weights stay only where nothing else moves
// them.
func TestAdaLomoRows(t *testing.T) {
	base := AdaLomoStep{LR: 0.05, Eps1: 1e-30, Eps2: 1e-3, ClipThreshold: 1, InvScale: 1, ClipCoef: 1, Seed: 9}
	all := AdaLomoStep{LR: 0.05, Eps1: 1e-30, Eps2: 1e-3, ClipThreshold: 0.5, WeightDecay: 0.1, InvScale: 1.0 / 1024, ClipCoef: 0.6, Seed: 9}
	cases := []struct {
		rows, cols int
		pt, gt     gpu.DType
		present    []uint32 // the rows with a gradient, ascending
		step       AdaLomoStep
	}{
		{40, 6, gpu.F32, gpu.F32, []uint32{0, 3, 4, 17, 39}, base},
		{40, 6, gpu.F32, gpu.F32, []uint32{2, 5, 6, 7, 21, 22, 30}, all},
		{300, 20, gpu.F32, gpu.F16, []uint32{1, 8, 64, 65, 299}, all}, // several column chunks
		{33, 10, gpu.F16, gpu.F32, []uint32{0, 32}, base},
		{33, 10, gpu.BF16, gpu.F32, []uint32{4, 9, 10, 11, 12}, all},
		{6, 4, gpu.F32, gpu.F32, []uint32{0, 1, 2, 3, 4, 5}, all}, // every row
	}
	for ci, tc := range cases {
		t.Run(fmt.Sprintf("%dx%d_%v_g%v_wd%v", tc.rows, tc.cols, tc.pt, tc.gt, tc.step.WeightDecay), func(t *testing.T) {
			needF16(t, tc.pt)
			needF16(t, tc.gt)
			r := rng(uint64(900 + ci))
			rows, cols, n, k := tc.rows, tc.cols, tc.rows*tc.cols, len(tc.present)
			param := roundTo(randn(r, n, 1), tc.pt)
			whole, byRows := upload(t, param, tc.pt), upload(t, param, tc.pt)
			rw, cw := outputWith(t, make([]float64, rows)), outputWith(t, make([]float64, cols))
			rr, cr := outputWith(t, make([]float64, rows)), outputWith(t, make([]float64, cols))
			// The ids at an offset of 3, after other rows' ids.
			ids := uploadU32(t, append([]uint32{7, 7, 7}, tc.present...))
			for step := 1; step <= 3; step++ {
				s := tc.step
				s.Beta = float32(1 - math.Pow(float64(step), -0.8))
				part := roundTo(randn(r, k*cols, 1), tc.gt)
				dense := make([]float64, n)
				for i, row := range tc.present {
					copy(dense[int(row)*cols:(int(row)+1)*cols], part[i*cols:(i+1)*cols])
				}
				flagsW, flagsR := uploadU32(t, []uint32{0}), uploadU32(t, []uint32{0})
				s.Check = &WeightCheck{Flags: flagsW}
				if err := AdaLomoUpdate(dev, whole, upload(t, dense, tc.gt), rw, cw, tc.pt, tc.gt, rows, cols, s); err != nil {
					t.Fatal(err)
				}
				s.Check = &WeightCheck{Flags: flagsR}
				s.Rows = &TableRows{IDs: ids, Off: 3, N: k}
				if err := AdaLomoUpdate(dev, byRows, upload(t, part, tc.gt), rr, cr, tc.pt, tc.gt, rows, cols, s); err != nil {
					t.Fatal(err)
				}
				what := fmt.Sprintf("step %d: ", step)
				got := download(t, byRows, n, tc.pt)
				want := download(t, whole, n, tc.pt)
				assertSameBits(t, what+"weights", got, want)
				assertSameBits(t, what+"r", download(t, rr, rows, gpu.F32), download(t, rw, rows, gpu.F32))
				assertSameBits(t, what+"c", download(t, cr, cols, gpu.F32), download(t, cw, cols, gpu.F32))
				if fw, fr := reduceReadFlags(t, flagsW, 1), reduceReadFlags(t, flagsR, 1); fw[0] != 0 || fr[0] != 0 {
					t.Errorf("%sweight check flags %v (whole), %v (by rows) on finite weights", what, fw, fr)
				}
				moved := 0
				for i := range got {
					if got[i] != param[i] {
						moved++
					}
				}
				if moved == 0 {
					t.Fatalf("%snothing moved", what)
				}
				param = got
			}
		})
	}
}

func TestAdaLomoRejectsBadSizes(t *testing.T) {
	p := upload(t, make([]float64, 12), gpu.F32)
	g := upload(t, make([]float64, 12), gpu.F32)
	r := upload(t, make([]float64, 3), gpu.F32)
	c := upload(t, make([]float64, 4), gpu.F32)
	s := AdaLomoStep{LR: 1e-3, Eps1: 1e-30, Eps2: 1e-3, ClipThreshold: 1, InvScale: 1, ClipCoef: 1}
	if err := AdaLomoUpdate(dev, p, g, r, c, gpu.F32, gpu.F32, 3, 4, s); err != nil {
		t.Errorf("valid (3,4) matrix rejected: %v", err)
	}
	if err := AdaLomoUpdate(dev, p, g, r, c, gpu.F32, gpu.F32, 4, 3, s); err == nil {
		t.Error("r of 3 rows for a (4,3) matrix accepted")
	}
	if err := AdaLomoUpdate(dev, p, g, r, nil, gpu.F32, gpu.F32, 3, 4, s); err == nil {
		t.Error("vector state of 3 elements for 12 accepted")
	}
	if err := AdaLomoUpdate(dev, p, p, r, c, gpu.F32, gpu.F32, 3, 4, s); err == nil {
		t.Error("param aliasing grad accepted")
	}
	// A gradient by rows: rows within the ids buffer and the matrix, a
	// matrix's state, a gradient of that many rows.
	ids := uploadU32(t, []uint32{0, 2})
	byRows := func(off, n int) AdaLomoStep {
		b := s
		b.Rows = &TableRows{IDs: ids, Off: off, N: n}
		return b
	}
	if err := AdaLomoUpdate(dev, p, g, r, c, gpu.F32, gpu.F32, 3, 4, byRows(0, 2)); err != nil {
		t.Errorf("valid gradient of rows 0 and 2 rejected: %v", err)
	}
	if err := AdaLomoUpdate(dev, p, g, r, c, gpu.F32, gpu.F32, 3, 4, byRows(1, 2)); err == nil {
		t.Error("rows past the ids buffer's end accepted")
	}
	if err := AdaLomoUpdate(dev, p, g, r, c, gpu.F32, gpu.F32, 3, 4, byRows(0, 4)); err == nil {
		t.Error("4 gradient rows of a 3-row matrix accepted")
	}
	if err := AdaLomoUpdate(dev, p, g, r, nil, gpu.F32, gpu.F32, 1, 12, byRows(0, 1)); err == nil {
		t.Error("a vector's gradient by rows accepted")
	}
	small := upload(t, make([]float64, 4), gpu.F32)
	if err := AdaLomoUpdate(dev, p, small, r, c, gpu.F32, gpu.F32, 3, 4, byRows(0, 2)); err == nil {
		t.Error("a gradient of 1 row for 2 accepted")
	}
}

// TestAdaLomoWeightCheck: with a weight check, AdaLomoUpdate writes the
// unchecked update's bits and flags what CheckFinite finds in the updated
// weights: nothing on a clean update, every NaN a NaN gradient makes; for
// matrices and vectors, f32 and 16-bit weights (odd length: the padding
// half, a NaN here, is not checked).
func TestAdaLomoWeightCheck(t *testing.T) {
	s := AdaLomoStep{LR: 0.01, Beta: 0.5, Eps1: 1e-30, Eps2: 1e-3, ClipThreshold: 1, InvScale: 1, ClipCoef: 1, Seed: 5}
	for _, pt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
		for _, shape := range [][2]int{{5, 7}, {1, 9}} {
			for _, nan := range []bool{false, true} {
				t.Run(fmt.Sprintf("%v_%dx%d_nan%v", pt, shape[0], shape[1], nan), func(t *testing.T) {
					needF16(t, pt)
					rows, cols := shape[0], shape[1]
					n := rows * cols
					r := rng(31)
					param := roundTo(randn(r, n, 1), pt)
					grad := roundTo(randn(r, n, 1), gpu.F32)
					if nan {
						grad[3] = math.NaN()
					}
					stored := param
					if pt.Half() && n%2 == 1 {
						stored = append(append([]float64(nil), param...), math.NaN())
					}
					gb := upload(t, grad, gpu.F32)
					run := func(check *WeightCheck) *gpu.Buffer {
						pb := upload(t, stored, pt)
						var rb, cb *gpu.Buffer
						if rows > 1 {
							rb, cb = outputWith(t, make([]float64, rows)), outputWith(t, make([]float64, cols))
						} else {
							rb = outputWith(t, make([]float64, n))
						}
						st := s
						st.Check = check
						if err := AdaLomoUpdate(dev, pb, gb, rb, cb, pt, gpu.F32, rows, cols, st); err != nil {
							t.Fatal(err)
						}
						return pb
					}
					plain := run(nil)
					flags := uploadU32(t, []uint32{5, 0, 6})
					checked := run(&WeightCheck{Flags: flags, Index: 1})
					assertSameBits(t, "checked update against unchecked", download(t, checked, n, pt), download(t, plain, n, pt))
					ref := uploadU32(t, []uint32{5, 0, 6})
					if err := CheckFinite(dev, ref, 1, plain, pt, n, 1, float32(math.Inf(1))); err != nil {
						t.Fatal(err)
					}
					got, want := reduceReadFlags(t, flags, 3), reduceReadFlags(t, ref, 3)
					if fmt.Sprint(got) != fmt.Sprint(want) || (got[1] == 1) != nan {
						t.Errorf("flags %v, CheckFinite on the updated weights %v, want set: %v", got, want, nan)
					}
				})
			}
		}
	}
}
