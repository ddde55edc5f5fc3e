package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/internal/shared"
	"github.com/lomo-dev/lomo/train"
)

// configsDir is the repository's folder of example configs.
const configsDir = "../../configs"

// TestConfigs runs every file of configs/ as a user would (`lomo train
// --config FILE`), so that none of them rots: each must load with no
// unknown key and validate as written, then train for two steps with its
// own optimizer, dtype, schedule, clipping and evaluation settings. Only
// the size of the run changes: the model is stories260K, named by Hub id
// from a Hugging Face cache the test builds (so model_name_or_path's cache
// lookup is covered too), the data are a dozen examples in the config's
// dataset format, and steps, lengths and batches are tiny.
func TestConfigs(t *testing.T) {
	hubCache(t)
	entries, err := os.ReadDir(configsDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatalf("%s is empty", configsDir)
	}
	for _, e := range entries {
		path := filepath.Join(configsDir, e.Name())
		t.Run(e.Name(), func(t *testing.T) {
			if e.IsDir() || filepath.Ext(e.Name()) != ".yaml" {
				t.Fatalf("configs/%s: only lomo train configs (*.yaml) belong in configs/, each run by this test", e.Name())
			}
			cfg, err := train.LoadConfig(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("configs/%s as written: %v", e.Name(), err)
			}
			dir := t.TempDir()
			trainFile := exampleData(t, cfg.DatasetName, filepath.Join(dir, "train.jsonl"), 0)
			out := filepath.Join(dir, "out")
			args := []string{"train", "--config", path,
				"--model_name_or_path", "org/stories260K", "--train_file", trainFile, "--output_dir", out,
				"--max_steps", "2", "--num_train_epochs", "1", "--data_max_length", "64",
				"--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "4", "--max_new_tokens", "4"}
			if cfg.EvalFile != "" {
				args = append(args, "--eval_file", exampleData(t, cfg.DatasetName, filepath.Join(dir, "eval.jsonl"), 12))
			}
			code, stdout, errs := lomo(t, args...)
			if code != 0 {
				t.Fatalf("lomo %s: exit %d\n%s", strings.Join(args, " "), code, errs)
			}
			var s struct {
				Steps     int      `json:"steps"`
				FirstLoss *float64 `json:"first_loss"`
			}
			if err := json.Unmarshal([]byte(stdout), &s); err != nil {
				t.Fatalf("summary %q: %v", stdout, err)
			}
			if s.Steps != 2 || s.FirstLoss == nil || math.IsNaN(*s.FirstLoss) || *s.FirstLoss <= 0 {
				t.Errorf("summary %s: want 2 steps and a positive first loss", stdout)
			}
			steps := stepLines(t, filepath.Join(out, "metrics.jsonl"))
			if len(steps) != 2 {
				t.Errorf("metrics.jsonl has %d step lines, want 2", len(steps))
			}
			for _, m := range steps {
				if m["error"] != nil {
					t.Errorf("metrics.jsonl: step %v: %v", m["step"], m["error"])
					continue
				}
				// f16 runs under loss scaling (dynamic, from 2^16 for LOMO
				// and 2^10 for AdaLomo); f32 needs none.
				if scale, _ := m["loss_scale"].(float64); (cfg.DType == "f16") != (scale > 1) {
					t.Errorf("dtype %s: step %v has loss_scale %v", cfg.DType, m["step"], m["loss_scale"])
				}
			}
			if cfg.SaveStrategy != "no" {
				// The final model (or the epoch's checkpoint) carries the
				// tokenizer copied from the model's cache snapshot.
				saved := filepath.Join(out, "final")
				if cfg.SaveStrategy == "epoch" {
					saved = filepath.Join(out, "checkpoint-2")
				}
				files := []string{"config.json", "model.safetensors", "tokenizer.json"}
				if cfg.LoRA() {
					// The adapter in PEFT layout, beside the base that
					// LOMO updated (with lora_only the base is unchanged
					// and not saved).
					files = append(files, "adapter_config.json", "adapter_model.safetensors")
					if cfg.LoraOnly {
						files = files[2:]
					}
				}
				for _, f := range files {
					if _, err := os.Stat(filepath.Join(saved, f)); err != nil {
						t.Errorf("save_strategy %s: %v", cfg.SaveStrategy, err)
					}
				}
			}
		})
	}
}

// exampleData writes a dozen examples of the dataset format name to path:
// lines of a SuperGLUE task's file from ../shared/testdata (from line skip
// on), or generated lines of lomo's generic jsonl and choice formats.
func exampleData(t *testing.T, name, path string, skip int) string {
	t.Helper()
	const n = 12
	var lines []string
	switch name {
	case "jsonl":
		for i := range n {
			lines = append(lines, fmt.Sprintf(`{"prompt": "Count on from %d:", "completion": " %d %d"}`, skip+i, skip+i+1, skip+i+2))
		}
	case "choice":
		for i := range n {
			lines = append(lines, fmt.Sprintf(`{"prompt": "Is %d even?\nAnswer: ", "options": ["no", "yes"], "label": %d}`, skip+i, 1-(skip+i)%2))
		}
	default:
		root := shared.Path(t, "superglue")
		dirs, err := os.ReadDir(root)
		if err != nil {
			t.Fatal(err)
		}
		src := ""
		for _, d := range dirs {
			if d.IsDir() && strings.EqualFold(d.Name(), name) {
				src = filepath.Join(root, d.Name(), "val.jsonl")
				if _, err := os.Stat(src); err != nil {
					src = filepath.Join(root, d.Name(), "train.jsonl") // ReCoRD has no labelled val here
				}
			}
		}
		if src == "" {
			t.Fatalf("dataset_name %q: no such format and no SuperGLUE folder in %s", name, root)
		}
		f, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<24)
		for i := 0; sc.Scan() && len(lines) < n; i++ {
			if i >= skip {
				lines = append(lines, sc.Text())
			}
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// stepLines returns the training-step lines of a metrics.jsonl (every line
// but the evaluations).
func stepLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var steps []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%s: %q: %v", path, line, err)
		}
		if _, eval := m["eval"]; !eval {
			steps = append(steps, m)
		}
	}
	return steps
}
