package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/peft"
	"github.com/lomo-dev/lomo/hf/safetensors"
	"github.com/lomo-dev/lomo/wgsl"
)

// LoRA is a low-rank adapter on one linear layer W (O,K) of a block: the
// layer computes x·Wᵀ + Scale · dropout(x)·Aᵀ·Bᵀ, A (R,K), B (O,R), both
// f32 parameters whatever the model's dtype.
type LoRA struct {
	Layer   int
	Module  string // q_proj ... down_proj
	Base    *Param // W
	A, B    *Param
	Scale   float32
	Dropout float64
}

// LoRAParams lists the adapters' parameters (A then B of each adapter, in
// the model's order); nil without adapters.
func (m *Llama) LoRAParams() []*Param {
	var ps []*Param
	for _, a := range m.lora {
		ps = append(ps, a.A, a.B)
	}
	return ps
}

// NumLoRAParams is the number of adapter parameters.
func (m *Llama) NumLoRAParams() int64 {
	var n int64
	for _, p := range m.LoRAParams() {
		n += int64(p.Len())
	}
	return n
}

// LoRAAdapters lists the adapters in the model's order.
func (m *Llama) LoRAAdapters() []*LoRA { return m.lora }

// PeftConfig is the adapters' configuration; nil without adapters.
func (m *Llama) PeftConfig() *peft.Config { return m.peftCfg }

// Trainable lists the parameters an optimizer updates: the base weights
// that are not frozen, then the adapters'.
func (m *Llama) Trainable() []*Param {
	var ps []*Param
	for _, p := range m.params {
		if !p.Frozen {
			ps = append(ps, p)
		}
	}
	return append(ps, m.LoRAParams()...)
}

// FreezeBase freezes every base weight: backward computes and allocates
// no gradient for them (LoRA alone).
func (m *Llama) FreezeBase() {
	for _, p := range m.params {
		p.Frozen = true
	}
}

// SetDropoutSeed sets the seed of the adapters' dropout masks for the
// next forward passes (a step's; the masks are a pure function of it).
func (m *Llama) SetDropoutSeed(seed uint32) { m.dropoutSeed = seed }

// modulesOf returns the linear layers of block l by module name.
func modulesOf(l *Block) map[string]*Param {
	return map[string]*Param{"q_proj": l.Q, "k_proj": l.K, "v_proj": l.V, "o_proj": l.O, "gate_proj": l.Gate, "up_proj": l.Up, "down_proj": l.Down}
}

// AddLoRA adds adapters of cfg to every layer's target modules: A drawn
// as PEFT initialises it (Kaiming-uniform with a = √5: uniform in
// ±1/√K), seeded; B zero, so that the model's output is unchanged.
func (m *Llama) AddLoRA(cfg *peft.Config, seed uint64) error {
	if err := m.newLoRA(cfg); err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(seed, 0x10ad))
	for _, a := range m.lora {
		k := a.A.Shape[1]
		bound := 1 / math.Sqrt(float64(k))
		v := make([]float32, a.A.Len())
		for i := range v {
			v[i] = float32((2*r.Float64() - 1) * bound)
		}
		d := a.Base.Buf.Device() // an adapter lives with its layer
		if err := d.Write(a.A.Buf, 0, EncodeF32(v, gpu.F32)); err != nil {
			return err
		}
		if err := wgsl.Fill(d, a.B.Buf, 0, a.B.Len(), 0); err != nil {
			return err
		}
	}
	return nil
}

