package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lomo-dev/lomo/data"
	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/cache"
	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/hf/peft"
	"github.com/lomo-dev/lomo/hf/safetensors"
	"github.com/lomo-dev/lomo/hf/tokenizer"
	"github.com/lomo-dev/lomo/monitor"
	"github.com/lomo-dev/lomo/nn"
	"github.com/lomo-dev/lomo/optim"
)

// Options wire a Trainer to its surroundings.
type Options struct {
	Sink     monitor.Sink // metric events; nil: none
	Run      string       // run id for events
	Progress Progress     // progress display; nil: none
	Resume   bool         // continue from the newest checkpoint in output_dir
	Log      io.Writer    // human-readable notes; nil: discard
}

// Progress shows training progress (a terminal bar natively, nothing or a
// page element in the browser).
type Progress interface {
	Start(total int, desc string)
	Step(loss float64)
	Finish()
}

// Trainer fine-tunes a model on a task.
type Trainer struct {
	Cfg   Config
	D     *gpu.Device   // the first device
	Devs  []*gpu.Device // every device of the model (nn.Placement), D first
	Model *nn.Llama
	Tok   *tokenizer.Tokenizer
	Train *data.Task
	Eval  *data.Task
	Opt   optim.Optimizer

	opts       Options
	trainStats gpu.Stats
	devStats   []gpu.Stats // per device, as trainStats
	// stepTransfers sums the boundary copies of this run's training steps.
	stepTransfers nn.Transfers
	step          int
	epoch         int
	stop          atomic.Bool
	publishErr    string // the last monitor failure reported
	saveNow       atomic.Bool
	metrics       *os.File
	// metricsErr is the first failure to write metrics.jsonl; Run returns it.
	metricsErr error
	tokens     int64
	elapsed    time.Duration
	// skipped counts this run's skipped steps, skipStreak those in a row;
	// lastLossScale is the loss scale of the last step.
	skipped, skipStreak int
	lastLossScale       float64
	// resumedFrom is the checkpoint this run resumed from ("" if none):
	// metrics.jsonl gets a resume line when first opened.
	resumedFrom string
	// lastCheckpoint is the newest checkpoint of this run (or the one it
	// resumed from): where to continue after a failed step.
	lastCheckpoint string
	// baseDir is the folder of model_name_or_path (a Hub id resolved in
	// the local cache): the source of the tokenizer files saved with
	// every checkpoint.
	baseDir string
}

// TrainerState is saved with every checkpoint (trainer_state.json).
type TrainerState struct {
	Step      int         `json:"step"`
	Epoch     int         `json:"epoch"` // epochs completed
	Optimizer string      `json:"optimizer"`
	Seed      uint64      `json:"seed"`
	Optim     optim.State `json:"optimizer_state"` // its tensors are in optimizer.safetensors
}

// storageDType resolves the run's dtype for the weights in dir: dtype
// auto becomes the file's (nn.FileDType), said in the log, and tr.Cfg
// records the dtype the run stores its parameters in.
func (tr *Trainer) storageDType(dir string) (gpu.DType, error) {
	if tr.Cfg.DType != "auto" {
		return gpu.ParseDType(tr.Cfg.DType) // checked by Validate
	}
	c, err := config.Load(dir)
	if err != nil {
		return gpu.F32, fmt.Errorf("train: model of %s: %w", dir, err)
	}
	dt := nn.FileDType(dir, c)
	if why := tr.Cfg.checkDType(dt.String()); why != "" {
		return dt, fmt.Errorf("train: dtype auto is f16 for the weights of %s: %s; or set dtype f32 or bf16", dir, why)
	}
	tr.Cfg.DType = dt.String()
	why := "torch_dtype " + c.TorchDType + " in config.json"
	if c.TorchDType == "" {
		why = "the dtype of most weights; config.json has no torch_dtype"
	}
	fmt.Fprintf(tr.opts.Log, "dtype auto: %s (%s)\n", dt, why)
	return dt, nil
}

// New loads the model, tokenizer and task of cfg onto d.
func New(cfg Config, d *gpu.Device, opts Options) (*Trainer, error) {
	return NewSplit(cfg, []*gpu.Device{d}, opts)
}

