package nn

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/hf/peft"
	"github.com/lomo-dev/lomo/hf/safetensors"
	"github.com/lomo-dev/lomo/wgsl"
)

// Llama is a LLaMA-architecture decoder on the device, with Hugging Face
// parameter names.
type Llama struct {
	Cfg    *config.Llama
	DType  gpu.DType // parameter storage
	Embed  *Param    // (V,C)
	Layers []*Block
	Norm   *Param // (C)
	Head   *Param // (V,C); the same Param as Embed when tied
	// Checkpointing recomputes each block in backward instead of keeping its
	// activations (REFERENCE §5 gradient_checkpointing).
	Checkpointing bool

	d      *gpu.Device
	params []*Param
	byName map[string]*Param
	// LoRA adapters (lora.go): in model order, by the weight they adapt,
	// their config, and the seed of their dropout masks.
	lora        []*LoRA
	loraOf      map[*Param]*LoRA
	peftCfg     *peft.Config
	dropoutSeed uint32
	// devs are the devices of the stages (d is the first), stage the stage
	// of each block (Placement); transfers counts the boundary copies.
	devs      []*gpu.Device
	stage     []int
	transfers Transfers
}

// Block is one decoder layer.
type Block struct {
	AttnNorm, Q, K, V, O, MLPNorm, Gate, Up, Down *Param
}

// NewLlamaSplit allocates the parameters of cfg on the devices of pl
// (contents undefined: Load or InitRandom next).
func NewLlamaSplit(pl Placement, cfg *config.Llama, dt gpu.DType) (*Llama, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.RopeScaling != nil {
		return nil, fmt.Errorf("nn: rope_scaling %v is not supported", cfg.RopeScaling)
	}
	stage, err := pl.check(cfg.NumLayers)
	if err != nil {
		return nil, err
	}
	m := &Llama{Cfg: cfg, DType: dt, d: pl.Devices[0], devs: pl.Devices, stage: stage, byName: map[string]*Param{}, Layers: make([]*Block, cfg.NumLayers)}
	for i := range m.Layers {
		m.Layers[i] = &Block{}
	}
	for _, ti := range cfg.ParamShapes() {
		dt := dt
		if len(ti.Shape) == 1 {
			dt = gpu.F32 // norm weights are tiny: keep them f32
		}
		d := m.deviceOf(ti.Name)
		p, err := NewParam(d, ti.Name, dt, ti.Shape...)
		if err != nil {
			m.Release()
			return nil, err
		}
		if len(ti.Shape) == 2 && ti.Name != "model.embed_tokens.weight" {
			// The matrices the linear layers and an untied head multiply
			// by: their weight gradients are written whole by one matmul
			// (or summed over the head's chunks), in f16 for f16 models
			// on adapters that write f16. The embedding table (also a
			// tied head) is summed by scatter-add and stays f32.
			p.gradDType = ActivationDType(d, dt)
		}
		m.params = append(m.params, p)
		m.byName[ti.Name] = p
		if err := m.place(p); err != nil {
			m.Release()
			return nil, err
		}
	}
	if cfg.TieWordEmbeddings {
		m.Head = m.Embed
	}
	return m, nil
}

func (m *Llama) place(p *Param) error {
	name := p.Name
	switch name {
	case "model.embed_tokens.weight":
		m.Embed = p
		return nil
	case "model.norm.weight":
		m.Norm = p
		return nil
	case "lm_head.weight":
		m.Head = p
		return nil
	}
	var i int
	var rest string
	if _, err := fmt.Sscanf(name, "model.layers.%d.", &i); err != nil || i < 0 || i >= len(m.Layers) {
		return fmt.Errorf("nn: unexpected parameter %q", name)
	}
	rest = name[strings.Index(name[len("model.layers."):], ".")+len("model.layers.")+1:]
	b := m.Layers[i]
	slot := map[string]**Param{
		"input_layernorm.weight": &b.AttnNorm, "self_attn.q_proj.weight": &b.Q, "self_attn.k_proj.weight": &b.K,
		"self_attn.v_proj.weight": &b.V, "self_attn.o_proj.weight": &b.O, "post_attention_layernorm.weight": &b.MLPNorm,
		"mlp.gate_proj.weight": &b.Gate, "mlp.up_proj.weight": &b.Up, "mlp.down_proj.weight": &b.Down,
	}[rest]
	if slot == nil {
		return fmt.Errorf("nn: unexpected parameter %q", name)
	}
	*slot = p
	return nil
}

