package optim

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/nn"
	"github.com/lomo-dev/lomo/wgsl"
)

// Forward runs the model's loss on t, with the loss gradient multiplied by
// lossScale, and returns the per-token loss tensor and the number of tokens
// that count (the mean's denominator).
type Forward func(t *nn.Tape, lossScale float32) (loss *nn.Tensor, tokens int, err error)

// Config holds the optimizer settings (REFERENCE §5 names in comments).
type Config struct {
	Name          string   // lomo, adalomo, sgd, adamw
	Schedule      Schedule // learning_rate, lr_scheduler_type, warmup
	WeightDecay   float64  // weight_decay
	ClipGradNorm  float64  // clip_grad_norm; 0 is off
	ClipGradValue float64  // clip_grad_value; 0 is off
	// AdaLomo (REFERENCE §3).
	Eps1, Eps2, ClipThreshold float64
	// AdamW.
	Beta1, Beta2, Eps float64
	// LossScale is the initial loss scale under f16 parameters; 0 is the
	// reference's: 2^16 for LOMO, 2^10 for AdaLomo.
	LossScale float64
	// ScaleWindow is the growth interval of the f16 loss scale: it doubles
	// after this many good steps in a row. 0 is ScaleWindow(Schedule.Total).
	ScaleWindow int
	// LoRA, when set, trains the LoRA adapters' matrices (nn.Param.LoRA).
	LoRA *LoRA
}

// LoRA configures the training of LoRA adapters: AdamW (Beta1, Beta2 and
// Eps of Config) with its own schedule and weight decay, the reference's
// hf_learning_rate, hf_lr_scheduler_type, hf_warmup and hf_weight_decay.
type LoRA struct {
	// Only: the base weights are frozen (lora_only), and the adapters are
	// all there is to train: their gradients are kept whole (they are
	// small), clipped by their global norm and applied after the backward
	// pass, in one pass, with dynamic loss scaling from 2^16 under f16.
	// Otherwise the base weights are trained by Config.Name (lomo or
	// adalomo) and the adapters by AdamW in the same backward pass, both
	// from the gradient callback, with the same clip coefficient and loss
	// scale.
	Only        bool
	Schedule    Schedule
	WeightDecay float64
}

// Defaults fills zero fields with the reference defaults.
func (c *Config) Defaults() {
	if c.Eps1 == 0 {
		c.Eps1 = 1e-30
	}
	if c.Eps2 == 0 {
		c.Eps2 = 1e-3
	}
	if c.ClipThreshold == 0 {
		c.ClipThreshold = 1
	}
	if c.Beta1 == 0 {
		c.Beta1 = 0.9
	}
	if c.Beta2 == 0 {
		c.Beta2 = 0.999
	}
	if c.Eps == 0 {
		c.Eps = 1e-8
	}
}

// Result reports one step.
type Result struct {
	Step      int     `json:"step"`
	Loss      float64 `json:"loss"`
	LR        float64 `json:"lr"`
	GradNorm  float64 `json:"grad_norm"` // of the unscaled gradient; 0 when not measured
	ClipCoef  float64 `json:"clip_coef"`
	LossScale float64 `json:"loss_scale"`
	Skipped   bool    `json:"skipped"`
	Tokens    int     `json:"tokens"`
	// KeptForward: the norm pass and the update ran their backwards on
	// one forward (nn.Tape.BackwardKeep) instead of a forward each.
	KeptForward bool `json:"-"`
}

// Optimizer runs training steps.
type Optimizer interface {
	// Step runs one optimizer step on the batch that fwd computes the loss of.
	Step(params []*nn.Param, fwd Forward) (Result, error)
	// Steps is how many steps ran (skipped ones included).
	Steps() int
	// Release frees the optimizer state.
	Release()
	// SaveState reads the state back for a checkpoint; LoadState restores
	// it (for the same parameters) when a run resumes.
	SaveState() (State, error)
	LoadState(params []*nn.Param, s State) error
}

