package train

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
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
	DType           string  `yaml:"dtype"`     // lomo: f32 or f16 parameter storage
	OutputDir       string  `yaml:"output_dir"`
	TrainOnInputs   bool    `yaml:"train_on_inputs"`
	ScoreBy         string  `yaml:"score_by"`            // lomo: multiple choice by "sum" (reference) or "mean" NLL
	EvalStrategy    string  `yaml:"evaluation_strategy"` // epoch or no
	SaveStrategy    string  `yaml:"save_strategy"`       // lomo: epoch, end or no
	MaxNewTokens    int     `yaml:"max_new_tokens"`
	ZeroShotEval    bool    `yaml:"zero_shot_eval"` // lomo: evaluate before training too
}

// DefaultConfig has the reference's defaults (REFERENCE §5).
func DefaultConfig() Config {
	return Config{
		DatasetName: "boolq", DataMaxLength: 1024, TrainBatchSize: 16, EvalBatchSize: 16,
		LearningRate: 0.03, NumTrainEpochs: 10, LRSchedulerType: "linear", Warmup: 0.1,
		ClipGradNorm: 1.0, GradCheckpoint: true, Seed: 42, Optimizer: "lomo", DType: "f32",
		OutputDir: "out", ScoreBy: "sum", EvalStrategy: "epoch", SaveStrategy: "end",
		MaxNewTokens: 32, ZeroShotEval: true, TrainSize: 1000,
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
	switch c.Optimizer {
	case "lomo", "adalomo", "sgd", "adamw":
	default:
		errs = append(errs, fmt.Sprintf("optimizer %q is not lomo, adalomo, sgd or adamw", c.Optimizer))
	}
	if c.DType != "f32" && c.DType != "f16" {
		errs = append(errs, fmt.Sprintf("dtype %q is not f32 or f16", c.DType))
	}
	if c.ScoreBy != "sum" && c.ScoreBy != "mean" {
		errs = append(errs, fmt.Sprintf("score_by %q is not sum or mean", c.ScoreBy))
	}
	if c.LearningRate < 0 || c.WeightDecay < 0 || c.ClipGradNorm < 0 || c.ClipGradValue < 0 || c.ClipLossValue < 0 {
		errs = append(errs, "learning_rate, weight_decay and clip values must not be negative")
	}
	if len(errs) > 0 {
		return fmt.Errorf("train: config: %s", strings.Join(errs, "; "))
	}
	return nil
}
