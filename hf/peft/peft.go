package peft

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// File names of an adapter folder.
const (
	ConfigFile  = "adapter_config.json"
	WeightsFile = "adapter_model.safetensors"
)

// Modules are the linear layers of a LLaMA block that can carry an
// adapter, in the block's order, with the submodule that holds each.
var Modules = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// DefaultTargets are PEFT's default target modules for LLaMA.
var DefaultTargets = []string{"q_proj", "v_proj"}

func parent(module string) string {
	if strings.HasSuffix(module, "_proj") && slices.Contains(Modules[:4], module) {
		return "self_attn"
	}
	return "mlp"
}

// Config is the part of PEFT's LoraConfig that lomo reads and writes.
type Config struct {
	PeftType            string   `json:"peft_type"`
	TaskType            string   `json:"task_type"`
	BaseModelNameOrPath string   `json:"base_model_name_or_path"`
	R                   int      `json:"r"`
	LoraAlpha           float64  `json:"lora_alpha"`
	LoraDropout         float64  `json:"lora_dropout"`
	TargetModules       []string `json:"target_modules"`
	Bias                string   `json:"bias"`
	UseRSLoRA           bool     `json:"use_rslora"`
	FanInFanOut         bool     `json:"fan_in_fan_out"`
	InferenceMode       bool     `json:"inference_mode"`
	InitLoraWeights     bool     `json:"init_lora_weights"`
	// Fields PEFT writes that lomo only accepts empty.
	UseDoRA           bool            `json:"use_dora"`
	ModulesToSave     []string        `json:"modules_to_save"`
	LayersToTransform json.RawMessage `json:"layers_to_transform"`
	RankPattern       map[string]any  `json:"rank_pattern"`
	AlphaPattern      map[string]any  `json:"alpha_pattern"`
	Revision          *string         `json:"revision"`
}

// New returns the config of LoRA adapters of rank r with the given alpha,
// dropout and targets (nil: DefaultTargets) for the model base.
func New(r int, alpha, dropout float64, targets []string, base string) *Config {
	if targets == nil {
		targets = DefaultTargets
	}
	return &Config{
		PeftType: "LORA", TaskType: "CAUSAL_LM", BaseModelNameOrPath: base, R: r, LoraAlpha: alpha, LoraDropout: dropout,
		TargetModules: append([]string(nil), targets...), Bias: "none", InferenceMode: true, InitLoraWeights: true,
		RankPattern: map[string]any{}, AlphaPattern: map[string]any{},
	}
}

// Scale is the factor of B·A: lora_alpha/r, or lora_alpha/√r with rsLoRA.
func (c *Config) Scale() float64 {
	if c.UseRSLoRA {
		return c.LoraAlpha / math.Sqrt(float64(c.R))
	}
	return c.LoraAlpha / float64(c.R)
}

// Validate checks that the config describes adapters lomo computes.
func (c *Config) Validate() error {
	var errs []string
	if !strings.EqualFold(c.PeftType, "LORA") {
		errs = append(errs, fmt.Sprintf("peft_type %q is not LORA", c.PeftType))
	}
	if c.R <= 0 {
		errs = append(errs, fmt.Sprintf("r %d must be positive", c.R))
	}
	if c.LoraAlpha <= 0 || math.IsNaN(c.LoraAlpha) || math.IsInf(c.LoraAlpha, 0) {
		errs = append(errs, fmt.Sprintf("lora_alpha %v must be a positive number", c.LoraAlpha))
	}
	if !(c.LoraDropout >= 0 && c.LoraDropout < 1) {
		errs = append(errs, fmt.Sprintf("lora_dropout %v is outside [0, 1)", c.LoraDropout))
	}
	if err := CheckTargets(c.TargetModules); err != nil {
		errs = append(errs, err.Error())
	}
	if c.Bias != "" && c.Bias != "none" {
		errs = append(errs, fmt.Sprintf("bias %q is not supported (only none)", c.Bias))
	}
	if c.FanInFanOut {
		errs = append(errs, "fan_in_fan_out is not supported (LLaMA's layers are nn.Linear)")
	}
	if c.UseDoRA {
		errs = append(errs, "use_dora is not supported")
	}
	if len(c.ModulesToSave) > 0 {
		errs = append(errs, fmt.Sprintf("modules_to_save %v is not supported", c.ModulesToSave))
	}
	if l := strings.TrimSpace(string(c.LayersToTransform)); l != "" && l != "null" {
		errs = append(errs, fmt.Sprintf("layers_to_transform %s is not supported (adapters on every layer)", l))
	}
	if len(c.RankPattern) > 0 || len(c.AlphaPattern) > 0 {
		errs = append(errs, "rank_pattern and alpha_pattern are not supported (one rank and alpha for every module)")
	}
	if len(errs) > 0 {
		return fmt.Errorf("peft: %s", strings.Join(errs, "; "))
	}
	return nil
}

