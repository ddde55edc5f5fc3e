package optim

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/hf/peft"
	"github.com/lomo-dev/lomo/internal/testgpu"
	"github.com/lomo-dev/lomo/nn"
	"github.com/lomo-dev/lomo/wgsl"
)

var dev *gpu.Device

func TestMain(m *testing.M) {
	testgpu.Main(m, func() (func(), error) {
		d, err := gpu.Open(gpu.Options{})
		if err != nil {
			return nil, fmt.Errorf("optim tests need a WebGPU adapter: %w", err)
		}
		fmt.Fprintf(os.Stderr, "optim tests on adapter %q (%s, %s)\n", d.Info.Name, d.Info.Type, d.Info.Backend)
		dev = d
		return d.Close, nil
	})
}

func toyModel(t *testing.T, dt gpu.DType, tied bool) (*nn.Llama, *nn.Inputs) {
	t.Helper()
	cfg := &config.Llama{
		HiddenSize: 16, IntermediateSize: 24, NumLayers: 2, NumHeads: 4, NumKVHeads: 2,
		VocabSize: 29, RopeTheta: 10000, RMSNormEps: 1e-5, TieWordEmbeddings: tied,
		MaxPositionEmbeddings: 64, HeadDim: 4, ModelType: "llama", TorchDType: "float32",
		BOSTokenID: 1, EOSTokenID: 2, HiddenAct: "silu",
	}
	m, err := nn.NewLlama(dev, cfg, dt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Release)
	if err := m.InitRandom(21, 0.2); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	b, tt := 2, 5
	ids := make([]int, b*tt)
	labels := make([]int, b*tt)
	for i := range ids {
		ids[i] = 3 + r.IntN(cfg.VocabSize-3)
	}
	for i := range labels {
		labels[i] = nn.IgnoreIndex
		if i%tt+1 < tt {
			labels[i] = ids[i+1]
		}
	}
	in, err := m.NewInputs(b, tt, ids, labels, []int{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Release)
	return m, in
}

func forward(m *nn.Llama, in *nn.Inputs) Forward {
	return func(t *nn.Tape, scale float32) (*nn.Tensor, int, error) {
		l, err := m.Loss(t, in, nn.LossOptions{GradScale: scale / float32(in.Count)})
		return l, in.Count, err
	}
}

func weights(t *testing.T, m *nn.Llama) map[string][]float64 {
	t.Helper()
	w := map[string][]float64{}
	for _, p := range m.Params() {
		v, err := nn.ReadF32(dev, p.Tensor)
		if err != nil {
			t.Fatal(err)
		}
		f := make([]float64, len(v))
		for i, x := range v {
			f[i] = float64(x)
		}
		w[p.Name] = f
	}
	return w
}

// fullGrads runs a plain backward that copies every gradient (no update).
func fullGrads(t *testing.T, m *nn.Llama, in *nn.Inputs) map[string][]float64 {
	t.Helper()
	g := map[string][]float64{}
	tape := nn.NewTape(dev, true)
	loss, _, err := forward(m, in)(tape, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer loss.Release()
	err = tape.Backward(loss, func(p *nn.Param, gb *gpu.Buffer) error {
		v, err := nn.ReadBufferF32(dev, gb, p.Len(), p.GradDType())
		f := make([]float64, len(v))
		for i, x := range v {
			f[i] = float64(x)
		}
		g[p.Name] = f
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func norm(g map[string][]float64) float64 {
	s := 0.0
	for _, v := range g {
		for _, x := range v {
			s += x * x
		}
	}
	return math.Sqrt(s)
}

func compare(t *testing.T, what string, got, want map[string][]float64, rtol, atol float64) {
	t.Helper()
	bad := 0
	for name, w := range want {
		for i := range w {
			if d := math.Abs(got[name][i] - w[i]); d > atol+rtol*math.Abs(w[i]) {
				if bad < 5 {
					t.Errorf("%s: %s[%d] = %.9g, want %.9g", what, name, i, got[name][i], w[i])
				}
				bad++
			}
		}
	}
}

// TestLomoEqualsSGD: with no clipping, one LOMO step (updates fused into the
// backward, each gradient dropped at once) gives the weights of one plain SGD
// step from full gradients, to f32 rounding (REFERENCE §1.6). Tied and
// untied, with decoupled weight decay.
func TestLomoEqualsSGD(t *testing.T) {
	for _, tied := range []bool{false, true} {
		for _, ckpt := range []bool{false, true} {
			t.Run(fmt.Sprintf("tied=%v/checkpointing=%v", tied, ckpt), func(t *testing.T) {
				m, in := toyModel(t, gpu.F32, tied)
				m.Checkpointing = ckpt
				w0, g := weights(t, m), fullGrads(t, m, in)
				const lr, wd = 0.05, 0.1
				opt, err := New(dev, Config{Name: "lomo", Schedule: Schedule{Kind: "constant", LR: lr}, WeightDecay: wd}, gpu.F32)
				if err != nil {
					t.Fatal(err)
				}
				defer opt.Release()
				if _, err := opt.Step(m.Params(), forward(m, in)); err != nil {
					t.Fatal(err)
				}
				want := map[string][]float64{}
				for name, w := range w0 {
					v := make([]float64, len(w))
					for i := range w {
						v[i] = w[i]*(1-lr*wd) - lr*g[name][i]
					}
					want[name] = v
				}
				// f32 weights of order 0.2 and updates of order 1e-3: a few
				// f32 roundings, 1e-5 relative plus 1e-7 absolute.
				compare(t, "weights", weights(t, m), want, 1e-5, 1e-7)
			})
		}
	}
}

// TestLomoClipCoefficient: two-pass norm clipping measures the norm of the
// full gradient, and the step applies coef = max_norm / (norm + 1e-6), with
// value clipping after the norm (REFERENCE §1.3-1.6).
func TestLomoClipCoefficient(t *testing.T) {
	m, in := toyModel(t, gpu.F32, false)
	w0, g := weights(t, m), fullGrads(t, m, in)
	n := norm(g)
	maxNorm := n / 4
	const lr, clipValue = 0.05, 0.01
	opt, err := New(dev, Config{Name: "lomo", Schedule: Schedule{Kind: "constant", LR: lr}, ClipGradNorm: maxNorm, ClipGradValue: clipValue}, gpu.F32)
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Release()
	res, err := opt.Step(m.Params(), forward(m, in))
	if err != nil {
		t.Fatal(err)
	}
	coef := maxNorm / (n + 1e-6)
	if math.Abs(res.GradNorm-n) > 1e-5*n || math.Abs(res.ClipCoef-coef) > 1e-5*coef {
		t.Errorf("norm %.7g coef %.7g; from full gradients: norm %.7g coef %.7g", res.GradNorm, res.ClipCoef, n, coef)
	}
	want := map[string][]float64{}
	for name, w := range w0 {
		v := make([]float64, len(w))
		for i := range w {
			gi := math.Max(-clipValue, math.Min(clipValue, g[name][i])) * coef
			v[i] = w[i] - lr*gi
		}
		want[name] = v
	}
	compare(t, "weights", weights(t, m), want, 1e-5, 1e-7)
}

// TestKeptForward: with norm clipping, a checkpointed model's step runs
// the measuring and the updating backward on one forward (Result.
// KeptForward), and ends with the same weights, bit for bit, as the
// reference's forward per pass, at no higher peak; LOMO and AdaLomo, f32
// and bf16 (whose stochastic rounding is seeded the same way). A tied
// head, or a model without checkpointing, keeps a forward per pass.
func TestKeptForward(t *testing.T) {
	defer func() { keepForward = true }()
	for _, name := range []string{"lomo", "adalomo"} {
		for _, dt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
			for _, tied := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%v/tied=%v", name, dt, tied), func(t *testing.T) {
					step := func(keep, ckpt bool) (map[string][]float64, Result, int64) {
						keepForward = keep
						m, in := toyModel(t, dt, tied)
						m.Checkpointing = ckpt
						opt, err := New(dev, Config{Name: name, Schedule: Schedule{Kind: "constant", LR: 0.05}, ClipGradNorm: 0.5}, dt)
						if err != nil {
							t.Fatal(err)
						}
						defer opt.Release()
						var res Result
						dev.ResetPeak()
						for range 2 {
							if res, err = opt.Step(m.Params(), forward(m, in)); err != nil {
								t.Fatal(err)
							}
						}
						return weights(t, m), res, dev.Stats().Total.Peak
					}
					kept, res, peakKept := step(true, true)
					// A tied head's gradient is recomputed at the
					// embedding (Tape.DeferGrad): not kept there.
					if res.KeptForward == tied || !(res.ClipCoef < 1) {
						t.Errorf("checkpointed, tied %v: %+v, want a kept forward (untied only) and a clipped step", tied, res)
					}
					again, res, peakAgain := step(false, true)
					if res.KeptForward {
						t.Errorf("keepForward off: the forward was kept")
					}
					for name, w := range again {
						assertSame(t, name, kept[name], w)
					}
					if peakKept > peakAgain {
						t.Errorf("peak %d bytes with the forward kept, %d with one per pass", peakKept, peakAgain)
					}
					if _, res, _ := step(true, false); res.KeptForward {
						t.Errorf("without checkpointing the forward was kept (its ops free what they saved)")
					}
				})
			}
		}
	}
}

// TestKeptForwardLoRA: LoRA beside LOMO, with adapter dropout (seeded per
// step, so that every recompute draws the same mask), on one forward
// gives the base and the adapters the weights of a forward per pass, bit
// for bit.
func TestKeptForwardLoRA(t *testing.T) {
	defer func() { keepForward = true }()
	step := func(keep bool) (map[string][]float64, Result) {
		keepForward = keep
		m, in := toyModel(t, gpu.F32, false)
		m.Checkpointing = true
		if err := m.AddLoRA(peft.New(2, 4, 0.25, []string{"q_proj", "down_proj"}, "toy"), 3); err != nil {
			t.Fatal(err)
		}
		opt, err := New(dev, Config{Name: "lomo", Schedule: Schedule{Kind: "constant", LR: 0.05}, ClipGradNorm: 0.5,
			LoRA: &LoRA{Schedule: Schedule{Kind: "constant", LR: 0.01}}}, gpu.F32)
		if err != nil {
			t.Fatal(err)
		}
		defer opt.Release()
		var res Result
		for i := range 2 {
			m.SetDropoutSeed(uint32(100 + i))
			if res, err = opt.Step(m.Trainable(), forward(m, in)); err != nil {
				t.Fatal(err)
			}
		}
		return values(t, m.Trainable()), res
	}
	kept, res := step(true)
	if !res.KeptForward {
		t.Errorf("LoRA beside LOMO, checkpointed: the forward was not kept")
	}
	again, _ := step(false)
	for name, w := range again {
		assertSame(t, name, kept[name], w)
	}
}

// assertSame fails unless got and want are the same bits.
func assertSame(t *testing.T, what string, got, want []float64) {
	t.Helper()
	for i := range want {
		if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
			t.Fatalf("%s[%d] = %v, want %v bit for bit", what, i, got[i], want[i])
		}
	}
}