// Device is the device the model lives on.
func (m *Llama) Device() *gpu.Device { return m.d }

// Params lists the parameters in order of first use in the forward pass
// (a tied head appears once, as the embedding).
func (m *Llama) Params() []*Param { return m.params }

// Param returns a parameter by its Hugging Face name.
func (m *Llama) Param(name string) *Param { return m.byName[name] }

// Release frees the parameters.
func (m *Llama) Release() {
	for _, p := range m.params {
		p.Release()
	}
	m.params = nil
	m.releaseLoRA()
}

// InitRandom sets weights to N(0, std) and norm weights to 1 (seeded), from
// one random stream over all parameters in order (the pretraining recipe's
// weights depend on it). It takes 22 ns a value on one CPU here, two and a
// half minutes at LLaMA-7B: InitRandomBlocks draws the same distribution
// on all CPUs.
func (m *Llama) InitRandom(seed uint64, std float64) error {
	r := rand.New(rand.NewPCG(seed, 0x11a3a))
	for _, p := range m.params {
		v := make([]float32, p.Len())
		for i := range v {
			if len(p.Shape) == 1 {
				v[i] = 1
			} else {
				v[i] = float32(r.NormFloat64() * std)
			}
		}
		if err := p.Buf.Device().Write(p.Buf, 0, EncodeF32(v, p.DType)); err != nil {
			return err
		}
	}
	return nil
}

// initBlock is the number of values that InitRandomBlocks draws from one
// random stream (a variable for tests).
var initBlock = 1 << 20

// InitRandomBlocks sets weights to N(0, std) and norm weights to 1, as
// InitRandom does, but draws each block of 2^20 values of a parameter from
// a stream of its own (seeded by seed, the parameter's index and the
// block's), on all CPUs: for benchmarks of large models. A seed gives the
// same weights whatever the number of CPUs, and not InitRandom's.
func (m *Llama) InitRandomBlocks(seed uint64, std float64) error {
	workers := runtime.GOMAXPROCS(0)
	for pi, p := range m.params {
		n := p.Len()
		b := make([]byte, p.DType.Bytes(n))
		blocks := make(chan int)
		var wg sync.WaitGroup
		for range min(workers, (n+initBlock-1)/initBlock) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v := make([]float32, initBlock)
				for blk := range blocks {
					lo := blk * initBlock
					x := v[:min(initBlock, n-lo)]
					r := rand.New(rand.NewPCG(seed, uint64(pi)<<32|uint64(blk)))
					for i := range x {
						if len(p.Shape) == 1 {
							x[i] = 1
						} else {
							x[i] = float32(r.NormFloat64() * std)
						}
					}
					encodeF32(b[p.DType.Bytes(lo):], x, p.DType)
				}
			}()
		}
		for blk := 0; blk*initBlock < n; blk++ {
			blocks <- blk
		}
		close(blocks)
		wg.Wait()
		if err := p.Buf.Device().Write(p.Buf, 0, b); err != nil {
			return err
		}
	}
	return nil
}

// LoadLlamaSplit reads config.json and the safetensors weights of an HF
// model folder, checking names and shapes first, then streaming tensor by
// tensor to the devices of pl (f32, f16 and bf16 checkpoints convert to dt).
func LoadLlamaSplit(pl Placement, dir string, dt gpu.DType) (*Llama, error) {
	cfg, err := config.Load(dir)
	if err != nil {
		return nil, err
	}
	st, err := safetensors.Open(dir)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if err := cfg.CheckWeights(st); err != nil {
		return nil, err
	}
	m, err := NewLlamaSplit(pl, cfg, dt)
	if err != nil {
		return nil, err
	}
	for _, p := range m.params {
		v, err := st.ReadF32(p.Name)
		if err != nil {
			m.Release()
			return nil, err
		}
		for i, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				m.Release()
				return nil, fmt.Errorf("nn: %s: %s[%d] is %v", dir, p.Name, i, x)
			}
		}
		if err := p.Buf.Device().Write(p.Buf, 0, EncodeF32(v, p.DType)); err != nil {
			m.Release()
			return nil, err
		}
	}
	return m, nil
}

