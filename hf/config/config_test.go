package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/hf/safetensors"
	"github.com/lomo-dev/lomo/internal/shared"
)

func storiesDir(t testing.TB) string {
	t.Helper()
	return shared.Path(t, "models/stories260K")
}

func TestStories260KConfig(t *testing.T) {
	dir := storiesDir(t)
	c, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := Llama{
		HiddenSize: 64, IntermediateSize: 172, NumLayers: 5, NumHeads: 8, NumKVHeads: 4,
		VocabSize: 512, RopeTheta: 10000, RMSNormEps: 1e-5, TieWordEmbeddings: true,
		MaxPositionEmbeddings: 512, HeadDim: 8, TorchDType: "float32", BOSTokenID: 1, EOSTokenID: 2,
		ModelType: "llama", Architectures: []string{"LlamaForCausalLM"}, HiddenAct: "silu",
	}
	got := *c
	got.extra = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config\n got %+v\nwant %+v", got, want)
	}
	if _, ok := c.extra["initializer_range"]; !ok {
		t.Errorf("unknown keys not kept: %v", c.extra)
	}
	c2, err := Load(filepath.Join(dir, "config.json"))
	if err != nil || c2.HiddenSize != 64 {
		t.Fatal(err)
	}

	shapes := c.ParamShapes()
	if len(shapes) != 1+5*9+1 {
		t.Fatalf("%d shapes", len(shapes))
	}
	s, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := c.CheckWeights(s); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, ti := range s.Tensors() {
		total += ti.NumElements()
	}
	if c.NumParams() != total {
		t.Errorf("NumParams %d, file has %d", c.NumParams(), total)
	}
	// 512*64 + 5*(2*64 + 64*64*2 + 32*64*2 + 3*172*64) + 64
	if c.NumParams() != 512*64+5*(2*64+64*64*2+32*64*2+3*172*64)+64 {
		t.Errorf("NumParams %d", c.NumParams())
	}

	// Untied: lm_head is expected and reported missing.
	u := *c
	u.TieWordEmbeddings = false
	err = u.CheckWeights(s)
	if !errors.Is(err, ErrShapeMismatch) || !strings.Contains(err.Error(), `"lm_head.weight" [512 64] is missing`) {
		t.Errorf("untied CheckWeights: %v", err)
	}
	// A different config: every mismatching tensor is named with both shapes.
	w := *c
	w.IntermediateSize = 128
	err = w.CheckWeights(s)
	if !errors.Is(err, ErrShapeMismatch) || !strings.Contains(err.Error(), `"model.layers.0.mlp.gate_proj.weight": expected shape [128 64], found [172 64]`) {
		t.Errorf("CheckWeights with a different FFN: %v", err)
	}
	// Fewer layers: the extra ones are unexpected.
	l := *c
	l.NumLayers = 4
	err = l.CheckWeights(s)
	if !errors.Is(err, ErrShapeMismatch) || !strings.Contains(err.Error(), `unexpected tensor "model.layers.4.`) {
		t.Errorf("CheckWeights with fewer layers: %v", err)
	}
}

