package train

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/internal/shared"
	"github.com/lomo-dev/lomo/monitor"
	"github.com/lomo-dev/lomo/nn"
)

// storedAs writes stories260K with its weights in dt to a new folder.
func storedAs(t *testing.T, dt gpu.DType) string {
	t.Helper()
	src := shared.Path(t, "models/stories260K")
	m, err := nn.LoadLlama(dev, src, dt)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Release()
	dir := t.TempDir()
	if err := m.Save(dir); err != nil {
		t.Fatal(err)
	}
	if err := CopyTokenizerFiles(src, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runDTypes keeps the dtype of each run event published.
type runDTypes struct{ dtypes []string }

func (r *runDTypes) Publish(ev monitor.Event) error {
	if ev.Kind == monitor.KindRun {
		r.dtypes = append(r.dtypes, ev.RunInfo.Dtype)
	}
	return nil
}

// TestDTypeAuto: with dtype auto (the default) a run stores its parameters
// in the weights file's dtype, says so, records it in its monitor events and
// saves in it; a dtype named in the config overrides the file's; and an
// f16 file with a config f16 cannot train (LOMO without clip_grad_norm)
// is refused before training, naming the file's dtype and the way out.
func TestDTypeAuto(t *testing.T) {
	if DefaultConfig().DType != "auto" {
		t.Fatalf("default dtype %q, want auto", DefaultConfig().DType)
	}
	files := map[string]string{"f32": shared.Path(t, "models/stories260K"), "bf16": storedAs(t, gpu.BF16), "f16": storedAs(t, gpu.F16)}
	// bf16 weights under a config without torch_dtype: auto goes by the
	// weights, as Hugging Face does.
	files["bf16-unset"] = storedAs(t, gpu.BF16)
	c, err := config.Load(files["bf16-unset"])
	if err != nil {
		t.Fatal(err)
	}
	c.TorchDType = ""
	b, err := c.Marshal()
	if err == nil {
		err = os.WriteFile(filepath.Join(files["bf16-unset"], "config.json"), b, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		file, dtype string
		want        gpu.DType
		why         string // the reason the log gives
	}{
		{"f32", "auto", gpu.F32, "torch_dtype float32 in config.json"},
		{"bf16", "auto", gpu.BF16, "torch_dtype bfloat16 in config.json"},
		{"f16", "auto", gpu.F16, "torch_dtype float16 in config.json"},
		{"bf16-unset", "auto", gpu.BF16, "the dtype of most weights; config.json has no torch_dtype"},
		{"bf16", "f32", gpu.F32, ""},
	} {
		t.Run(c.file+"/"+c.dtype, func(t *testing.T) {
			out := t.TempDir()
			cfg := copaConfig(t, out)
			cfg.ModelNameOrPath = files[c.file]
			cfg.DType = c.dtype
			cfg.MaxSteps, cfg.ZeroShotEval, cfg.SaveStrategy = 1, false, "end"
			var log bytes.Buffer
			runs := &runDTypes{}
			tr, err := New(cfg, dev, Options{Log: &log, Sink: runs})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Release()
			if tr.Model.DType != c.want || tr.Cfg.DType != c.want.String() {
				t.Errorf("model stored in %s (config says %s), want %s", tr.Model.DType, tr.Cfg.DType, c.want)
			}
			said := strings.Contains(log.String(), "dtype auto: "+c.want.String()+" ("+c.why+")")
			if said != (c.dtype == "auto") {
				t.Errorf("log (dtype %s) says the resolved dtype: %v, want %v:\n%s", c.dtype, said, c.dtype == "auto", log.String())
			}
			if s, err := tr.Run(); err != nil || s.Steps != 1 {
				t.Fatalf("run: %+v %v", s, err)
			}
			if want := []string{c.want.String()}; !slices.Equal(runs.dtypes, want) {
				t.Errorf("the run's monitor events say dtype %q, want %q", runs.dtypes, want)
			}
			b, err := os.ReadFile(filepath.Join(out, "final", "config.json"))
			stored := map[gpu.DType]string{gpu.F32: "float32", gpu.F16: "float16", gpu.BF16: "bfloat16"}[c.want]
			if err != nil || !strings.Contains(string(b), `"torch_dtype": "`+stored+`"`) {
				t.Errorf("final config.json (%v) does not say torch_dtype %s:\n%s", err, stored, b)
			}
		})
	}
	cfg := copaConfig(t, t.TempDir())
	cfg.ModelNameOrPath, cfg.ClipGradNorm = files["f16"], 0
	_, err = New(cfg, dev, Options{})
	if err == nil || !strings.Contains(err.Error(), "dtype auto is f16") || !strings.Contains(err.Error(), "clip_grad_norm > 0") || !strings.Contains(err.Error(), "set dtype f32 or bf16") {
		t.Errorf("f16 file, LOMO without clip_grad_norm: %v; want the refusal naming dtype auto's f16, clip_grad_norm and the other dtypes", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.OutputDir, "metrics.jsonl")); err == nil {
		t.Error("the refused run wrote metrics.jsonl")
	}
}
