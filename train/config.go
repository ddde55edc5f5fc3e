package train

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/lomo-dev/lomo/hf/peft"
	"github.com/lomo-dev/lomo/nn"
)

// Config is a training run. Keys follow the LOMO reference's args_lomo.yaml
// (REFERENCE §5), with lomo's additions marked.
type Config struct {
	ModelNameOrPath string  `yaml:"model_name_or_path"`
	DatasetName     string  `yaml:"dataset_name"` // boolq cb copa multirc rte wic wsc record, or jsonl / choice
	TrainFile       string  `yaml:"train_file"`   // lomo: the task's jsonl file
	EvalFile        string  `yaml:"eval_file"`    // lomo: empty = a split of train_file
	TrainSize       int     `yaml:"train_size"`   // lomo: with no eval_file, the first n of a seeded shuffle train, the rest evaluate
	DataMaxLength   int     `yaml:"data_max_length"`
	TrainBatchSize  int     `yaml:"per_device_train_batch_size"`
	EvalBatchSize   int     `yaml:"per_device_eval_batch_size"`
	LearningRate    float64 `yaml:"learning_rate"`
	WeightDecay     float64 `yaml:"weight_decay"`
	NumTrainEpochs  int     `yaml:"num_train_epochs"`
	MaxSteps        int     `yaml:"max_steps"` // lomo: stop after this many steps (0: epochs decide)
	LRSchedulerType string  `yaml:"lr_scheduler_type"`
	Warmup          float64 `yaml:"warmup"`
	ClipGradNorm    float64 `yaml:"clip_grad_norm"`
	ClipGradValue   float64 `yaml:"clip_grad_value"`
	ClipLossValue   float64 `yaml:"clip_loss_value"`
	GradCheckpoint  bool    `yaml:"gradient_checkpointing"`
	Seed            uint64  `yaml:"seed"`
	Optimizer       string  `yaml:"optimizer"` // lomo: lomo, adalomo, sgd, adamw
	DType           string  `yaml:"dtype"`     // lomo: parameter storage, auto (the weights file's torch_dtype), f32, f16 or bf16
	OutputDir       string  `yaml:"output_dir"`
	TrainOnInputs   bool    `yaml:"train_on_inputs"`
	ScoreBy         string  `yaml:"score_by"`            // lomo: multiple choice by "sum" (reference) or "mean" NLL
	EvalStrategy    string  `yaml:"evaluation_strategy"` // epoch or no
	SaveStrategy    string  `yaml:"save_strategy"`       // lomo: epoch, end or no
	MaxNewTokens    int     `yaml:"max_new_tokens"`
	ZeroShotEval    bool    `yaml:"zero_shot_eval"` // lomo: evaluate before training too
	// f16 loss scaling (REFERENCE §2). loss_scale is AdaLomo's name for its
	// scale (LOMO's scaler calls it init_scale); scale_window is the
	// reference scaler's own name.
	LossScale   float64 `yaml:"loss_scale"`   // initial scale; 0: the reference's, 2^16 for LOMO, 2^10 for AdaLomo
	ScaleWindow int     `yaml:"scale_window"` // good steps in a row before the scale doubles; 0: a tenth of the run, 10 to 1000 (the reference's)
	// lomo: stop the run, with an error, after this many steps in a row
	// were skipped on gradient overflow (0: never).
	MaxConsecutiveSkippedSteps int `yaml:"max_consecutive_skipped_steps"`
	// LoRA (the reference's args_lomo_lora.yaml). peft_type lora adds
	// adapters of rank lora_r to lora_target_modules (lomo's key; PEFT's
	// target_modules) of every block, trained by AdamW at
	// hf_learning_rate. lora_only: the base is frozen; otherwise the base
	// is trained by optimizer (lomo or adalomo) at learning_rate in the
	// same backward pass.
	PeftType          string   `yaml:"peft_type"` // "" (none) or lora
	LoraR             int      `yaml:"lora_r"`
	LoraAlpha         float64  `yaml:"lora_alpha"`
	LoraDropout       float64  `yaml:"lora_dropout"`
	LoraOnly          bool     `yaml:"lora_only"`
	LoraTargetModules []string `yaml:"lora_target_modules"` // lomo: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj
	HFLearningRate    float64  `yaml:"hf_learning_rate"`
	HFWeightDecay     float64  `yaml:"hf_weight_decay"`
	HFLRSchedulerType string   `yaml:"hf_lr_scheduler_type"`
	HFWarmup          float64  `yaml:"hf_warmup"`
	// lomo: the adapters to train on, by index or name, comma separated
	// (`lomo devices` lists them; one may be named twice). Two or more split
	// the model's blocks over them; empty: --adapter / the best adapter.
	Devices string `yaml:"devices"`
	// lomo: blocks per device, comma separated (e.g. 3,2); empty: the
	// split `lomo plan` chooses, the smallest largest per-device peak.
	DeviceSplit string `yaml:"device_split"`
}