// New returns the optimizer that cfg names. dt is the parameters' storage:
// under f16, LOMO and AdaLomo use dynamic loss scaling from 2^16 and 2^10
// (REFERENCE §2-3: the reference keeps AdaLomo's 2^10 fixed, and has no
// overflow check for it, so an overflow there would skip every later step
// at the same scale; here it halves, as LOMO's does). Both then need
// gradient-norm clipping, as in the reference, because the overflow check
// is part of the norm pass. bf16 has f32's range and needs no scaler, as
// in the reference: it trains like f32, with every weight and activation
// rounded to bf16.
//
// Every optimizer checks the weights it has just updated: a step that makes
// any weight NaN or infinite fails with a *NonFiniteError.
func New(d *gpu.Device, cfg Config, dt gpu.DType) (Optimizer, error) {
	cfg.Defaults()
	if err := cfg.Schedule.Validate(); err != nil {
		return nil, err
	}
	if cfg.LossScale < 0 || math.IsNaN(cfg.LossScale) || math.IsInf(cfg.LossScale, 0) || cfg.ScaleWindow < 0 {
		return nil, fmt.Errorf("optim: loss scale %v and scale window %d must not be negative or infinite", cfg.LossScale, cfg.ScaleWindow)
	}
	window := cfg.ScaleWindow
	if window == 0 {
		window = ScaleWindow(cfg.Schedule.Total)
	}
	if cfg.LoRA != nil {
		if err := cfg.LoRA.Schedule.Validate(); err != nil {
			return nil, fmt.Errorf("optim: LoRA: %w", err)
		}
		if cfg.LoRA.WeightDecay < 0 {
			return nil, fmt.Errorf("optim: LoRA: weight decay %v is negative", cfg.LoRA.WeightDecay)
		}
	}
	dynamic := func(initial float64) *LossScaler {
		s := NewDynamicScaler()
		s.Scale, s.Window = initial, window
		if cfg.LossScale > 0 {
			s.Scale = cfg.LossScale
		}
		return s
	}
	if cfg.LoRA != nil && cfg.LoRA.Only {
		if cfg.ClipGradValue > 0 {
			return nil, fmt.Errorf("optim: clip_grad_value is not supported with LoRA (AdamW)")
		}
		a := cfg
		a.Name, a.Schedule, a.WeightDecay = "adamw", cfg.LoRA.Schedule, cfg.LoRA.WeightDecay
		k, err := newKeeping(d, a, dt)
		if err != nil {
			return nil, err
		}
		if dt == gpu.F16 {
			k.scaler, k.limit = dynamic(1<<16), 65504
		}
		return k, nil
	}
	base := &fused{d: d, cfg: cfg, dtype: dt, scaler: NewStaticScaler(1), limit: float32(math.Inf(1))}
	if cfg.LoRA != nil {
		if cfg.Name != "lomo" && cfg.Name != "adalomo" {
			return nil, fmt.Errorf("optim: LoRA with the base trained needs optimizer lomo or adalomo for the base, not %q", cfg.Name)
		}
		if cfg.ClipGradValue > 0 {
			return nil, fmt.Errorf("optim: clip_grad_value is not supported with LoRA (AdamW)")
		}
		base.adapters = map[*nn.Param][2]*gpu.Buffer{}
	}
	if dt == gpu.F16 {
		// Activations and their gradients are f16 (nn.ActivationDType) and
		// overflow to Inf there, and so are the matrices' gradients; the
		// f32 ones (embedding, norms) count an element beyond the f16
		// range as an overflow too, as it would in the reference's fp16
		// backward.
		base.limit = 65504
	}
	switch cfg.Name {
	case "lomo":
		if dt == gpu.F16 {
			base.scaler = dynamic(1 << 16)
		}
		base.update = base.lomoUpdate
	case "adalomo":
		if cfg.ClipGradValue > 0 {
			return nil, fmt.Errorf("optim: clip_grad_value is not supported with adalomo (its update is clipped by RMS)")
		}
		if dt == gpu.F16 {
			base.scaler = dynamic(1 << 10)
		}
		base.state = map[*nn.Param][2]*gpu.Buffer{}
		base.update = base.adalomoUpdate
	case "sgd", "adamw":
		return newKeeping(d, cfg, dt)
	default:
		return nil, fmt.Errorf("optim: unknown optimizer %q (lomo, adalomo, sgd, adamw)", cfg.Name)
	}
	if dt == gpu.F16 && cfg.ClipGradNorm <= 0 {
		return nil, fmt.Errorf("optim: %s with f16 parameters needs clip_grad_norm > 0 (the overflow check runs in the norm pass)", cfg.Name)
	}
	return base, nil
}

