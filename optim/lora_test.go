package optim

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/peft"
	"github.com/lomo-dev/lomo/nn"
)

// loraToy is the toy model with adapters on q_proj and down_proj, B drawn
// at random (PEFT starts it at zero, which would leave A's first gradient
// zero).
func loraToy(t *testing.T) (*nn.Llama, *nn.Inputs) {
	t.Helper()
	m, in := toyModel(t, gpu.F32, false)
	if err := m.AddLoRA(peft.New(2, 4, 0, []string{"q_proj", "down_proj"}, "toy"), 3); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(4, 5))
	for _, a := range m.LoRAAdapters() {
		v := make([]float32, a.B.Len())
		for i := range v {
			v[i] = float32(r.NormFloat64() * 0.3)
		}
		if err := dev.Write(a.B.Buf, 0, nn.EncodeF32(v, gpu.F32)); err != nil {
			t.Fatal(err)
		}
	}
	return m, in
}

func values(t *testing.T, ps []*nn.Param) map[string][]float64 {
	t.Helper()
	w := map[string][]float64{}
	for _, p := range ps {
		v, err := nn.ReadF32(dev, p.Tensor)
		if err != nil {
			t.Fatal(err)
		}
		w[p.Name] = make([]float64, len(v))
		for i, x := range v {
			w[p.Name][i] = float64(x)
		}
	}
	return w
}

// adamFirstStep is AdamW's first step in float64: with m̂ = g and v̂ = g²,
// the update is lr·g/(|g|+eps) after decoupled weight decay.
func adamFirstStep(w, g []float64, lr, wd, coef float64) []float64 {
	out := make([]float64, len(w))
	for i := range w {
		gi := coef * g[i]
		out[i] = w[i]*(1-lr*wd) - lr*gi/(math.Abs(gi)+1e-8)
	}
	return out
}

// TestLoRAOnly: with the base frozen, a step trains the adapters by AdamW
// (one float64 step of it from the adapters' gradients, clipped by their
// norm) at the adapters' learning rate, leaves every base weight
// bit-identical, and allocates gradients for the adapters only.
func TestLoRAOnly(t *testing.T) {
	m, in := loraToy(t)
	m.FreezeBase()
	base0 := values(t, m.Params())
	a0 := values(t, m.LoRAParams())
	g := fullGrads(t, m, in)
	if len(g) != len(m.LoRAParams()) {
		t.Fatalf("%d gradients with the base frozen, %d adapter matrices", len(g), len(m.LoRAParams()))
	}
	const lr, wd, clip = 0.01, 0.1, 0.05
	opt, err := New(dev, Config{Name: "lomo", Schedule: Schedule{Kind: "constant", LR: 99, Total: 3}, ClipGradNorm: clip,
		LoRA: &LoRA{Only: true, Schedule: Schedule{Kind: "constant", LR: lr, Total: 3}, WeightDecay: wd}}, gpu.F32)
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Release()
	dev.ResetPeak()
	res, err := opt.Step(m.Trainable(), forward(m, in))
	if err != nil {
		t.Fatal(err)
	}
	coef := math.Min(1, clip/(norm(g)+1e-6))
	if math.Abs(res.GradNorm-norm(g)) > 1e-5*norm(g) || coef >= 1 || res.LR != lr {
		t.Errorf("step: grad norm %v (want %v), lr %v (want %v), clip coefficient %v", res.GradNorm, norm(g), res.LR, lr, res.ClipCoef)
	}
	want := map[string][]float64{}
	for name, w := range a0 {
		want[name] = adamFirstStep(w, g[name], lr, wd, coef)
	}
	compare(t, "adapters after one step", values(t, m.LoRAParams()), want, 1e-5, 1e-6)
	var adapterBytes, largest int64
	for _, p := range m.LoRAParams() {
		adapterBytes += p.GradDType().Bytes(p.Len())
		largest = max(largest, p.GradDType().Bytes(p.Len()))
	}
	// The adapters' gradients are kept (all of them) plus the one being
	// written: nothing of the base's.
	if peak := dev.Stats().Tag(gpu.TagGrad).Peak; peak == 0 || peak > adapterBytes+largest {
		t.Errorf("grad peak %d bytes; the adapters' gradients are %d bytes", peak, adapterBytes)
	}
	for i := 0; i < 2; i++ {
		if _, err := opt.Step(m.Trainable(), forward(m, in)); err != nil {
			t.Fatal(err)
		}
	}
	for name, w := range values(t, m.Params()) {
		if !slices.Equal(w, base0[name]) {
			t.Errorf("frozen %s changed", name)
		}
	}
}

// TestLoRAWithLomo: with the base trained, one step updates the base by
// LOMO (plain SGD at learning_rate) and the adapters by AdamW at their own
// rate, in the same backward pass, both with the clip coefficient of the
// norm of all gradients together.
func TestLoRAWithLomo(t *testing.T) {
	for _, clip := range []float64{0, 0.3} {
		m, in := loraToy(t)
		w0 := values(t, m.Params())
		a0 := values(t, m.LoRAParams())
		g := fullGrads(t, m, in)
		const lr, alr = 0.05, 0.002
		opt, err := New(dev, Config{Name: "lomo", Schedule: Schedule{Kind: "constant", LR: lr, Total: 1}, ClipGradNorm: clip,
			LoRA: &LoRA{Schedule: Schedule{Kind: "constant", LR: alr, Total: 1}}}, gpu.F32)
		if err != nil {
			t.Fatal(err)
		}
		res, err := opt.Step(m.Trainable(), forward(m, in))
		opt.Release()
		if err != nil {
			t.Fatal(err)
		}
		coef := 1.0
		if clip > 0 {
			coef = math.Min(1, clip/(norm(g)+1e-6))
			if coef >= 1 || math.Abs(res.ClipCoef-coef) > 1e-5 {
				t.Errorf("clip coefficient %v, want %v (< 1)", res.ClipCoef, coef)
			}
		}
		want := map[string][]float64{}
		for name, w := range w0 {
			want[name] = make([]float64, len(w))
			for i := range w {
				want[name][i] = w[i] - lr*coef*g[name][i]
			}
		}
		compare(t, "base after one LoRA+LOMO step", values(t, m.Params()), want, 1e-5, 1e-6)
		want = map[string][]float64{}
		for name, w := range a0 {
			want[name] = adamFirstStep(w, g[name], alr, 0, coef)
		}
		compare(t, "adapters after one LoRA+LOMO step", values(t, m.LoRAParams()), want, 1e-5, 1e-6)
	}
	// An adapter reaching an optimizer that was not told about LoRA is an
	// error, not an SGD step on it.
	m, in := loraToy(t)
	opt, err := New(dev, Config{Name: "lomo", Schedule: Schedule{Kind: "constant", LR: 0.1, Total: 1}}, gpu.F32)
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Release()
	if _, err := opt.Step(m.Trainable(), forward(m, in)); err == nil {
		t.Error("a LoRA matrix was updated by an optimizer without LoRA settings")
	}
	if _, err := New(dev, Config{Name: "adamw", Schedule: Schedule{Kind: "constant", LR: 0.1, Total: 1}, LoRA: &LoRA{Schedule: Schedule{Kind: "constant", LR: 0.1, Total: 1}}}, gpu.F32); err == nil {
		t.Error("LoRA with an AdamW base was accepted")
	}
}