// CheckTargets checks module names against Modules (no duplicates, at
// least one).
func CheckTargets(targets []string) error {
	if len(targets) == 0 {
		return fmt.Errorf("target_modules is empty (one or more of %s)", strings.Join(Modules, ", "))
	}
	seen := map[string]bool{}
	for _, t := range targets {
		if !slices.Contains(Modules, t) {
			return fmt.Errorf("target module %q is not a linear layer of a LLaMA block (%s)", t, strings.Join(Modules, ", "))
		}
		if seen[t] {
			return fmt.Errorf("target module %q is named twice", t)
		}
		seen[t] = true
	}
	return nil
}

// UnmarshalJSON reads target_modules as a list, or as one module name
// (PEFT also takes a string, which it matches as a regular expression:
// only a plain module name is accepted here).
func (c *Config) UnmarshalJSON(b []byte) error {
	type plain Config
	var raw struct {
		plain
		TargetModules json.RawMessage `json:"target_modules"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*c = Config(raw.plain)
	c.TargetModules = nil
	if len(raw.TargetModules) == 0 || string(raw.TargetModules) == "null" {
		return nil
	}
	var one string
	if err := json.Unmarshal(raw.TargetModules, &one); err == nil {
		if !slices.Contains(Modules, one) {
			return fmt.Errorf("target_modules %q: a regular expression is not supported; list the modules (%s)", one, strings.Join(Modules, ", "))
		}
		c.TargetModules = []string{one}
		return nil
	}
	return json.Unmarshal(raw.TargetModules, &c.TargetModules)
}

// Load reads and validates dir/adapter_config.json.
func Load(dir string) (*Config, error) {
	path := filepath.Join(dir, ConfigFile)
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("peft: %s has no %s: not a PEFT adapter folder", dir, ConfigFile)
		}
		return nil, fmt.Errorf("peft: %w", err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("peft: %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	if _, err := os.Stat(filepath.Join(dir, WeightsFile)); err != nil {
		if _, binErr := os.Stat(filepath.Join(dir, "adapter_model.bin")); binErr == nil {
			return nil, fmt.Errorf("peft: %s has adapter_model.bin (a pickle), which lomo does not read: save the adapter with safe_serialization=True", dir)
		}
		return nil, fmt.Errorf("peft: %s has no %s", dir, WeightsFile)
	}
	return &c, nil
}

// Marshal returns the config as PEFT writes it.
func (c *Config) Marshal() ([]byte, error) {
	type plain Config
	b, err := json.MarshalIndent((*plain)(c), "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// TensorName is PEFT's name of an adapter matrix: part "lora_A" or
// "lora_B" of the module (q_proj, ..., down_proj) of layer i.
func TensorName(layer int, module, part string) string {
	return fmt.Sprintf("base_model.model.model.layers.%d.%s.%s.%s.weight", layer, parent(module), module, part)
}

// ParseTensorName is the inverse of TensorName.
func ParseTensorName(name string) (layer int, module, part string, ok bool) {
	rest, found := strings.CutPrefix(name, "base_model.model.model.layers.")
	if !found {
		return 0, "", "", false
	}
	f := strings.Split(rest, ".")
	if len(f) != 5 || f[4] != "weight" || (f[3] != "lora_A" && f[3] != "lora_B") {
		return 0, "", "", false
	}
	if _, err := fmt.Sscan(f[0], &layer); err != nil || layer < 0 || fmt.Sprint(layer) != f[0] {
		return 0, "", "", false
	}
	if !slices.Contains(Modules, f[2]) || parent(f[2]) != f[1] {
		return 0, "", "", false
	}
	return layer, f[2], f[3], true
}