// fused is LOMO or AdaLomo: the update runs in the backward callback.
// Each parameter is updated on its own device (a model split across
// devices, nn.Placement); d is the first device, where each pass starts.
type fused struct {
	d      *gpu.Device
	cfg    Config
	dtype  gpu.DType
	scaler *LossScaler
	limit  float32
	step   int
	t      int // AdaLomo's step counter (good steps)
	state  map[*nn.Param][2]*gpu.Buffer
	// update applies p's gradient g and records in st[weightFlag] (st:
	// the stats on p's device) whether it made a weight NaN or infinite.
	update func(p *nn.Param, g *gpu.Buffer, lr, invScale, coef float32, st *gpu.Buffer) error
	// adapters holds the AdamW moments (m, v) of LoRA matrices when
	// cfg.LoRA is set; loraT counts the steps applied to them.
	adapters map[*nn.Param][2]*gpu.Buffer
	loraT    int
	// stats, per device: [0] sum of squares (f32), [1] gradient overflow
	// flag (u32), [2] non-finite weight flag (u32); see statsChain.
	stats map[*gpu.Device]*gpu.Buffer
}

func (o *fused) Steps() int { return o.step }

func (o *fused) Release() {
	for _, s := range o.state {
		for _, b := range s {
			if b != nil {
				b.Release()
			}
		}
	}
	o.state = map[*nn.Param][2]*gpu.Buffer{}
	for _, s := range o.adapters {
		for _, b := range s {
			b.Release()
		}
	}
	if o.adapters != nil {
		o.adapters = map[*nn.Param][2]*gpu.Buffer{}
	}
	for _, b := range o.stats {
		b.Release()
	}
	o.stats = nil
}