// torchDTypes are the torch_dtype names of the storage dtypes.
var torchDTypes = map[gpu.DType]string{gpu.F32: "float32", gpu.F16: "float16", gpu.BF16: "bfloat16"}

// TorchDType is dt's torch_dtype name (float32, float16, bfloat16).
func TorchDType(dt gpu.DType) string { return torchDTypes[dt] }

// FileDType is the dtype a model's weights are stored in, as Hugging Face
// reads torch_dtype "auto": its config's torch_dtype (f16 for float16,
// bf16 for bfloat16, f32 for float32); where the config has none, the
// dtype most of the weights of the safetensors in path have (path: the
// model folder, or its config.json beside them); f32 where neither says.
// It is what dtype "auto" loads a model in: the file's precision and
// size, with no conversion.
func FileDType(path string, c *config.Llama) gpu.DType {
	for dt, n := range torchDTypes {
		if n == c.TorchDType {
			return dt
		}
	}
	dir := path
	if st, err := os.Stat(path); err == nil && !st.IsDir() {
		dir = filepath.Dir(path)
	}
	st, err := safetensors.Open(dir)
	if err != nil {
		return gpu.F32 // a config alone (lomo plan): f32, as Hugging Face
	}
	defer st.Close()
	elems := map[safetensors.DType]int64{}
	for _, t := range st.Tensors() {
		n := int64(1)
		for _, d := range t.Shape {
			n *= int64(d)
		}
		elems[t.DType] += n
	}
	best, most := gpu.F32, elems[safetensors.F32]
	for _, x := range []struct {
		dt gpu.DType
		sd safetensors.DType
	}{{gpu.F16, safetensors.F16}, {gpu.BF16, safetensors.BF16}} {
		if elems[x.sd] > most {
			best, most = x.dt, elems[x.sd]
		}
	}
	return best
}

// DTypeNames are the storage dtypes a user may name: gpu.DTypeNames and
// "auto" (FileDType).
var DTypeNames = append([]string{"auto"}, gpu.DTypeNames...)

// ResolveDType returns the storage dtype named name (DTypeNames) for the
// model of config c at path (FileDType for "auto").
func ResolveDType(name, path string, c *config.Llama) (gpu.DType, error) {
	if name == "auto" {
		return FileDType(path, c), nil
	}
	return gpu.ParseDType(name)
}

// Save writes config.json and model.safetensors (in the parameters' storage
// dtype) to dir, each through a temporary file renamed into place, so a
// failure leaves any earlier checkpoint intact.
func (m *Llama) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfg := *m.Cfg
	cfg.TorchDType = TorchDType(m.DType)
	var infos []safetensors.TensorInfo
	for _, p := range m.params {
		st := map[gpu.DType]safetensors.DType{gpu.F32: safetensors.F32, gpu.F16: safetensors.F16, gpu.BF16: safetensors.BF16}[p.DType]
		infos = append(infos, safetensors.TensorInfo{Name: p.Name, DType: st, Shape: p.Shape})
	}
	w, err := safetensors.Create(filepath.Join(dir, "model.safetensors"), infos, map[string]string{"format": "pt"})
	if err != nil {
		return err
	}
	for _, p := range m.params {
		v, err := ReadF32(p.Buf.Device(), p.Tensor)
		if err == nil {
			err = w.WriteF32(p.Name, v)
		}
		if err != nil {
			w.Abort()
			return fmt.Errorf("nn: save %s: %w", p.Name, err)
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	b, err := cfg.Marshal()
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, "config.json"), b)
}

