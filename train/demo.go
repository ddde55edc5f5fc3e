package train

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/lomo-dev/lomo/data"
	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/monitor"
)

// DemoOptions configure the built-in demo.
type DemoOptions struct {
	Out       string // output folder: the task files, metrics, the fine-tuned model
	BaseModel string // "" = the model embedded in lomo
	Seed      uint64
	TrainN    int // training examples
	EvalN     int // held-out examples
	Epochs    int
	Batch     int
	LR        float64
	Sink      monitor.Sink
	Run       string
	Progress  Progress
	Log       io.Writer
	// Control, when set, receives the trainer's control function once it
	// exists (for the monitor's stop and checkpoint buttons).
	Control func(func(action string))
}

// DefaultDemo is what `lomo demo` runs.
func DefaultDemo() DemoOptions {
	return DemoOptions{Out: "lomo-demo", Seed: 7, TrainN: 384, EvalN: 200, Epochs: 4, Batch: 16, LR: 0.1, Run: "demo"}
}

// DemoReport is what the demo prints (and `--json` emits as one object).
type DemoReport struct {
	Task              string  `json:"task"`
	ZeroShotAccuracy  float64 `json:"zero_shot_accuracy"`
	FinetunedAccuracy float64 `json:"finetuned_accuracy"`
	ChanceAccuracy    float64 `json:"chance_accuracy"`
	Steps             int     `json:"steps"`
	TokensPerSec      float64 `json:"tokens_per_sec"`
	FirstLoss         float64 `json:"first_loss"`
	FinalLoss         float64 `json:"final_loss"`
	Adapter           string  `json:"adapter"`
	Seconds           float64 `json:"seconds"`
	Params            int64   `json:"params"`
	Batch             int     `json:"batch"`
	Seq               int     `json:"seq"`
	// Measured device memory of the LOMO training steps, by tag (peak bytes).
	PeakBytes       int64            `json:"peak_bytes"`
	PeakByTag       map[string]int64 `json:"peak_by_tag"`
	PlannedLOMO     int64            `json:"planned_lomo_bytes"`
	PlannedSGD      int64            `json:"planned_sgd_bytes"`
	PlannedAdamW    int64            `json:"planned_adamw_bytes"`
	PlannedSGDTags  Plan             `json:"planned_sgd"`
	PlannedAdamTags Plan             `json:"planned_adamw"`
	ModelDir        string           `json:"model_dir"`
}

