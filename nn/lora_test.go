package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/peft"
	"github.com/lomo-dev/lomo/hf/safetensors"
	"github.com/lomo-dev/lomo/wgsl"
)

// TestLoRALinearMatchesFloat64: one adapted layer, y = x·Wᵀ +
// s·dropout(x)·Aᵀ·Bᵀ, under a cross-entropy on y: the loss and the
// gradients of x, W, A and B equal a float64 computation of the same
// formulas with the kernel's dropout mask (wgsl.DropoutKeep).
func TestLoRALinearMatchesFloat64(t *testing.T) {
	const n, k, o, r = 6, 12, 10, 3
	const p, seed, scale = 0.25, 99, 2.5
	rg := rand.New(rand.NewPCG(21, 22))
	randv := func(c int, s float64) []float64 {
		v := make([]float64, c)
		for i := range v {
			v[i] = float64(float32(rg.NormFloat64() * s))
		}
		return v
	}
	xs, ws, as, bs := randv(n*k, 1), randv(o*k, 0.4), randv(r*k, 0.4), randv(o*r, 0.4)
	labels := make([]int, n)
	for i := range labels {
		labels[i] = rg.IntN(o)
	}
	labels[2] = IgnoreIndex
	param := func(name string, v []float64, shape ...int) *Param {
		pp, err := NewParam(dev, name, gpu.F32, shape...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pp.Release)
		f := make([]float32, len(v))
		for i := range v {
			f[i] = float32(v[i])
		}
		if err := dev.Write(pp.Buf, 0, EncodeF32(f, gpu.F32)); err != nil {
			t.Fatal(err)
		}
		return pp
	}
	W, A, B := param("w", ws, o, k), param("a", as, r, k), param("b", bs, o, r)
	// x is an activation whose gradient is wanted: a leaf of the tape.
	xf := make([]float32, len(xs))
	for i := range xs {
		xf[i] = float32(xs[i])
	}
	X, err := FromF32(dev, gpu.TagActivation, gpu.F32, xf, n, k)
	if err != nil {
		t.Fatal(err)
	}
	defer X.Release()
	X.needsGrad = true
	lab, err := dev.NewBuffer(gpu.TagScratch, 4*n)
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Release()
	if err := dev.Write(lab, 0, u32Bytes(labels)); err != nil {
		t.Fatal(err)
	}
	tape := NewTape(dev, true)
	y, err := tape.Linear(X, W)
	if err != nil {
		t.Fatal(err)
	}
	xd, err := tape.Dropout(X, p, seed)
	if err != nil {
		t.Fatal(err)
	}
	z, err := tape.Linear(xd, A)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tape.AddLinear(y, z, B, scale); err != nil {
		t.Fatal(err)
	}
	xd.Release()
	z.Release()
	loss, err := tape.CrossEntropy(y, lab, LossOptions{GradScale: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer loss.Release()
	lossV, err := ReadF32(dev, loss)
	if err != nil {
		t.Fatal(err)
	}
	grads := map[string][]float32{}
	if err := tape.Backward(loss, func(pp *Param, g *gpu.Buffer) error {
		v, err := ReadBufferF32(dev, g, pp.Len(), gpu.F32)
		grads[pp.Name] = v
		return err
	}); err != nil {
		t.Fatal(err)
	}
	y.Release()
	if X.grad == nil {
		t.Fatal("no gradient reached x")
	}
	if grads["x"], err = ReadBufferF32(dev, X.grad, X.Len(), gpu.F32); err != nil {
		t.Fatal(err)
	}
	X.grad.Release()
	X.grad = nil

	// float64 reference
	th := wgsl.DropoutThreshold(p)
	keep := func(i int) float64 {
		if wgsl.DropoutKeep(seed, th, i) {
			return float64(float32(1 / (1 - p)))
		}
		return 0
	}
	xdv := make([]float64, n*k)
	for i := range xdv {
		xdv[i] = xs[i] * keep(i)
	}
	zv := make([]float64, n*r)
	for i := 0; i < n; i++ {
		for j := 0; j < r; j++ {
			for c := 0; c < k; c++ {
				zv[i*r+j] += xdv[i*k+c] * as[j*k+c]
			}
		}
	}
	yv := make([]float64, n*o)
	for i := 0; i < n; i++ {
		for j := 0; j < o; j++ {
			for c := 0; c < k; c++ {
				yv[i*o+j] += xs[i*k+c] * ws[j*k+c]
			}
			for c := 0; c < r; c++ {
				yv[i*o+j] += scale * zv[i*r+c] * bs[j*r+c]
			}
		}
	}
	dy := make([]float64, n*o)
	wantLoss := make([]float64, n)
	for i := 0; i < n; i++ {
		if labels[i] < 0 {
			continue
		}
		mx := math.Inf(-1)
		for j := 0; j < o; j++ {
			mx = math.Max(mx, yv[i*o+j])
		}
		s := 0.0
		for j := 0; j < o; j++ {
			s += math.Exp(yv[i*o+j] - mx)
		}
		wantLoss[i] = mx + math.Log(s) - yv[i*o+labels[i]]
		for j := 0; j < o; j++ {
			dy[i*o+j] = math.Exp(yv[i*o+j]-mx) / s
		}
		dy[i*o+labels[i]]--
	}
	dW, dA, dB, dX, dz := make([]float64, o*k), make([]float64, r*k), make([]float64, o*r), make([]float64, n*k), make([]float64, n*r)
	for i := 0; i < n; i++ {
		for j := 0; j < o; j++ {
			g := dy[i*o+j]
			for c := 0; c < k; c++ {
				dW[j*k+c] += g * xs[i*k+c]
				dX[i*k+c] += g * ws[j*k+c]
			}
			for c := 0; c < r; c++ {
				dB[j*r+c] += scale * g * zv[i*r+c]
				dz[i*r+c] += scale * g * bs[j*r+c]
			}
		}
	}
	for i := 0; i < n; i++ {
		for j := 0; j < r; j++ {
			for c := 0; c < k; c++ {
				dA[j*k+c] += dz[i*r+j] * xdv[i*k+c]
				dX[i*k+c] += dz[i*r+j] * as[j*k+c] * keep(i*k+c)
			}
		}
	}
	check := func(what string, got []float32, want []float64) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
		}
		for i := range want {
			if math.Abs(float64(got[i])-want[i]) > 1e-5+1e-5*math.Abs(want[i]) {
				t.Errorf("%s[%d] = %.7g, float64 %.7g", what, i, got[i], want[i])
				return
			}
		}
	}
	check("loss", lossV, wantLoss)
	check("dx", grads["x"], dX)
	check("dW", grads["w"], dW)
	check("dA", grads["a"], dA)
	check("dB", grads["b"], dB)
	dropped := 0
	for i := 0; i < n*k; i++ {
		if keep(i) == 0 {
			dropped++
		}
	}
	if dropped == 0 || dropped == n*k {
		t.Errorf("dropout at p=%g dropped %d of %d inputs", p, dropped, n*k)
	}
}

