package wgsl

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/lomo-dev/lomo/gpu"
)

// refXent is the float64 reference of xent.wgsl: per-row loss (clamped at
// clip when clip > 0, 0 for negative labels) and
// dlogits = scale*(softmax - onehot), zero for ignored or clamped rows.
func refXent(logits []float64, labels []int32, n, v int, scale, clip float64) (loss, dlogits []float64) {
	loss = make([]float64, n)
	dlogits = make([]float64, n*v)
	for r := 0; r < n; r++ {
		row := logits[r*v : (r+1)*v]
		if labels[r] < 0 {
			continue
		}
		m := math.Inf(-1)
		for _, x := range row {
			m = math.Max(m, x)
		}
		s := 0.0
		for _, x := range row {
			s += math.Exp(x - m)
		}
		lse := m + math.Log(s)
		l := lse - row[labels[r]]
		gs := scale
		if clip > 0 && l > clip {
			l, gs = clip, 0
		}
		loss[r] = l
		for j, x := range row {
			g := math.Exp(x - lse)
			if j == int(labels[r]) {
				g--
			}
			dlogits[r*v+j] = gs * g
		}
	}
	return loss, dlogits
}

// refXentMean is the scalar training loss: the mean of the (clamped) token
// losses over the counted tokens.
func refXentMean(logits []float64, labels []int32, n, v int, clip float64) float64 {
	loss, _ := refXent(logits, labels, n, v, 1, clip)
	sum, cnt := 0.0, 0
	for r, l := range loss {
		if labels[r] >= 0 {
			sum += l
			cnt++
		}
	}
	return sum / float64(cnt)
}