// LoRA reports whether the run trains LoRA adapters.
func (c Config) LoRA() bool { return c.PeftType == "lora" }

// checkDType says why storage dtype dt cannot train with the rest of c ("" if
// it can).
func (c Config) checkDType(dt string) string {
	if dt == "f16" && (c.Optimizer == "lomo" || c.Optimizer == "adalomo") && c.ClipGradNorm <= 0 && !(c.LoRA() && c.LoraOnly) {
		return fmt.Sprintf("dtype f16 with optimizer %s needs clip_grad_norm > 0 (the overflow check of loss scaling runs in its norm pass)", c.Optimizer)
	}
	return ""
}

// DefaultConfig has the reference's defaults (REFERENCE §5).
func DefaultConfig() Config {
	return Config{
		DatasetName: "boolq", DataMaxLength: 1024, TrainBatchSize: 16, EvalBatchSize: 16,
		LearningRate: 0.03, NumTrainEpochs: 10, LRSchedulerType: "linear", Warmup: 0.1,
		ClipGradNorm: 1.0, GradCheckpoint: true, Seed: 42, Optimizer: "lomo", DType: "auto",
		OutputDir: "out", ScoreBy: "sum", EvalStrategy: "epoch", SaveStrategy: "end",
		MaxNewTokens: 32, ZeroShotEval: true, TrainSize: 1000,
		// 16 halvings take the default 2^16 scale down to 1: a run whose
		// gradients overflow after that many is not recovering.
		MaxConsecutiveSkippedSteps: 16,
		LoraR:                      8, LoraAlpha: 16, LoraDropout: 0.05, LoraTargetModules: []string{"q_proj", "v_proj"},
		HFLearningRate: 5e-4, HFLRSchedulerType: "linear", HFWarmup: 0.05,
	}
}

// LoadConfig reads a YAML config over the defaults. Unknown keys are errors
// (a typo must not silently fall back to a default). Values are checked by
// Validate, after any command-line overrides.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("train: config %s: %w", path, err)
	}
	return c, nil
}

// Set overrides one key by its YAML name from a string (--key value).
func (c *Config) Set(key, value string) error {
	v := reflect.ValueOf(c).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0] != key {
			continue
		}
		f := v.Field(i)
		var err error
		switch f.Kind() {
		case reflect.String:
			f.SetString(value)
		case reflect.Int:
			var n int64
			n, err = strconv.ParseInt(value, 10, 64)
			f.SetInt(n)
		case reflect.Uint64:
			var n uint64
			n, err = strconv.ParseUint(value, 10, 64)
			f.SetUint(n)
		case reflect.Float64:
			var x float64
			x, err = strconv.ParseFloat(value, 64)
			f.SetFloat(x)
		case reflect.Bool:
			var b bool
			b, err = strconv.ParseBool(value)
			f.SetBool(b)
		case reflect.Slice: // comma-separated strings
			var v []string
			for _, s := range strings.Split(value, ",") {
				if s = strings.TrimSpace(s); s != "" {
					v = append(v, s)
				}
			}
			f.Set(reflect.ValueOf(v))
		}
		if err != nil {
			return fmt.Errorf("train: --%s %q: %w", key, value, err)
		}
		return nil
	}
	return fmt.Errorf("train: unknown config key %q", key)
}

// Map returns the config as key/value pairs (for run metadata).
func (c Config) Map() map[string]any {
	m := map[string]any{}
	v := reflect.ValueOf(c)
	for i := 0; i < v.NumField(); i++ {
		m[strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0]] = v.Field(i).Interface()
	}
	return m
}