// NewSplit loads the model, tokenizer and task of cfg onto the devices ds:
// with several, the model's blocks are split over them (device_split, or
// the split PlanStep chooses for the run's batch and sequence length).
func NewSplit(cfg Config, ds []*gpu.Device, opts Options) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(ds) == 0 {
		return nil, fmt.Errorf("train: no device")
	}
	d := ds[0]
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	baseDir, err := cache.Resolve(cfg.ModelNameOrPath)
	if err != nil {
		return nil, fmt.Errorf("train: model_name_or_path: %w", err)
	}
	tr := &Trainer{Cfg: cfg, D: d, Devs: ds, opts: opts, baseDir: baseDir}
	modelDir := baseDir
	if err := cleanInterruptedSaves(cfg.OutputDir, opts.Log); err != nil {
		return nil, err
	}
	var resumed *TrainerState
	if opts.Resume {
		ck, st, err := LatestCheckpoint(cfg.OutputDir)
		if err != nil {
			return nil, err
		}
		if ck != "" && st.Optimizer != tr.optimizerName() {
			return nil, fmt.Errorf("train: checkpoint %s was made with %s, the config says %s", ck, st.Optimizer, tr.optimizerName())
		}
		if ck != "" {
			modelDir, resumed = ck, &st
			tr.lastCheckpoint, tr.resumedFrom = ck, ck
			tr.step, tr.epoch = st.Step, st.Epoch
			fmt.Fprintf(opts.Log, "resuming from %s (step %d, %d epochs done)\n", ck, st.Step, st.Epoch)
		} else {
			fmt.Fprintf(opts.Log, "resume: no checkpoint in %s: starting from the beginning\n", cfg.OutputDir)
		}
	}
	tok, err := tokenizer.Load(modelDir)
	if err != nil {
		return nil, fmt.Errorf("train: tokenizer of %s: %w", modelDir, err)
	}
	tr.Tok = tok
	if tr.Train, tr.Eval, err = loadTasks(cfg, opts.Log); err != nil {
		return nil, err
	}
	// With LoRA alone the base weights never change: a checkpoint holds
	// the adapters only, and the base comes from model_name_or_path.
	weightsDir := modelDir
	if cfg.LoRA() && cfg.LoraOnly {
		weightsDir = baseDir
	}
	dt, err := tr.storageDType(weightsDir)
	if err != nil {
		return nil, err
	}
	pl, err := tr.placement(weightsDir, dt)
	if err != nil {
		return nil, err
	}
	if tr.Model, err = nn.LoadLlamaSplit(pl, weightsDir, dt); err != nil {
		return nil, err
	}
	tr.Model.Checkpointing = cfg.GradCheckpoint
	if cfg.LoRA() {
		if err := tr.addLoRA(resumed != nil, modelDir); err != nil {
			tr.Model.Release()
			return nil, err
		}
	}
	if tr.Tok.VocabSize() > tr.Model.Cfg.VocabSize {
		tr.Model.Release()
		return nil, fmt.Errorf("train: tokenizer has %d tokens, model vocabulary %d", tr.Tok.VocabSize(), tr.Model.Cfg.VocabSize)
	}
	ocfg := optim.Config{
		Name: cfg.Optimizer, WeightDecay: cfg.WeightDecay, ClipGradNorm: cfg.ClipGradNorm, ClipGradValue: cfg.ClipGradValue,
		Schedule:  optim.Schedule{Kind: cfg.LRSchedulerType, LR: cfg.LearningRate, Warmup: cfg.Warmup, Total: tr.TotalSteps()},
		LossScale: cfg.LossScale, ScaleWindow: cfg.ScaleWindow,
	}
	if cfg.LoRA() {
		ocfg.LoRA = &optim.LoRA{Only: cfg.LoraOnly, WeightDecay: cfg.HFWeightDecay,
			Schedule: optim.Schedule{Kind: cfg.HFLRSchedulerType, LR: cfg.HFLearningRate, Warmup: cfg.HFWarmup, Total: tr.TotalSteps()}}
	}
	if tr.Opt, err = optim.New(d, ocfg, dt); err != nil {
		tr.Model.Release()
		return nil, err
	}
	if resumed != nil {
		st := resumed.Optim
		if st.Tensors, err = readOptimizerTensors(filepath.Join(modelDir, "optimizer.safetensors")); err == nil {
			err = tr.Opt.LoadState(tr.Model.Trainable(), st)
		}
		if err != nil {
			tr.Release()
			return nil, fmt.Errorf("train: optimizer state of %s: %w", modelDir, err)
		}
	}
	return tr, nil
}

// optimizerName says what trains what: the optimizer, or with LoRA
// "lora (adamw)" or e.g. "lomo + lora (adamw)".
func (tr *Trainer) optimizerName() string {
	switch {
	case !tr.Cfg.LoRA():
		return tr.Cfg.Optimizer
	case tr.Cfg.LoraOnly:
		return "lora (adamw)"
	}
	return tr.Cfg.Optimizer + " + lora (adamw)"
}

