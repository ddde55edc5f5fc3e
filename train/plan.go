package train

import (
	"fmt"

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
}

// PlanStep computes the memory table by running two steps on a dry device
// (gpu.OpenDry): the same code as training, with allocations accounted and
// nothing computed. The result is exact for the real step with the same
// settings; tests hold it against measurements.
func PlanStep(req PlanRequest) (Plan, error) {
	d := gpu.OpenDry("plan", gpu.UnlimitedLimits())
	defer d.Close()
	p := Plan{Optimizer: req.Optimizer, DType: req.DType.String(), Batch: req.Batch, Seq: req.Seq, Checkpointing: req.Checkpointing, NormPass: "none"}
	if req.Batch <= 0 || req.Seq <= 1 {
		return p, fmt.Errorf("train: plan needs batch >= 1 and seq >= 2 (got %d, %d)", req.Batch, req.Seq)
	}
	m, err := nn.NewLlama(d, req.Config, req.DType)
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
		p.NormPass = "recompute: a measuring forward+backward before the updating one"
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
	before := d.Dispatches()
	for i := 0; i < 2; i++ {
		if _, err := opt.Step(m.Trainable(), StepForward(m, in, 0)); err != nil {
			return p, err
		}
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