// Step: with clip_grad_norm, a first backward measures the norm of the
// unscaled gradient (and overflow) and frees each gradient at once; a
// second backward applies the update with the clip coefficient (REFERENCE
// §1.3). The reference runs a forward before each; here both backwards run
// on one forward where the tape allows it (nn.Tape.Rerunnable: a
// checkpointed model on one device), which keeps only the checkpoints
// between them, as alive at the start of either backward anyway: the same
// peak, one forward less. Without clipping, one pass updates directly.
func (o *fused) Step(params []*nn.Param, fwd Forward) (Result, error) {
	o.step++
	lr := float32(o.cfg.Schedule.At(o.step))
	scale := o.scaler.Scale
	invScale := float32(1 / scale)
	res := Result{Step: o.step, LR: float64(lr), LossScale: scale, ClipCoef: 1}
	coef := float32(1)
	// The updating pass's tape, loss and tokens, when the norm pass left
	// them to it.
	var t *nn.Tape
	var lossT *nn.Tensor
	var tokens int
	if o.cfg.ClipGradNorm > 0 {
		mt, mLoss, mTokens, err := o.forward(fwd, float32(scale))
		if err != nil {
			return res, err
		}
		keep := keepForward && mt.Rerunnable()
		sumsq, overflow, loss, err := measure(o.chain(), mt, mLoss, mTokens, invScale, o.limit, keep)
		if err != nil { // measure released the tape
			mLoss.Release()
			return res, err
		}
		res.Loss, res.Tokens = loss, mTokens
		skip := o.scaler.Update(overflow)
		if keep && !skip {
			t, lossT, tokens = mt, mLoss, mTokens
			res.KeptForward = true
		} else {
			if keep {
				mt.Release()
			}
			mLoss.Release()
		}
		if skip {
			res.Skipped = true
			res.GradNorm = math.Inf(1)
			return res, nil
		}
		res.GradNorm = math.Sqrt(sumsq)
		coef = float32(math.Min(1, o.cfg.ClipGradNorm/(res.GradNorm+1e-6)))
		res.ClipCoef = float64(coef)
	}
	if o.cfg.Name == "adalomo" {
		o.t++ // AdaLomo counts the steps it applies (beta = 1 - t^-0.8)
	}
	o.loraT++ // AdamW's bias correction counts applied steps too
	chain := o.chain()
	st, err := chain.on(o.d)
	if err == nil {
		err = wgsl.Fill(o.d, st, weightFlag, 1, 0)
	}
	if err != nil {
		if t != nil {
			t.Release()
			lossT.Release()
		}
		return res, err
	}
	if t == nil {
		if t, lossT, tokens, err = o.forward(fwd, float32(scale)); err != nil {
			return res, err
		}
	}
	defer lossT.Release()
	err = t.Backward(lossT, func(p *nn.Param, g *gpu.Buffer) error {
		update := o.update
		if gr := p.GradRows(); gr != nil {
			switch {
			case o.cfg.Name == "lomo":
				update = o.lomoRowsUpdate
			case o.cfg.Name == "adalomo" && !gr.Block:
				// adalomoUpdate reads the other rows' gradients as zeros.
			default:
				return fmt.Errorf("optim: %s has a gradient by rows (block %v), which %s cannot apply", p.Name, gr.Block, o.cfg.Name)
			}
		}
		if p.LoRA {
			if o.adapters == nil {
				return fmt.Errorf("optim: %s is a LoRA matrix, and the optimizer was not configured for LoRA", p.Name)
			}
			update = o.adapterUpdate
		}
		st, err := chain.on(p.Buf.Device())
		if err != nil {
			return err
		}
		return update(p, g, lr, invScale, coef, st)
	})
	if err != nil {
		return res, err
	}
	if err := weightsFinite(chain.cur, chain.buf(), params, o.step, float64(lr)); err != nil {
		return res, err
	}
	if o.cfg.ClipGradNorm <= 0 {
		if res.Loss, err = meanLoss(lossT.Buf.Device(), lossT, tokens); err != nil {
			return res, err
		}
		res.Tokens = tokens
		o.scaler.Update(false)
	}
	return res, nil
}

// adapterUpdate is AdamW on a LoRA matrix, from the callback, at the
// adapters' own learning rate. AdamW's kernel has no weight check: a pass
// checks the weights after it.
func (o *fused) adapterUpdate(p *nn.Param, g *gpu.Buffer, _, invScale, coef float32, stats *gpu.Buffer) error {
	d := p.Buf.Device()
	st, ok := o.adapters[p]
	if !ok {
		var err error
		if st[0], err = zeroed(d, p.Len()); err == nil {
			st[1], err = zeroed(d, p.Len())
		}
		if err != nil {
			return err
		}
		o.adapters[p] = st
	}
	l := o.cfg.LoRA
	b1, b2 := o.cfg.Beta1, o.cfg.Beta2
	if err := wgsl.AdamWUpdate(d, p.Buf, nil, st[0], st[1], g, p.DType, p.GradDType(), p.Len(), wgsl.AdamWStep{
		LR: float32(l.Schedule.At(o.step)), Beta1: float32(b1), Beta2: float32(b2), Eps: float32(o.cfg.Eps), WeightDecay: float32(l.WeightDecay),
		BC1: float32(1 - math.Pow(b1, float64(o.loraT))), BC2: float32(1 - math.Pow(b2, float64(o.loraT))), GradScale: coef * invScale,
	}); err != nil {
		return err
	}
	return checkWeights(d, stats, p)
}

// rowGrads reports whether the step's tapes deliver an embedding's
// gradient by rows (nn.Tape.RowGrads): a (tokens x C) buffer instead of
// (vocab x C). LOMO without weight decay updates only those rows (rows
// without a gradient stay as they are); LOMO with weight decay and
// AdaLomo, whose updates move every row, read the other rows' gradients as
// zeros (wgsl.LomoUpdateRows, wgsl.AdaLomoStep.Rows).
func (o *fused) rowGrads() bool {
	return byRows && (o.cfg.Name == "lomo" || o.cfg.Name == "adalomo")
}