func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o644) // CreateTemp makes 0600
	}
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// Inputs is one batch on the device: B sequences of T tokens, left padded.
type Inputs struct {
	B, T   int
	IDs    *gpu.Buffer // u32 (B*T)
	Pos    *gpu.Buffer // u32 (B*T): position of each token, counted from its sequence's first real token
	Start  *gpu.Buffer // u32 (B): index of the first real token of each sequence
	Labels *gpu.Buffer // i32 (B*T): next-token targets, -100 ignored; nil without labels
	Count  int         // labels that count
	// Rows are the batch's distinct token ids, ascending (u32, NumRows; the
	// buffer holds min(B*T, vocab)), and Slots the index in Rows of each
	// token (u32, B*T): the embedding's row-sparse gradient (Tape.RowGrads)
	// holds those rows only. On the first device only (the embedding's).
	Rows, Slots *gpu.Buffer
	NumRows     int
	// copies are the same buffers on the model's other devices (Placement).
	copies map[*gpu.Device]*Inputs
}

// IgnoreIndex marks a label that the loss ignores.
const IgnoreIndex = -100

// ErrTokenID: a token id outside the vocabulary.
var ErrTokenID = errors.New("nn: token id outside the vocabulary")

// NewInputs uploads a batch. ids and labels are (B,T) row-major; labels may
// be nil; start[b] is the number of padding tokens on the left of row b.
func (m *Llama) NewInputs(b, t int, ids, labels []int, start []int) (*Inputs, error) {
	if len(ids) != b*t || (labels != nil && len(labels) != b*t) || len(start) != b {
		return nil, fmt.Errorf("%w: inputs of %d ids, %d labels, %d starts for B=%d T=%d", ErrShape, len(ids), len(labels), len(start), b, t)
	}
	v := m.Cfg.VocabSize
	pos := make([]int, b*t)
	for r := 0; r < b; r++ {
		if start[r] < 0 || start[r] > t {
			return nil, fmt.Errorf("%w: start %d of row %d outside 0..%d", ErrShape, start[r], r, t)
		}
		for j := 0; j < t; j++ {
			pos[r*t+j] = max(0, j-start[r])
		}
	}
	count := 0
	for i, id := range ids {
		if id < 0 || id >= v {
			return nil, fmt.Errorf("%w: id %d at position %d (vocab %d)", ErrTokenID, id, i, v)
		}
		if labels != nil {
			if l := labels[i]; l >= v || (l < 0 && l != IgnoreIndex) {
				return nil, fmt.Errorf("%w: label %d at position %d (vocab %d)", ErrTokenID, l, i, v)
			} else if l >= 0 {
				count++
			}
		}
	}
	seen := map[int]bool{}
	var rowIDs []int
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			rowIDs = append(rowIDs, id)
		}
	}
	sort.Ints(rowIDs)
	slot := make(map[int]int, len(rowIDs))
	for i, id := range rowIDs {
		slot[id] = i
	}
	slots := make([]int, len(ids))
	for i, id := range ids {
		slots[i] = slot[id]
	}
	in := &Inputs{B: b, T: t, Count: count, NumRows: len(rowIDs)}
	for i, d := range m.devs {
		c := in
		if i > 0 {
			c = &Inputs{B: b, T: t, Count: count}
			if in.copies == nil {
				in.copies = map[*gpu.Device]*Inputs{}
			}
			in.copies[d] = c
		}
		up := func(xs []int) (*gpu.Buffer, error) {
			buf, err := d.NewBuffer(gpu.TagScratch, int64(4*len(xs)))
			if err != nil {
				return nil, err
			}
			return buf, d.Write(buf, 0, u32Bytes(xs))
		}
		var err error
		if c.IDs, err = up(ids); err == nil {
			if c.Pos, err = up(pos); err == nil {
				if c.Start, err = up(start); err == nil && labels != nil {
					c.Labels, err = up(labels)
				}
				if err == nil && i == 0 {
					// Only the embedding's device (the first) looks them up.
					// Rows is sized for the most distinct ids b*t tokens can
					// have, so that memory (and the plan) does not depend
					// on the data.
					padded := append(append([]int(nil), rowIDs...), make([]int, min(len(ids), v)-len(rowIDs))...)
					if c.Rows, err = up(padded); err == nil {
						c.Slots, err = up(slots)
					}
				}
			}
		}
		if err != nil {
			in.Release()
			return nil, err
		}
	}
	return in, nil
}

