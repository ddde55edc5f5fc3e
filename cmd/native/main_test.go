package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lomo-dev/lomo/internal/shared"
	"github.com/lomo-dev/lomo/monitor"
	"github.com/lomo-dev/lomo/train"
)

// lomo runs the CLI in-process and returns its exit code and output.
func lomo(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func storiesDir(t *testing.T) string { return shared.Path(t, "models/stories260K") }

// copyModel copies the stories260K folder so a test can damage it.
func copyModel(t *testing.T) string {
	t.Helper()
	src := storiesDir(t)
	dst := t.TempDir()
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestGenerateStory: `lomo generate` from BOS at temperature 0 prints the
// story published with stories260K (llama2.c doc/stories260K.md).
func TestGenerateStory(t *testing.T) {
	code, out, errs := lomo(t, "generate", "--model", storiesDir(t), "--max-new-tokens", "45", "--temperature", "0")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	want := "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball."
	if !strings.HasPrefix(strings.TrimSpace(out), want[:60]) {
		t.Errorf("generated:\n%q\nwant it to start with:\n%q", out, want[:60])
	}
}

func TestTokenize(t *testing.T) {
	code, out, errs := lomo(t, "tokenize", "--model", storiesDir(t), "--text", "Once upon a time, there was a little girl named Lily.")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var ids []int
	if err := json.Unmarshal([]byte(out), &ids); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	if len(ids) != 16 || ids[0] != 1 || ids[1] != 403 {
		t.Errorf("ids %v: want 16 ids from BOS 1, 403, ...", ids)
	}
}

// TestBadInputs: a corrupt or truncated safetensors file, a config/weights
// shape mismatch and a malformed jsonl line each give a clear error naming
// the problem, a non-zero exit, and no output written.
func TestBadInputs(t *testing.T) {
	copaVal := shared.Path(t, "superglue/COPA/val.jsonl")
	cases := []struct {
		name  string
		setup func(dir string) (data string)
		want  string
	}{
		{"truncated safetensors", func(dir string) string {
			p := filepath.Join(dir, "model.safetensors")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)/2], 0o644)
			return copaVal
		}, "model.safetensors"},
		{"corrupt header", func(dir string) string {
			p := filepath.Join(dir, "model.safetensors")
			b, _ := os.ReadFile(p)
			copy(b[8:], []byte("{not json"))
			os.WriteFile(p, b, 0o644)
			return copaVal
		}, "corrupt"},
		{"shape mismatch", func(dir string) string {
			p := filepath.Join(dir, "config.json")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, bytes.Replace(b, []byte(`"intermediate_size": 172`), []byte(`"intermediate_size": 128`), 1), 0o644)
			return copaVal
		}, "shape"},
		{"malformed jsonl", func(dir string) string {
			p := filepath.Join(dir, "bad.jsonl")
			b, _ := os.ReadFile(copaVal)
			lines := strings.SplitN(string(b), "\n", 4)
			lines[2] = `{"premise": "The man", "choice1": `
			os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o644)
			return p
		}, "bad.jsonl:3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyModel(t)
			data := tc.setup(dir)
			out := filepath.Join(t.TempDir(), "out")
			code, stdout, errs := lomo(t, "train", "--model_name_or_path", dir, "--dataset_name", "copa", "--train_file", data,
				"--output_dir", out, "--max_steps", "1", "--data_max_length", "32", "--per_device_train_batch_size", "2")
			if code == 0 {
				t.Fatalf("exit 0 for %s; stdout %s", tc.name, stdout)
			}
			if !strings.Contains(errs, tc.want) {
				t.Errorf("error %q does not mention %q", errs, tc.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("output folder %s was created", out)
			}
		})
	}
}

