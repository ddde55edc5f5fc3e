package train

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/hf/peft"
	"github.com/lomo-dev/lomo/nn"
	"github.com/lomo-dev/lomo/optim"
)

// PlanRequest describes the training step to plan.
type PlanRequest struct {
	Config        *config.Llama
	Batch, Seq    int
	Optimizer     string // lomo, adalomo, sgd, adamw
	DType         gpu.DType
	Checkpointing bool
	ClipGradNorm  float64 // > 0: LOMO/AdaLomo run the two-pass step (forward recomputed, not kept)
	// LoRA adds adapters (trained by AdamW); with LoRAOnly the base is
	// frozen and Optimizer is not used, otherwise Optimizer (lomo or
	// adalomo) trains the base.
	LoRA     *peft.Config
	LoRAOnly bool
	// Devices > 1 splits the model's blocks over that many devices
	// (nn.Placement): Split gives the blocks per device, or nil to let
	// PlanStep choose the split with the smallest largest peak.
	Devices int
	Split   []int
}

// Plan is the device memory of one training step, per tag, in bytes.
type Plan struct {
	Optimizer     string `json:"optimizer"`             // with LoRA: "lora (adamw)" or e.g. "lomo + lora (adamw)"
	LoRAParams    int64  `json:"lora_params,omitempty"` // adapter parameters (their bytes are in params_bytes)
	DType         string `json:"dtype"`
	Batch         int    `json:"batch"`
	Seq           int    `json:"seq"`
	Checkpointing bool   `json:"checkpointing"`
	Params        int64  `json:"params_bytes"`
	Grads         int64  `json:"grads_bytes"`
	OptimizerSt   int64  `json:"optimizer_bytes"`
	Activations   int64  `json:"activations_bytes"`
	Scratch       int64  `json:"scratch_bytes"` // scratch and staging
	Total         int64  `json:"total_bytes"`   // peak of the sum (not the sum of the peaks)
	Dispatches    int64  `json:"dispatches"`    // kernel dispatches per step
	NormPass      string `json:"norm_pass"`     // how clip_grad_norm gets its norm
	// A model split across devices: the blocks per device and each
	// device's table. The fields above are then those of the device with
	// the largest peak (the one that decides whether the split fits);
	// Dispatches counts all devices.
	Split     []int        `json:"split,omitempty"`
	PerDevice []DevicePlan `json:"devices,omitempty"`
}

// DevicePlan is one device's memory in a split step, per tag, in bytes.
type DevicePlan struct {
	Layers      int   `json:"layers"`
	Params      int64 `json:"params_bytes"`
	Grads       int64 `json:"grads_bytes"`
	OptimizerSt int64 `json:"optimizer_bytes"`
	Activations int64 `json:"activations_bytes"`
	Scratch     int64 `json:"scratch_bytes"`
	Total       int64 `json:"total_bytes"`
}

// devicePlan reads one device's table from its accounting.
func devicePlan(s gpu.Stats, layers int) DevicePlan {
	return DevicePlan{
		Layers: layers, Params: s.Tag(gpu.TagParam).Peak, Grads: s.Tag(gpu.TagGrad).Peak, OptimizerSt: s.Tag(gpu.TagOptimizer).Peak,
		Activations: s.Tag(gpu.TagActivation).Peak, Scratch: s.Tag(gpu.TagScratch).Peak + s.Tag(gpu.TagStaging).Peak, Total: s.Total.Peak,
	}
}