// byRows lets tables' gradients come by rows (rowGrads, headBlocks); tests
// turn it off to compare with the dense gradients.
var byRows = true

// headBlocks reports whether an untied head's gradient comes in blocks of
// vocabulary rows (nn.Tape.HeadBlocks): under LOMO, whose update of an
// element needs only its own gradient (each block's rows are updated,
// weight decay included, and every row is in one block).
func (o *fused) headBlocks() bool { return byRows && o.cfg.Name == "lomo" }

// lomoRowsUpdate is lomoUpdate from a gradient delivered by rows: an
// embedding's (the other rows' gradients zero) or a block of an LM
// head's. It, lomoUpdate and adalomoUpdate check the weights they write
// in the update's kernel (wgsl.WeightCheck).
func (o *fused) lomoRowsUpdate(p *nn.Param, g *gpu.Buffer, lr, invScale, coef float32, st *gpu.Buffer) error {
	gr := p.GradRows()
	update := wgsl.LomoUpdateRows // the other rows' gradients are zero
	if gr.Block {
		update = wgsl.LomoUpdateBlock // the other rows come in other calls
	}
	return update(p.Buf.Device(), p.Buf, g, gr.Rows, gr.Off, p.DType, p.GradDType(), p.Rows(), p.Cols(), gr.N, wgsl.LomoStep{
		LR: lr, WeightDecay: float32(o.cfg.WeightDecay), InvScale: invScale,
		ClipValue: float32(o.cfg.ClipGradValue), ClipCoef: coef, Seed: roundingSeed(o.step, p),
		Check: &wgsl.WeightCheck{Flags: st, Index: weightFlag},
	})
}

func (o *fused) lomoUpdate(p *nn.Param, g *gpu.Buffer, lr, invScale, coef float32, st *gpu.Buffer) error {
	return wgsl.LomoUpdate(p.Buf.Device(), p.Buf, g, p.DType, p.GradDType(), p.Len(), wgsl.LomoStep{
		LR: lr, WeightDecay: float32(o.cfg.WeightDecay), InvScale: invScale,
		ClipValue: float32(o.cfg.ClipGradValue), ClipCoef: coef, Seed: roundingSeed(o.step, p),
		Check: &wgsl.WeightCheck{Flags: st, Index: weightFlag},
	})
}

func (o *fused) adalomoUpdate(p *nn.Param, g *gpu.Buffer, lr, invScale, coef float32, stats *gpu.Buffer) error {
	st, ok := o.state[p]
	rows, cols := p.Rows(), p.Cols()
	if !ok {
		// Factored second moments for matrices (rows + cols floats), a full
		// one for vectors; zero at the start (beta is 0 at t=1 anyway).
		var err error
		d := p.Buf.Device()
		if rows > 1 {
			if st[0], err = zeroed(d, rows); err == nil {
				st[1], err = zeroed(d, cols)
			}
		} else {
			st[0], err = zeroed(d, cols)
		}
		if err != nil {
			return err
		}
		o.state[p] = st
	}
	beta := float32(1 - math.Pow(float64(o.t), -0.8))
	s := wgsl.AdaLomoStep{
		LR: lr, Beta: beta, Eps1: float32(o.cfg.Eps1), Eps2: float32(o.cfg.Eps2), ClipThreshold: float32(o.cfg.ClipThreshold),
		WeightDecay: float32(o.cfg.WeightDecay), InvScale: invScale, ClipCoef: coef, Seed: roundingSeed(o.step, p),
		Check: &wgsl.WeightCheck{Flags: stats, Index: weightFlag},
	}
	if gr := p.GradRows(); gr != nil {
		// An embedding's gradient by rows: the update of its whole
		// gradient, the other rows read as zeros.
		s.Rows = &wgsl.TableRows{IDs: gr.Rows, Off: gr.Off, N: gr.N}
	}
	return wgsl.AdaLomoUpdate(p.Buf.Device(), p.Buf, g, st[0], st[1], p.DType, p.GradDType(), rows, cols, s)
}