// TestAdapterErrors: an --adapter that names nothing, and a machine with
// no Vulkan driver at all, give a clear error with a hint and exit 1.
func TestAdapterErrors(t *testing.T) {
	code, _, errs := lomo(t, "eval", "--model", storiesDir(t), "--task", "copa", "--data", shared.Path(t, "superglue/COPA/val.jsonl"), "--adapter", "no-such-gpu")
	if code != 1 || !strings.Contains(errs, `no adapter matches "no-such-gpu"`) {
		t.Errorf("--adapter no-such-gpu: exit %d, %q", code, errs)
	}
	out := t.TempDir()
	code, stdout, errs := lomo(t, "demo", "--json", "--adapter", "no-such-gpu", "--out", out)
	if code != 1 || stdout != "" || !strings.Contains(errs, `no adapter matches "no-such-gpu"`) || !strings.Contains(errs, "adapters: 0=") {
		t.Errorf("demo --adapter no-such-gpu: exit %d, stdout %q, stderr %q", code, stdout, errs)
	}
	if os.Getenv("LOMO_CHILD") == "" {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		// A child process whose Vulkan loader finds no driver.
		cmd := exec.Command(exe, "-test.run", "^TestNoAdapterChild$")
		cmd.Env = append(os.Environ(), "LOMO_CHILD=1", "VK_DRIVER_FILES=/nonexistent/icd.json", "VK_ICD_FILENAMES=/nonexistent/icd.json")
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("child: %v\n%s", err, b)
		}
	}
}

func TestNoAdapterChild(t *testing.T) {
	if os.Getenv("LOMO_CHILD") == "" {
		t.Skip("runs only as the child of TestAdapterErrors, with no Vulkan driver visible")
	}
	for _, args := range [][]string{{"devices"}, {"demo", "--json", "--out", t.TempDir()}} {
		code, stdout, errs := lomo(t, args...)
		if code != 1 || stdout != "" || !strings.Contains(errs, "no WebGPU adapter found") || !strings.Contains(errs, "mesa-vulkan-drivers") {
			t.Errorf("%v with no driver: exit %d, stdout %q, stderr %q", args, code, stdout, errs)
		}
	}
}