// newLoRA allocates the adapters of cfg (contents undefined).
func (m *Llama) newLoRA(cfg *peft.Config) error {
	if m.lora != nil {
		return fmt.Errorf("nn: the model already has LoRA adapters")
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	c := *cfg
	c.TargetModules = append([]string(nil), cfg.TargetModules...)
	for i, l := range m.Layers {
		mods := modulesOf(l)
		for _, mod := range peft.Modules {
			if !slices.Contains(c.TargetModules, mod) {
				continue
			}
			w := mods[mod]
			o, k := w.Shape[0], w.Shape[1]
			a := &LoRA{Layer: i, Module: mod, Base: w, Scale: float32(c.Scale()), Dropout: c.LoraDropout}
			var err error
			d := w.Buf.Device() // the device of the layer's block
			if a.A, err = NewParam(d, loraName(i, mod, "lora_A"), gpu.F32, c.R, k); err == nil {
				a.B, err = NewParam(d, loraName(i, mod, "lora_B"), gpu.F32, o, c.R)
			}
			if err == nil {
				a.A.LoRA, a.B.LoRA = true, true
			}
			if err != nil {
				if a.A != nil {
					a.A.Release()
				}
				m.releaseLoRA()
				return err
			}
			m.lora = append(m.lora, a)
		}
	}
	m.loraOf = map[*Param]*LoRA{}
	for _, a := range m.lora {
		m.loraOf[a.Base] = a
	}
	m.peftCfg = &c
	return nil
}

// loraName is an adapter parameter's name: PEFT's tensor name without
// its base_model.model. prefix (model.layers.N.self_attn.q_proj.lora_A.weight).
func loraName(layer int, module, part string) string {
	return strings.TrimPrefix(peft.TensorName(layer, module, part), "base_model.model.")
}

func (m *Llama) releaseLoRA() {
	for _, a := range m.lora {
		if a.A != nil {
			a.A.Release()
		}
		if a.B != nil {
			a.B.Release()
		}
	}
	m.lora, m.loraOf, m.peftCfg = nil, nil, nil
}

// linear is the layer w of a block applied to x, with its adapter when it
// has one.
func (m *Llama) linear(t *Tape, x *Tensor, w *Param) (*Tensor, error) {
	return m.linearAdd(t, nil, x, w)
}

// linearAdd is linear plus r, the residual stream, when r is not nil.
func (m *Llama) linearAdd(t *Tape, r, x *Tensor, w *Param) (*Tensor, error) {
	var y *Tensor
	var err error
	if r != nil {
		y, err = t.LinearAdd(r, x, w)
	} else {
		y, err = t.Linear(x, w)
	}
	a := m.loraOf[w]
	if err != nil || a == nil {
		return y, err
	}
	xd := x
	if a.Dropout > 0 && t.Grad() {
		// A mask per adapter and step (PEFT gives each adapter its own
		// dropout module).
		seed := adapterSeed(m.dropoutSeed, a.Layer, a.Module)
		if xd, err = t.Dropout(x, a.Dropout, seed); err != nil {
			y.Release()
			return nil, err
		}
		defer xd.Release()
	}
	z, err := t.Linear(xd, a.A) // (N,R)
	if err != nil {
		y.Release()
		return nil, err
	}
	defer z.Release()
	if _, err := t.AddLinear(y, z, a.B, a.Scale); err != nil {
		y.Release()
		return nil, err
	}
	return y, nil
}

// adapterSeed mixes a step's dropout seed with an adapter's place.
func adapterSeed(seed uint32, layer int, module string) uint32 {
	return seed*0x9e3779b1 ^ uint32(layer*len(peft.Modules)+slices.Index(peft.Modules, module)+1)*0x85ebca77
}

// SaveLoRA writes the adapters in PEFT layout to dir (adapter_config.json
// naming base, adapter_model.safetensors in f32), each file through a
// temporary renamed into place.
func (m *Llama) SaveLoRA(dir, base string) error {
	if m.peftCfg == nil {
		return fmt.Errorf("nn: the model has no LoRA adapters to save")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var infos []safetensors.TensorInfo
	for _, a := range m.lora {
		for _, p := range []*Param{a.A, a.B} {
			infos = append(infos, safetensors.TensorInfo{Name: "base_model.model." + p.Name, DType: safetensors.F32, Shape: p.Shape})
		}
	}
	w, err := safetensors.Create(filepath.Join(dir, peft.WeightsFile), infos, map[string]string{"format": "pt"})
	if err != nil {
		return err
	}
	for _, a := range m.lora {
		for _, p := range []*Param{a.A, a.B} {
			v, err := ReadF32(p.Buf.Device(), p.Tensor)
			if err == nil {
				err = w.WriteF32("base_model.model."+p.Name, v)
			}
			if err != nil {
				w.Abort()
				return fmt.Errorf("nn: save %s: %w", p.Name, err)
			}
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	c := *m.peftCfg
	c.BaseModelNameOrPath = base
	b, err := c.Marshal()
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, peft.ConfigFile), b)
}

// LoadLoRA adds the adapters of the PEFT folder dir to the model, checking
// everything before anything is allocated: every tensor the config implies
// is present with the shapes of this model and the config's rank, and no
// other tensor is there.
func (m *Llama) LoadLoRA(dir string) error {
	cfg, err := peft.Load(dir)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, peft.WeightsFile)
	st, err := safetensors.OpenFile(path)
	if err != nil {
		return err
	}
	defer st.Close()
	want := map[string][]int{}
	for i, l := range m.Layers {
		mods := modulesOf(l)
		for _, mod := range cfg.TargetModules {
			w := mods[mod]
			want[peft.TensorName(i, mod, "lora_A")] = []int{cfg.R, w.Shape[1]}
			want[peft.TensorName(i, mod, "lora_B")] = []int{w.Shape[0], cfg.R}
		}
	}
	var problems []string
	for _, ti := range st.Tensors() {
		shape, ok := want[ti.Name]
		if !ok {
			layer, mod, _, parsed := peft.ParseTensorName(ti.Name)
			switch {
			case !parsed:
				problems = append(problems, fmt.Sprintf("%s is not a LoRA tensor of a LLaMA model", ti.Name))
			case layer >= len(m.Layers):
				problems = append(problems, fmt.Sprintf("%s: layer %d, the model has %d", ti.Name, layer, len(m.Layers)))
			default:
				problems = append(problems, fmt.Sprintf("%s: module %s is not in target_modules %v", ti.Name, mod, cfg.TargetModules))
			}
			continue
		}
		if !slices.Equal(ti.Shape, shape) {
			why := "the base model's layer"
			_, _, part, _ := peft.ParseTensorName(ti.Name)
			if (part == "lora_A" && len(ti.Shape) == 2 && ti.Shape[0] != cfg.R) || (part == "lora_B" && len(ti.Shape) == 2 && ti.Shape[1] != cfg.R) {
				why = fmt.Sprintf("rank r=%d of %s", cfg.R, peft.ConfigFile)
			}
			problems = append(problems, fmt.Sprintf("%s is %v, want %v (from %s)", ti.Name, ti.Shape, shape, why))
		}
		if !ti.DType.IsFloat() {
			problems = append(problems, fmt.Sprintf("%s is %s, not a float tensor", ti.Name, ti.DType))
		}
		delete(want, ti.Name)
	}
	if len(want) > 0 {
		missing := make([]string, 0, len(want))
		for n := range want {
			missing = append(missing, n)
		}
		slices.Sort(missing)
		if len(missing) > 3 {
			missing = append(missing[:3], fmt.Sprintf("and %d more", len(missing)-3))
		}
		problems = append(problems, "missing "+strings.Join(missing, ", "))
	}
	if len(problems) > 0 {
		return fmt.Errorf("nn: adapter %s does not fit this model: %s", path, strings.Join(problems, "; "))
	}
	if err := m.newLoRA(cfg); err != nil {
		return err
	}
	for _, a := range m.lora {
		for _, p := range []*Param{a.A, a.B} {
			v, err := st.ReadF32("base_model.model." + p.Name)
			if err == nil {
				for i, x := range v {
					if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
						err = fmt.Errorf("%s[%d] is %v", p.Name, i, x)
						break
					}
				}
			}
			if err == nil {
				err = p.Buf.Device().Write(p.Buf, 0, EncodeF32(v, gpu.F32))
			}
			if err != nil {
				m.releaseLoRA()
				return fmt.Errorf("nn: adapter %s: %w", path, err)
			}
		}
	}
	return nil
}

// MergeLoRA folds every adapter into its layer, W += Scale·B·A (in W's
// dtype, f32 arithmetic), and removes the adapters.
func (m *Llama) MergeLoRA() error {
	if m.peftCfg == nil {
		return fmt.Errorf("nn: the model has no LoRA adapters to merge")
	}
	for _, a := range m.lora {
		w := a.Base
		o, k := w.Shape[0], w.Shape[1]
		// B (O,R) · A (R,K) -> W (O,K), added
		if err := wgsl.Matmul(w.Buf.Device(), wgsl.Mat{Buf: w.Buf, DType: w.DType}, wgsl.Mat{Buf: a.B.Buf}, wgsl.Mat{Buf: a.A.Buf}, o, k, a.A.Shape[0], 1, a.Scale, 1); err != nil {
			return fmt.Errorf("nn: merge the adapter of %s: %w", w.Name, err)
		}
	}
	for _, a := range m.lora {
		if err := a.Base.Buf.Device().Sync(); err != nil {
			return err
		}
	}
	m.releaseLoRA()
	return nil
}