// xentLabels uploads i32 labels.
func xentLabels(t testing.TB, labels []int32) *gpu.Buffer {
	t.Helper()
	b, err := dev.NewBuffer(gpu.TagScratch, int64(4*len(labels)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Release)
	raw := make([]byte, 4*len(labels))
	for i, l := range labels {
		binary.LittleEndian.PutUint32(raw[4*i:], uint32(l))
	}
	if err := dev.Write(b, 0, raw); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestXentParamsLayout(t *testing.T) {
	// Params in xent.wgsl: n, v, compute_grad, row0, grad_scale, clip_loss, v0, _p2.
	if got := unsafe.Sizeof(XentParams{}); got != 32 {
		t.Errorf("XentParams is %d bytes, WGSL Params is 32", got)
	}
	if got := unsafe.Offsetof(XentParams{}.GradScale); got != 16 {
		t.Errorf("GradScale at %d, WGSL at 16", got)
	}
	if got := unsafe.Offsetof(XentParams{}.ClipLoss); got != 20 {
		t.Errorf("ClipLoss at %d, WGSL at 20", got)
	}
}

func TestCrossEntropy(t *testing.T) {
	cases := []struct {
		n, v    int
		spread  float64 // logits are uniform in ±spread
		ignored int     // every ignored-th row has label -100 (0: none)
		clip    float64 // clip_loss_value as a quantile of the losses (0: off)
	}{
		{1, 5, 3, 0, 0},
		{4, 5, 3, 2, 0},
		{7, 257, 3, 3, 0},
		{3, 1000, 3, 0, 0},
		{5, 256, 3, 0, 0},
		{6, 1000, 80, 4, 0}, // ±80: exp overflows f32 without the max shift
		{3, 33, 1000, 0, 0}, // far beyond any exp range
		{9, 300, 4, 5, 0.5}, // half the counted tokens clamped
		{70000, 3, 2, 7, 0}, // rows beyond 65535 workgroups fold into y
	}
	for ci, tc := range cases {
		name := fmt.Sprintf("N%d_V%d_spread%v_ign%d_clip%v", tc.n, tc.v, tc.spread, tc.ignored, tc.clip)
		t.Run(name, func(t *testing.T) {
			if tc.n > 65535 && testing.Short() {
				t.Skip("-short: 65536+ workgroups take 1-4 s on lavapipe; this case only checks the grid fold into y")
			}
			r := rng(uint64(100 + ci))
			n, v := tc.n, tc.v
			logits := uniformF32(r, n*v, tc.spread)
			labels := make([]int32, n)
			counted := 0
			for i := range labels {
				labels[i] = int32(r.IntN(v))
				if tc.ignored > 0 && i%tc.ignored == 1 {
					labels[i] = -100
				} else {
					counted++
				}
			}
			clip := 0.0
			if tc.clip > 0 {
				l, _ := refXent(logits, labels, n, v, 1, 0)
				var ls []float64
				for i, x := range l {
					if labels[i] >= 0 {
						ls = append(ls, x)
					}
				}
				clip = float64(float32(xentMedian(ls)))
			}
			scale := float64(float32(1 / float64(counted)))
			wantLoss, wantGrad := refXent(logits, labels, n, v, scale, clip)

			lossBuf := output(t, n)
			logitBuf := upload(t, logits, gpu.F32)
			if err := CrossEntropy(dev, lossBuf, logitBuf, xentLabels(t, labels), n, v, float32(scale), float32(clip), true); err != nil {
				t.Fatal(err)
			}
			// The loss is lse - x[label], a difference of values up to
			// `spread` in size, with lse from f32 sums of exps (WGSL exp: a
			// few ulp for small arguments): a few ulp of spread (2^-21
			// relative) plus 2e-6 for the log-sum; 1e-5 relative.
			lossTol := tol{Atol: 2e-6 + tc.spread*math.Ldexp(1, -21), Rtol: 1e-5}
			assertClose(t, "loss", download(t, lossBuf, n, gpu.F32), wantLoss, lossTol)
			// dlogits = scale*(p - onehot): p = exp(x - lse) inherits lse's
			// absolute error as a relative error, and p-1 at the label
			// cancels, so the bound is scale*(the loss bound).
			gradTol := tol{Atol: scale * lossTol.Atol, Rtol: 1e-5}
			assertClose(t, "dlogits", download(t, logitBuf, n*v, gpu.F32), wantGrad, gradTol)
		})
	}
}

// TestCrossEntropyRows: the loss and dlogits of chunks of rows, each run on
// its own logits with row0 into the batch's labels and losses, are those of
// the whole batch, bit for bit (each row is computed alone either way).
func TestCrossEntropyRows(t *testing.T) {
	const n, v = 11, 300
	r := rng(77)
	logits := roundTo(randn(r, n*v, 3), gpu.F32)
	labels := make([]int32, n)
	for i := range labels {
		labels[i] = int32(r.IntN(v))
	}
	labels[4] = -100
	lb := xentLabels(t, labels)
	whole, wholeLogits := output(t, n), upload(t, logits, gpu.F32)
	if err := CrossEntropy(dev, whole, wholeLogits, lb, n, v, 0.5, 0, true); err != nil {
		t.Fatal(err)
	}
	chunked := output(t, n)
	var grads []float64
	for r0 := 0; r0 < n; r0 += 4 {
		rows := min(4, n-r0)
		part := upload(t, logits[r0*v:(r0+rows)*v], gpu.F32)
		if err := CrossEntropyRows(dev, chunked, part, lb, r0, rows, v, 0.5, 0, true); err != nil {
			t.Fatal(err)
		}
		grads = append(grads, download(t, part, rows*v, gpu.F32)...)
	}
	assertClose(t, "loss", download(t, chunked, n, gpu.F32), download(t, whole, n, gpu.F32), tol{})
	assertClose(t, "dlogits", grads, download(t, wholeLogits, n*v, gpu.F32), tol{})
	if err := CrossEntropyRows(dev, chunked, upload(t, logits[:4*v], gpu.F32), lb, 9, 4, v, 1, 0, false); err == nil {
		t.Error("rows 9..12 of 11 labels accepted")
	}
}

// uniformF32 is n values uniform in ±spread, rounded to f32.
func uniformF32(r *rand.Rand, n int, spread float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = float64(float32((2*r.Float64() - 1) * spread))
	}
	return v
}

func xentMedian(v []float64) float64 {
	s := append([]float64(nil), v...)
	for i := 1; i < len(s); i++ { // insertion sort: a handful of values
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2]
}

// TestCrossEntropyCentralDiff checks the analytic gradient that the kernel
// implements against central differences of the float64 mean loss, the
// scalar the trainer differentiates (L = gradScale * sum(loss) with
// gradScale = 1/counted, i.e. dloss = gradScale for every row).
func TestCrossEntropyCentralDiff(t *testing.T) {
	const n, v = 4, 5
	r := rng(7)
	logits := randn(r, n*v, 2)
	for i := range logits {
		logits[i] = float64(float32(logits[i]))
	}
	labels := []int32{3, -100, 0, 4}
	base, _ := refXent(logits, labels, n, v, 1, 0)
	// Clamp one token (the largest loss) and keep the threshold away from
	// the others so that the finite differences do not cross it.
	clip := 0.0
	for i, l := range base {
		if labels[i] >= 0 && l > clip {
			clip = l
		}
	}
	clip = float64(float32(clip * 0.8))
	for i, l := range base {
		if labels[i] >= 0 && math.Abs(l-clip) < 0.05 {
			t.Fatalf("loss %d (%v) too close to the clip %v for a finite difference", i, l, clip)
		}
	}
	for _, c := range []float64{0, clip} {
		t.Run(fmt.Sprintf("clip%v", c), func(t *testing.T) {
			num := centralDiff(func(x []float64) float64 { return refXentMean(x, labels, n, v, c) }, logits, 1e-5)
			_, ref := refXent(logits, labels, n, v, 1.0/3, c)
			// Central differences of a smooth function with h = 1e-5:
			// truncation O(h^2) and cancellation ~1e-16/h ≈ 1e-11.
			assertClose(t, "reference dlogits vs central differences", ref, num, tol{Atol: 1e-8, Rtol: 1e-6})

			lossBuf := output(t, n)
			logitBuf := upload(t, logits, gpu.F32)
			if err := CrossEntropy(dev, lossBuf, logitBuf, xentLabels(t, labels), n, v, float32(1.0/3), float32(c), true); err != nil {
				t.Fatal(err)
			}
			// f32 softmax of O(1) logits: a few ulp of 1/3.
			assertClose(t, "kernel dlogits vs central differences", download(t, logitBuf, n*v, gpu.F32), num, tol{Atol: 1e-6, Rtol: 1e-5})
		})
	}
}

// TestCrossEntropyEvalLeavesLogits: computeGrad=false writes the loss only.
func TestCrossEntropyEvalLeavesLogits(t *testing.T) {
	const n, v = 5, 300
	r := rng(11)
	logits := randn(r, n*v, 5)
	labels := []int32{0, 299, -100, 17, 150}
	logitBuf := upload(t, logits, gpu.F32)
	before, err := dev.Read(logitBuf, 0, 4*n*v)
	if err != nil {
		t.Fatal(err)
	}
	lossBuf := output(t, n)
	if err := CrossEntropy(dev, lossBuf, logitBuf, xentLabels(t, labels), n, v, 1, 0, false); err != nil {
		t.Fatal(err)
	}
	after, err := dev.Read(logitBuf, 0, 4*n*v)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("computeGrad=false changed the logits")
	}
	want, _ := refXent(roundTo(logits, gpu.F32), labels, n, v, 1, 0)
	// Logits of scale 5: lse and x[label] within a few ulp of 20.
	assertClose(t, "loss", download(t, lossBuf, n, gpu.F32), want, tol{Atol: 1e-5, Rtol: 1e-5})
}