// Validate checks values that would otherwise fail deep inside a run.
func (c Config) Validate() error {
	var errs []string
	if c.ModelNameOrPath == "" {
		errs = append(errs, "model_name_or_path is empty")
	}
	if c.TrainFile == "" {
		errs = append(errs, "train_file is empty")
	}
	if c.TrainBatchSize <= 0 || c.EvalBatchSize <= 0 {
		errs = append(errs, "batch sizes must be positive")
	}
	if c.DataMaxLength < 4 {
		errs = append(errs, "data_max_length must be at least 4")
	}
	if c.NumTrainEpochs <= 0 && c.MaxSteps <= 0 {
		errs = append(errs, "num_train_epochs or max_steps must be positive")
	}
	oneOf := func(key, v string, accepted ...string) {
		if !slices.Contains(accepted, v) {
			errs = append(errs, fmt.Sprintf("%s %q is not one of %s", key, v, strings.Join(accepted, ", ")))
		}
	}
	oneOf("optimizer", c.Optimizer, "lomo", "adalomo", "sgd", "adamw")
	oneOf("dtype", c.DType, nn.DTypeNames...)
	oneOf("score_by", c.ScoreBy, "sum", "mean")
	oneOf("lr_scheduler_type", c.LRSchedulerType, "linear", "constant", "cosine")
	// The reference's "steps" strategies (every save_steps / eval_steps)
	// are not implemented: refused, not read as another strategy.
	oneOf("evaluation_strategy", c.EvalStrategy, "epoch", "no")
	oneOf("save_strategy", c.SaveStrategy, "epoch", "end", "no")
	for _, f := range []struct {
		key string
		v   float64
	}{{"learning_rate", c.LearningRate}, {"weight_decay", c.WeightDecay}, {"warmup", c.Warmup}, {"clip_grad_norm", c.ClipGradNorm},
		{"clip_grad_value", c.ClipGradValue}, {"clip_loss_value", c.ClipLossValue}, {"loss_scale", c.LossScale}} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			errs = append(errs, fmt.Sprintf("%s %v must be a finite number >= 0", f.key, f.v))
		}
	}
	if c.MaxNewTokens <= 0 {
		errs = append(errs, fmt.Sprintf("max_new_tokens %d must be positive", c.MaxNewTokens))
	}
	if c.ScaleWindow < 0 || c.MaxConsecutiveSkippedSteps < 0 || c.MaxSteps < 0 || c.TrainSize < 0 {
		errs = append(errs, "scale_window, max_consecutive_skipped_steps, max_steps and train_size must not be negative")
	}
	// Combinations optim.New would refuse only after the model is loaded
	// (with dtype auto, NewSplit checks once the file's dtype is known).
	if err := c.checkDType(c.DType); err != "" {
		errs = append(errs, err)
	}
	if c.ClipGradValue > 0 && (c.Optimizer == "adalomo" || c.Optimizer == "adamw") {
		errs = append(errs, fmt.Sprintf("clip_grad_value is not supported with optimizer %s", c.Optimizer))
	}
	oneOf("peft_type", c.PeftType, "", "lora")
	if c.LoRA() {
		if c.LoraR <= 0 {
			errs = append(errs, fmt.Sprintf("lora_r %d must be positive", c.LoraR))
		}
		if !(c.LoraAlpha > 0) || math.IsInf(c.LoraAlpha, 0) {
			errs = append(errs, fmt.Sprintf("lora_alpha %v must be a positive number", c.LoraAlpha))
		}
		if !(c.LoraDropout >= 0 && c.LoraDropout < 1) {
			errs = append(errs, fmt.Sprintf("lora_dropout %v is outside [0, 1)", c.LoraDropout))
		}
		if err := peft.CheckTargets(c.LoraTargetModules); err != nil {
			errs = append(errs, "lora_target_modules: "+err.Error())
		}
		for _, f := range []struct {
			key string
			v   float64
		}{{"hf_learning_rate", c.HFLearningRate}, {"hf_weight_decay", c.HFWeightDecay}, {"hf_warmup", c.HFWarmup}} {
			if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
				errs = append(errs, fmt.Sprintf("%s %v must be a finite number >= 0", f.key, f.v))
			}
		}
		oneOf("hf_lr_scheduler_type", c.HFLRSchedulerType, "linear", "constant", "cosine")
		if !c.LoraOnly && c.Optimizer != "lomo" && c.Optimizer != "adalomo" {
			errs = append(errs, fmt.Sprintf("peft_type lora with lora_only false trains the base with optimizer lomo or adalomo, not %s", c.Optimizer))
		}
		if c.ClipGradValue > 0 {
			errs = append(errs, "clip_grad_value is not supported with peft_type lora (the adapters' AdamW)")
		}
	}
	devs := c.DeviceNames()
	if split, err := c.Split(); err != nil {
		errs = append(errs, err.Error())
	} else if split != nil && len(split) != len(devs) {
		errs = append(errs, fmt.Sprintf("device_split %q gives %d devices, devices %q names %d", c.DeviceSplit, len(split), c.Devices, len(devs)))
	}
	if len(devs) > 1 && c.LoRA() && c.LoraOnly {
		errs = append(errs, fmt.Sprintf("lora_only keeps the adapters' gradients on one device: a model split across devices (devices %q) trains LoRA beside lomo or adalomo (lora_only false)", c.Devices))
	}
	if len(devs) > 1 && (c.Optimizer == "sgd" || c.Optimizer == "adamw") {
		errs = append(errs, fmt.Sprintf("optimizer %s keeps every gradient on one device: a model split across devices (devices %q) trains with lomo or adalomo", c.Optimizer, c.Devices))
	}
	if len(errs) > 0 {
		return fmt.Errorf("train: config: %s", strings.Join(errs, "; "))
	}
	return nil
}

// DeviceNames is the devices key as a list (nil when empty).
func (c Config) DeviceNames() []string {
	if strings.TrimSpace(c.Devices) == "" {
		return nil
	}
	var out []string
	for _, f := range strings.Split(c.Devices, ",") {
		out = append(out, strings.TrimSpace(f))
	}
	return out
}

// Split is the device_split key as block counts (nil when empty).
func (c Config) Split() ([]int, error) {
	if strings.TrimSpace(c.DeviceSplit) == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(c.DeviceSplit, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("device_split %q: %q is not a block count >= 1", c.DeviceSplit, f)
		}
		out = append(out, n)
	}
	return out, nil
}
