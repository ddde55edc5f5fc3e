package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/internal/shared"
)

// TestUsageErrorsBeforeAnythingStarts: an option value out of range, an
// unknown enum value (the reference's "steps" strategies among them) and
// conflicting flags are usage errors (exit 2) that name the option and
// what it accepts, found before a device is opened or a dashboard served.
func TestUsageErrorsBeforeAnythingStarts(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	model := storiesDir(t)
	trainArgs := []string{"train", "--model_name_or_path", "no-model", "--train_file", "no.jsonl", "--output_dir", out}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(trainArgs, "--save_strategy", "steps"), `save_strategy "steps" is not one of epoch, end, no`},
		{append(trainArgs, "--evaluation_strategy", "steps"), `evaluation_strategy "steps" is not one of epoch, no`},
		{append(trainArgs, "--monitor", "127.0.0.1:0", "--publish", "ws://127.0.0.1:9"), "--monitor and --publish: choose one"},
		{append(trainArgs, "--monitor-token", "t"), "--monitor-token is for --monitor or --publish"},
		{[]string{"generate", "--model", model, "--max-new-tokens", "-5"}, "--max-new-tokens -5: must be at least 1"},
		{[]string{"generate", "--model", model, "--temperature", "-1"}, "--temperature -1: must be a finite number >= 0"},
		{[]string{"generate", "--model", model, "--top-p", "0"}, "--top-p 0: must be a number above 0 and at most 1"},
		{[]string{"eval", "--model", model, "--task", "copa", "--data", "d", "--dtype", "f8"}, `--dtype "f8": must be one of auto, f32, f16, bf16`},
		{[]string{"bench", "--dtype", "f64"}, `--dtype "f64": must be one of f32, f16, bf16`},
		{[]string{"bench", "--optimizer", "lomo,adam"}, `"adam" is not one of lomo, adalomo, sgd, adamw`},
		{[]string{"bench", "--matmul", "64,x"}, `--matmul "64,x"`},
		{[]string{"bench", "--tune", "fast"}, `--tune "fast": want one of auto, on, off`},
		{[]string{"bench", "--matmul-tiles", "256x256x64/8x8"}, "131072 bytes of workgroup memory, above the limit of 65536 (WebGPU's largest)"},
		{[]string{"plan", "--model", model, "--batch", "0"}, "--batch 0: must be at least 1"},
		{[]string{"pretrain", "--optimizer", "sgd"}, `--optimizer "sgd": must be one of adalomo, adamw`},
		{[]string{"demo", "--epochs", "0"}, "--epochs 0: must be at least 1"},
		{[]string{"monitor", "--run-budget", "0"}, "--run-budget 0: must be at least 1"},
		{[]string{"monitor", "--run-budget", "64", "--total-budget", "32"}, "--total-budget 32: below --run-budget 64"},
		{[]string{"monitor", "--idle-ttl", "-1s"}, "both must be positive"},
		{[]string{"monitor", "--allow-origin", "a.example.com,[x"}, `"[x" is not a valid pattern`},
	} {
		code, stdout, errs := lomo(t, tc.args...)
		if code != 2 || !strings.Contains(errs, tc.want) || stdout != "" {
			t.Errorf("lomo %s: exit %d, stdout %q, stderr %q; want exit 2 saying %q", strings.Join(tc.args, " "), code, stdout, errs, tc.want)
		}
		if strings.Contains(errs, "adapter:") || strings.Contains(errs, "dashboard:") {
			t.Errorf("lomo %s: a device or dashboard started before the usage error:\n%s", strings.Join(tc.args, " "), errs)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("output folder %s was created (stat: %v)", out, err)
	}
}