// addLoRA gives the model its adapters: those of the checkpoint a run
// resumes from, or new ones (seeded); with lora_only the base is frozen.
func (tr *Trainer) addLoRA(resumed bool, ckpt string) error {
	cfg := tr.Cfg
	var err error
	if resumed {
		err = tr.Model.LoadLoRA(ckpt)
	} else {
		err = tr.Model.AddLoRA(peft.New(cfg.LoraR, cfg.LoraAlpha, cfg.LoraDropout, cfg.LoraTargetModules, cfg.ModelNameOrPath), cfg.Seed)
	}
	if err != nil {
		return fmt.Errorf("train: LoRA: %w", err)
	}
	base := fmt.Sprintf("the base trained by %s at learning_rate %g", cfg.Optimizer, cfg.LearningRate)
	if cfg.LoraOnly {
		tr.Model.FreezeBase()
		base = "the base frozen"
	}
	n, total := tr.Model.NumLoRAParams(), tr.Model.Cfg.NumParams()
	fmt.Fprintf(tr.opts.Log, "LoRA r=%d alpha=%g dropout %g on %s: %d adapter parameters (%.3g%% of the model's %d), trained by AdamW at hf_learning_rate %g; %s\n",
		cfg.LoraR, cfg.LoraAlpha, cfg.LoraDropout, strings.Join(cfg.LoraTargetModules, ", "), n, 100*float64(n)/float64(total), total, cfg.HFLearningRate, base)
	return nil
}

// readOptimizerTensors reads optimizer.safetensors (absent: no tensors).
func readOptimizerTensors(path string) (map[string][]float32, error) {
	m := map[string][]float32{}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	st, err := safetensors.OpenFile(path)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	for _, ti := range st.Tensors() {
		v, err := st.ReadF32(ti.Name)
		if err != nil {
			return nil, err
		}
		m[ti.Name] = v
	}
	return m, nil
}

// writeOptimizerTensors writes the optimizer's tensors (f32, flat).
func writeOptimizerTensors(path string, t map[string][]float32) error {
	names := make([]string, 0, len(t))
	for n := range t {
		names = append(names, n)
	}
	sort.Strings(names)
	infos := make([]safetensors.TensorInfo, len(names))
	for i, n := range names {
		infos[i] = safetensors.TensorInfo{Name: n, DType: safetensors.F32, Shape: []int{len(t[n])}}
	}
	w, err := safetensors.Create(path, infos, nil)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := w.WriteF32(n, t[n]); err != nil {
			w.Abort()
			return err
		}
	}
	return w.Close()
}

// loadTasks reads the train and eval tasks (eval a seeded split of the
// train file when no eval_file is given). Only labelled examples count: a
// file with none (a SuperGLUE test split has no labels) is an error, since
// there would be nothing to learn or to score against.
func loadTasks(cfg Config, log io.Writer) (trainT, evalT *data.Task, err error) {
	load := func(key, path string) (*data.Task, error) {
		t, err := data.LoadTask(cfg.DatasetName, path)
		if err != nil {
			return nil, err
		}
		lab, unlabelled := t.Labelled()
		if len(lab.Examples) == 0 {
			return nil, fmt.Errorf("train: %s %s: none of its %d %s examples has a label (an unlabelled test split?): nothing to train on or to score against",
				key, path, len(t.Examples), t.Name)
		}
		if unlabelled > 0 {
			fmt.Fprintf(log, "%s %s: %d of %d examples have no label and are left out\n", key, path, unlabelled, len(t.Examples))
		}
		return lab, nil
	}
	all, err := load("train_file", cfg.TrainFile)
	if err != nil {
		return nil, nil, err
	}
	if cfg.EvalFile != "" {
		ev, err := load("eval_file", cfg.EvalFile)
		return all, ev, err
	}
	n := min(cfg.TrainSize, len(all.Examples)*4/5)
	if n <= 0 {
		n = len(all.Examples) * 4 / 5
	}
	trainT, evalT = all.Split(n, cfg.Seed)
	if len(trainT.Examples) == 0 || len(evalT.Examples) == 0 {
		return nil, nil, fmt.Errorf("train: %s has %d examples: too few to split into train and eval", cfg.TrainFile, len(all.Examples))
	}
	return trainT, evalT, nil
}

// Release frees the model and optimizer state.
func (tr *Trainer) Release() {
	if tr.Opt != nil {
		tr.Opt.Release()
	}
	if tr.Model != nil {
		tr.Model.Release()
	}
	if tr.metrics != nil {
		tr.metrics.Close()
	}
}

// TrainStats is the device accounting at the end of the training loop,
// before the final evaluation: its peaks are those of training (and of any
// evaluation between epochs).
func (tr *Trainer) TrainStats() gpu.Stats { return tr.trainStats }

// StepsPerEpoch is the number of batches in one epoch.
func (tr *Trainer) StepsPerEpoch() int {
	n := 0
	for _, ex := range tr.Train.Examples {
		if ex.Target != "" {
			n++
		}
	}
	return (n + tr.Cfg.TrainBatchSize - 1) / tr.Cfg.TrainBatchSize
}

