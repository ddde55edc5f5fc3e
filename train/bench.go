package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/nn"
	"github.com/lomo-dev/lomo/optim"
	"github.com/lomo-dev/lomo/wgsl"
)

// BenchRequest is an end-to-end training-step benchmark on a randomly
// initialised model of a config (weights do not change the speed).
type BenchRequest struct {
	Config        *config.Llama
	Batch, Seq    int
	Steps         int // timed steps (after one warm-up step)
	Optimizer     string
	DType         gpu.DType
	Checkpointing bool
	ClipGradNorm  float64
	PeakTFLOPs    float64 // the adapter's peak, for the floor; 0: unknown
	// Profile runs one more step with each dispatch timed alone
	// (gpu.Device.StartProfile), after the timed ones.
	Profile bool
}

// BenchResult is one step benchmark.
type BenchResult struct {
	Optimizer    string           `json:"optimizer"`
	DType        string           `json:"dtype"`
	Batch        int              `json:"batch"`
	Seq          int              `json:"seq"`
	Params       int64            `json:"params"`
	StepSeconds  float64          `json:"step_seconds"`
	TokensPerSec float64          `json:"tokens_per_sec"`
	TFLOPs       float64          `json:"achieved_tflops"`     // model FLOPs (6·P·tokens, plus recompute and the norm pass) per second
	FloorSeconds float64          `json:"floor_step_seconds"`  // those FLOPs at PeakTFLOPs; 0 if unknown
	FLOPsPerStep float64          `json:"flops_per_step"`      // what the floor counts
	Dispatches   int64            `json:"dispatches_per_step"` // kernel dispatches per step
	PeakBytes    int64            `json:"peak_bytes"`          // measured
	PlannedBytes int64            `json:"planned_bytes"`       // lomo plan
	PlanErrorPct float64          `json:"plan_error_pct"`      // 100·|measured-planned|/planned
	PeakByTag    map[string]int64 `json:"peak_by_tag"`         // measured
	FinalLoss    float64          `json:"final_loss"`
	NormPass     string           `json:"norm_pass"` // as lomo plan says it
	// Profile: the kernels' times in the profiled step (Request.Profile),
	// the slowest first, and that step's wall time.
	Profile        []gpu.KernelTime `json:"profile,omitempty"`
	ProfileSeconds float64          `json:"profile_step_seconds,omitempty"`
}

// BenchStep times training steps and checks the plan against the
// measurement.
func BenchStep(d *gpu.Device, req BenchRequest) (BenchResult, error) {
	r := BenchResult{Optimizer: req.Optimizer, DType: req.DType.String(), Batch: req.Batch, Seq: req.Seq, Params: req.Config.NumParams()}
	plan, err := PlanStep(PlanRequest{Config: req.Config, Batch: req.Batch, Seq: req.Seq, Optimizer: req.Optimizer, DType: req.DType, Checkpointing: req.Checkpointing, ClipGradNorm: req.ClipGradNorm})
	if err != nil {
		return r, err
	}
	r.PlannedBytes, r.NormPass = plan.Total, plan.NormPass
	m, err := nn.NewLlama(d, req.Config, req.DType)
	if err != nil {
		return r, err
	}
	defer m.Release()
	m.Checkpointing = req.Checkpointing
	if err := m.InitRandomBlocks(1, 0.02); err != nil { // InitRandom takes minutes at 7B
		return r, err
	}
	opt, err := optim.New(d, optim.Config{Name: req.Optimizer, Schedule: optim.Schedule{Kind: "constant", LR: 1e-4}, ClipGradNorm: req.ClipGradNorm}, req.DType)
	if err != nil {
		return r, err
	}
	defer opt.Release()
	rng := rand.New(rand.NewPCG(1, 2))
	n := req.Batch * req.Seq
	ids, labels := make([]int, n), make([]int, n)
	for i := range ids {
		ids[i] = rng.IntN(req.Config.VocabSize)
	}
	for i := range labels {
		labels[i] = nn.IgnoreIndex
		if i%req.Seq < req.Seq-1 {
			labels[i] = ids[i+1]
		}
	}
	in, err := m.NewInputs(req.Batch, req.Seq, ids, labels, make([]int, req.Batch))
	if err != nil {
		return r, err
	}
	defer in.Release()
	d.TrimCache()
	d.ResetPeak()
	kept := false
	step := func() error {
		res, err := opt.Step(m.Params(), StepForward(m, in, 0))
		r.FinalLoss, kept = res.Loss, res.KeptForward
		if err == nil {
			err = d.Sync()
		}
		return err
	}
	if err := step(); err != nil { // warm-up: kernels compile, buffers cache
		return r, err
	}
	steps := max(1, req.Steps)
	d0 := d.Dispatches()
	t0 := time.Now()
	for i := 0; i < steps; i++ {
		if err := step(); err != nil {
			return r, err
		}
	}
	el := time.Since(t0).Seconds()
	r.Dispatches = (d.Dispatches() - d0) / int64(steps)
	r.StepSeconds = el / float64(steps)
	r.TokensPerSec = float64(n) / r.StepSeconds
	// 2·P·tokens per forward, 4·P·tokens per backward; checkpointing adds a
	// forward; a LOMO/AdaLomo norm pass doubles it all, but for the forward
	// when the two backwards share it (Result.KeptForward). Attention's T²
	// term is left out (small next to P for these sequence lengths).
	passes := 6.0
	if req.Checkpointing {
		passes += 2
	}
	if req.ClipGradNorm > 0 && (req.Optimizer == "lomo" || req.Optimizer == "adalomo") {
		passes *= 2
		if kept {
			passes -= 2
		}
	}
	r.FLOPsPerStep = passes * float64(r.Params) * float64(n)
	r.TFLOPs = r.FLOPsPerStep / r.StepSeconds / 1e12
	if req.PeakTFLOPs > 0 {
		r.FloorSeconds = r.FLOPsPerStep / (req.PeakTFLOPs * 1e12)
	}
	st := d.Stats()
	r.PeakBytes = st.Total.Peak
	r.PeakByTag = map[string]int64{}
	for k, v := range st.Map() {
		r.PeakByTag[k] = v.Peak
	}
	r.PlanErrorPct = 100 * math.Abs(float64(r.PeakBytes-r.PlannedBytes)) / float64(r.PlannedBytes)
	if req.Profile {
		if err := d.StartProfile(); err != nil {
			return r, err
		}
		t0 := time.Now()
		err := step()
		r.ProfileSeconds = time.Since(t0).Seconds()
		r.Profile = d.StopProfile()
		if err != nil {
			return r, err
		}
	}
	return r, nil
}