// Demo writes the generated task, zero-shot evaluates the base model,
// fine-tunes all its weights with LOMO, evaluates again and reports, with
// the measured memory beside the planned SGD and AdamW memory of the same
// step.
func Demo(d *gpu.Device, o DemoOptions) (DemoReport, error) {
	t0 := time.Now()
	r := DemoReport{Task: "synthetic animal-or-object yes/no (BoolQ schema)", Adapter: d.Info.Name, ChanceAccuracy: 0.5}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return r, err
	}
	base := o.BaseModel
	if base == "" {
		base = filepath.Join(o.Out, "base")
		if err := data.WriteDemoModel(base); err != nil {
			return r, err
		}
	}
	trainFile, evalFile, err := WriteDemoTask(o)
	if err != nil {
		return r, err
	}
	cfg := DemoConfig(o, base, trainFile, evalFile)
	tr, err := New(cfg, d, Options{Sink: o.Sink, Run: o.Run, Progress: o.Progress, Log: o.Log})
	if err != nil {
		return r, err
	}
	defer tr.Release()
	if o.Control != nil {
		o.Control(tr.Control)
	}
	r.Params = tr.Model.Cfg.NumParams()
	zs, err := tr.Evaluate(tr.Eval)
	if err != nil {
		return r, err
	}
	r.ZeroShotAccuracy = zs.Value
	tr.logEval(zs, true)
	// Measure the training steps alone: peaks from here on.
	d.TrimCache()
	d.ResetPeak()
	s, err := tr.Run()
	if err != nil {
		return r, err
	}
	st := tr.TrainStats()
	r.PeakBytes = st.Total.Peak
	r.PeakByTag = map[string]int64{}
	for tag, m := range st.Map() {
		r.PeakByTag[tag] = m.Peak
	}
	r.FinetunedAccuracy, r.Steps, r.TokensPerSec = s.FinalAccuracy, s.Steps, s.TokensPerSec
	r.FirstLoss, r.FinalLoss = s.FirstLoss, s.FinalLoss
	r.ModelDir = filepath.Join(o.Out, "final")
	// The largest training batch decides the peak: plan that step. Its
	// length is the longest training sequence, whatever the epoch's order.
	r.Batch, r.Seq = o.Batch, 0
	for _, b := range data.TrainBatches(tr.Tok, tr.Train, cfg.TrainBatchSize, cfg.DataMaxLength, cfg.TrainOnInputs, cfg.Seed, 0, max(0, tr.Tok.EOS())) {
		r.Seq = max(r.Seq, b.T)
	}
	plan := func(name string) (Plan, error) {
		return PlanStep(PlanRequest{Config: tr.Model.Cfg, Batch: r.Batch, Seq: r.Seq, Optimizer: name, DType: tr.Model.DType, Checkpointing: true, ClipGradNorm: cfg.ClipGradNorm})
	}
	var p Plan
	if p, err = plan("lomo"); err != nil {
		return r, err
	}
	r.PlannedLOMO = p.Total
	if r.PlannedSGDTags, err = plan("sgd"); err != nil {
		return r, err
	}
	if r.PlannedAdamTags, err = plan("adamw"); err != nil {
		return r, err
	}
	r.PlannedSGD, r.PlannedAdamW = r.PlannedSGDTags.Total, r.PlannedAdamTags.Total
	r.Seconds = time.Since(t0).Seconds()
	if math.IsNaN(r.FinetunedAccuracy) {
		return r, fmt.Errorf("train: demo ended without an evaluation")
	}
	return r, nil
}

// WriteDemoTask writes the demo's task, generated from o.Seed, to
// o.Out/train.jsonl (o.TrainN examples) and o.Out/val.jsonl (o.EvalN), in
// the SuperGLUE BoolQ schema, to be read back through the same loader as any
// BoolQ file.
func WriteDemoTask(o DemoOptions) (trainFile, evalFile string, err error) {
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return "", "", err
	}
	ex := data.SynthTask(o.Seed, o.TrainN+o.EvalN)
	trainFile, evalFile = filepath.Join(o.Out, "train.jsonl"), filepath.Join(o.Out, "val.jsonl")
	for _, f := range []struct {
		path string
		ex   []data.SynthExample
	}{{trainFile, ex[:o.TrainN]}, {evalFile, ex[o.TrainN:]}} {
		w, err := os.Create(f.path)
		if err != nil {
			return "", "", err
		}
		err = data.WriteSynthTaskJSONL(w, f.ex)
		if err2 := w.Close(); err == nil {
			err = err2
		}
		if err != nil {
			return "", "", err
		}
	}
	return trainFile, evalFile, nil
}

// DemoConfig is the training config of the demo: base model, the task files
// of WriteDemoTask, and o's hyperparameters. The run evaluates once, at the
// end, and saves the final model.
func DemoConfig(o DemoOptions, base, trainFile, evalFile string) Config {
	cfg := DefaultConfig()
	cfg.ModelNameOrPath = base
	cfg.DatasetName = "boolq"
	cfg.TrainFile, cfg.EvalFile = trainFile, evalFile
	cfg.DataMaxLength = 96
	cfg.TrainBatchSize, cfg.EvalBatchSize = o.Batch, 32
	cfg.LearningRate = o.LR
	cfg.NumTrainEpochs = o.Epochs
	cfg.Warmup = 0.1
	cfg.ClipGradNorm = 1.0
	cfg.GradCheckpoint = true
	cfg.Seed = o.Seed
	cfg.OutputDir = o.Out
	cfg.EvalStrategy = "no"
	cfg.ZeroShotEval = false
	cfg.SaveStrategy = "end"
	return cfg
}