// TotalSteps is the optimizer steps of the whole run.
func (tr *Trainer) TotalSteps() int {
	total := tr.StepsPerEpoch() * max(1, tr.Cfg.NumTrainEpochs)
	if tr.Cfg.MaxSteps > 0 {
		total = min(total, tr.Cfg.MaxSteps)
		if tr.Cfg.NumTrainEpochs <= 0 {
			total = tr.Cfg.MaxSteps
		}
	}
	return total
}

// RequestStop asks the run to stop after the current step (a checkpoint is
// saved).
func (tr *Trainer) RequestStop() { tr.stop.Store(true) }

// RequestCheckpoint asks for a checkpoint after the current step.
func (tr *Trainer) RequestCheckpoint() { tr.saveNow.Store(true) }

// Control applies a monitor control action.
func (tr *Trainer) Control(action string) {
	switch action {
	case monitor.ActionStop:
		tr.RequestStop()
	case monitor.ActionCheckpoint:
		tr.RequestCheckpoint()
	}
}

func (tr *Trainer) publish(ev monitor.Event) {
	if tr.opts.Sink == nil {
		return
	}
	ev.V = monitor.SchemaVersion
	ev.Run = tr.opts.Run
	ev.Time = time.Now()
	if err := tr.opts.Sink.Publish(ev); err != nil && err.Error() != tr.publishErr {
		// Once per failure, not per event: a refused run would print a
		// line at every step. The monitor is not the run: training goes on.
		tr.publishErr = err.Error()
		fmt.Fprintf(tr.opts.Log, "%v (training continues)\n", err)
	}
}

// Summary is the outcome of a run.
type Summary struct {
	Steps            int     `json:"steps"`
	SkippedSteps     int     `json:"skipped_steps"` // of this run's steps, skipped on gradient overflow
	ZeroShotAccuracy float64 `json:"zero_shot_accuracy"`
	FinalAccuracy    float64 `json:"finetuned_accuracy"`
	FinalLoss        float64 `json:"final_loss"`
	FirstLoss        float64 `json:"first_loss"`
	TokensPerSec     float64 `json:"tokens_per_sec"` // over the time spent in this run's steps
	Stopped          bool    `json:"stopped"`
	OutputDir        string  `json:"output_dir"`
	Metric           string  `json:"metric"`
	// A model split across devices: each device's blocks and memory, and
	// the boundary copies per step.
	Devices   []DeviceReport `json:"devices,omitempty"`
	Transfers *StepTransfers `json:"transfers,omitempty"`
}

// StepTransfers are a split model's boundary copies per training step.
type StepTransfers struct {
	Count   float64 `json:"count_per_step"`
	Bytes   float64 `json:"bytes_per_step"`
	Seconds float64 `json:"seconds_per_step"`
}

// MarshalJSON writes NaN figures (no evaluation ran) as null.
func (s Summary) MarshalJSON() ([]byte, error) {
	type plain Summary
	b, err := json.Marshal(plain(s))
	if err == nil {
		return b, nil
	}
	m := map[string]any{"steps": s.Steps, "skipped_steps": s.SkippedSteps, "stopped": s.Stopped, "output_dir": s.OutputDir, "metric": s.Metric}
	if s.Devices != nil {
		m["devices"], m["transfers"] = s.Devices, s.Transfers
	}
	for k, v := range map[string]float64{"zero_shot_accuracy": s.ZeroShotAccuracy, "finetuned_accuracy": s.FinalAccuracy,
		"final_loss": s.FinalLoss, "first_loss": s.FirstLoss, "tokens_per_sec": s.TokensPerSec} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			m[k] = nil
		} else {
			m[k] = v
		}
	}
	return json.Marshal(m)
}

