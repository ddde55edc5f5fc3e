package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/internal/testgpu"
)

var dev *gpu.Device

func TestMain(m *testing.M) {
	testgpu.Main(m, func() (func(), error) {
		d, err := gpu.Open(gpu.Options{})
		if err != nil {
			return nil, fmt.Errorf("nn tests need a WebGPU adapter: %w", err)
		}
		fmt.Fprintf(os.Stderr, "nn tests on adapter %q (%s, %s)\n", d.Info.Name, d.Info.Type, d.Info.Backend)
		dev = d
		return d.Close, nil
	})
}

// toyConfig is a two-block LLaMA small enough for central differences.
func toyConfig(tied bool) *config.Llama {
	return &config.Llama{
		HiddenSize: 16, IntermediateSize: 24, NumLayers: 2, NumHeads: 4, NumKVHeads: 2,
		VocabSize: 37, RopeTheta: 10000, RMSNormEps: 1e-5, TieWordEmbeddings: tied,
		MaxPositionEmbeddings: 64, HeadDim: 4, ModelType: "llama", TorchDType: "float32",
		BOSTokenID: 1, EOSTokenID: 2, HiddenAct: "silu",
	}
}

// toyBatch: B=2, T=6, the second row left-padded by 2, labels shifted ids.
func toyBatch(t *testing.T, m *Llama) *Inputs {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	b, tt := 2, 6
	start := []int{0, 2}
	ids := make([]int, b*tt)
	labels := make([]int, b*tt)
	for i := range ids {
		ids[i] = 3 + r.IntN(m.Cfg.VocabSize-3)
	}
	for row := 0; row < b; row++ {
		for j := 0; j < tt; j++ {
			i := row*tt + j
			labels[i] = IgnoreIndex
			if j < start[row] {
				ids[i] = 0 // padding
			} else if j+1 < tt {
				labels[i] = ids[i+1]
			}
		}
	}
	in, err := m.NewInputs(b, tt, ids, labels, start)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Release)
	return in
}