// Release frees the batch's buffers.
func (in *Inputs) Release() {
	for _, b := range []*gpu.Buffer{in.IDs, in.Pos, in.Start, in.Labels, in.Rows, in.Slots} {
		if b != nil {
			b.Release()
		}
	}
	for _, c := range in.copies {
		c.Release()
	}
	in.copies = nil
}

func (m *Llama) attnShape(in *Inputs) AttentionShape {
	c := m.Cfg
	return AttentionShape{B: in.B, T: in.T, H: c.NumHeads, KV: c.NumKVHeads, D: c.HeadDim}
}

// attentionFunc is the attention of a block on tape t: the tape's own
// (training, scoring) or one over a KV cache (generation).
type attentionFunc func(t *Tape, q, k, v *Tensor) (*Tensor, error)

// block runs one decoder layer: x (N,C) -> (N,C).
func (m *Llama) block(t *Tape, l *Block, x *Tensor, in *Inputs) (*Tensor, error) {
	s := m.attnShape(in)
	return m.blockWith(t, l, x, in, func(t *Tape, q, k, v *Tensor) (*Tensor, error) { return t.Attention(q, k, v, in.Start, s) })
}

// blockWith is block with the attention given. When the model checkpoints
// and t records backward (the recompute of a checkpointed layer), the
// attention half is checkpointed again inside the layer: the MLP's backward
// then runs without the attention's activations alive, at the cost of
// computing the attention half a third time.
func (m *Llama) blockWith(t *Tape, l *Block, x *Tensor, in *Inputs, attention attentionFunc) (*Tensor, error) {
	var x2 *Tensor
	var err error
	if m.Checkpointing && t.Grad() {
		x2, err = t.Checkpoint("attention", x, func(t *Tape, x *Tensor) (*Tensor, error) {
			return m.attentionHalf(t, l, x, in, attention)
		})
	} else {
		x2, err = m.attentionHalf(t, l, x, in, attention)
	}
	if err != nil {
		return nil, err
	}
	defer x2.Release()
	return m.mlpHalf(t, l, x2)
}

// attentionHalf is x + o_proj(attention(RoPE(q), RoPE(k), v)) of norm(x).
func (m *Llama) attentionHalf(t *Tape, l *Block, x *Tensor, in *Inputs, attention attentionFunc) (*Tensor, error) {
	c := m.Cfg
	eps := float32(c.RMSNormEps)
	theta := float32(c.RopeTheta)
	s := m.attnShape(in)
	var keep []*Tensor // handles to drop on return
	defer func() {
		for _, k := range keep {
			k.Release()
		}
	}()
	h, err := t.RMSNorm(x, l.AttnNorm, eps) // (N,C)
	if err != nil {
		return nil, err
	}
	keep = append(keep, h)
	q, err := m.linear(t, h, l.Q) // (N,H*D)
	if err != nil {
		return nil, err
	}
	keep = append(keep, q)
	k, err := m.linear(t, h, l.K) // (N,KV*D)
	if err != nil {
		return nil, err
	}
	keep = append(keep, k)
	v, err := m.linear(t, h, l.V) // (N,KV*D)
	if err != nil {
		return nil, err
	}
	keep = append(keep, v)
	if err := t.RoPE2(q, k, in.Pos, s.H, s.KV, s.D, theta); err != nil {
		return nil, err
	}
	o, err := attention(t, q, k, v) // (N,H*D)
	if err != nil {
		return nil, err
	}
	keep = append(keep, o)
	return m.linearAdd(t, x, o, l.O) // (N,C): x + o_proj(o)
}