// Run trains: zero-shot evaluation, epochs of optimizer steps with metric
// lines and events, evaluation each epoch, checkpoints. It returns when the
// run ends, is stopped, or fails.
func (tr *Trainer) Run() (Summary, error) {
	s := Summary{OutputDir: tr.Cfg.OutputDir, ZeroShotAccuracy: math.NaN(), FinalAccuracy: math.NaN(), FirstLoss: math.NaN()}
	if _, err := tr.metricsFile(); err != nil {
		return s, err
	}
	if tr.metricsErr != nil { // a line written before Run (Demo's zero-shot evaluation)
		return s, tr.metricsErr
	}
	tr.publish(monitor.Event{Kind: monitor.KindRun, RunInfo: &monitor.RunInfo{
		Model: tr.Cfg.ModelNameOrPath, Adapter: tr.D.Info.Name, Config: tr.Cfg.Map(), Params: tr.Model.Cfg.NumParams(), LoRAParams: tr.Model.NumLoRAParams(),
		Optimizer: tr.optimizerName(), Dtype: tr.Cfg.DType,
	}})
	steps0, skipped0 := tr.step, tr.skipped
	err := tr.run(&s)
	if err == nil {
		err = tr.metricsErr
	}
	// Whatever ended the run: its figures over the steps it ran.
	s.Steps, s.SkippedSteps = tr.step, tr.skipped-skipped0
	if tr.elapsed > 0 {
		s.TokensPerSec = float64(tr.tokens) / tr.elapsed.Seconds()
	}
	if s.Devices = tr.deviceReports(); s.Devices != nil && tr.stepTransfers.Count > 0 {
		n := float64(tr.step - steps0)
		x := tr.stepTransfers
		s.Transfers = &StepTransfers{Count: float64(x.Count) / n, Bytes: float64(x.Bytes) / n, Seconds: x.Time.Seconds() / n}
	}
	if ran := tr.step - steps0; s.SkippedSteps > 0 && 2*s.SkippedSteps > ran {
		fmt.Fprintf(tr.opts.Log, "warning: %d of this run's %d steps were skipped on gradient overflow (loss scale %g at the last step): the model learned from few of its batches; lower learning_rate\n",
			s.SkippedSteps, ran, tr.lastLossScale)
	}
	if err != nil {
		tr.writeEvent(map[string]any{"event": "error", "step": tr.step, "error": err.Error()})
	}
	end := monitor.End{Reason: "done"}
	switch {
	case err != nil:
		end = monitor.End{Reason: "error", Err: err.Error()}
	case s.Stopped:
		end.Reason = "stopped"
	}
	tr.publish(monitor.Event{Kind: monitor.KindEnd, End: &end})
	return s, err
}

func (tr *Trainer) run(s *Summary) error {
	if tr.Cfg.ZeroShotEval && tr.step == 0 {
		r, err := tr.Evaluate(tr.Eval)
		if err != nil {
			return err
		}
		s.ZeroShotAccuracy, s.Metric = r.Value, r.Metric
		tr.logEval(r, true)
	}
	total := tr.TotalSteps()
	perEpoch := tr.StepsPerEpoch()
	if tr.opts.Progress != nil {
		tr.opts.Progress.Start(total-tr.step, fmt.Sprintf("%s %s", tr.optimizerName(), tr.Cfg.DatasetName))
		defer tr.opts.Progress.Finish()
	}
	pad := max(0, tr.Tok.EOS())
	for ; tr.step < total; tr.epoch++ {
		batches := data.TrainBatches(tr.Tok, tr.Train, tr.Cfg.TrainBatchSize, tr.Cfg.DataMaxLength, tr.Cfg.TrainOnInputs, tr.Cfg.Seed, tr.epoch, pad)
		skip := tr.step - tr.epoch*perEpoch // steps of this epoch done before a resume
		for bi, b := range batches {
			if bi < skip {
				continue
			}
			if tr.step >= total {
				break
			}
			res, err := tr.trainStep(b)
			if err != nil {
				return tr.stepFailed(err)
			}
			if math.IsNaN(s.FirstLoss) {
				s.FirstLoss = res.Loss
			}
			s.FinalLoss = res.Loss
			if err := tr.countSkip(res); err != nil {
				return err
			}
			if tr.saveNow.Swap(false) {
				if _, err := tr.SaveCheckpoint(); err != nil {
					return err
				}
			}
			if tr.stop.Load() {
				s.Stopped = true
				_, err := tr.SaveCheckpoint()
				return err
			}
		}
		if tr.Cfg.EvalStrategy == "epoch" {
			r, err := tr.Evaluate(tr.Eval)
			if err != nil {
				return err
			}
			s.FinalAccuracy, s.Metric = r.Value, r.Metric
			tr.logEval(r, false)
		}
		if tr.Cfg.SaveStrategy == "epoch" {
			if _, err := tr.SaveCheckpoint(); err != nil {
				return err
			}
		}
	}
	tr.trainStats = tr.D.Stats()
	tr.devStats = tr.devStats[:0]
	for _, d := range tr.Devs {
		tr.devStats = append(tr.devStats, d.Stats())
	}
	if math.IsNaN(s.FinalAccuracy) {
		r, err := tr.Evaluate(tr.Eval)
		if err != nil {
			return err
		}
		s.FinalAccuracy, s.Metric = r.Value, r.Metric
		tr.logEval(r, false)
	}
	if tr.Cfg.SaveStrategy != "no" {
		if err := tr.SaveFinal(); err != nil {
			return err
		}
	}
	return nil
}

// stepFailed reports a failed step. LOMO and AdaLomo update the weights
// during the backward pass, so after a failure the weights in memory may be
// partly updated: nothing more is saved from them, and the error says where
// the run can continue from.
func (tr *Trainer) stepFailed(err error) error {
	where := "no checkpoint was saved yet"
	if tr.lastCheckpoint != "" {
		where = fmt.Sprintf("the last checkpoint, %s, is intact: continue from it with --resume", tr.lastCheckpoint)
	}
	return fmt.Errorf("train: step %d failed; %sthe weights in memory may be partly updated and were not saved; %s: %w", tr.step+1, tr.failedDevice(), where, err)
}