// TestLossScalerOverflowAndGrowth: under f16 parameters an overflowing
// scaled gradient skips the step (weights untouched) and halves the scale;
// after `Window` good steps the scale doubles (REFERENCE §2).
func TestLossScalerOverflowAndGrowth(t *testing.T) {
	m, in := toyModel(t, gpu.F16, false)
	opt, err := New(dev, Config{Name: "lomo", Schedule: Schedule{Kind: "constant", LR: 1e-3}, ClipGradNorm: 1}, gpu.F16)
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Release()
	sc := opt.(*fused).scaler
	sc.Scale = 1e12 // gradients of order 1e-2 scaled past the f16 range
	sc.Window = 3
	w0 := weights(t, m)
	res, err := opt.Step(m.Params(), forward(m, in))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Skipped || sc.Scale != 5e11 {
		t.Errorf("overflow: skipped=%v scale=%g, want skipped and 5e11", res.Skipped, sc.Scale)
	}
	compare(t, "weights after a skipped step", weights(t, m), w0, 0, 0)
	sc.Scale = 4 // small enough: no overflow
	for i := 0; i < 3; i++ {
		res, err := opt.Step(m.Params(), forward(m, in))
		if err != nil {
			t.Fatal(err)
		}
		if res.Skipped {
			t.Fatalf("step %d skipped at scale %g", i, res.LossScale)
		}
	}
	if sc.Scale != 8 {
		t.Errorf("after 3 good steps with window 3: scale %g, want 8", sc.Scale)
	}
	if _, err := New(dev, Config{Name: "lomo", Schedule: Schedule{Kind: "constant", LR: 1}}, gpu.F16); err == nil {
		t.Error("lomo with f16 and no clip_grad_norm was accepted")
	}
}

