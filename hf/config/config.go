package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lomo-dev/lomo/hf/safetensors"
)

// ErrShapeMismatch is wrapped by the errors of CheckWeights: a tensor that is
// missing, unexpected, of the wrong shape or of a non-float dtype.
var ErrShapeMismatch = errors.New("weights do not match the config")

// ErrConfig is wrapped by the errors of Llama.Validate and of parsing.
var ErrConfig = errors.New("invalid model config")

// Llama is the subset of a Hugging Face LLaMA config.json that the
// engine uses. Fields that are absent get the Hugging Face LlamaConfig
// defaults where that default is harmless (NumKVHeads = NumHeads,
// RopeTheta 10000, RMSNormEps 1e-6, HeadDim = HiddenSize/NumHeads,
// BOSTokenID 1, EOSTokenID 2, MaxPositionEmbeddings 2048); the sizes have no
// default and Validate rejects them when missing. A null bos/eos token id
// is -1. Keys that Llama does not know are kept and written back by
// Marshal.
type Llama struct {
	HiddenSize            int      `json:"hidden_size"`
	IntermediateSize      int      `json:"intermediate_size"`
	NumLayers             int      `json:"num_hidden_layers"`
	NumHeads              int      `json:"num_attention_heads"`
	NumKVHeads            int      `json:"num_key_value_heads"`
	VocabSize             int      `json:"vocab_size"`
	RopeTheta             float64  `json:"rope_theta"`
	RMSNormEps            float64  `json:"rms_norm_eps"`
	TieWordEmbeddings     bool     `json:"tie_word_embeddings"`
	MaxPositionEmbeddings int      `json:"max_position_embeddings"`
	HeadDim               int      `json:"head_dim"`
	TorchDType            string   `json:"torch_dtype"`
	BOSTokenID            int      `json:"bos_token_id"`
	EOSTokenID            int      `json:"eos_token_id"`
	ModelType             string   `json:"model_type"`
	Architectures         []string `json:"architectures"`

	// EOSTokenIDs holds every end-of-sequence id when eos_token_id is a
	// list (Llama 3); EOSTokenID is its first element.
	EOSTokenIDs []int `json:"-"`
	// HiddenAct is the MLP activation; only "silu" is supported.
	HiddenAct string `json:"hidden_act"`
	// AttentionBias and MLPBias add bias vectors, which this engine does
	// not support; Validate rejects them.
	AttentionBias bool `json:"attention_bias"`
	MLPBias       bool `json:"mlp_bias"`
	// RopeScaling is kept as written (e.g. Llama 3.1 "llama3" scaling) for
	// the model code to interpret; nil when absent or null.
	RopeScaling map[string]any `json:"rope_scaling"`

	extra map[string]json.RawMessage // unknown keys, kept for Marshal
}

// knownKeys are the config.json keys decoded into Llama fields.
var knownKeys = map[string]bool{
	"hidden_size": true, "intermediate_size": true, "num_hidden_layers": true,
	"num_attention_heads": true, "num_key_value_heads": true, "vocab_size": true,
	"rope_theta": true, "rms_norm_eps": true, "tie_word_embeddings": true,
	"max_position_embeddings": true, "head_dim": true, "torch_dtype": true,
	"bos_token_id": true, "eos_token_id": true, "model_type": true,
	"architectures": true, "hidden_act": true, "attention_bias": true,
	"mlp_bias": true, "rope_scaling": true,
}

// Load reads and validates a config.json, given its path or the
// model folder that holds it.
func Load(path string) (*Llama, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "config.json")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, trimPrefix(err))
	}
	return c, nil
}

// trimPrefix drops a leading "config: " so that errors are not prefixed twice.
func trimPrefix(err error) error {
	msg := err.Error()
	if !strings.HasPrefix(msg, "config: ") {
		return err
	}
	return prefixTrimmed{msg[len("config: "):], err}
}

type prefixTrimmed struct {
	msg string
	err error
}

func (p prefixTrimmed) Error() string { return p.msg }
func (p prefixTrimmed) Unwrap() error { return p.err }