// mlpHalf is x + down(silu(gate(norm(x))) * up(norm(x))).
func (m *Llama) mlpHalf(t *Tape, l *Block, x *Tensor) (*Tensor, error) {
	eps := float32(m.Cfg.RMSNormEps)
	var keep []*Tensor // handles to drop on return
	defer func() {
		for _, k := range keep {
			k.Release()
		}
	}()
	h, err := t.RMSNorm(x, l.MLPNorm, eps)
	if err != nil {
		return nil, err
	}
	keep = append(keep, h)
	g, err := m.linear(t, h, l.Gate) // (N,F)
	if err != nil {
		return nil, err
	}
	keep = append(keep, g)
	u, err := m.linear(t, h, l.Up) // (N,F)
	if err != nil {
		return nil, err
	}
	keep = append(keep, u)
	if m.loraOf[l.Down] == nil {
		// SwiGLU's product is computed inside the down projection's
		// matmuls and never stored (Tape.SwiGLULinearAdd).
		return t.SwiGLULinearAdd(x, g, u, l.Down) // (N,C): x + down(silu(g) * u)
	}
	sw, err := t.SwiGLU(g, u) // (N,F): a LoRA adapter of down reads it
	if err != nil {
		return nil, err
	}
	keep = append(keep, sw)
	return m.linearAdd(t, x, sw, l.Down) // (N,C): x + down(sw)
}

// hidden runs the embedding and all blocks, then the final norm: (N,C),
// on the head's device (headDevice).
func (m *Llama) hidden(t *Tape, in *Inputs) (*Tensor, error) {
	x, err := m.layers(t, in, len(m.Layers))
	if err != nil {
		return nil, err
	}
	h, err := t.RMSNorm(x, m.Norm, float32(m.Cfg.RMSNormEps))
	x.Release()
	if err != nil {
		return nil, err
	}
	return m.toStage(t, h, m.headDevice())
}

// layers runs the embedding and the first k layers (k >= 1): the residual
// stream (N,C) on the device of layer k-1.
func (m *Llama) layers(t *Tape, in *Inputs, k int) (*Tensor, error) {
	if t.D != m.d {
		return nil, fmt.Errorf("nn: the tape is on %q, the model starts on %q", t.D.Info.Name, m.d.Info.Name)
	}
	n := in.B * in.T
	var x *Tensor
	var err error
	layers := m.Layers[:k]
	if m.Checkpointing && t.Grad() {
		// The first layer's checkpoint starts from the token ids: the
		// embedding is looked up again in its recompute instead of saved.
		x, err = t.Checkpoint("layer 0", nil, func(t *Tape, _ *Tensor) (*Tensor, error) {
			e, err := t.embedding(m.Embed, in, n) // (N,C)
			if err != nil {
				return nil, err
			}
			defer e.Release()
			return m.block(t, m.Layers[0], e, in)
		})
		layers = layers[1:]
	} else {
		x, err = t.embedding(m.Embed, in, n) // (N,C)
	}
	if err != nil {
		return nil, err
	}
	for i, l := range layers {
		i += k - len(layers) // layer 0 may have run above
		if x, err = m.toStage(t, x, m.devs[m.stage[i]]); err != nil {
			return nil, err
		}
		in := in.at(t.D)
		var y *Tensor
		if m.Checkpointing && t.Grad() {
			y, err = t.Checkpoint(fmt.Sprintf("layer %d", i), x, func(t *Tape, x *Tensor) (*Tensor, error) {
				return m.block(t, l, x, in)
			})
		} else {
			y, err = m.block(t, l, x, in)
		}
		x.Release()
		if err != nil {
			return nil, err
		}
		x = y
	}
	return x, nil
}

// Logits runs the model: (N,V) f32 logits.
func (m *Llama) Logits(t *Tape, in *Inputs) (*Tensor, error) {
	h, err := m.hidden(t, in)
	if err != nil {
		return nil, err
	}
	defer h.Release()
	return t.LinearF32(h, m.Head)
}

// ActivationDType is the dtype of the model's activations on its device
// (nn.ActivationDType).
func (m *Llama) ActivationDType() gpu.DType { return ActivationDType(m.d, m.Embed.DType) }