// refAdaLomo is REFERENCE §3 in float64 for one parameter.
type refAdaLomo struct{ r, c, v []float64 }

func (s *refAdaLomo) step(p, g []float64, rows, cols, t int, lr float64) {
	beta := 1 - math.Pow(float64(t), -0.8)
	const eps1, eps2, clip = 1e-30, 1e-3, 1.0
	u := make([]float64, len(g))
	if rows > 1 {
		if s.r == nil {
			s.r, s.c = make([]float64, rows), make([]float64, cols)
		}
		for i := 0; i < rows; i++ {
			m := 0.0
			for j := 0; j < cols; j++ {
				m += g[i*cols+j]*g[i*cols+j] + eps1
			}
			s.r[i] = beta*s.r[i] + (1-beta)*m/float64(cols)
		}
		for j := 0; j < cols; j++ {
			m := 0.0
			for i := 0; i < rows; i++ {
				m += g[i*cols+j]*g[i*cols+j] + eps1
			}
			s.c[j] = beta*s.c[j] + (1-beta)*m/float64(rows)
		}
		mr := 0.0
		for _, x := range s.r {
			mr += x
		}
		mr /= float64(rows)
		for i := 0; i < rows; i++ {
			for j := 0; j < cols; j++ {
				u[i*cols+j] = g[i*cols+j] / math.Sqrt(s.r[i]/mr) / math.Sqrt(s.c[j])
			}
		}
	} else {
		if s.v == nil {
			s.v = make([]float64, len(g))
		}
		for i := range g {
			s.v[i] = beta*s.v[i] + (1-beta)*(g[i]*g[i]+eps1)
			u[i] = g[i] / math.Sqrt(s.v[i])
		}
	}
	rms := func(x []float64) float64 {
		q := 0.0
		for _, y := range x {
			q += y * y
		}
		return math.Sqrt(q / float64(len(x)))
	}
	div := math.Max(1, rms(u)/clip)
	lrt := lr * math.Max(eps2, rms(p))
	for i := range p {
		p[i] -= lrt * u[i] / div
	}
}