func TestParamShapesOrder(t *testing.T) {
	c, err := Parse([]byte(`{"model_type":"llama","hidden_size":16,"intermediate_size":40,"num_hidden_layers":2,
		"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":100,"head_dim":8,"torch_dtype":"bfloat16"}`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ti := range c.ParamShapes() {
		got = append(got, ti.Name+fmtShape(ti.Shape))
		if ti.DType != safetensors.BF16 || ti.Size != ti.NumElements()*2 {
			t.Errorf("%s: dtype %s size %d", ti.Name, ti.DType, ti.Size)
		}
	}
	want := []string{
		"model.embed_tokens.weight[100,16]",
		"model.layers.0.input_layernorm.weight[16]",
		"model.layers.0.self_attn.q_proj.weight[32,16]",
		"model.layers.0.self_attn.k_proj.weight[16,16]",
		"model.layers.0.self_attn.v_proj.weight[16,16]",
		"model.layers.0.self_attn.o_proj.weight[16,32]",
		"model.layers.0.post_attention_layernorm.weight[16]",
		"model.layers.0.mlp.gate_proj.weight[40,16]",
		"model.layers.0.mlp.up_proj.weight[40,16]",
		"model.layers.0.mlp.down_proj.weight[16,40]",
		"model.layers.1.input_layernorm.weight[16]",
		"model.layers.1.self_attn.q_proj.weight[32,16]",
		"model.layers.1.self_attn.k_proj.weight[16,16]",
		"model.layers.1.self_attn.v_proj.weight[16,16]",
		"model.layers.1.self_attn.o_proj.weight[16,32]",
		"model.layers.1.post_attention_layernorm.weight[16]",
		"model.layers.1.mlp.gate_proj.weight[40,16]",
		"model.layers.1.mlp.up_proj.weight[40,16]",
		"model.layers.1.mlp.down_proj.weight[16,40]",
		"model.norm.weight[16]",
		"lm_head.weight[100,16]",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParamShapes\n got %q\nwant %q", got, want)
	}
	if n := c.NumParams(); n != 100*16*2+2*(16*2+32*16*2+16*16*2+40*16*3)+16 {
		t.Errorf("NumParams %d", n)
	}
}

func fmtShape(s []int) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestConfigDefaultsAndTokens(t *testing.T) {
	base := `"model_type":"llama","hidden_size":64,"intermediate_size":172,"num_hidden_layers":2,"num_attention_heads":8,"vocab_size":200000`
	c, err := Parse([]byte(`{` + base + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.NumKVHeads != 8 || c.HeadDim != 8 || c.RopeTheta != 10000 || c.RMSNormEps != 1e-6 ||
		c.BOSTokenID != 1 || c.EOSTokenID != 2 || c.MaxPositionEmbeddings != 2048 || c.TieWordEmbeddings {
		t.Errorf("defaults: %+v", c)
	}
	// Llama 3: eos list, explicit nulls, "dtype" instead of "torch_dtype".
	c, err = Parse([]byte(`{` + base + `,"bos_token_id":128000,"eos_token_id":[128001,128008,128009],
		"rope_theta":500000.0,"num_key_value_heads":null,"dtype":"bfloat16","rope_scaling":{"rope_type":"llama3","factor":8.0}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.BOSTokenID != 128000 || c.EOSTokenID != 128001 || !reflect.DeepEqual(c.EOSTokenIDs, []int{128001, 128008, 128009}) ||
		c.RopeTheta != 500000 || c.NumKVHeads != 8 || c.TorchDType != "bfloat16" || c.RopeScaling["rope_type"] != "llama3" {
		t.Errorf("llama3: %+v", c)
	}
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	if eos, _ := m["eos_token_id"].([]any); len(eos) != 3 || m["torch_dtype"] != "bfloat16" || m["dtype"] != nil {
		t.Errorf("marshalled llama3 config: %s", out)
	}
	c, err = Parse([]byte(`{` + base + `,"bos_token_id":null,"eos_token_id":null,"pad_token_id":null}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.BOSTokenID != -1 || c.EOSTokenID != -1 {
		t.Errorf("null ids: %d %d", c.BOSTokenID, c.EOSTokenID)
	}
	out, _ = c.Marshal()
	if !strings.Contains(string(out), `"bos_token_id": null`) || !strings.Contains(string(out), `"pad_token_id": null`) {
		t.Errorf("null ids not kept: %s", out)
	}
	if _, err := Parse([]byte(`{` + base + `,"eos_token_id":"x"}`)); err == nil || !strings.Contains(err.Error(), "eos_token_id") {
		t.Errorf("string eos: %v", err)
	}
}

func TestConfigMarshalRoundTrip(t *testing.T) {
	dir := storiesDir(t)
	c, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	c2, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Errorf("round trip\n got %+v\nwant %+v", c2, c)
	}
	// Every key of the original file survives with its value.
	var a, b map[string]any
	orig, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	json.Unmarshal(orig, &a)
	json.Unmarshal(out, &b)
	for k, v := range a {
		if !reflect.DeepEqual(b[k], v) {
			t.Errorf("key %q: %v became %v", k, v, b[k])
		}
	}
	// Also via encoding/json directly.
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var c3 Llama
	if err := json.Unmarshal(j, &c3); err != nil || !reflect.DeepEqual(*c, c3) {
		t.Errorf("json round trip: %v\n%+v\n%+v", err, c3, *c)
	}
}

func TestConfigValidate(t *testing.T) {
	base := map[string]any{
		"model_type": "llama", "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
		"num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 512,
	}
	cases := []struct {
		name string
		set  map[string]any
		want string
	}{
		{"mistral", map[string]any{"model_type": "mistral"}, `model_type "mistral" is not supported`},
		{"no model type", map[string]any{"model_type": nil}, "model_type is missing"},
		{"zero hidden", map[string]any{"hidden_size": 0}, "hidden_size must be positive"},
		{"missing vocab", map[string]any{"vocab_size": nil}, "vocab_size must be positive"},
		{"negative layers", map[string]any{"num_hidden_layers": -1}, "num_hidden_layers must be positive"},
		{"heads do not divide", map[string]any{"num_attention_heads": 6, "num_key_value_heads": 6}, "num_attention_heads 6 does not divide hidden_size 64"},
		{"kv does not divide", map[string]any{"num_key_value_heads": 3}, "num_key_value_heads 3 does not divide num_attention_heads 8"},
		{"odd head dim", map[string]any{"head_dim": 7}, "head_dim 7 must be even"},
		{"gelu", map[string]any{"hidden_act": "gelu"}, `hidden_act "gelu"`},
		{"bias", map[string]any{"attention_bias": true}, "attention_bias"},
		{"mlp bias", map[string]any{"mlp_bias": true}, "mlp_bias"},
		{"eps", map[string]any{"rms_norm_eps": -1}, "rms_norm_eps"},
		{"dtype", map[string]any{"torch_dtype": "int8"}, `torch_dtype "int8"`},
		{"eos range", map[string]any{"eos_token_id": 512}, "eos_token_id 512"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := map[string]any{}
			for k, v := range base {
				m[k] = v
			}
			for k, v := range c.set {
				if v == nil {
					delete(m, k)
				} else {
					m[k] = v
				}
			}
			b, _ := json.Marshal(m)
			_, err := Parse(b)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v: want ErrConfig and %q", err, c.want)
			}
		})
	}
	// Missing model_type is fine when architectures say LLaMA.
	b, _ := json.Marshal(map[string]any{"architectures": []string{"LlamaForCausalLM"}, "hidden_size": 64, "intermediate_size": 172,
		"num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 512})
	if _, err := Parse(b); err != nil {
		t.Error(err)
	}
	if _, err := Parse([]byte(`{"hidden_size": "big"}`)); !errors.Is(err, ErrConfig) {
		t.Errorf("malformed: %v", err)
	}
	if _, err := Parse([]byte(`not json`)); !errors.Is(err, ErrConfig) {
		t.Errorf("not json: %v", err)
	}
	p := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(p, []byte(`{"model_type":"gpt2"}`), 0o644)
	if _, err := Load(filepath.Dir(p)); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), `"gpt2"`) ||
		strings.Contains(err.Error(), "config: data:") {
		t.Errorf("Load error %v should name the file and the model type", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("missing file loaded")
	}
}

func TestCheckWeightsTiedLMHead(t *testing.T) {
	cfgJSON := `{"model_type":"llama","hidden_size":8,"intermediate_size":12,"num_hidden_layers":1,
		"num_attention_heads":2,"vocab_size":10,"tie_word_embeddings":true}`
	c, err := Parse([]byte(cfgJSON))
	if err != nil {
		t.Fatal(err)
	}
	write := func(extra ...safetensors.TensorInfo) *safetensors.Reader {
		t.Helper()
		infos := append(c.ParamShapes(), extra...)
		p := filepath.Join(t.TempDir(), "model.safetensors")
		w, err := safetensors.Create(p, infos, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range infos {
			if err := w.WriteRaw(ti.Name, make([]byte, ti.NumElements()*ti.DType.Size())); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		s, err := safetensors.OpenFile(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	if err := c.CheckWeights(write()); err != nil {
		t.Error(err)
	}
	if err := c.CheckWeights(write(safetensors.TensorInfo{Name: "lm_head.weight", DType: safetensors.F32, Shape: []int{10, 8}},
		safetensors.TensorInfo{Name: "model.layers.0.self_attn.rotary_emb.inv_freq", DType: safetensors.F32, Shape: []int{2}})); err != nil {
		t.Errorf("tied model with lm_head: %v", err)
	}
	err = c.CheckWeights(write(safetensors.TensorInfo{Name: "lm_head.weight", DType: safetensors.F32, Shape: []int{10, 9}}))
	if !errors.Is(err, ErrShapeMismatch) || !strings.Contains(err.Error(), "[10 9]") {
		t.Errorf("bad lm_head: %v", err)
	}
	err = c.CheckWeights(write(safetensors.TensorInfo{Name: "model.layers.0.mlp.bias", DType: safetensors.F32, Shape: []int{12}}))
	if !errors.Is(err, ErrShapeMismatch) || !strings.Contains(err.Error(), `unexpected tensor "model.layers.0.mlp.bias" [12]`) {
		t.Errorf("extra tensor: %v", err)
	}
	// A non-float dtype for a weight is rejected.
	infos := c.ParamShapes()
	infos[0].DType = safetensors.I32
	p := filepath.Join(t.TempDir(), "model.safetensors")
	w, _ := safetensors.Create(p, infos, nil)
	for _, ti := range infos {
		w.WriteRaw(ti.Name, make([]byte, ti.NumElements()*ti.DType.Size()))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	s, _ := safetensors.OpenFile(p)
	defer s.Close()
	if err := c.CheckWeights(s); !errors.Is(err, ErrShapeMismatch) || !strings.Contains(err.Error(), "dtype I32") {
		t.Errorf("I32 weight: %v", err)
	}
}
