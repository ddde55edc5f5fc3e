package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/internal/shared"
)

// TestTrainOnTwoDevices: `lomo train --devices 0,0` splits stories260K
// over two devices of the one adapter (the blocks of --device_split),
// opens both, reports each device's blocks and peak in the summary, and
// saves one model; an adapter that does not exist is a usage error before
// anything starts.
func TestTrainOnTwoDevices(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	args := []string{"train", "--model_name_or_path", storiesDir(t), "--dataset_name", "copa",
		"--train_file", shared.Path(t, "superglue/COPA/val.jsonl"), "--output_dir", out,
		"--max_steps", "2", "--num_train_epochs", "1", "--data_max_length", "48", "--per_device_train_batch_size", "4",
		"--zero_shot_eval", "false", "--evaluation_strategy", "no", "--per_device_eval_batch_size", "32",
		"--devices", "0,0", "--device_split", "3,2"}
	code, stdout, errs := lomo(t, args...)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, errs)
	}
	if !strings.Contains(errs, "device 0: ") || !strings.Contains(errs, "device 1: ") {
		t.Errorf("stderr does not name both devices:\n%s", errs)
	}
	var s struct {
		Steps   int `json:"steps"`
		Devices []struct {
			Layers string `json:"layers"`
			Peak   int64  `json:"peak_bytes"`
		} `json:"devices"`
	}
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatalf("summary %q: %v", stdout, err)
	}
	if s.Steps != 2 || len(s.Devices) != 2 || s.Devices[0].Layers != "0-2" || s.Devices[1].Layers != "3-4" || s.Devices[0].Peak <= 0 || s.Devices[1].Peak <= 0 {
		t.Errorf("summary %s: want 2 steps on devices holding blocks 0-2 and 3-4, each with its peak", stdout)
	}
	if _, err := os.Stat(filepath.Join(out, "final", "model.safetensors")); err != nil {
		t.Errorf("the split run saved no single model: %v", err)
	}

	bad := filepath.Join(t.TempDir(), "bad")
	args[8] = bad // --output_dir
	code, _, errs = lomo(t, append(args[:len(args)-4], "--devices", "0,no-such-adapter")...)
	if code != 2 || !strings.Contains(errs, `device 1 "no-such-adapter"`) {
		t.Errorf("an unknown adapter: exit %d, stderr %q; want exit 2 naming it", code, errs)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("%s was created before the usage error", bad)
	}
}