// TestAdaLomoMatchesReference: three AdaLomo steps on the toy model follow a
// float64 implementation of REFERENCE §3 fed with the full gradient of each
// step.
func TestAdaLomoMatchesReference(t *testing.T) {
	m, in := toyModel(t, gpu.F32, false)
	const lr = 0.01
	opt, err := New(dev, Config{Name: "adalomo", Schedule: Schedule{Kind: "constant", LR: lr}}, gpu.F32)
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Release()
	ref := map[string]*refAdaLomo{}
	host := weights(t, m)
	for step := 1; step <= 3; step++ {
		g := fullGrads(t, m, in)
		for _, p := range m.Params() {
			if ref[p.Name] == nil {
				ref[p.Name] = &refAdaLomo{}
			}
			ref[p.Name].step(host[p.Name], g[p.Name], p.Rows(), p.Cols(), step, lr)
		}
		if _, err := opt.Step(m.Params(), forward(m, in)); err != nil {
			t.Fatal(err)
		}
		// The GPU's gradients come from its own (f32) weights, which differ
		// from the float64 reference's by rounding: 1e-5 relative.
		compare(t, fmt.Sprintf("step %d", step), weights(t, m), host, 1e-5, 1e-7)
	}
}

// TestEmbeddingRows: steps with the embedding's gradient by rows (the
// batch's rows, the others read as zeros) and, under LOMO, the head's by
// blocks of rows give the weights of steps with the whole gradients, bit
// for bit: LOMO with and without weight decay (which moves the rows
// outside the batch too, and must move each head row once), AdaLomo with
// weight decay, in f32 and bf16 (stochastic rounding included). In bf16, where the embedding's f32
// gradient was the largest, the gradients' peak is then smaller.
func TestEmbeddingRows(t *testing.T) {
	defer func(b int) { byRows, nn.HeadGradBlockBytes = true, b }(nn.HeadGradBlockBytes)
	// The toy head's 29 rows in blocks of 4, the last shorter.
	nn.HeadGradBlockBytes = 4 * 16 * 2
	for _, c := range []struct {
		name string
		wd   float64
		dt   gpu.DType
	}{{"lomo", 0, gpu.F32}, {"lomo", 0.1, gpu.F32}, {"lomo", 0.1, gpu.BF16}, {"adalomo", 0.1, gpu.F32}, {"adalomo", 0, gpu.BF16}} {
		t.Run(fmt.Sprintf("%s_wd%v_%v", c.name, c.wd, c.dt), func(t *testing.T) {
			run := func(rows bool) (map[string][]float64, int64) {
				byRows = rows
				m, in := toyModel(t, c.dt, false)
				opt, err := New(dev, Config{Name: c.name, Schedule: Schedule{Kind: "constant", LR: 0.01}, WeightDecay: c.wd}, c.dt)
				if err != nil {
					t.Fatal(err)
				}
				defer opt.Release()
				dev.ResetPeak()
				for step := 0; step < 3; step++ {
					if _, err := opt.Step(m.Params(), forward(m, in)); err != nil {
						t.Fatal(err)
					}
				}
				return weights(t, m), dev.Stats().Tag(gpu.TagGrad).Peak
			}
			dense, densePeak := run(false)
			sparse, sparsePeak := run(true)
			// In a bf16 model the embedding's f32 gradient is the largest
			// (the head's is bf16 and, in this toy, one block).
			if c.dt == gpu.BF16 && sparsePeak >= densePeak {
				t.Errorf("gradients' peak %d bytes by rows, %d whole: want smaller", sparsePeak, densePeak)
			}
			for name, w := range dense {
				for i := range w {
					if math.Float64bits(sparse[name][i]) != math.Float64bits(w[i]) {
						t.Fatalf("%s[%d]: %v with the gradients by rows, %v whole", name, i, sparse[name][i], w[i])
					}
				}
			}
		})
	}
}