// withLoRA adds adapters on every linear layer of a toy model, with B
// random (not PEFT's zeros) so that every gradient and output is exercised.
func withLoRA(t *testing.T, m *Llama, dropout float64) {
	t.Helper()
	if err := m.AddLoRA(peft.New(2, 4, dropout, peft.Modules, "toy"), 5); err != nil {
		t.Fatal(err)
	}
	rg := rand.New(rand.NewPCG(7, 8))
	for _, a := range m.LoRAAdapters() {
		v := make([]float32, a.B.Len())
		for i := range v {
			v[i] = float32(rg.NormFloat64() * 0.2)
		}
		if err := dev.Write(a.B.Buf, 0, EncodeF32(v, gpu.F32)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLoRAModelGradients: a toy model with adapters on all seven linear
// layers: one callback per parameter, adapters included, in reverse order
// of use; checkpointing gives the same gradients; the adapters' gradients
// match central differences of the loss; with the base frozen only the
// adapters get callbacks, with the same gradients, and no gradient of a
// base weight is ever allocated.
func TestLoRAModelGradients(t *testing.T) {
	m := newToy(t, false)
	withLoRA(t, m, 0)
	in := toyBatch(t, m)
	var plain gradRecord
	for _, ckpt := range []bool{false, true} {
		m.Checkpointing = ckpt
		rec := backward(t, m, in)
		if len(rec.grads) != len(m.Params())+len(m.LoRAParams()) {
			t.Fatalf("checkpointing=%v: %d callbacks for %d parameters", ckpt, len(rec.grads), len(m.Params())+len(m.LoRAParams()))
		}
		if !ckpt {
			plain = rec
			continue
		}
		sameGrads(t, "checkpointed", rec.grads, "plain", plain.grads)
	}
	r := rand.New(rand.NewPCG(9, 10))
	for _, p := range m.LoRAParams() {
		vals, err := ReadF32(dev, p.Tensor)
		if err != nil {
			t.Fatal(err)
		}
		for s := 0; s < 2; s++ {
			i := r.IntN(len(vals))
			checkCentralDiff(t, m, in, p, vals, i, plain.grads[p.Name][i])
		}
	}
	m.FreezeBase()
	var largest int64
	for _, p := range m.LoRAParams() {
		largest = max(largest, p.GradDType().Bytes(p.Len()))
	}
	for _, ckpt := range []bool{false, true} {
		m.Checkpointing = ckpt
		rec := backward(t, m, in)
		var want []string
		for _, p := range m.LoRAParams() {
			want = append(want, p.Name)
		}
		got := slices.Sorted(func(yield func(string) bool) {
			for n := range rec.grads {
				if !yield(n) {
					return
				}
			}
		})
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("frozen base, checkpointing=%v: callbacks for %v, want the adapters %v", ckpt, got, want)
		}
		sameGrads(t, "base frozen", rec.grads, "base trainable", plain.grads)
		if peak := dev.Stats().Tag(gpu.TagGrad).Peak; peak == 0 || peak > largest {
			t.Errorf("frozen base, checkpointing=%v: grad peak %d bytes; the largest adapter gradient is %d (a base gradient was allocated?)", ckpt, peak, largest)
		}
	}
}

// TestFrozenLayersLeakNothing: with the base frozen and adapters on some
// layers only, parts of the first block need no gradient (its input, the
// embedding, has none): the keys beside adapted queries, the gate beside
// an adapted up projection, an attention half that is all frozen. Their
// ops must not leave gradient buffers behind: after backward, with and
// without checkpointing, every activation byte is released.
func TestFrozenLayersLeakNothing(t *testing.T) {
	for _, targets := range [][]string{{"q_proj", "up_proj"}, {"down_proj"}} {
		m := newToy(t, false)
		if err := m.AddLoRA(peft.New(2, 4, 0, targets, "toy"), 5); err != nil {
			t.Fatal(err)
		}
		m.FreezeBase()
		in := toyBatch(t, m)
		for _, ckpt := range []bool{false, true} {
			m.Checkpointing = ckpt
			before := dev.Stats().Tag(gpu.TagActivation).Live
			rec := backward(t, m, in)
			if len(rec.grads) != 2*len(targets)*len(m.Layers) {
				t.Errorf("%v: %d callbacks", targets, len(rec.grads))
			}
			if after := dev.Stats().Tag(gpu.TagActivation).Live; after != before {
				t.Errorf("%v, checkpointing=%v: %d activation bytes live after backward, %d before", targets, ckpt, after, before)
			}
		}
	}
}

func logitsOf(t *testing.T, m *Llama, in *Inputs) []float32 {
	t.Helper()
	tape := NewTape(dev, false)
	l, err := m.Logits(tape, in)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	v, err := ReadF32(dev, l)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestLoRASaveLoadMerge: adapters saved in PEFT layout load back into a
// fresh copy of the base with bit-identical logits; merging them into the
// weights gives the logits of the unmerged model within f32 rounding.
func TestLoRASaveLoadMerge(t *testing.T) {
	m := newToy(t, true)
	in := toyBatch(t, m)
	base := logitsOf(t, m, in)
	withLoRA(t, m, 0.1)
	adapted := logitsOf(t, m, in)
	if slices.Equal(base, adapted) {
		t.Fatal("the adapters do not change the logits")
	}
	dir := t.TempDir()
	if err := m.SaveLoRA(dir, "org/toy"); err != nil {
		t.Fatal(err)
	}
	cfg, err := peft.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BaseModelNameOrPath != "org/toy" || cfg.R != 2 || cfg.LoraAlpha != 4 || cfg.LoraDropout != 0.1 || cfg.TaskType != "CAUSAL_LM" || !slices.Equal(cfg.TargetModules, peft.Modules) {
		t.Errorf("saved config %+v", cfg)
	}
	st, err := safetensors.OpenFile(filepath.Join(dir, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	ti, ok := st.Info("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")
	st.Close()
	if !ok || !slices.Equal(ti.Shape, []int{16, 2}) {
		t.Errorf("down_proj lora_B of layer 1: %v %v, want shape [16 2] (out x r)", ok, ti.Shape)
	}

	fresh := newToy(t, true)
	if err := fresh.LoadLoRA(dir); err != nil {
		t.Fatal(err)
	}
	if got := logitsOf(t, fresh, in); !slices.Equal(got, adapted) {
		t.Error("the loaded adapters give other logits than the saved ones")
	}
	if err := fresh.MergeLoRA(); err != nil {
		t.Fatal(err)
	}
	if len(fresh.LoRAParams()) != 0 {
		t.Error("adapters left after merging")
	}
	merged := logitsOf(t, fresh, in)
	for i := range merged {
		if d := math.Abs(float64(merged[i] - adapted[i])); d > 1e-5+1e-5*math.Abs(float64(adapted[i])) {
			t.Fatalf("logit %d: merged %g, with adapters %g", i, merged[i], adapted[i])
		}
	}
}

// TestLoadLoRARefusesMismatches: each way an adapter folder can disagree
// with the model is an error naming it, and the model is left without
// adapters.
func TestLoadLoRARefusesMismatches(t *testing.T) {
	m := newToy(t, false)
	good := t.TempDir()
	withLoRA(t, m, 0)
	if err := m.SaveLoRA(good, "toy"); err != nil {
		t.Fatal(err)
	}
	m.releaseLoRA()
	// write makes an adapter folder from the good one, with its config
	// edited and its tensors renamed, reshaped or dropped.
	write := func(t *testing.T, cfgEdit func(string) string, tensors func(name string, shape []int) (string, []int)) string {
		dir := t.TempDir()
		b, err := os.ReadFile(filepath.Join(good, peft.ConfigFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, peft.ConfigFile), []byte(cfgEdit(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
		st, err := safetensors.OpenFile(filepath.Join(good, peft.WeightsFile))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		var infos []safetensors.TensorInfo
		for _, ti := range st.Tensors() {
			name, shape := tensors(ti.Name, ti.Shape)
			if name != "" {
				infos = append(infos, safetensors.TensorInfo{Name: name, DType: safetensors.F32, Shape: shape})
			}
		}
		w, err := safetensors.Create(filepath.Join(dir, peft.WeightsFile), infos, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range infos {
			n := 1
			for _, s := range ti.Shape {
				n *= s
			}
			if err := w.WriteF32(ti.Name, make([]float32, n)); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	same := func(s string) string { return s }
	keep := func(n string, s []int) (string, []int) { return n, s }
	for _, c := range []struct {
		name    string
		cfg     func(string) string
		tensors func(string, []int) (string, []int)
		want    string
	}{
		{"ranks disagree", func(s string) string { return strings.Replace(s, `"r": 2`, `"r": 4`, 1) }, keep, "rank r=4"},
		{"unknown module", func(s string) string { return strings.Replace(s, `"q_proj"`, `"qkv_proj"`, 1) }, keep, `"qkv_proj" is not a linear layer`},
		{"missing tensor", same, func(n string, s []int) (string, []int) {
			if strings.Contains(n, "layers.1.mlp.up_proj.lora_A") {
				return "", nil
			}
			return n, s
		}, "missing base_model.model.model.layers.1.mlp.up_proj.lora_A.weight"},
		{"base shape", same, func(n string, s []int) (string, []int) {
			if strings.Contains(n, "layers.0.self_attn.q_proj.lora_A") {
				return n, []int{2, 20}
			}
			return n, s
		}, "q_proj.lora_A.weight is [2 20], want [2 16] (from the base model's layer)"},
		{"extra layer", same, func(n string, s []int) (string, []int) {
			return strings.Replace(n, "layers.1.", "layers.7.", 1), s
		}, "layer 7, the model has 2"},
		{"dora", func(s string) string { return strings.Replace(s, `"use_dora": false`, `"use_dora": true`, 1) }, keep, "use_dora is not supported"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := write(t, c.cfg, c.tensors)
			err := m.LoadLoRA(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
			if len(m.LoRAParams()) != 0 || m.PeftConfig() != nil {
				t.Error("a refused adapter left adapters on the model")
			}
		})
	}
	if err := m.LoadLoRA(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a PEFT adapter folder") {
		t.Errorf("an empty folder: %v", err)
	}
	_ = fmt.Sprint
}