// Loss runs the model and the cross-entropy against in.Labels: the per-token
// losses (N), to read and to call Backward on. The head and the loss run in
// chunks of rows (Tape.HeadLoss): the (N,V) logits never exist whole. With
// tied embeddings and grad, the head's weight gradient is not kept from the
// head's backward to the embedding's: it is recomputed just before the
// embedding's update (Tape.DeferGrad), so that no gradient of the
// vocabulary matrix lives through the whole backward pass.
func (m *Llama) Loss(t *Tape, in *Inputs, opt LossOptions) (*Tensor, error) {
	if in.Labels == nil {
		return nil, fmt.Errorf("nn: loss without labels")
	}
	last := len(m.Layers) - 1
	// On one device only: a split model's transfers keep its tape from
	// running twice (Tape.Rerunnable), so the tail would only cost a
	// layer's recompute.
	if t.KeepForward && m.Checkpointing && t.Grad() && !m.Cfg.TieWordEmbeddings && last > 0 && len(m.devs) == 1 {
		return m.lossTail(t, in, opt)
	}
	h, err := m.hidden(t, in)
	if err != nil {
		return nil, err
	}
	defer h.Release()
	if m.Cfg.TieWordEmbeddings && t.Grad() && !m.Embed.Frozen {
		loss, err := t.HeadLoss(h, m.Head, in.at(t.D).Labels, opt, false)
		if err == nil {
			h.Retain()
			t.DeferGrad(m.Embed, func(dst *gpu.Buffer, acc bool) error { return m.tiedHeadGrad(t, h, in, opt, dst, acc) }, h.Release)
		}
		return loss, err
	}
	return t.HeadLoss(h, m.Head, in.at(t.D).Labels, opt, true)
}

// lossTail is Loss for a tape that runs its backward twice (KeepForward):
// the final norm and the head run as a checkpoint whose input, the last
// layer's output, is recomputed from the last layer's input in its
// backward (Tape.CheckpointTail), so that every op of the tape is a
// checkpoint (Tape.Rerunnable) and nothing beyond the layers' inputs is
// kept from one backward to the next.
func (m *Llama) lossTail(t *Tape, in *Inputs, opt LossOptions) (*Tensor, error) {
	last := len(m.Layers) - 1
	l := m.Layers[last]
	x, err := m.layers(t, in, last)
	if err != nil {
		return nil, err
	}
	defer x.Release()
	in = in.at(t.D)
	layer := func(t *Tape, x *Tensor) (*Tensor, error) { return m.block(t, l, x, in) }
	y, err := t.Checkpoint(fmt.Sprintf("layer %d", last), x, layer)
	if err != nil {
		return nil, err
	}
	defer y.Release()
	return t.CheckpointTail("norm and loss", x, y, layer, func(t *Tape, y *Tensor) (*Tensor, error) {
		h, err := t.RMSNorm(y, m.Norm, float32(m.Cfg.RMSNormEps))
		if err != nil {
			return nil, err
		}
		defer h.Release()
		return t.HeadLoss(h, m.Head, in.Labels, opt, true)
	})
}

// tiedHeadGrad recomputes dlogits from h, a chunk of rows at a time, and
// adds dlogitsᵀ·h to dst (V,C).
func (m *Llama) tiedHeadGrad(t *Tape, h *Tensor, in *Inputs, opt LossOptions, dst *gpu.Buffer, acc bool) error {
	n, c := h.Shape[0], h.Shape[1]
	loss, err := t.D.NewBuffer(gpu.TagScratch, 4*int64(n))
	if err != nil {
		return err
	}
	defer loss.Release()
	v := m.Head.Shape[0]
	return t.headChunks(h, m.Head, in.Labels, loss, nil, opt, headChunkRows(n, v), func(logits *gpu.Buffer, r0, r int) error {
		// dlogitsᵀ (V,r) · h rows r0.. (r,C) -> dE (V,C)
		return wgsl.Matmul(t.D, wgsl.Mat{Buf: dst, DType: m.Embed.GradDType()}, wgsl.Mat{Buf: logits, T: true}, wgsl.Mat{Buf: h.Buf, DType: h.DType, Off: r0 * c}, v, c, r, 1, 1, beta(acc || r0 > 0))
	})
}