// TestNonFiniteWeightsFailStep: an update that pushes f16 weights past
// ±65504 (here a learning rate of 1e8 on gradients of order 1e-2) fails the
// step with a *NonFiniteError naming the first such weight, for each
// optimizer; the weights are not silently left non-finite.
func TestNonFiniteWeightsFailStep(t *testing.T) {
	for _, name := range []string{"lomo", "adalomo", "sgd"} {
		t.Run(name, func(t *testing.T) {
			m, in := toyModel(t, gpu.F16, false)
			opt, err := New(dev, Config{Name: name, Schedule: Schedule{Kind: "constant", LR: 1e8}, ClipGradNorm: 1e9, LossScale: 1}, gpu.F16)
			if err != nil {
				t.Fatal(err)
			}
			defer opt.Release()
			_, err = opt.Step(m.Params(), forward(m, in))
			var nf *NonFiniteError
			if !errors.As(err, &nf) {
				t.Fatalf("step with lr 1e8 in f16: got %v, want a *NonFiniteError", err)
			}
			t.Logf("error as reported: %v", err)
			w := weights(t, m)[nf.Param]
			if nf.Index < 0 || nf.Index >= len(w) || !math.IsInf(w[nf.Index], 0) && !math.IsNaN(w[nf.Index]) || nf.Count < 1 || nf.Params < 1 {
				t.Errorf("%+v does not name a non-finite weight", nf)
			}
		})
	}
}