// TestCrossEntropyBadLabelIsNaN: an out-of-range label must not pass as a
// plausible loss.
func TestCrossEntropyBadLabelIsNaN(t *testing.T) {
	lossBuf := output(t, 2)
	logitBuf := upload(t, []float64{1, 2, 3, 4, 5, 6}, gpu.F32)
	if err := CrossEntropy(dev, lossBuf, logitBuf, xentLabels(t, []int32{1, 3}), 2, 3, 1, 0, true); err != nil {
		t.Fatal(err)
	}
	got := download(t, lossBuf, 2, gpu.F32)
	if math.IsNaN(got[0]) || !math.IsNaN(got[1]) {
		t.Errorf("loss %v: want a finite first loss and a NaN for label 3 of V=3", got)
	}
}

func TestCrossEntropyRejectsShortBuffers(t *testing.T) {
	loss := output(t, 2)
	logits := output(t, 6)
	labels := xentLabels(t, []int32{0, 1})
	if err := CrossEntropy(dev, loss, logits, labels, 2, 4, 1, 0, true); err == nil {
		t.Error("logits too small for (2,4) accepted")
	}
	if err := CrossEntropy(dev, loss, logits, labels, 3, 2, 1, 0, true); err == nil {
		t.Error("loss too small for N=3 accepted")
	}
}

// TestCrossEntropyRowKernel: the one-thread-per-row kernel (CPU adapters)
// gives the workgroup kernel's bits, loss and dlogits, with and without the
// gradient: rows shorter than, as long as and longer than the 256 partial
// sums, ignored rows, clamped losses, a label past the vocabulary (a NaN
// loss), logits far beyond exp's range, and rows folded into the grid's y.
func TestCrossEntropyRowKernel(t *testing.T) {
	for ci, tc := range []struct {
		n, v   int
		spread float64
		clip   float32
	}{
		{1, 5, 3, 0}, {7, 257, 3, 0}, {5, 256, 3, 0}, {70, 1000, 80, 0}, {9, 300, 4, 2}, {3, 33, 1000, 0}, {130, 640, 6, 0},
	} {
		t.Run(fmt.Sprintf("N%d_V%d_spread%v_clip%v", tc.n, tc.v, tc.spread, tc.clip), func(t *testing.T) {
			r := rng(uint64(900 + ci))
			n, v := tc.n, tc.v
			logits := uniformF32(r, n*v, tc.spread)
			labels := make([]int32, n)
			for i := range labels {
				labels[i] = int32(r.IntN(v))
				if i%4 == 1 {
					labels[i] = -100
				}
			}
			if n > 2 {
				labels[2] = int32(v) // past the vocabulary: a NaN loss
			}
			lb := xentLabels(t, labels)
			for _, grad := range []bool{true, false} {
				var got [2][2][]float64
				for i, byRows := range []bool{false, true} {
					lossBuf, logitBuf := output(t, n), upload(t, logits, gpu.F32)
					if err := crossEntropy(dev, byRows, lossBuf, logitBuf, lb, 0, n, v, 0.25, tc.clip, grad); err != nil {
						t.Fatal(err)
					}
					got[i] = [2][]float64{download(t, lossBuf, n, gpu.F32), download(t, logitBuf, n*v, gpu.F32)}
				}
				assertSameBits(t, fmt.Sprintf("loss by rows against by workgroups (grad %v)", grad), got[1][0], got[0][0])
				assertSameBits(t, fmt.Sprintf("dlogits by rows against by workgroups (grad %v)", grad), got[1][1], got[0][1])
			}
		})
	}
}

