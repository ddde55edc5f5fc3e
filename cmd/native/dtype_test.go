package main

import (
	"encoding/json"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/internal/shared"
	"github.com/lomo-dev/lomo/nn"
	"github.com/lomo-dev/lomo/train"
)

// TestEvalDTypeAuto: `lomo eval` loads a model in its file's dtype unless
// --dtype names another, and says which in its JSON; `lomo plan` plans
// that dtype too.
func TestEvalDTypeAuto(t *testing.T) {
	d, err := gpu.Open(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := nn.LoadLlama(d, storiesDir(t), gpu.BF16)
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	bf16 := t.TempDir()
	err = m.Save(bf16)
	m.Release()
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := train.CopyTokenizerFiles(storiesDir(t), bf16); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		model string
		flags []string
		want  string
	}{
		{storiesDir(t), nil, "f32"},
		{bf16, nil, "bf16"},
		{bf16, []string{"--dtype", "auto"}, "bf16"},
		{bf16, []string{"--dtype", "f32"}, "f32"},
	} {
		args := append([]string{"eval", "--model", c.model, "--task", "copa", "--data", shared.Path(t, "superglue/COPA/val.jsonl"), "--limit", "4", "--max-length", "32"}, c.flags...)
		code, out, errs := lomo(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(out), &ev); err != nil || ev["dtype"] != c.want {
			t.Errorf("%v: %q (%v), want dtype %s", args[1:], out, err, c.want)
		}
		args = append([]string{"plan", "--model", c.model, "--batch", "1", "--seq", "8", "--optimizer", "lomo", "--json"}, c.flags...)
		code, out, errs = lomo(t, args...)
		var p map[string]any
		if err := json.Unmarshal([]byte(out), &p); code != 0 || err != nil || p["dtype"] != c.want {
			t.Errorf("%v: exit %d, %q (%v %s), want dtype %s", args, code, out, err, errs, c.want)
		}
	}
}
