package train

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/data"
	"github.com/lomo-dev/lomo/internal/shared"
	"github.com/lomo-dev/lomo/optim"
)

// tinyConfig is copaConfig cut to the least that trains: batches of 2
// sequences of at most 32 tokens, the end-of-run evaluation on 4 examples,
// nothing saved.
func tinyConfig(t *testing.T, out string) Config {
	c := copaConfig(t, out)
	c.TrainBatchSize, c.EvalBatchSize = 2, 32
	c.DataMaxLength = 32
	c.ZeroShotEval = false
	c.MaxSteps = 4
	b, err := os.ReadFile(c.TrainFile)
	if err != nil {
		t.Fatal(err)
	}
	c.EvalFile = filepath.Join(t.TempDir(), "eval4.jsonl")
	if err := os.WriteFile(c.EvalFile, []byte(strings.Join(strings.SplitAfterN(string(b), "\n", 5)[:4], "")), 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

// stepLines are the step lines of metrics.jsonl (not eval or event lines).
func stepLines(t *testing.T, out string) []map[string]any {
	var steps []map[string]any
	for _, l := range metricLines(t, out) {
		if l["eval"] == nil && l["event"] == nil {
			steps = append(steps, l)
		}
	}
	return steps
}

// metricLines reads output_dir/metrics.jsonl, one map per line.
func metricLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	f, err := os.Open(filepath.Join(out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("metrics.jsonl line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	return lines
}

// TestConfigRejectsUnknownValues: a value outside a key's accepted set
// (the reference's "steps" strategies among them) or a non-finite number
// is an error naming the key and what it accepts, not a silent default.
func TestConfigRejectsUnknownValues(t *testing.T) {
	for _, tc := range []struct {
		key, value string
		want       string
	}{
		{"save_strategy", "steps", `save_strategy "steps" is not one of epoch, end, no`},
		{"evaluation_strategy", "steps", `evaluation_strategy "steps" is not one of epoch, no`},
		{"lr_scheduler_type", "cosine_with_restarts", `lr_scheduler_type "cosine_with_restarts" is not one of linear, constant, cosine`},
		{"learning_rate", "nan", "learning_rate NaN must be a finite number >= 0"},
		{"warmup", "-1", "warmup -1 must be a finite number >= 0"},
		{"max_new_tokens", "-5", "max_new_tokens -5 must be positive"},
		{"scale_window", "-1", "scale_window"},
		{"clip_grad_value", "0.5", "clip_grad_value is not supported with optimizer adamw"},
		{"clip_grad_norm", "0", "dtype f16 with optimizer lomo needs clip_grad_norm > 0"},
	} {
		c := DefaultConfig()
		c.ModelNameOrPath, c.TrainFile = "m", "t.jsonl"
		switch tc.key {
		case "clip_grad_value":
			c.Optimizer = "adamw"
		case "clip_grad_norm":
			c.DType = "f16"
		}
		if err := c.Set(tc.key, tc.value); err != nil {
			t.Fatal(err)
		}
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--%s %s: got %v, want an error saying %q", tc.key, tc.value, err, tc.want)
		}
	}
	c := DefaultConfig()
	c.ModelNameOrPath, c.TrainFile = "m", "t.jsonl"
	if err := c.Validate(); err != nil {
		t.Errorf("the defaults: %v", err)
	}
}

// writeUnlabelled writes COPA's val.jsonl without its "label" fields, as
// SuperGLUE's test files come.
func writeUnlabelled(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(shared.Path(t, "superglue/COPA/val.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	b = regexp.MustCompile(`"label": \d+, `).ReplaceAll(b, nil)
	if bytes.Contains(b, []byte(`"label"`)) {
		t.Fatal("a label is left")
	}
	p := filepath.Join(t.TempDir(), "test.jsonl")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUnlabelledDataIsAnError: a train or eval file with no labelled
// example is an error, not a run of 0 steps and an accuracy of 0.
func TestUnlabelledDataIsAnError(t *testing.T) {
	unl := writeUnlabelled(t)
	for _, key := range []string{"train_file", "eval_file"} {
		c := tinyConfig(t, t.TempDir())
		if key == "train_file" {
			c.TrainFile = unl
		} else {
			c.EvalFile = unl
		}
		tr, err := New(c, dev, Options{})
		if err == nil {
			tr.Release()
			t.Fatalf("%s without labels accepted", key)
		}
		for _, want := range []string{key, unl, "none of its 100 copa examples has a label"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s without labels: error %q does not say %q", key, err, want)
			}
		}
	}
	task, err := data.LoadTask("copa", unl)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := Evaluate(nil, nil, task, EvalOptions{}); err == nil || !strings.Contains(err.Error(), "none of its 100 examples has a label") {
		t.Errorf("evaluating unlabelled data: %+v, %v; want an error", r, err)
	}
}

// TestNonFiniteWeightsFailTheRun: f16 LOMO at learning rate 1e5 with no
// effective clipping pushes weights past the f16 range. The step fails
// with the first non-finite weight named, the run ends with an error, and
// nothing is saved from those weights (no final/, no checkpoint).
func TestNonFiniteWeightsFailTheRun(t *testing.T) {
	if !dev.Caps.F16 {
		t.Skipf("adapter %q has no shader-f16", dev.Info.Name)
	}
	out := t.TempDir()
	c := tinyConfig(t, out)
	c.DType = "f16"
	c.LearningRate, c.ClipGradNorm = 1e5, 1e9
	c.LRSchedulerType, c.Warmup = "constant", 0
	c.SaveStrategy = "end"
	c.MaxSteps = 6
	tr, err := New(c, dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Release()
	s, err := tr.Run()
	var nf *optim.NonFiniteError
	if !errors.As(err, &nf) {
		t.Fatalf("run at learning rate 1e5 in f16: %+v, %v; want a failed step with an optim.NonFiniteError", s, err)
	}
	t.Logf("error as reported: %v", err)
	for _, want := range []string{"failed", "not saved", "non-finite", nf.Param} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q", want)
		}
	}
	saved, _ := filepath.Glob(filepath.Join(out, "*", "model.safetensors"))
	if len(saved) > 0 {
		t.Errorf("weights saved after the failure: %v", saved)
	}
	lines := metricLines(t, out)
	if last := lines[len(lines)-1]; last["event"] != "error" || !strings.Contains(last["error"].(string), "non-finite") {
		t.Errorf("last metrics line %v: want the error event", last)
	}
}

// TestSkippedSteps: under a loss scale far too high every f16 gradient
// overflows, so every step is skipped. Each skipped step keeps its whole
// metrics line (the infinite gradient norm as "Inf"); a run that skips most
// of its steps warns; max_consecutive_skipped_steps skipped steps in a row
// end the run with an error and a non-zero exit (for AdaLomo too, whose
// scale falls as LOMO's does).
func TestSkippedSteps(t *testing.T) {
	if !dev.Caps.F16 {
		t.Skipf("adapter %q has no shader-f16", dev.Info.Name)
	}
	for _, opt := range []string{"lomo", "adalomo"} {
		t.Run(opt, func(t *testing.T) {
			out := t.TempDir()
			c := tinyConfig(t, out)
			c.Optimizer, c.DType, c.LossScale, c.MaxSteps = opt, "f16", 1e30, 3
			c.MaxConsecutiveSkippedSteps = 0 // never stop
			var log bytes.Buffer
			tr, err := New(c, dev, Options{Log: &log})
			if err != nil {
				t.Fatal(err)
			}
			s, err := tr.Run()
			tr.Release()
			if err != nil || s.Steps != 3 || s.SkippedSteps != 3 {
				t.Fatalf("run: %+v, %v; want 3 steps, all skipped", s, err)
			}
			if !strings.Contains(log.String(), "warning: 3 of this run's 3 steps were skipped") {
				t.Errorf("no warning in the log:\n%s", log.String())
			}
			lines := stepLines(t, out)
			if len(lines) != 3 {
				t.Errorf("%d step lines, want 3", len(lines))
			}
			scale := 1e30
			for i, l := range lines {
				if l["step"] != float64(i+1) || l["skipped"] != true || l["grad_norm"] != "Inf" || l["loss_scale"] != scale ||
					l["lr"] == nil || l["loss"] == nil || l["tokens_per_sec"] == nil || l["memory"] == nil || l["error"] != nil {
					t.Errorf("line %d: %v; want step %d skipped at scale %g with every field", i, l, i+1, scale)
				}
				scale /= 2
			}

			c.MaxConsecutiveSkippedSteps = 2
			c.OutputDir = t.TempDir()
			tr, err = New(c, dev, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Release()
			s, err = tr.Run()
			t.Logf("error as reported: %v", err)
			if err == nil || !strings.Contains(err.Error(), "steps 1 to 2 were all skipped") || s.Steps != 2 {
				t.Errorf("two skipped steps in a row with max_consecutive_skipped_steps 2: %+v, %v; want the run ended with an error", s, err)
			}
		})
	}
}

// TestCleanInterruptedSaves: what a save killed part-way leaves is cleaned
// with a note: NAME.tmp removed, NAME.old removed beside NAME and renamed
// back to NAME without it; other folders are kept.
func TestCleanInterruptedSaves(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"checkpoint-3.tmp", "final.tmp", "checkpoint-2", "checkpoint-2.old", "checkpoint-5.old", "notes.tmp", "checkpoint-x.tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var log bytes.Buffer
	if err := cleanInterruptedSaves(dir, &log); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if want := "checkpoint-2 checkpoint-5 checkpoint-x.tmp notes.tmp"; strings.Join(got, " ") != want {
		t.Errorf("left %v, want %s", got, want)
	}
	for _, want := range []string{"removed " + filepath.Join(dir, "checkpoint-3.tmp"), "removed " + filepath.Join(dir, "final.tmp"),
		"removed " + filepath.Join(dir, "checkpoint-2.old"), "restored " + filepath.Join(dir, "checkpoint-5")} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the log does not say %q:\n%s", want, log.String())
		}
	}
	if err := cleanInterruptedSaves(filepath.Join(dir, "absent"), &log); err != nil {
		t.Errorf("an output folder that does not exist yet: %v", err)
	}
}

// TestLossScaleGrowsBack: the f16 loss scale that fell on an overflow
// doubles again after scale_window good steps (here 2), within a short run;
// it is not stuck at the lower scale for the reference's 1000 steps.
func TestLossScaleGrowsBack(t *testing.T) {
	if !dev.Caps.F16 {
		t.Skipf("adapter %q has no shader-f16", dev.Info.Name)
	}
	out := t.TempDir()
	c := tinyConfig(t, out)
	if err := c.Set("scale_window", "2"); err != nil {
		t.Fatal(err)
	}
	c.DType, c.LossScale = "f16", 1<<16 // stories260K's first gradients overflow at 2^16
	tr, err := New(c, dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Release()
	if _, err := tr.Run(); err != nil {
		t.Fatal(err)
	}
	var got []string
	fell, grew := false, false
	for _, l := range stepLines(t, out) {
		got = append(got, fmt.Sprintf("%v %v", l["loss_scale"], l["skipped"]))
		scale, _ := l["loss_scale"].(float64)
		switch {
		case l["skipped"] == true:
			fell = true
		case fell && scale >= 1<<16:
			grew = true
		}
	}
	t.Logf("loss scale, skipped: %q", got)
	if !fell || !grew {
		t.Errorf("loss scales %q: want an overflow, then the scale back at 2^16 after 2 good steps", got)
	}
}