// roundingSeed seeds the stochastic rounding of bf16 weights
// (wgsl.LomoUpdate) for parameter p at optimizer step step: from p's name,
// so that a resumed run rounds as the uninterrupted one would.
func roundingSeed(step int, p *nn.Param) uint32 {
	h := fnv.New32a()
	h.Write([]byte(p.Name))
	return wgsl.RoundingSeed(step, int(h.Sum32()))
}

// zeroed allocates n f32 of optimizer state set to 0.
func zeroed(d *gpu.Device, n int) (*gpu.Buffer, error) {
	b, err := d.NewBuffer(gpu.TagOptimizer, 4*int64(n))
	if err != nil {
		return nil, err
	}
	if err := wgsl.Fill(d, b, 0, n, 0); err != nil {
		b.Release()
		return nil, err
	}
	return b, nil
}

// weightFlag is the element of an optimizer's stats buffer that
// checkWeights and the update kernels' weight checks raise.
const weightFlag = 2

// statsBuffer returns *stats, allocating it (16 bytes of scratch: a sum of
// squares and flags) on first use.
func statsBuffer(d *gpu.Device, stats **gpu.Buffer) (*gpu.Buffer, error) {
	if *stats == nil {
		b, err := d.NewBuffer(gpu.TagScratch, 16)
		if err != nil {
			return nil, err
		}
		*stats = b
	}
	return *stats, nil
}

// checkWeights records, in stats[weightFlag], whether p holds a NaN or an
// infinity after its update.
func checkWeights(d *gpu.Device, stats *gpu.Buffer, p *nn.Param) error {
	return wgsl.CheckFinite(d, stats, weightFlag, p.Buf, p.DType, p.Len(), 1, float32(math.Inf(1)))
}

// NonFiniteError reports a step whose update made weights NaN or infinite:
// in f16, any weight pushed beyond ±65504. The weights are damaged in
// place (LOMO keeps no copy to go back to).
type NonFiniteError struct {
	Step   int
	LR     float64
	Param  string  // the first parameter, in model order, holding one
	Index  int     // its first non-finite element
	Value  float32 // NaN, +Inf or -Inf
	Count  int     // non-finite weights in all parameters
	Params int     // parameters holding any
}

func (e *NonFiniteError) Error() string {
	if e.Count == 0 { // flagged on the GPU, gone on reading back: should not happen
		return fmt.Sprintf("optim: step %d (learning rate %.4g): the GPU found non-finite weights after the update, but none on reading them back", e.Step, e.LR)
	}
	return fmt.Sprintf("optim: step %d (learning rate %.4g) made %d weights non-finite in %d parameters, first %s[%d] = %v: the update overflowed; lower learning_rate or clip_grad_norm",
		e.Step, e.LR, e.Count, e.Params, e.Param, e.Index, e.Value)
}

// weightsFinite reads stats[weightFlag] after a step's updates and, when
// it is raised, finds the non-finite weights for a *NonFiniteError.
func weightsFinite(d *gpu.Device, stats *gpu.Buffer, params []*nn.Param, step int, lr float64) error {
	raw, err := d.Read(stats, 4*weightFlag, 4)
	if err != nil {
		return err
	}
	if binary.LittleEndian.Uint32(raw) == 0 {
		return nil
	}
	e := &NonFiniteError{Step: step, LR: lr, Index: -1}
	for _, p := range params {
		v, err := nn.ReadF32(p.Buf.Device(), p.Tensor)
		if err != nil {
			return err
		}
		n := 0
		for i, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				if e.Index < 0 {
					e.Param, e.Index, e.Value = p.Name, i, x
				}
				n++
			}
		}
		if n > 0 {
			e.Count += n
			e.Params++
		}
	}
	return e
}