// TestBenchTileBeyondAdapter: a tiling matmul.wgsl runs but the adapter's
// limits do not is a usage error naming the limit and the adapter, before
// anything is timed.
func TestBenchTileBeyondAdapter(t *testing.T) {
	d, err := gpu.Open(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	wg := int(d.Limits().MaxComputeWorkgroupStorageSize)
	d.Close()
	// BK = 32 with BM = BN = 16 * n: 4 * 32 * 32n bytes = 4096n.
	n := wg/4096 + 1
	if 16*n > 1024 || 4096*n > 65536 {
		t.Skipf("the adapter allows %d bytes of workgroup memory: every tiling ParseTile accepts fits", wg)
	}
	tile := fmt.Sprintf("%dx%dx32/8x8", 16*n, 16*n)
	code, stdout, errs := lomo(t, "bench", "--matmul", "64", "--probe=false", "--matmul-tiles", tile)
	want := fmt.Sprintf("%d bytes of workgroup memory, above the limit of %d on ", 4096*n, wg)
	if code != 2 || !strings.Contains(errs, want) || stdout != "" {
		t.Errorf("bench --matmul-tiles %s: exit %d, stdout %q, stderr %q; want exit 2 saying %q", tile, code, stdout, errs, want)
	}
}

// TestUnlabelledDataFails: `lomo train` on a COPA file without labels (a
// SuperGLUE test split) and `lomo eval` on it fail with the reason, instead
// of exiting 0 after 0 steps or printing an accuracy of 0.
func TestUnlabelledDataFails(t *testing.T) {
	b, err := os.ReadFile(shared.Path(t, "superglue/COPA/val.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	unl := filepath.Join(t.TempDir(), "test.jsonl")
	if err := os.WriteFile(unl, regexp.MustCompile(`"label": \d+, `).ReplaceAll(b, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	code, stdout, errs := lomo(t, "train", "--model_name_or_path", storiesDir(t), "--dataset_name", "copa", "--train_file", unl,
		"--output_dir", out, "--max_steps", "1", "--data_max_length", "32", "--per_device_train_batch_size", "2")
	if code != 1 || stdout != "" || !strings.Contains(errs, "none of its 100 copa examples has a label") {
		t.Errorf("train on unlabelled data: exit %d, stdout %q, stderr %q", code, stdout, errs)
	}
	code, stdout, errs = lomo(t, "eval", "--model", storiesDir(t), "--task", "copa", "--data", unl, "--max-length", "32")
	if code != 1 || stdout != "" || !strings.Contains(errs, "none of its 100 examples has a label") {
		t.Errorf("eval on unlabelled data: exit %d, stdout %q, stderr %q", code, stdout, errs)
	}
}

// TestInterruptExits130: Ctrl-C (SIGINT) during `lomo train` stops after
// the step, saves a checkpoint, prints the summary with the throughput of
// the steps that ran, and exits 130. The run is a child process (this test
// binary), so that the signal is real.
func TestInterruptExits130(t *testing.T) {
	if os.Getenv("LOMO_INTERRUPT_CHILD") != "" {
		t.Skip("the child of TestInterruptExits130 runs as TestInterruptChild")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	cmd := exec.Command(exe, "-test.run", "^TestInterruptChild$")
	cmd.Env = append(os.Environ(), "LOMO_INTERRUPT_CHILD="+strings.Join([]string{"train",
		"--model_name_or_path", storiesDir(t), "--dataset_name", "copa", "--train_file", shared.Path(t, "superglue/COPA/val.jsonl"),
		"--output_dir", out, "--max_steps", "5000", "--num_train_epochs", "100", "--data_max_length", "32",
		"--per_device_train_batch_size", "2", "--zero_shot_eval", "false", "--evaluation_strategy", "no", "--clip_grad_norm", "0"}, "\x1f"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Signal once a step has been written (the handler is installed by then).
	deadline := time.Now().Add(120 * time.Second)
	for {
		if b, _ := os.ReadFile(filepath.Join(out, "metrics.jsonl")); bytes.Contains(b, []byte(`"step":1`)) {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the run ended before a step: %v\n%s", err, stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			t.Fatalf("no step written in 120 s:\n%s", stderr.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var exit *exec.ExitError
	select {
	case err = <-done:
	case <-time.After(120 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the run did not stop after SIGINT:\n%s", stderr.String())
	}
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Fatalf("exit: %v, want status 130\n%s", err, stderr.String())
	}
	t.Logf("stderr tail: %s", stderr.String()[max(0, stderr.Len()-300):])
	var s struct {
		Stopped      bool     `json:"stopped"`
		Steps        int      `json:"steps"`
		TokensPerSec *float64 `json:"tokens_per_sec"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil || !s.Stopped || s.Steps < 1 || s.TokensPerSec == nil || !(*s.TokensPerSec > 0) {
		t.Errorf("summary %q (%v): want stopped after at least one step, with tokens_per_sec > 0", stdout.String(), err)
	}
	if !strings.Contains(stderr.String(), "interrupted after step") || !strings.Contains(stderr.String(), "--resume") {
		t.Errorf("stderr does not say where to continue:\n%s", stderr.String())
	}
	if cks, _ := filepath.Glob(filepath.Join(out, "checkpoint-*", "model.safetensors")); len(cks) != 1 {
		t.Errorf("checkpoints after the interrupt: %v, want one", cks)
	}
}

// TestInterruptChild is the run TestInterruptExits130 interrupts: lomo with
// the arguments of LOMO_INTERRUPT_CHILD (separated by \x1f), its exit
// status as the process's.
func TestInterruptChild(t *testing.T) {
	args := os.Getenv("LOMO_INTERRUPT_CHILD")
	if args == "" {
		t.Skip("runs only as the child of TestInterruptExits130")
	}
	os.Exit(run(strings.Split(args, "\x1f"), os.Stdout, os.Stderr))
}