// Parse decodes a config.json, applies the defaults and
// validates the result. To inspect a config without validating it, use
// json.Unmarshal into a Llama.
func Parse(b []byte) (*Llama, error) {
	c := new(Llama)
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("config: malformed config JSON: %w (%w)", err, ErrConfig)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// UnmarshalJSON decodes a config.json and applies the defaults.
func (c *Llama) UnmarshalJSON(b []byte) error {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return err
	}
	type plain Llama // no methods: avoids recursion
	var p struct {
		plain
		BOS        json.RawMessage `json:"bos_token_id"`
		EOS        json.RawMessage `json:"eos_token_id"`
		DType      string          `json:"dtype"` // newer transformers write "dtype"
		RopeTheta  json.RawMessage `json:"rope_theta"`
		RMSNormEps json.RawMessage `json:"rms_norm_eps"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*c = Llama(p.plain)
	var err error
	if c.BOSTokenID, _, err = parseTokenID(p.BOS, 1); err != nil {
		return fmt.Errorf("bos_token_id: %w", err)
	}
	if c.EOSTokenID, c.EOSTokenIDs, err = parseTokenID(p.EOS, 2); err != nil {
		return fmt.Errorf("eos_token_id: %w", err)
	}
	if c.TorchDType == "" {
		c.TorchDType = p.DType
	}
	if c.RopeTheta, err = optFloat(p.RopeTheta, 10000); err != nil {
		return fmt.Errorf("rope_theta: %w", err)
	}
	if c.RMSNormEps, err = optFloat(p.RMSNormEps, 1e-6); err != nil {
		return fmt.Errorf("rms_norm_eps: %w", err)
	}
	if _, ok := all["num_key_value_heads"]; !ok || isNull(all["num_key_value_heads"]) {
		c.NumKVHeads = c.NumHeads
	}
	if c.HeadDim == 0 && c.NumHeads > 0 {
		c.HeadDim = c.HiddenSize / c.NumHeads
	}
	if _, ok := all["max_position_embeddings"]; !ok {
		c.MaxPositionEmbeddings = 2048
	}
	c.extra = map[string]json.RawMessage{}
	for k, v := range all {
		if !knownKeys[k] {
			c.extra[k] = v
		}
	}
	return nil
}

func isNull(r json.RawMessage) bool { return string(bytes.TrimSpace(r)) == "null" }

// tokenID decodes an int, a list of ints (first is the id) or null (-1);
// absent gives def.
func parseTokenID(r json.RawMessage, def int) (int, []int, error) {
	if len(r) == 0 {
		return def, nil, nil
	}
	if isNull(r) {
		return -1, nil, nil
	}
	var id int
	if err := json.Unmarshal(r, &id); err == nil {
		return id, nil, nil
	}
	var ids []int
	if err := json.Unmarshal(r, &ids); err != nil {
		return 0, nil, fmt.Errorf("want an integer or a list of integers, got %s", r)
	}
	if len(ids) == 0 {
		return -1, nil, nil
	}
	return ids[0], ids, nil
}

func optFloat(r json.RawMessage, def float64) (float64, error) {
	if len(r) == 0 || isNull(r) {
		return def, nil
	}
	var f float64
	if err := json.Unmarshal(r, &f); err != nil {
		return 0, err
	}
	return f, nil
}

// Validate checks that the config describes a LLaMA model this engine can
// run. Each error names the offending field and wraps ErrConfig.
func (c *Llama) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("config: config: %s: %w", fmt.Sprintf(format, args...), ErrConfig)
	}
	switch c.ModelType {
	case "llama":
	case "":
		isLlama := false
		for _, a := range c.Architectures {
			isLlama = isLlama || a == "LlamaForCausalLM"
		}
		if !isLlama {
			return bad("model_type is missing and architectures %v do not include LlamaForCausalLM", c.Architectures)
		}
	default:
		return bad("model_type %q is not supported (only \"llama\")", c.ModelType)
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"hidden_size", c.HiddenSize},
		{"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", c.NumLayers},
		{"num_attention_heads", c.NumHeads},
		{"num_key_value_heads", c.NumKVHeads},
		{"vocab_size", c.VocabSize},
		{"head_dim", c.HeadDim},
		{"max_position_embeddings", c.MaxPositionEmbeddings},
	} {
		if f.v <= 0 {
			return bad("%s must be positive, got %d", f.name, f.v)
		}
	}
	if c.HiddenSize%c.NumHeads != 0 {
		return bad("num_attention_heads %d does not divide hidden_size %d", c.NumHeads, c.HiddenSize)
	}
	if c.NumHeads%c.NumKVHeads != 0 {
		return bad("num_key_value_heads %d does not divide num_attention_heads %d", c.NumKVHeads, c.NumHeads)
	}
	if c.HeadDim%2 != 0 {
		return bad("head_dim %d must be even for rotary embeddings", c.HeadDim)
	}
	if !(c.RopeTheta > 0) {
		return bad("rope_theta must be positive, got %v", c.RopeTheta)
	}
	if !(c.RMSNormEps > 0) {
		return bad("rms_norm_eps must be positive, got %v", c.RMSNormEps)
	}
	if c.HiddenAct != "" && c.HiddenAct != "silu" {
		return bad("hidden_act %q is not supported (only \"silu\")", c.HiddenAct)
	}
	if c.AttentionBias {
		return bad("attention_bias true is not supported")
	}
	if c.MLPBias {
		return bad("mlp_bias true is not supported")
	}
	switch c.TorchDType {
	case "", "float32", "float16", "bfloat16":
	default:
		return bad("torch_dtype %q is not supported (float32, float16 or bfloat16)", c.TorchDType)
	}
	if c.BOSTokenID >= c.VocabSize {
		return bad("bos_token_id %d is outside the vocabulary of %d", c.BOSTokenID, c.VocabSize)
	}
	if c.EOSTokenID >= c.VocabSize {
		return bad("eos_token_id %d is outside the vocabulary of %d", c.EOSTokenID, c.VocabSize)
	}
	return nil
}

// MarshalJSON writes the config in Hugging Face form, with the keys that
// Llama does not know kept from the parsed file.
func (c Llama) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(c.extra)+24)
	for k, v := range c.extra {
		m[k] = v
	}
	arch := c.Architectures
	if arch == nil {
		arch = []string{"LlamaForCausalLM"}
	}
	mt := c.ModelType
	if mt == "" {
		mt = "llama"
	}
	m["architectures"] = arch
	m["model_type"] = mt
	m["hidden_size"] = c.HiddenSize
	m["intermediate_size"] = c.IntermediateSize
	m["num_hidden_layers"] = c.NumLayers
	m["num_attention_heads"] = c.NumHeads
	m["num_key_value_heads"] = c.NumKVHeads
	m["vocab_size"] = c.VocabSize
	m["rope_theta"] = c.RopeTheta
	m["rms_norm_eps"] = c.RMSNormEps
	m["tie_word_embeddings"] = c.TieWordEmbeddings
	m["max_position_embeddings"] = c.MaxPositionEmbeddings
	m["head_dim"] = c.HeadDim
	if c.TorchDType != "" {
		m["torch_dtype"] = c.TorchDType
	}
	m["hidden_act"] = c.HiddenAct
	if c.HiddenAct == "" {
		m["hidden_act"] = "silu"
	}
	m["attention_bias"] = c.AttentionBias
	m["mlp_bias"] = c.MLPBias
	m["rope_scaling"] = c.RopeScaling
	m["bos_token_id"] = optID(c.BOSTokenID)
	m["eos_token_id"] = optID(c.EOSTokenID)
	if len(c.EOSTokenIDs) > 1 && c.EOSTokenIDs[0] == c.EOSTokenID {
		m["eos_token_id"] = c.EOSTokenIDs
	}
	delete(m, "dtype") // superseded by torch_dtype
	return json.Marshal(m)
}

func optID(id int) any {
	if id < 0 {
		return nil
	}
	return id
}

// Marshal returns an indented, Hugging Face-compatible config.json.
func (c *Llama) Marshal() ([]byte, error) {
	b, err := c.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// dtype returns the safetensors dtype that torch_dtype implies (F32 when
// unset).
func (c *Llama) dtype() safetensors.DType {
	switch c.TorchDType {
	case "float16":
		return safetensors.F16
	case "bfloat16":
		return safetensors.BF16
	}
	return safetensors.F32
}

// ParamShapes lists every tensor the config implies, with its Hugging Face
// name and shape, in the order the forward pass uses them. Offset is 0 and
// Size is the byte size in the torch_dtype (F32 when unset).
func (c *Llama) ParamShapes() []safetensors.TensorInfo {
	C, F, V := c.HiddenSize, c.IntermediateSize, c.VocabSize
	q, kv := c.NumHeads*c.HeadDim, c.NumKVHeads*c.HeadDim
	dt := c.dtype()
	out := make([]safetensors.TensorInfo, 0, 2+9*c.NumLayers+2)
	add := func(name string, shape ...int) {
		ti := safetensors.TensorInfo{Name: name, DType: dt, Shape: shape}
		ti.Size = ti.NumElements() * dt.Size()
		out = append(out, ti)
	}
	add("model.embed_tokens.weight", V, C)
	for i := range c.NumLayers {
		p := "model.layers." + strconv.Itoa(i) + "."
		add(p+"input_layernorm.weight", C)
		add(p+"self_attn.q_proj.weight", q, C)
		add(p+"self_attn.k_proj.weight", kv, C)
		add(p+"self_attn.v_proj.weight", kv, C)
		add(p+"self_attn.o_proj.weight", C, q)
		add(p+"post_attention_layernorm.weight", C)
		add(p+"mlp.gate_proj.weight", F, C)
		add(p+"mlp.up_proj.weight", F, C)
		add(p+"mlp.down_proj.weight", C, F)
	}
	add("model.norm.weight", C)
	if !c.TieWordEmbeddings {
		add("lm_head.weight", V, C)
	}
	return out
}

// NumParams returns the number of parameters (elements of ParamShapes).
func (c *Llama) NumParams() int64 {
	var n int64
	for _, ti := range c.ParamShapes() {
		n += ti.NumElements()
	}
	return n
}

// CheckWeights compares the tensors of s with ParamShapes. A missing
// tensor, an unexpected one, a wrong shape or a non-float dtype is reported
// (all of them, joined) naming the tensor and the expected and found shapes;
// every error wraps ErrShapeMismatch. When the embeddings are tied, an
// lm_head.weight of the embedding's shape is accepted and ignored, as are
// the rotary_emb.inv_freq buffers of older checkpoints.
func (c *Llama) CheckWeights(s *safetensors.Reader) error {
	var errs []error
	report := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %w", fmt.Sprintf(format, args...), ErrShapeMismatch))
	}
	expected := c.ParamShapes()
	want := make(map[string]bool, len(expected))
	for _, e := range expected {
		want[e.Name] = true
		got, ok := s.Info(e.Name)
		if !ok {
			report("tensor %q %v is missing", e.Name, e.Shape)
			continue
		}
		if !sameShape(got.Shape, e.Shape) {
			report("tensor %q: expected shape %v, found %v", e.Name, e.Shape, got.Shape)
		}
		if !got.DType.IsFloat() {
			report("tensor %q: dtype %s is not a float type (F32, F16 or BF16)", e.Name, got.DType)
		}
	}
	for _, got := range s.Tensors() {
		if want[got.Name] || strings.HasSuffix(got.Name, ".rotary_emb.inv_freq") {
			continue
		}
		if got.Name == "lm_head.weight" && c.TieWordEmbeddings {
			if exp := []int{c.VocabSize, c.HiddenSize}; !sameShape(got.Shape, exp) {
				report("tensor %q: expected shape %v, found %v", got.Name, exp, got.Shape)
			}
			continue
		}
		report("unexpected tensor %q %v", got.Name, got.Shape)
	}
	if len(errs) > 10 {
		n := len(errs)
		errs = append(errs[:10], fmt.Errorf("config: ... and %d more: %w", n-10, ErrShapeMismatch))
	}
	return errors.Join(errs...)
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
