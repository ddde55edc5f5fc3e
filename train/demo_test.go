package train

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/data"
	"github.com/lomo-dev/lomo/hf/tokenizer"
)

// TestDemo is the Quick start's first command: the built-in model is near
// chance zero-shot, LOMO lifts it to at least 0.9, and the measured LOMO
// peak is below the planned SGD and AdamW peaks of the same step.
func TestDemo(t *testing.T) {
	o := DefaultDemo()
	o.Out = t.TempDir()
	r, err := Demo(dev, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("demo on %s: accuracy %.3f -> %.3f (chance %.2f), %d steps, %.0f tokens/s, %.0f s; peak %d bytes, planned SGD %d, AdamW %d",
		r.Adapter, r.ZeroShotAccuracy, r.FinetunedAccuracy, r.ChanceAccuracy, r.Steps, r.TokensPerSec, r.Seconds, r.PeakBytes, r.PlannedSGD, r.PlannedAdamW)
	if d := r.ZeroShotAccuracy - r.ChanceAccuracy; d > 0.1 || d < -0.1 {
		t.Errorf("zero-shot accuracy %.3f is not within 0.1 of chance %.2f", r.ZeroShotAccuracy, r.ChanceAccuracy)
	}
	if r.FinetunedAccuracy < 0.9 {
		t.Errorf("fine-tuned accuracy %.3f < 0.9", r.FinetunedAccuracy)
	}
	if !(r.PeakBytes < r.PlannedSGD && r.PeakBytes < r.PlannedAdamW) {
		t.Errorf("measured LOMO peak %d not below planned SGD %d and AdamW %d", r.PeakBytes, r.PlannedSGD, r.PlannedAdamW)
	}
	if r.PeakBytes != r.PlannedLOMO {
		t.Errorf("measured LOMO peak %d, planned %d", r.PeakBytes, r.PlannedLOMO)
	}
	for _, f := range []string{"final/model.safetensors", "final/config.json", "final/tokenizer.json", "train.jsonl", "val.jsonl"} {
		if _, err := os.Stat(filepath.Join(o.Out, f)); err != nil {
			t.Error(err)
		}
	}
}

// TestPretrainReproduces runs the recipe of the built-in model and checks
// that it makes the same model, bit for bit, on the software adapter that
// made it (the kernels are deterministic: no float atomics), hence the same
// demo result. The tokenizer is checked on every adapter.
func TestPretrainReproduces(t *testing.T) {
	if os.Getenv("LOMO_LONG_TESTS") != "1" {
		t.Skip("runs the whole 400-step pretraining recipe (about 5 minutes on 2 CPU cores); set LOMO_LONG_TESTS=1 (CI does)")
	}
	c := DefaultPretrain()
	c.Out = t.TempDir()
	want := data.DemoModel()
	if !strings.Contains(dev.Info.Name, "llvmpipe") {
		// The tokenizer and config do not depend on the adapter.
		tj, _, err := tokenizer.TrainBPE(TokenizerText(c.Seed, data.SynthCorpus(c.Seed, c.Stories)), c.Merges)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := fs.ReadFile(want, "tokenizer.json")
		if !bytes.Equal(tj, b) {
			t.Error("the recipe's tokenizer differs from the built-in one")
		}
		t.Skipf("the built-in weights were made on lavapipe; %q rounds differently", dev.Info.Name)
	}
	if err := Pretrain(dev, c, nil, nil); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} {
		got, err := os.ReadFile(filepath.Join(c.Out, f))
		if err != nil {
			t.Fatal(err)
		}
		b, err := fs.ReadFile(want, f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, b) {
			t.Errorf("%s: the recipe made a different file than the built-in one", f)
		}
	}
}