// TestScaleWindow: the f16 loss scale's growth interval is a tenth of the
// run (10 to the reference's 1000 steps) unless configured, so a scale that
// fell early in a short run grows back within it; AdaLomo's scale is
// dynamic too: an overflow halves it.
func TestScaleWindow(t *testing.T) {
	for _, tc := range []struct{ total, want int }{{0, 10}, {30, 10}, {250, 25}, {20000, 1000}} {
		if got := ScaleWindow(tc.total); got != tc.want {
			t.Errorf("ScaleWindow(%d) = %d, want %d", tc.total, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name   string
		window int
		want   int
		scale  float64
	}{{"lomo", 0, 10, 1 << 16}, {"lomo", 7, 7, 1 << 16}, {"adalomo", 0, 10, 1 << 10}} {
		opt, err := New(dev, Config{Name: tc.name, Schedule: Schedule{Kind: "constant", LR: 1e-3, Total: 50}, ClipGradNorm: 1, ScaleWindow: tc.window}, gpu.F16)
		if err != nil {
			t.Fatal(err)
		}
		sc := opt.(*fused).scaler
		if !sc.Dynamic || sc.Window != tc.want || sc.Scale != tc.scale {
			t.Errorf("%s with scale window %d over 50 steps: %+v, want a dynamic scale from %g with window %d", tc.name, tc.window, *sc, tc.scale, tc.want)
		}
		opt.Release()
	}
	m, in := toyModel(t, gpu.F16, false)
	opt, err := New(dev, Config{Name: "adalomo", Schedule: Schedule{Kind: "constant", LR: 1e-3}, ClipGradNorm: 1, LossScale: 1e12}, gpu.F16)
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Release()
	res, err := opt.Step(m.Params(), forward(m, in))
	if err != nil {
		t.Fatal(err)
	}
	if sc := opt.(*fused).scaler; !res.Skipped || sc.Scale != 5e11 {
		t.Errorf("adalomo overflow at 1e12: skipped=%v scale=%g, want skipped and 5e11", res.Skipped, sc.Scale)
	}
}

// TestTunedStep: with tuning on (every matmul timing every tiling on its
// first call, wgsl/tune.go), two LOMO steps with clipping, checkpointing
// and the kept forward give the weights of the untuned steps, bit for bit:
// tuning never runs an accumulating call twice, and every tiling gives the
// same bits.
func TestTunedStep(t *testing.T) {
	step := func(tune bool) map[string][]float64 {
		was, minFlops := dev.Tunes(), wgsl.TuneMinFlops
		defer func() { dev.SetTuning(was); wgsl.TuneMinFlops = minFlops }()
		dev.SetTuning(tune)
		wgsl.TuneMinFlops = 0
		m, in := toyModel(t, gpu.F32, true) // the tied head accumulates into the embedding's gradient
		m.Checkpointing = true
		opt, err := New(dev, Config{Name: "lomo", Schedule: Schedule{Kind: "constant", LR: 0.05}, ClipGradNorm: 0.5}, gpu.F32)
		if err != nil {
			t.Fatal(err)
		}
		defer opt.Release()
		for range 2 {
			if _, err := opt.Step(m.Params(), forward(m, in)); err != nil {
				t.Fatal(err)
			}
		}
		return weights(t, m)
	}
	before := len(dev.Choices())
	tuned := step(true)
	if len(dev.Choices()) == before {
		t.Fatal("tuning on made no choice")
	}
	for name, w := range step(false) {
		assertSame(t, name, tuned[name], w)
	}
}
