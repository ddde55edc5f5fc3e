package peft

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A config as PEFT 0.13 writes it for LoRA on LLaMA (fields lomo does not
// use included).
const peftWritten = `{
  "alpha_pattern": {},
  "auto_mapping": null,
  "base_model_name_or_path": "huggyllama/llama-7b",
  "bias": "none",
  "fan_in_fan_out": false,
  "inference_mode": true,
  "init_lora_weights": true,
  "layer_replication": null,
  "layers_pattern": null,
  "layers_to_transform": null,
  "loftq_config": {},
  "lora_alpha": 16,
  "lora_dropout": 0.05,
  "megatron_config": null,
  "megatron_core": "megatron.core",
  "modules_to_save": null,
  "peft_type": "LORA",
  "r": 8,
  "rank_pattern": {},
  "revision": null,
  "target_modules": ["v_proj", "q_proj"],
  "task_type": "CAUSAL_LM",
  "use_dora": false,
  "use_rslora": false
}`

func folder(t *testing.T, cfg string, weights string) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if weights != "" {
		if err := os.WriteFile(filepath.Join(dir, weights), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadPeftConfig(t *testing.T) {
	c, err := Load(folder(t, peftWritten, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if c.R != 8 || c.LoraAlpha != 16 || c.LoraDropout != 0.05 || !slices.Equal(c.TargetModules, []string{"v_proj", "q_proj"}) || c.Scale() != 2 {
		t.Errorf("read %+v (scale %v)", c, c.Scale())
	}
	c.UseRSLoRA = true
	if got := c.Scale(); math.Abs(got-16/math.Sqrt(8)) > 1e-12 {
		t.Errorf("rsLoRA scale %v", got)
	}
	// What lomo writes reads back the same.
	n := New(4, 8, 0.1, nil, "org/m")
	b, err := n.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Load(folder(t, string(b), WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if back.R != 4 || back.LoraAlpha != 8 || !slices.Equal(back.TargetModules, DefaultTargets) || back.BaseModelNameOrPath != "org/m" || back.PeftType != "LORA" {
		t.Errorf("round trip: %+v", back)
	}
}

func TestLoadRefuses(t *testing.T) {
	edit := func(old, new string) string { return strings.Replace(peftWritten, old, new, 1) }
	for _, c := range []struct{ name, cfg, weights, want string }{
		{"one module as a string", edit(`["v_proj", "q_proj"]`, `"q_proj"`), WeightsFile, ""},
		{"regular expression", edit(`["v_proj", "q_proj"]`, `".*proj"`), WeightsFile, "regular expression is not supported"},
		{"unknown module", edit(`"v_proj"`, `"c_attn"`), WeightsFile, `"c_attn" is not a linear layer`},
		{"prefix tuning", edit(`"LORA"`, `"PREFIX_TUNING"`), WeightsFile, `peft_type "PREFIX_TUNING" is not LORA`},
		{"bias", edit(`"bias": "none"`, `"bias": "all"`), WeightsFile, `bias "all" is not supported`},
		{"layers", edit(`"layers_to_transform": null`, `"layers_to_transform": [0, 1]`), WeightsFile, "layers_to_transform [0, 1] is not supported"},
		{"rank pattern", edit(`"rank_pattern": {}`, `"rank_pattern": {"q_proj": 4}`), WeightsFile, "rank_pattern"},
		{"zero rank", edit(`"r": 8`, `"r": 0`), WeightsFile, "r 0 must be positive"},
		{"pickle weights", peftWritten, "adapter_model.bin", "adapter_model.bin (a pickle)"},
		{"no weights", peftWritten, "", "has no adapter_model.safetensors"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Load(folder(t, c.cfg, c.weights))
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestTensorNames(t *testing.T) {
	for _, mod := range Modules {
		for _, part := range []string{"lora_A", "lora_B"} {
			name := TensorName(12, mod, part)
			l, m, p, ok := ParseTensorName(name)
			if !ok || l != 12 || m != mod || p != part {
				t.Errorf("%s parses as %d %s %s %v", name, l, m, p, ok)
			}
		}
	}
	if got := TensorName(3, "q_proj", "lora_A"); got != "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight" {
		t.Errorf("q_proj: %s", got)
	}
	if got := TensorName(0, "down_proj", "lora_B"); got != "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight" {
		t.Errorf("down_proj: %s", got)
	}
	for _, bad := range []string{
		"base_model.model.model.layers.0.mlp.q_proj.lora_A.weight",
		"base_model.model.model.layers.01.self_attn.q_proj.lora_A.weight",
		"base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
		"model.layers.0.self_attn.q_proj.lora_A.weight",
		"base_model.model.lm_head.lora_A.weight",
	} {
		if _, _, _, ok := ParseTensorName(bad); ok {
			t.Errorf("%s parsed", bad)
		}
	}
}