// TestMonitorControlNeedsToken: with a token set, control without it is
// refused; with it, "checkpoint" saves a checkpoint and "stop" ends the run
// cleanly.
func TestMonitorControlNeedsToken(t *testing.T) {
	model, copa := storiesDir(t), shared.Path(t, "superglue/COPA/val.jsonl") // here: Fatal/Skip must not run in a goroutine
	out := filepath.Join(t.TempDir(), "out")
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	var stdout bytes.Buffer
	go func() {
		code := run([]string{"train", "--model_name_or_path", model, "--dataset_name", "copa",
			"--train_file", copa, "--output_dir", out, "--max_steps", "5000",
			"--num_train_epochs", "100", "--data_max_length", "32", "--per_device_train_batch_size", "2", "--zero_shot_eval", "false",
			"--evaluation_strategy", "no", "--save_strategy", "no", "--clip_grad_norm", "0",
			"--monitor", "127.0.0.1:0", "--monitor-token", "s3cret", "--run", "ctl"}, &stdout, pw)
		pw.Close()
		done <- code
	}()
	url := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Split(scanCR)
		re := regexp.MustCompile(`dashboard: (http://\S+)`)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				url <- m[1]
			}
		}
	}()
	var base string
	select {
	case u := <-url:
		base = u[:strings.Index(u, "/?")]
	case <-time.After(60 * time.Second):
		t.Fatal("no dashboard URL")
	}
	post := func(action, token string) int {
		req, _ := http.NewRequest("POST", base+"/api/control?run=ctl&action="+action, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// The trainer registers for control once the model is loaded.
	deadline := time.Now().Add(60 * time.Second)
	for post("checkpoint", "s3cret") != http.StatusNoContent { // 409 until the trainer listens
		if time.Now().After(deadline) {
			t.Fatal("control never accepted")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if c := post("stop", ""); c != http.StatusUnauthorized {
		t.Errorf("stop without token: %d, want 401", c)
	}
	if c := post("stop", "wrong"); c != http.StatusUnauthorized {
		t.Errorf("stop with a wrong token: %d, want 401", c)
	}
	if c := post("stop", "s3cret"); c != http.StatusNoContent {
		t.Errorf("stop with the token: %d", c)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("train exit %d", code)
		}
	case <-time.After(120 * time.Second):
		t.Fatal("run did not stop")
	}
	var s struct {
		Stopped bool `json:"stopped"`
		Steps   int  `json:"steps"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil || !s.Stopped {
		t.Fatalf("summary %q: %v", stdout.String(), err)
	}
	cks, _ := filepath.Glob(filepath.Join(out, "checkpoint-*"))
	if len(cks) < 1 {
		t.Errorf("no checkpoint after checkpoint and stop: %v", cks)
	}
	for _, c := range cks {
		if _, err := os.Stat(filepath.Join(c, "model.safetensors")); err != nil {
			t.Errorf("%s: %v", c, err)
		}
	}
}

// scanCR splits on \n and \r (the progress bar redraws with \r).
func scanCR(data []byte, atEOF bool) (int, []byte, error) {
	for i, b := range data {
		if b == '\n' || b == '\r' {
			return i + 1, data[:i], nil
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// TestPublishToStandaloneHub: `lomo train --publish` streams a run to a
// separate hub (as `lomo monitor` serves it), with its token; a wrong token
// is refused before training starts.
func TestPublishToStandaloneHub(t *testing.T) {
	hub := monitor.NewHub(monitor.HubOptions{})
	defer hub.Close()
	srv := httptest.NewServer(monitor.NewServer(hub, monitor.Options{Token: "hubtok"}))
	defer srv.Close()
	args := func(token string) []string {
		return []string{"train", "--model_name_or_path", storiesDir(t), "--dataset_name", "copa",
			"--train_file", shared.Path(t, "superglue/COPA/val.jsonl"), "--output_dir", filepath.Join(t.TempDir(), "out"),
			"--max_steps", "3", "--data_max_length", "32", "--per_device_train_batch_size", "2", "--zero_shot_eval", "false",
			"--evaluation_strategy", "no", "--save_strategy", "no", "--clip_grad_norm", "0",
			"--publish", srv.URL, "--monitor-token", token, "--run", "remote"}
	}
	if code, _, errs := lomo(t, args("wrong")...); code == 0 || !strings.Contains(errs, "401") {
		t.Errorf("wrong token: exit %d, %q", code, errs)
	}
	code, _, errs := lomo(t, args("hubtok")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	// The publisher flushes on close; the hub has the run, its steps and its end.
	var got monitor.RunSummary
	for i := 0; i < 100; i++ {
		if s, ok := hub.Stats("remote"); ok && s.Ended {
			got = s
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got.LastStep == nil || got.LastStep.Step != 3 {
		t.Errorf("hub summary %+v: want the run ended with step 3", got)
	}
}

// TestEvalAndPlanJSON: `lomo eval` prints one JSON line with the metric;
// `lomo plan --json` one object per optimizer with the byte columns.
func TestEvalAndPlanJSON(t *testing.T) {
	code, out, errs := lomo(t, "eval", "--model", storiesDir(t), "--task", "copa", "--data", shared.Path(t, "superglue/COPA/val.jsonl"), "--limit", "8")
	if code != 0 {
		t.Fatalf("eval: exit %d: %s", code, errs)
	}
	var ev map[string]any
	if err := json.Unmarshal([]byte(out), &ev); err != nil || ev["metric"] != "acc" || ev["n"] != float64(8) {
		t.Errorf("eval output %q (%v)", out, err)
	}
	if acc, ok := ev["acc"].(float64); !ok || acc < 0 || acc > 1 {
		t.Errorf("eval acc %v", ev["acc"])
	}
	code, out, errs = lomo(t, "plan", "--model", filepath.Join(storiesDir(t), "config.json"), "--batch", "2", "--seq", "16", "--json")
	if code != 0 {
		t.Fatalf("plan: exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("plan --json: %d lines, want one per optimizer:\n%s", len(lines), out)
	}
	for i, l := range lines {
		var p map[string]any
		if err := json.Unmarshal([]byte(l), &p); err != nil {
			t.Fatal(err)
		}
		if p["optimizer"] != []string{"lomo", "adalomo", "sgd", "adamw"}[i] {
			t.Errorf("line %d optimizer %v", i, p["optimizer"])
		}
		for _, k := range []string{"params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes", "scratch_bytes", "total_bytes"} {
			if v, ok := p[k].(float64); !ok || v < 0 {
				t.Errorf("line %d: %s = %v", i, k, p[k])
			}
		}
	}
}

// TestBenchJSON: lomo bench measures the probe first and gives each matmul
// as a fraction of it.
func TestBenchJSON(t *testing.T) {
	code, out, errs := lomo(t, "bench", "--matmul", "64", "--json")
	if code != 0 {
		t.Fatalf("bench: exit %d: %s", code, errs)
	}
	var r benchReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, out)
	}
	if r.Probe == nil || r.Probe.FMAF32GFLOPs <= 0 || r.Probe.CopyGBs <= 0 {
		t.Fatalf("probe %+v", r.Probe)
	}
	t.Logf("probe %+v", *r.Probe)
	// x·Wᵀ with f32 weights, then a 16-bit model's x·Wᵀ, dy·W and dyᵀ·x,
	// and a bf16 model's x·Wᵀ.
	if len(r.Kernels) != 5 {
		t.Fatalf("%d kernels, want the five matmul layouts at 64", len(r.Kernels))
	}
	for _, k := range r.Kernels {
		if !(k.OfProbe > 0 && k.OfProbe < 2) {
			t.Errorf("%s %s: %.3f GFLOP/s is %.3f of the probe", k.Kernel, k.Shape, k.GFLOPs, k.OfProbe)
		}
	}
}

// TestPlanDevices: `lomo plan --devices 2 --device-memory` plans LLaMA-13B
// (bench/configs) at the paper's settings split over two devices, each
// row a device, and says it fits 24 GB; a split that cannot be is a usage
// error naming the problem, before anything is planned.
func TestPlanDevices(t *testing.T) {
	code, out, errs := lomo(t, "plan", "--model", "../../bench/configs/llama-13b.json", "--batch", "1", "--seq", "1024", "--dtype", "f16",
		"--checkpointing", "--devices", "2", "--device-memory", "24GB", "--optimizer", "lomo", "--json")
	if code != 0 {
		t.Fatalf("plan: exit %d: %s", code, errs)
	}
	var p struct {
		Split   []int `json:"split"`
		Devices []struct {
			Layers int   `json:"layers"`
			Total  int64 `json:"total_bytes"`
		} `json:"devices"`
		Total int64 `json:"total_bytes"`
		Fits  bool  `json:"fits"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(p.Devices) != 2 || p.Split[0]+p.Split[1] != 40 || !p.Fits || p.Total > 24e9 || p.Total != max(p.Devices[0].Total, p.Devices[1].Total) {
		t.Errorf("13B over two devices: %+v", p)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--devices", "40"}, "40 devices for a model of 32 layers"},
		{[]string{"--devices", "2", "--split", "3,3"}, "covers 6 layers"},
		{[]string{"--devices", "2", "--split", "32"}, "--split \"32\" gives 1 devices, --devices 2"},
		{[]string{"--devices", "2", "--optimizer", "adamw"}, "keeps every gradient on one device"},
		{[]string{"--devices", "2", "--device-memory", "lots"}, "--device-memory"},
	} {
		code, _, errs := lomo(t, append([]string{"plan", "--model", "../../bench/configs/llama-7b.json"}, c.args...)...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("plan %v: exit %d, %q; want exit 2 saying %q", c.args, code, errs, c.want)
		}
	}
}

// TestPlanVocabularyGradients: at LLaMA-7B (f16), no optimizer of lomo's
// holds the embedding's whole f32 gradient (524288000 bytes): LOMO takes
// the head's in blocks too, so its largest gradient is smaller than the
// head's; AdaLomo holds the head's whole f16 gradient (32000 x 4096 x 2 =
// 262144000 bytes), its largest.
func TestPlanVocabularyGradients(t *testing.T) {
	code, out, errs := lomo(t, "plan", "--model", "../../bench/configs/llama-7b.json", "--dtype", "f16", "--batch", "1", "--seq", "64",
		"--checkpointing", "--optimizer", "lomo,adalomo", "--json")
	if code != 0 {
		t.Fatalf("plan: exit %d: %s", code, errs)
	}
	g := map[string]int64{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var p train.Plan
		if err := json.Unmarshal([]byte(l), &p); err != nil {
			t.Fatal(err)
		}
		g[p.Optimizer] = p.Grads
	}
	const head = 32000 * 4096 * 2
	if g["lomo"] <= 0 || g["lomo"] >= head {
		t.Errorf("LOMO: largest gradient %d bytes, want below the head's %d (blocks of rows)", g["lomo"], head)
	}
	if g["adalomo"] != head {
		t.Errorf("AdaLomo: largest gradient %d bytes, want the head's %d", g["adalomo"], head)
	}
}
