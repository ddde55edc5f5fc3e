package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/peft"
	"github.com/lomo-dev/lomo/nn"
)

// storiesAdapter writes a PEFT adapter for stories260K on q_proj, v_proj
// and down_proj whose B matrices are random (a trained adapter's are not
// zero), large enough to change greedy text.
func storiesAdapter(t *testing.T, r int) string {
	t.Helper()
	d, err := gpu.Open(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	m, err := nn.LoadLlama(d, storiesDir(t), gpu.F32)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Release()
	if err := m.AddLoRA(peft.New(r, 2*float64(r), 0.05, []string{"q_proj", "v_proj", "down_proj"}, "stories260K"), 1); err != nil {
		t.Fatal(err)
	}
	rg := rand.New(rand.NewPCG(3, 3))
	for _, a := range m.LoRAAdapters() {
		v := make([]float32, a.B.Len())
		for i := range v {
			v[i] = float32(rg.NormFloat64() * 0.1)
		}
		if err := d.Write(a.B.Buf, 0, nn.EncodeF32(v, gpu.F32)); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	if err := m.SaveLoRA(dir, "stories260K"); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestPeftGenerateAndMerge: `generate --peft` changes the greedy text;
// `lomo merge` writes a full model that gives, with no adapter, the same
// greedy text as the base with --peft, and the same evaluation.
func TestPeftGenerateAndMerge(t *testing.T) {
	adapter := storiesAdapter(t, 4)
	gen := func(args ...string) string {
		t.Helper()
		code, out, errs := lomo(t, append([]string{"generate", "--prompt", "Once upon a time", "--max-new-tokens", "24", "--temperature", "0"}, args...)...)
		if code != 0 {
			t.Fatalf("generate %v: exit %d: %s", args, code, errs)
		}
		return out
	}
	base := gen("--model", storiesDir(t))
	adapted := gen("--model", storiesDir(t), "--peft", adapter)
	if adapted == base {
		t.Fatalf("the adapter does not change the greedy text: %q", base)
	}
	merged := filepath.Join(t.TempDir(), "merged")
	code, out, errs := lomo(t, "merge", "--model", storiesDir(t), "--peft", adapter, "--out", merged)
	if code != 0 {
		t.Fatalf("merge: exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "merged") {
		t.Errorf("merge printed %q", out)
	}
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json"} {
		if _, err := os.Stat(filepath.Join(merged, f)); err != nil {
			t.Errorf("merged model: %v", err)
		}
	}
	if got := gen("--model", merged); got != adapted {
		t.Errorf("merged model generates\n%q\nthe base with --peft\n%q", got, adapted)
	}
}

// TestPeftBadInput: an adapter that does not fit the model, or a folder
// that is not an adapter, is a clear error; merge then writes nothing.
func TestPeftBadInput(t *testing.T) {
	adapter := storiesAdapter(t, 2)
	// A rank that disagrees with the tensors.
	wrongRank := t.TempDir()
	b, err := os.ReadFile(filepath.Join(adapter, peft.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(wrongRank, peft.ConfigFile), []byte(strings.Replace(string(b), `"r": 2`, `"r": 3`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := os.ReadFile(filepath.Join(adapter, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(wrongRank, peft.WeightsFile), w, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		args  []string
		code  int
		want  string
		wrote string
	}{
		{"rank", []string{"merge", "--model", storiesDir(t), "--peft", wrongRank, "--out", "OUT"}, 1, "rank r=3", "OUT"},
		{"not an adapter", []string{"merge", "--model", storiesDir(t), "--peft", storiesDir(t), "--out", "OUT"}, 2, "not a PEFT adapter folder", "OUT"},
		{"generate", []string{"generate", "--model", storiesDir(t), "--peft", wrongRank}, 1, "does not fit this model", ""},
		{"eval", []string{"eval", "--model", storiesDir(t), "--peft", filepath.Join(adapter, "missing"), "--task", "copa", "--data", "x.jsonl"}, 2, "not a PEFT adapter folder", ""},
		{"out not empty", []string{"merge", "--model", storiesDir(t), "--peft", adapter, "--out", adapter}, 2, "exists and is not empty", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "merged")
			for i, a := range c.args {
				if a == "OUT" {
					c.args[i] = out
				}
			}
			code, _, errs := lomo(t, c.args...)
			if code != c.code || !strings.Contains(errs, c.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, errs, c.code, c.want)
			}
			if _, err := os.Stat(out); c.wrote != "" && err == nil {
				t.Errorf("%s was written", out)
			}
		})
	}
}