// KernelBench is one kernel timing.
type KernelBench struct {
	Kernel  string  `json:"kernel"`
	Shape   string  `json:"shape"`
	Tile    string  `json:"tile,omitempty"` // matmul: the tiling (wgsl.Tile)
	Seconds float64 `json:"seconds"`
	GFLOPs  float64 `json:"gflops"`
	// OfProbe is GFLOPs over the probe's FMA rate of the kernel's
	// arithmetic (f32): the fraction of the measured ceiling; 0 unprobed.
	OfProbe float64 `json:"fraction_of_probe,omitempty"`
}

// BenchMatmul times, for each square size n, the matmuls of a linear
// layer as a training step runs them: the forward x·Wᵀ, and the backward's
// dy·W (input gradient) and dyᵀ·x (weight gradient), with a 16-bit model's
// operands (f16 activations, weights and weight gradients where the adapter
// writes f16, else f32 activations and f16 weights), plus x·Wᵀ with f32
// weights and with a bf16 model's operands. Each with ChooseTile's tiling, or with each of tiles when given.
func BenchMatmul(d *gpu.Device, sizes []int, reps int, tiles []wgsl.Tile) ([]KernelBench, error) {
	act := nn.ActivationDType(d, gpu.F16)
	type layout struct {
		name    string
		ta, tb  bool
		a, b, c gpu.DType
	}
	layouts := []layout{
		{"matmul x·Wᵀ f32", false, true, gpu.F32, gpu.F32, gpu.F32},
		{"matmul x·Wᵀ " + act.String() + " act, f16 W", false, true, act, gpu.F16, act},
		{"matmul dy·W " + act.String() + " act, f16 W", false, false, act, gpu.F16, act},
		{"matmul dyᵀ·x " + act.String() + " act, " + act.String() + " dW", true, false, act, act, act},
		// A bf16 model's forward: bf16 weights read with shifts, the
		// result stored by atomic read-modify-writes of u32 pairs.
		{"matmul x·Wᵀ bf16", false, true, gpu.BF16, gpu.BF16, gpu.BF16},
	}
	var out []KernelBench
	ts := tiles
	for _, n := range sizes {
		if len(tiles) == 0 {
			ts = []wgsl.Tile{wgsl.ChooseTile(d, n, n, n)}
		}
		for _, l := range layouts {
			// One layout's buffers at a time: three n x n at 4096 are 200 MB.
			err := func() error {
				bufs := make([]*gpu.Buffer, 3)
				for i, dt := range []gpu.DType{l.c, l.a, l.b} {
					b, err := d.NewBuffer(gpu.TagScratch, dt.Bytes(n*n))
					if err != nil {
						return err
					}
					defer b.Release()
					bufs[i] = b
				}
				for _, tile := range ts {
					run := func() error {
						return wgsl.MatmulTiled(d, tile, wgsl.Mat{Buf: bufs[0], DType: l.c}, wgsl.Mat{Buf: bufs[1], DType: l.a, T: l.ta},
							wgsl.Mat{Buf: bufs[2], DType: l.b, T: l.tb}, n, n, n, 1, 1, 0)
					}
					if err := run(); err != nil {
						return err
					}
					if err := d.Sync(); err != nil {
						return err
					}
					t0 := time.Now()
					for i := 0; i < reps; i++ {
						if err := run(); err != nil {
							return err
						}
					}
					if err := d.Sync(); err != nil {
						return err
					}
					s := time.Since(t0).Seconds() / float64(reps)
					out = append(out, KernelBench{Kernel: l.name, Shape: fmt.Sprintf("%dx%dx%d", n, n, n), Tile: tile.String(),
						Seconds: s, GFLOPs: 2 * float64(n) * float64(n) * float64(n) / s / 1e9})
				}
				return nil
			}()
			if err != nil {
				return out, err
			}
		}
	}
	return out, nil
}