// PlanStep computes the memory table by running two steps on a dry device
// (gpu.OpenDry): the same code as training, with allocations accounted and
// nothing computed. The result is exact for the real step with the same
// settings; tests hold it against measurements.
func PlanStep(req PlanRequest) (Plan, error) {
	if req.Devices > 1 && req.Split == nil {
		return planSplit(req)
	}
	if req.Devices <= 1 && req.Split != nil && len(req.Split) != 1 {
		return Plan{}, fmt.Errorf("train: plan: a split of %d devices for one device", len(req.Split))
	}
	d := gpu.OpenDry("plan", gpu.UnlimitedLimits())
	defer d.Close()
	p := Plan{Optimizer: req.Optimizer, DType: req.DType.String(), Batch: req.Batch, Seq: req.Seq, Checkpointing: req.Checkpointing, NormPass: "none"}
	if req.Batch <= 0 || req.Seq <= 1 {
		return p, fmt.Errorf("train: plan needs batch >= 1 and seq >= 2 (got %d, %d)", req.Batch, req.Seq)
	}
	pl := nn.OnDevice(d)
	if req.Devices > 1 {
		pl = nn.Placement{Devices: []*gpu.Device{d}, Layers: req.Split}
		for i := 1; i < req.Devices; i++ {
			di := gpu.OpenDry(fmt.Sprintf("plan %d", i), gpu.UnlimitedLimits())
			defer di.Close()
			pl.Devices = append(pl.Devices, di)
		}
	}
	m, err := nn.NewLlamaSplit(pl, req.Config, req.DType)
	if err != nil {
		return p, err
	}
	defer m.Release()
	m.Checkpointing = req.Checkpointing
	var lora *optim.LoRA
	if req.LoRA != nil {
		if err := m.AddLoRA(req.LoRA, 0); err != nil {
			return p, err
		}
		p.LoRAParams = m.NumLoRAParams()
		lora = &optim.LoRA{Only: req.LoRAOnly, Schedule: optim.Schedule{Kind: "constant", LR: 1e-3}}
		p.Optimizer += " + lora (adamw)"
		if req.LoRAOnly {
			m.FreezeBase()
			p.Optimizer = "lora (adamw)"
		}
	}
	clip := req.ClipGradNorm
	if req.DType == gpu.F16 && clip <= 0 && (req.Optimizer == "lomo" || req.Optimizer == "adalomo") {
		clip = 1 // required under f16 (optim.New)
	}
	if clip > 0 && (req.Optimizer == "lomo" || req.Optimizer == "adalomo") && !req.LoRAOnly {
		p.NormPass = "recompute: a measuring forward+backward before the updating one" // or kept, as the step says
	} else if clip > 0 {
		p.NormPass = "from the kept gradients"
	}
	opt, err := optim.New(d, optim.Config{Name: req.Optimizer, Schedule: optim.Schedule{Kind: "constant", LR: 1e-3}, ClipGradNorm: clip, LoRA: lora}, req.DType)
	if err != nil {
		return p, err
	}
	defer opt.Release()
	n := req.Batch * req.Seq
	ids := make([]int, n)
	labels := make([]int, n)
	for i := range labels {
		if i%req.Seq == req.Seq-1 {
			labels[i] = nn.IgnoreIndex
		}
	}
	in, err := m.NewInputs(req.Batch, req.Seq, ids, labels, make([]int, req.Batch))
	if err != nil {
		return p, err
	}
	defer in.Release()
	// Two steps: optimizer state (AdamW moments, AdaLomo factors) is created
	// in the first and is live through the second's activation peak.
	dispatches := func() (n int64) {
		for _, d := range pl.Devices {
			n += d.Dispatches()
		}
		return n
	}
	before := dispatches()
	for i := 0; i < 2; i++ {
		res, err := opt.Step(m.Trainable(), StepForward(m, in, 0))
		if err != nil {
			return p, err
		}
		if res.KeptForward {
			p.NormPass = "kept: a measuring backward, then the updating one, on one forward"
		}
	}
	if req.Devices > 1 {
		p.Split = m.Split()
		var top DevicePlan
		for i, d := range pl.Devices {
			dp := devicePlan(d.Stats(), p.Split[i])
			p.PerDevice = append(p.PerDevice, dp)
			if dp.Total > top.Total {
				top = dp
			}
		}
		p.Params, p.Grads, p.OptimizerSt, p.Activations, p.Scratch, p.Total = top.Params, top.Grads, top.OptimizerSt, top.Activations, top.Scratch, top.Total
		p.Dispatches = (dispatches() - before) / 2
		return p, nil
	}
	s := d.Stats()
	p.Params = s.Tag(gpu.TagParam).Peak
	p.Grads = s.Tag(gpu.TagGrad).Peak
	p.OptimizerSt = s.Tag(gpu.TagOptimizer).Peak
	p.Activations = s.Tag(gpu.TagActivation).Peak
	p.Scratch = s.Tag(gpu.TagScratch).Peak + s.Tag(gpu.TagStaging).Peak
	p.Total = s.Total.Peak
	p.Dispatches = (d.Dispatches() - before) / 2
	return p, nil
}