// measure runs a backward on t from lossT that only measures: the sum of
// squares of the unscaled gradient and whether any scaled gradient
// overflowed. Each gradient is freed right after its reduction. With keep
// the tape stays as the forward left it (nn.Tape.BackwardKeep), for the
// updating backward; on an error it is released either way.
func measure(chain *statsChain, t *nn.Tape, lossT *nn.Tensor, tokens int, invScale, limit float32, keep bool) (sumsq float64, overflow bool, loss float64, err error) {
	d := chain.cur
	st, err := chain.on(d)
	if err != nil {
		t.Release()
		return
	}
	if err = wgsl.Fill(d, st, 0, 2, 0); err != nil {
		t.Release()
		return
	}
	backward := t.Backward
	if keep {
		backward = t.BackwardKeep
	}
	err = backward(lossT, func(p *nn.Param, g *gpu.Buffer) error {
		d := p.Buf.Device()
		st, err := chain.on(d)
		if err != nil {
			return err
		}
		return wgsl.GradStats(d, st, g, p.GradDType(), p.GradLen(), invScale, limit)
	})
	if err != nil {
		return
	}
	defer func() {
		if err != nil && keep {
			t.Release()
		}
	}()
	raw, err := chain.cur.Read(chain.buf(), 0, 8)
	if err != nil {
		return
	}
	sumsq = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw)))
	overflow = binary.LittleEndian.Uint32(raw[4:]) != 0 || math.IsNaN(sumsq) || math.IsInf(sumsq, 0)
	loss, err = meanLoss(lossT.Buf.Device(), lossT, tokens)
	return
}

// keepForward lets the norm pass and the update share a forward where the
// tape allows it (Step); tests turn it off to compare with the reference's
// forward per pass.
var keepForward = true

// forward runs fwd on a new tape that records the backward.
func (o *fused) forward(fwd Forward, scale float32) (*nn.Tape, *nn.Tensor, int, error) {
	t := nn.NewTape(o.d, true)
	t.RowGrads, t.HeadBlocks = o.rowGrads(), o.headBlocks()
	t.KeepForward = keepForward && o.cfg.ClipGradNorm > 0
	lossT, tokens, err := fwd(t, scale)
	if err != nil {
		t.Release()
		return nil, nil, 0, err
	}
	return t, lossT, tokens, nil
}

// statsChain carries one pass's stats (sum of squares, flags) across the
// devices of a split model in the order the backward reaches their
// parameters. When the callback moves to a parameter on another device,
// the stats are copied there through the host, so that device's sum
// continues from the previous device's partial sum: the same f32 additions
// in the same order as on one device (exact, not merely close), and the
// flags carry over (an OR). On one device it never copies.
type statsChain struct {
	bufs map[*gpu.Device]*gpu.Buffer // the optimizer's, one per device
	cur  *gpu.Device                 // the device holding the running stats
}

// chain starts a pass's stats on the first device.
func (o *fused) chain() *statsChain {
	if o.stats == nil {
		o.stats = map[*gpu.Device]*gpu.Buffer{}
	}
	return &statsChain{bufs: o.stats, cur: o.d}
}

// buf is the stats buffer of the current device.
func (c *statsChain) buf() *gpu.Buffer { return c.bufs[c.cur] }

// on returns the stats buffer of device d, holding the running stats.
func (c *statsChain) on(d *gpu.Device) (*gpu.Buffer, error) {
	dst := c.bufs[d]
	if dst == nil {
		var b *gpu.Buffer
		if _, err := statsBuffer(d, &b); err != nil {
			return nil, err
		}
		c.bufs[d], dst = b, b
	}
	if d == c.cur {
		return dst, nil
	}
	if src := c.bufs[c.cur]; src != nil {
		raw, err := c.cur.Read(src, 0, 16)
		if err != nil {
			return nil, err
		}
		if err := d.Write(dst, 0, raw); err != nil {
			return nil, err
		}
	}
	c.cur = d
	return dst, nil
}

// meanLoss reads the per-token losses and averages over the counted tokens.
func meanLoss(d *gpu.Device, loss *nn.Tensor, tokens int) (float64, error) {
	v, err := nn.ReadF32(d, loss)
	if err != nil {
		return 0, err
	}
	s := 0.0
	for _, x := range v {
		s += float64(x)
	}
	if tokens == 0 {
		return 0, nil
	}
	return s / float64(tokens), nil
}