// countSkip keeps the count of skipped steps, and ends the run when
// max_consecutive_skipped_steps of them came in a row: the loss scale has
// then fallen that many times (from the default 2^16 to 1 in 16) and the
// gradients still overflow, so the run is not learning. Skipped steps leave
// the weights as they were, so the last checkpoint is as good as the
// weights in memory.
func (tr *Trainer) countSkip(res optim.Result) error {
	tr.lastLossScale = res.LossScale
	if !res.Skipped {
		tr.skipStreak = 0
		return nil
	}
	tr.skipped++
	tr.skipStreak++
	limit := tr.Cfg.MaxConsecutiveSkippedSteps
	if limit <= 0 || tr.skipStreak < limit {
		return nil
	}
	where := "no checkpoint was saved"
	if tr.lastCheckpoint != "" {
		where = "the last checkpoint is " + tr.lastCheckpoint
	}
	return fmt.Errorf("train: steps %d to %d were all skipped: the gradients overflowed %d times in a row (the last at loss scale %g; max_consecutive_skipped_steps is %d), so the run is not learning; lower learning_rate or clip_grad_norm; nothing more was saved; %s",
		tr.step-tr.skipStreak+1, tr.step, tr.skipStreak, res.LossScale, limit, where)
}

// metricLine is one line of metrics.jsonl: one step, every field always
// present. JSON has no NaN or infinity, so non-finite figures (a NaN loss,
// the infinite gradient norm of a skipped step) are the strings "NaN",
// "Inf" and "-Inf", as in the monitor's events; Python's float() and Go's
// strconv.ParseFloat read them back.
type metricLine struct {
	Step         int                    `json:"step"`
	Loss         monitor.Float          `json:"loss"`
	LR           monitor.Float          `json:"lr"`
	GradNorm     monitor.Float          `json:"grad_norm"`
	ClipCoef     monitor.Float          `json:"clip_coef"`
	LossScale    monitor.Float          `json:"loss_scale"`
	Skipped      bool                   `json:"skipped"`
	Tokens       int                    `json:"tokens"`
	Epoch        monitor.Float          `json:"epoch"`
	TokensPerSec monitor.Float          `json:"tokens_per_sec"`
	Memory       map[string]gpu.MemStat `json:"memory"`
	// A split model: each device's table (memory is the first's).
	DeviceMemory []map[string]gpu.MemStat `json:"device_memory,omitempty"`
}

func (tr *Trainer) trainStep(b data.Batch) (optim.Result, error) {
	in, err := tr.Model.NewInputs(b.B, b.T, b.IDs, b.Labels, b.Start)
	if err != nil {
		return optim.Result{}, err
	}
	defer in.Release()
	t0 := time.Now()
	x0 := tr.Model.Transfers()
	// A new dropout mask for every step; the same for both passes of one.
	tr.Model.SetDropoutSeed(uint32(tr.Cfg.Seed)*0x9e3779b1 + uint32(tr.step+1))
	res, err := tr.Opt.Step(tr.Model.Trainable(), StepForward(tr.Model, in, float32(tr.Cfg.ClipLossValue)))
	if err != nil {
		return res, err
	}
	x1 := tr.Model.Transfers()
	tr.stepTransfers.Count += x1.Count - x0.Count
	tr.stepTransfers.Bytes += x1.Bytes - x0.Bytes
	tr.stepTransfers.Time += x1.Time - x0.Time
	for _, d := range tr.Devs {
		if err := d.Sync(); err != nil {
			return res, err
		}
	}
	dt := time.Since(t0)
	tokens := 0
	for _, st := range b.Start {
		tokens += b.T - st
	}
	tr.tokens += int64(tokens)
	tr.elapsed += dt
	tr.step++
	tps := float64(tokens) / dt.Seconds()
	stats := tr.D.Stats()
	line := metricLine{Step: tr.step, Loss: monitor.Float(res.Loss), LR: monitor.Float(res.LR), GradNorm: monitor.Float(res.GradNorm),
		ClipCoef: monitor.Float(res.ClipCoef), LossScale: monitor.Float(res.LossScale), Skipped: res.Skipped, Tokens: res.Tokens,
		Epoch: monitor.Float(float64(tr.step) / float64(max(1, tr.StepsPerEpoch()))), TokensPerSec: monitor.Float(tps), Memory: stats.Map()}
	if len(tr.Devs) > 1 {
		for _, d := range tr.Devs {
			line.DeviceMemory = append(line.DeviceMemory, d.Stats().Map())
		}
	}
	if err := tr.writeMetric(line); err != nil {
		return res, err
	}
	mem := map[string]monitor.MemStat{}
	for k, v := range stats.Map() {
		mem[k] = monitor.MemStat{Live: v.Live, Peak: v.Peak}
	}
	tr.publish(monitor.Event{Kind: monitor.KindStep, Step: &monitor.Step{
		Step: tr.step, Epoch: float64(line.Epoch), Loss: res.Loss, LR: res.LR, GradNorm: res.GradNorm, ClipCoef: res.ClipCoef,
		LossScale: res.LossScale, Skipped: res.Skipped, TokensPerSec: tps, Memory: mem,
	}})
	if tr.opts.Progress != nil {
		tr.opts.Progress.Step(res.Loss)
	}
	return res, nil
}