// StepForward is the loss of model m on batch in, as an optim.Forward.
func StepForward(m *nn.Llama, in *nn.Inputs, clipLoss float32) optim.Forward {
	return func(t *nn.Tape, scale float32) (*nn.Tensor, int, error) {
		gs := float32(0)
		if in.Count > 0 {
			gs = scale / float32(in.Count)
		}
		l, err := m.Loss(t, in, nn.LossOptions{GradScale: gs, ClipLoss: clipLoss})
		return l, in.Count, err
	}
}

// planSplit chooses the split of req.Config's blocks over req.Devices
// devices whose largest per-device peak is smallest, and returns its plan.
// It starts from the split that balances parameter bytes (the embedding on
// the first device, the norm and an untied head on the last), then moves
// one block at a time from the device with the largest planned peak to
// another while that lowers the largest peak. Every candidate is planned
// exactly (a dry step), so the result is a split no single move improves.
func planSplit(req PlanRequest) (Plan, error) {
	cfg := req.Config
	n := req.Devices
	if cfg == nil {
		return Plan{}, fmt.Errorf("train: plan: no model config")
	}
	if n > cfg.NumLayers {
		return Plan{}, fmt.Errorf("%w: %d devices for a model of %d layers: each device needs at least one layer", nn.ErrPlacement, n, cfg.NumLayers)
	}
	split := balancedSplit(cfg, n)
	plan := func(split []int) (Plan, error) {
		r := req
		r.Split = split
		return PlanStep(r)
	}
	best, err := plan(split)
	if err != nil {
		return best, err
	}
	for tries := 0; tries < 4*n*cfg.NumLayers; tries++ {
		from := 0
		for i, d := range best.PerDevice {
			if d.Total > best.PerDevice[from].Total {
				from = i
			}
		}
		if best.Split[from] == 1 {
			break
		}
		// Candidates to take the block: devices by increasing peak.
		order := make([]int, 0, n)
		for i := range best.PerDevice {
			if i != from {
				order = append(order, i)
			}
		}
		slices.SortFunc(order, func(a, b int) int { return cmp.Compare(best.PerDevice[a].Total, best.PerDevice[b].Total) })
		improved := false
		for _, to := range order {
			s := slices.Clone(best.Split)
			s[from]--
			s[to]++
			p, err := plan(s)
			if err != nil {
				return best, err
			}
			if p.Total < best.Total {
				best, improved = p, true
				break
			}
		}
		if !improved {
			break
		}
	}
	return best, nil
}

// balancedSplit gives each of n devices at least one block, balancing the
// parameter bytes: the embedding counts on the first device, the final
// norm and an untied head on the last.
func balancedSplit(cfg *config.Llama, n int) []int {
	var first, last, perLayer int64
	for _, ti := range cfg.ParamShapes() {
		elems := int64(1)
		for _, s := range ti.Shape {
			elems *= int64(s)
		}
		switch {
		case ti.Name == "model.embed_tokens.weight":
			first += elems
		case ti.Name == "model.norm.weight" || ti.Name == "lm_head.weight":
			last += elems
		case strings.HasPrefix(ti.Name, "model.layers.0."):
			perLayer += elems
		}
	}
	split := make([]int, n)
	for i := range split {
		split[i] = 1
	}
	load := func(i int) int64 {
		l := int64(split[i]) * perLayer
		if i == 0 {
			l += first
		}
		if i == n-1 {
			l += last
		}
		return l
	}
	for k := n; k < cfg.NumLayers; k++ {
		min := 0
		for i := 1; i < n; i++ {
			if load(i)+perLayer < load(min)+perLayer {
				min = i
			}
		}
		split[min]++
	}
	return split
}