// TestCrossEntropyBlocks: the losses of CrossEntropyStats and the gradients
// that CrossEntropyBlockGrad computes from its stats, a block of columns at
// a time on logits of the block alone, are CrossEntropyRows's bit for bit,
// for chunks of rows (row0) and blocks of columns (v0) that do not divide
// the shape: ignored rows, clamped losses, a label past the vocabulary (NaN
// loss and gradient row), logits far beyond exp's range.
func TestCrossEntropyBlocks(t *testing.T) {
	for ci, tc := range []struct {
		n, v, rows, cols int
		spread           float64
		clip             float32
	}{
		{12, 37, 5, 3, 1, 0}, {7, 257, 3, 100, 3, 0}, {9, 300, 4, 64, 4, 2}, {5, 33, 5, 33, 1000, 0}, {70, 640, 32, 256, 6, 0},
	} {
		t.Run(fmt.Sprintf("N%d_V%d_rows%d_cols%d_clip%v", tc.n, tc.v, tc.rows, tc.cols, tc.clip), func(t *testing.T) {
			r := rng(uint64(950 + ci))
			n, v := tc.n, tc.v
			logits := uniformF32(r, n*v, tc.spread)
			labels := make([]int32, n)
			for i := range labels {
				labels[i] = int32(r.IntN(v))
				if i%4 == 1 {
					labels[i] = -100
				}
			}
			labels[2] = int32(v) // past the vocabulary
			lb := xentLabels(t, labels)
			wantLoss, wantGrad := output(t, n), upload(t, logits, gpu.F32)
			if err := CrossEntropyRows(dev, wantLoss, wantGrad, lb, 0, n, v, 0.25, tc.clip, true); err != nil {
				t.Fatal(err)
			}
			loss, stats := output(t, n), output(t, 2*n)
			grad := make([]float64, n*v)
			for r0 := 0; r0 < n; r0 += tc.rows {
				rows := min(tc.rows, n-r0)
				part := upload(t, logits[r0*v:(r0+rows)*v], gpu.F32)
				if err := CrossEntropyStats(dev, loss, stats, part, lb, r0, rows, v, 0.25, tc.clip); err != nil {
					t.Fatal(err)
				}
				assertSameBits(t, "logits after the stats", download(t, part, rows*v, gpu.F32), logits[r0*v:(r0+rows)*v])
				for v0 := 0; v0 < v; v0 += tc.cols {
					cols := min(tc.cols, v-v0)
					block := make([]float64, rows*cols)
					for i := 0; i < rows; i++ {
						copy(block[i*cols:(i+1)*cols], logits[(r0+i)*v+v0:])
					}
					bb := upload(t, block, gpu.F32)
					if err := CrossEntropyBlockGrad(dev, bb, stats, lb, r0, rows, v0, cols); err != nil {
						t.Fatal(err)
					}
					got := download(t, bb, rows*cols, gpu.F32)
					for i := 0; i < rows; i++ {
						copy(grad[(r0+i)*v+v0:], got[i*cols:(i+1)*cols])
					}
				}
			}
			assertSameBits(t, "loss", download(t, loss, n, gpu.F32), download(t, wantLoss, n, gpu.F32))
			assertSameBits(t, "dlogits by blocks", grad, download(t, wantGrad, n*v, gpu.F32))
			if g := grad[2*v : 3*v]; !math.IsNaN(g[0]) || !math.IsNaN(g[v-1]) {
				t.Errorf("the gradient row of a label past the vocabulary is %v..., want NaN", g[:3])
			}
		})
	}
	lb := xentLabels(t, []int32{0, 1})
	if err := CrossEntropyStats(dev, output(t, 2), output(t, 3), output(t, 8), lb, 0, 2, 4, 1, 0); err == nil {
		t.Error("stats too small for 2 rows accepted")
	}
	if err := CrossEntropyBlockGrad(dev, output(t, 7), output(t, 4), lb, 0, 2, 0, 4); err == nil {
		t.Error("a block too small for (2,4) accepted")
	}
}