// metricsFile opens output_dir/metrics.jsonl for appending on first use.
// A resumed run first appends {"event":"resume","step":N,"checkpoint":...}:
// the lines after it continue from step N, and any step lines above it
// with a step beyond N are from the interrupted run, which did not save
// them (readers keep the last line of each step).
func (tr *Trainer) metricsFile() (*os.File, error) {
	if tr.metrics != nil {
		return tr.metrics, nil
	}
	if err := os.MkdirAll(tr.Cfg.OutputDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(tr.Cfg.OutputDir, "metrics.jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	tr.metrics = f
	if tr.resumedFrom != "" {
		if err := tr.writeMetric(map[string]any{"event": "resume", "step": tr.step, "checkpoint": tr.resumedFrom}); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// writeMetric appends one JSON line to metrics.jsonl. Its first failure is
// kept for Run to return.
func (tr *Trainer) writeMetric(v any) error {
	f, err := tr.metricsFile()
	if err == nil {
		var b []byte
		if b, err = json.Marshal(v); err == nil {
			_, err = f.Write(append(b, '\n'))
		}
	}
	if err != nil {
		err = fmt.Errorf("train: write metrics.jsonl: %w", err)
		if tr.metricsErr == nil {
			tr.metricsErr = err
		}
	}
	return err
}

// writeEvent appends an event line (resume, error) to metrics.jsonl, on a
// best-effort basis: it reports a failure that is already being returned.
func (tr *Trainer) writeEvent(ev map[string]any) {
	if tr.metrics != nil {
		tr.writeMetric(ev)
	}
}

func (tr *Trainer) logEval(r EvalResult, zeroShot bool) {
	r.ZeroShot = zeroShot
	r.Step = tr.step
	tr.writeMetric(map[string]any{"step": tr.step, "eval": r})
	tr.publish(monitor.Event{Kind: monitor.KindEval, Eval: &monitor.Eval{Step: tr.step, Task: r.Task, Metric: r.Metric, Value: r.Value, ZeroShot: zeroShot}})
	tr.publishSample()
	label := "eval"
	if zeroShot {
		label = "zero-shot eval"
	}
	fmt.Fprintf(tr.opts.Log, "%s at step %d: %s %s = %.4f (%d examples)\n", label, tr.step, r.Task, r.Metric, r.Value, r.N)
}

// publishSample sends the greedy continuation of the first eval prompt to
// the monitor, so that viewers see what the model says as it trains.
func (tr *Trainer) publishSample() {
	if tr.opts.Sink == nil || tr.Eval == nil || len(tr.Eval.Examples) == 0 {
		return
	}
	prompt := tr.Eval.Examples[0].Prompt
	ids := tr.Tok.EncodeWithSpecial(prompt)
	if len(ids) > tr.Cfg.DataMaxLength {
		ids = append([]int{ids[0]}, ids[len(ids)-tr.Cfg.DataMaxLength+1:]...)
	}
	out, err := tr.Model.Generate(ids, nn.SampleOptions{MaxNewTokens: 16, EOS: tr.Tok.EOS()}, nil)
	if err != nil {
		fmt.Fprintf(tr.opts.Log, "sample: %v\n", err)
		return
	}
	tr.publish(monitor.Event{Kind: monitor.KindSample, Sample: &monitor.Sample{Step: tr.step, Prompt: prompt, Text: tr.Tok.Decode(out)}})
}

// SaveCheckpoint writes output_dir/checkpoint-<step> (model in HF layout,
// tokenizer, trainer_state.json) through a temporary folder renamed into
// place, so that an interrupted save never leaves a damaged checkpoint.
func (tr *Trainer) SaveCheckpoint() (string, error) {
	dir := filepath.Join(tr.Cfg.OutputDir, fmt.Sprintf("checkpoint-%d", tr.step))
	st := TrainerState{Step: tr.step, Epoch: tr.epoch, Optimizer: tr.optimizerName(), Seed: tr.Cfg.Seed}
	if tr.step > 0 && tr.step%max(1, tr.StepsPerEpoch()) == 0 {
		st.Epoch = tr.step / tr.StepsPerEpoch()
	}
	if err := tr.saveModelDir(dir, &st); err != nil {
		return "", err
	}
	fmt.Fprintf(tr.opts.Log, "checkpoint saved: %s\n", dir)
	tr.lastCheckpoint = dir
	return dir, nil
}

// SaveFinal writes the fine-tuned model to output_dir/final.
func (tr *Trainer) SaveFinal() error {
	return tr.saveModelDir(filepath.Join(tr.Cfg.OutputDir, "final"), nil)
}

// CopyTokenizerFiles copies the tokenizer and generation files of a
// Hugging Face model folder that src has (all optional) into dst, so that
// a saved model folder is complete.
func CopyTokenizerFiles(src, dst string) error {
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			continue // optional files
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (tr *Trainer) saveModelDir(dir string, st *TrainerState) error {
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	var err error
	if !tr.Cfg.LoRA() || !tr.Cfg.LoraOnly {
		err = tr.Model.Save(tmp)
	}
	if err == nil && tr.Cfg.LoRA() {
		err = tr.Model.SaveLoRA(tmp, tr.Cfg.ModelNameOrPath)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := CopyTokenizerFiles(tr.baseDir, tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if st != nil {
		ost, err := tr.Opt.SaveState()
		if err == nil && len(ost.Tensors) > 0 {
			err = writeOptimizerTensors(filepath.Join(tmp, "optimizer.safetensors"), ost.Tensors)
		}
		if err != nil {
			os.RemoveAll(tmp)
			return err
		}
		st.Optim = ost
		b, _ := json.MarshalIndent(st, "", "  ")
		if err := os.WriteFile(filepath.Join(tmp, "trainer_state.json"), b, 0o644); err != nil {
			os.RemoveAll(tmp)
			return err
		}
	}
	old := dir + ".old"
	os.RemoveAll(old)
	if _, err := os.Stat(dir); err == nil {
		if err := os.Rename(dir, old); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	os.RemoveAll(old)
	return nil
}

// cleanInterruptedSaves removes what a save that was killed part-way (say
// by kill -9) left in dir, saying so on log. saveModelDir writes NAME.tmp,
// renames an existing NAME to NAME.old, renames NAME.tmp to NAME and
// deletes NAME.old, for NAME a checkpoint-N or final. So a NAME.tmp is an
// incomplete or superseded save and goes; a NAME.old goes when NAME
// exists, and is renamed back to NAME when it does not (the kill came
// between the two renames: NAME.old is the last complete save).
func cleanInterruptedSaves(dir string, log io.Writer) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	saveName := func(name, suffix string) (string, bool) {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			return "", false
		}
		if base == "final" {
			return base, true
		}
		n, ok := strings.CutPrefix(base, "checkpoint-")
		_, err := strconv.Atoi(n)
		return base, ok && err == nil
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if base, ok := saveName(e.Name(), ".tmp"); ok {
			if err := os.RemoveAll(path); err != nil {
				return fmt.Errorf("train: remove the interrupted save %s: %w", path, err)
			}
			fmt.Fprintf(log, "removed %s: an incomplete save of %s from an interrupted run\n", path, base)
			continue
		}
		if base, ok := saveName(e.Name(), ".old"); ok {
			target := filepath.Join(dir, base)
			if _, err := os.Stat(target); err == nil {
				if err := os.RemoveAll(path); err != nil {
					return fmt.Errorf("train: remove %s: %w", path, err)
				}
				fmt.Fprintf(log, "removed %s: the previous copy of %s, left by an interrupted save\n", path, target)
				continue
			}
			if err := os.Rename(path, target); err != nil {
				return fmt.Errorf("train: restore %s from %s: %w", target, path, err)
			}
			fmt.Fprintf(log, "restored %s from %s: a save was interrupted between its renames\n", target, path)
		}
	}
	return nil
}

// LatestCheckpoint finds the newest complete checkpoint in dir ("" if none).
func LatestCheckpoint(dir string) (string, TrainerState, error) {
	var st TrainerState
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return "", st, nil
	}
	if err != nil {
		return "", st, err
	}
	var steps []int
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, "checkpoint-") || strings.Contains(name, ".") {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimPrefix(name, "checkpoint-")); err == nil {
			steps = append(steps, n)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(steps)))
	for _, n := range steps {
		ck := filepath.Join(dir, fmt.Sprintf("checkpoint-%d", n))
		b, err := os.ReadFile(filepath.Join(ck, "trainer_state.json"))
		if err != nil {
			continue
		}
		if err := json.Unmarshal(b, &st); err != nil {
			return "", st, fmt.Errorf("train: %s/trainer_state.json: %w", ck, err)
		}
		return ck, st, nil
	}
	return "", st, nil
}