func newToy(t *testing.T, tied bool) *Llama {
	t.Helper()
	m, err := NewLlama(dev, toyConfig(tied), gpu.F32)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Release)
	if err := m.InitRandom(11, 0.3); err != nil {
		t.Fatal(err)
	}
	// Norm weights away from 1 so that their gradients are exercised.
	r := rand.New(rand.NewPCG(5, 6))
	for _, p := range m.Params() {
		if len(p.Shape) == 1 {
			v := make([]float32, p.Len())
			for i := range v {
				v[i] = float32(0.8 + 0.4*r.Float64())
			}
			if err := dev.Write(p.Buf, 0, EncodeF32(v, gpu.F32)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return m
}

// lossValue runs a forward without grad and returns the mean loss.
func lossValue(t *testing.T, m *Llama, in *Inputs) float64 {
	t.Helper()
	tape := NewTape(dev, false)
	loss, err := m.Loss(tape, in, LossOptions{GradScale: 1 / float32(in.Count)})
	if err != nil {
		t.Fatal(err)
	}
	defer loss.Release()
	v, err := ReadF32(dev, loss)
	if err != nil {
		t.Fatal(err)
	}
	s := 0.0
	for _, x := range v {
		s += float64(x)
	}
	return s / float64(in.Count)
}

type gradRecord struct {
	order    []string
	grads    map[string][]float32
	peakGrad int64 // grad-tag live bytes seen at callbacks
}

// backward runs Loss and Backward, copying every gradient to the host.
func backward(t *testing.T, m *Llama, in *Inputs) gradRecord {
	t.Helper()
	rec := gradRecord{grads: map[string][]float32{}}
	tape := NewTape(dev, true)
	loss, err := m.Loss(tape, in, LossOptions{GradScale: 1 / float32(in.Count)})
	if err != nil {
		t.Fatal(err)
	}
	defer loss.Release()
	dev.ResetPeak()
	err = tape.Backward(loss, func(p *Param, g *gpu.Buffer) error {
		if _, dup := rec.grads[p.Name]; dup {
			return fmt.Errorf("second callback for %s", p.Name)
		}
		rec.order = append(rec.order, p.Name)
		v, err := ReadBufferF32(dev, g, p.Len(), p.GradDType())
		rec.grads[p.Name] = v
		rec.peakGrad = max(rec.peakGrad, dev.Stats().Tag(gpu.TagGrad).Live)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if live := dev.Stats().Tag(gpu.TagGrad).Live; live != 0 {
		t.Errorf("%d grad bytes still live after backward", live)
	}
	return rec
}

func largestParamBytes(m *Llama) int64 {
	var n int64
	for _, p := range m.Params() {
		n = max(n, p.GradDType().Bytes(p.Len()))
	}
	return n
}

// TestF16WeightGrads: an f16 model on an adapter with shader-f16 gets f16
// gradients for its matrices (the linear layers, an untied head) and f32
// ones for the embedding (also a tied head) and the norms; they follow the
// gradients of the f32 model with the same (f16-rounded) weights, which
// differ by the f16 activations and the f16 rounding of the gradients.
func TestF16WeightGrads(t *testing.T) {
	for _, tied := range []bool{false, true} {
		t.Run(fmt.Sprintf("tied=%v", tied), func(t *testing.T) {
			m32 := newToy(t, tied)
			m16, err := NewLlama(dev, toyConfig(tied), gpu.F16)
			if err != nil {
				t.Fatal(err)
			}
			defer m16.Release()
			for i, p := range m32.Params() {
				v, err := ReadF32(dev, p.Tensor)
				if err != nil {
					t.Fatal(err)
				}
				q := m16.Params()[i]
				if err := dev.Write(q.Buf, 0, EncodeF32(v, q.DType)); err != nil {
					t.Fatal(err)
				}
				if v, err = ReadF32(dev, q.Tensor); err != nil { // rounded to f16
					t.Fatal(err)
				}
				if err := dev.Write(p.Buf, 0, EncodeF32(v, gpu.F32)); err != nil {
					t.Fatal(err)
				}
			}
			for _, p := range m16.Params() {
				want := gpu.F32
				if dev.Caps.F16 && len(p.Shape) == 2 && p != m16.Embed {
					want = gpu.F16
				}
				if got := p.GradDType(); got != want {
					t.Errorf("%s (%v): gradient %v, want %v", p.Name, p.DType, got, want)
				}
				if got := m32.Param(p.Name).GradDType(); got != gpu.F32 {
					t.Errorf("f32 model's %s: gradient %v, want f32", p.Name, got)
				}
			}
			want := backward(t, m32, toyBatch(t, m32))
			got := backward(t, m16, toyBatch(t, m16))
			if got.peakGrad > largestParamBytes(m16) {
				t.Errorf("%d grad bytes live at a callback, largest parameter gradient is %d", got.peakGrad, largestParamBytes(m16))
			}
			// Gradients of order 1e-2..1e-1 through two blocks of f16
			// activations (2^-11 relative each) and one f16 rounding of
			// the result: a few 1e-3 of the largest (seen: 5.5e-3).
			worst := 0.0
			for name, w := range want.grads {
				scale := 0.0
				for _, x := range w {
					scale = max(scale, math.Abs(float64(x)))
				}
				for i, g := range got.grads[name] {
					d := math.Abs(float64(g-w[i])) / scale
					worst = max(worst, d)
					if d > 2e-2 {
						t.Errorf("%s[%d]: f16 model %g, f32 model %g (largest |grad| %g)", name, i, g, w[i], scale)
						break
					}
				}
			}
			t.Logf("largest difference: %.2g of the parameter's largest gradient", worst)
		})
	}
}

// TestBackwardContract checks DESIGN.md contract 1 on a two-block toy model,
// with and without activation checkpointing, untied and tied: each
// parameter once, in reverse order of use, with its complete gradient
// (against central differences of the loss), and never more gradient bytes
// alive than the largest single parameter's gradient.
func TestBackwardContract(t *testing.T) {
	for _, tied := range []bool{false, true} {
		t.Run(fmt.Sprintf("tied=%v", tied), func(t *testing.T) {
			m := newToy(t, tied)
			in := toyBatch(t, m)
			var plain gradRecord
			for _, ckpt := range []bool{false, true} {
				m.Checkpointing = ckpt
				rec := backward(t, m, in)
				var want []string
				for _, p := range m.Params() {
					want = append(want, p.Name)
				}
				slices.Reverse(want)
				if !slices.Equal(rec.order, want) {
					t.Errorf("checkpointing=%v: callback order\n got %v\nwant %v", ckpt, rec.order, want)
				}
				if rec.peakGrad > largestParamBytes(m) {
					t.Errorf("checkpointing=%v: %d grad bytes live at a callback, largest parameter gradient is %d", ckpt, rec.peakGrad, largestParamBytes(m))
				}
				if peak := dev.Stats().Tag(gpu.TagGrad).Peak; peak > largestParamBytes(m) {
					t.Errorf("checkpointing=%v: grad peak %d bytes over the largest parameter gradient %d", ckpt, peak, largestParamBytes(m))
				}
				if !ckpt {
					plain = rec
					continue
				}
				// Recomputation must give the same gradients as the plain
				// backward (same kernels on the same values: f32 rounding only).
				sameGrads(t, "checkpointed", rec.grads, "plain", plain.grads)
			}
			// Central differences of the f32 loss on sampled coordinates.
			r := rand.New(rand.NewPCG(9, 9))
			for _, p := range m.Params() {
				vals, err := ReadF32(dev, p.Tensor)
				if err != nil {
					t.Fatal(err)
				}
				for s := 0; s < 3; s++ {
					i := r.IntN(len(vals))
					if p == m.Embed {
						// rows of tokens that occur have gradients; pick one
						i = (3+r.IntN(m.Cfg.VocabSize-3))*p.Cols() + r.IntN(p.Cols())
					}
					checkCentralDiff(t, m, in, p, vals, i, plain.grads[p.Name][i])
				}
			}
		})
	}
}

// sameGrads fails unless two runs' gradients agree to f32 rounding (the
// same kernels on the same values, in another order or recomputed).
func sameGrads(t *testing.T, what string, got map[string][]float32, wantWhat string, want map[string][]float32) {
	t.Helper()
	for name, g := range got {
		for i := range g {
			if d := math.Abs(float64(g[i] - want[name][i])); d > 1e-6+1e-5*math.Abs(float64(g[i])) {
				t.Fatalf("%s[%d]: %s %g, %s %g", name, i, what, g[i], wantWhat, want[name][i])
			}
		}
	}
}

// checkCentralDiff compares the backward gradient got of element i of p
// (whose f32 values are vals) with central differences of the f32 loss:
// loss ~3.6 carries ~4e-7 rounding, so with h = 1e-2 the estimate is good
// to ~1e-4; O(h^2) curvature terms add about as much. p is restored.
func checkCentralDiff(t *testing.T, m *Llama, in *Inputs, p *Param, vals []float32, i int, got float32) {
	t.Helper()
	const h = 1e-2
	f := func(x float32) float64 {
		v := slices.Clone(vals)
		v[i] = x
		if err := dev.Write(p.Buf, 0, EncodeF32(v, gpu.F32)); err != nil {
			t.Fatal(err)
		}
		return lossValue(t, m, in)
	}
	num := (f(vals[i]+h) - f(vals[i]-h)) / (2 * h)
	f(vals[i])
	if math.Abs(float64(got)-num) > 3e-4+2e-2*math.Abs(num) {
		t.Errorf("%s[%d]: backward %.6g, central difference %.6g", p.Name, i, got, num)
	}
}

// TestKVCacheDecode: a prompt prefilled into the KV cache, then tokens fed
// one at a time, give at every position the logits of the full forward
// over the whole sequence (tied and untied, grouped KV heads).
func TestKVCacheDecode(t *testing.T) {
	for _, tied := range []bool{false, true} {
		m := newToy(t, tied)
		seq := []int{1, 7, 30, 12, 5, 22, 9, 14}
		in, err := m.NewInputs(1, len(seq), seq, nil, []int{0})
		if err != nil {
			t.Fatal(err)
		}
		logits, err := m.Logits(NewTape(dev, false), in)
		in.Release()
		if err != nil {
			t.Fatal(err)
		}
		full, err := ReadF32(dev, logits)
		logits.Release()
		if err != nil {
			t.Fatal(err)
		}
		c, err := m.newKVCache(len(seq) + 2)
		if err != nil {
			t.Fatal(err)
		}
		v := m.Cfg.VocabSize
		check := func(pos int, got []float32) {
			for j := 0; j < v; j++ {
				want := full[pos*v+j]
				if d := math.Abs(float64(got[j] - want)); d > 1e-5+1e-5*math.Abs(float64(want)) {
					t.Fatalf("tied=%v position %d logit %d: cached %g, full %g", tied, pos, j, got[j], want)
				}
			}
		}
		got, err := m.decode(c, seq[:3]) // prefill
		if err != nil {
			t.Fatal(err)
		}
		check(2, got)
		for pos := 3; pos < len(seq); pos++ {
			if got, err = m.decode(c, seq[pos:pos+1]); err != nil {
				t.Fatal(err)
			}
			check(pos, got)
		}
		c.release()
	}
}

// TestBackwardReportsUnreachedParams: a parameter used in a checkpointed
// block whose output never reaches the loss gets no callback; Backward says
// so instead of silently skipping its update.
func TestBackwardReportsUnreachedParams(t *testing.T) {
	e, err := NewParam(dev, "E", gpu.F32, 5, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Release()
	w, err := NewParam(dev, "W", gpu.F32, 5, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Release()
	dead, err := NewParam(dev, "dead", gpu.F32, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Release()
	for _, p := range []*Param{e, w, dead} {
		if err := dev.Write(p.Buf, 0, EncodeF32(make([]float32, p.Len()), gpu.F32)); err != nil {
			t.Fatal(err)
		}
	}
	ids, _ := dev.NewBuffer(gpu.TagScratch, 8)
	defer ids.Release()
	labels, _ := dev.NewBuffer(gpu.TagScratch, 8)
	defer labels.Release()
	dev.Write(ids, 0, u32Bytes([]int{1, 2}))
	dev.Write(labels, 0, u32Bytes([]int{2, 3}))
	tape := NewTape(dev, true)
	x, err := tape.Embedding(e, ids, 2) // (2,4)
	if err != nil {
		t.Fatal(err)
	}
	y, err := tape.Checkpoint("dead", x, func(t *Tape, x *Tensor) (*Tensor, error) { return t.Linear(x, dead) })
	if err != nil {
		t.Fatal(err)
	}
	defer y.Release()
	logits, err := tape.Linear(x, w) // (2,5)
	if err != nil {
		t.Fatal(err)
	}
	loss, err := tape.CrossEntropy(logits, labels, LossOptions{GradScale: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	defer loss.Release()
	var got []string
	err = tape.Backward(loss, func(p *Param, g *gpu.Buffer) error { got = append(got, p.Name); return nil })
	if err == nil || !strings.Contains(err.Error(), "no gradient reached dead") {
		t.Errorf("backward: %v (callbacks for %v)", err, got)
	}
}
