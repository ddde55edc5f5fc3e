package optim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/nn"
	"github.com/lomo-dev/lomo/wgsl"
)

// keeping is a baseline that keeps every gradient until the backward pass
// ends, then clips by the global norm and updates: plain SGD, or AdamW with
// two f32 moments (and an f32 master copy of f16 parameters). This is the
// memory that LOMO saves; `lomo plan` predicts it and tests measure it.
type keeping struct {
	d      *gpu.Device
	cfg    Config
	dtype  gpu.DType
	step   int
	t      int // steps applied (not skipped): AdamW's bias correction
	grads  map[*nn.Param]*gpu.Buffer
	adam   map[*nn.Param][3]*gpu.Buffer // m, v, master (f16 only)
	stats  *gpu.Buffer
	scaler *LossScaler
	// limit is the largest gradient element that is not an overflow, when
	// the scaler is dynamic (LoRA under f16: New); otherwise unchecked.
	limit float32
}

// ErrSplit: an optimizer that runs on one device only was given a model
// split across devices.
var ErrSplit = errors.New("optim: one device only")

func newKeeping(d *gpu.Device, cfg Config, dt gpu.DType) (*keeping, error) {
	k := &keeping{d: d, cfg: cfg, dtype: dt, grads: map[*nn.Param]*gpu.Buffer{}, scaler: NewStaticScaler(1)}
	if cfg.Name == "adamw" {
		k.adam = map[*nn.Param][3]*gpu.Buffer{}
	}
	return k, nil
}

func (k *keeping) Steps() int { return k.step }

func (k *keeping) Release() {
	for _, g := range k.grads {
		g.Release()
	}
	k.grads = map[*nn.Param]*gpu.Buffer{}
	for _, s := range k.adam {
		for _, b := range s {
			if b != nil {
				b.Release()
			}
		}
	}
	if k.adam != nil {
		k.adam = map[*nn.Param][3]*gpu.Buffer{}
	}
	if k.stats != nil {
		k.stats.Release()
		k.stats = nil
	}
}

func (k *keeping) Step(params []*nn.Param, fwd Forward) (Result, error) {
	for _, p := range params {
		if p.Buf.Device() != k.d {
			return Result{}, fmt.Errorf("%w: %s keeps every gradient until the end of the backward pass on one device; parameter %s is on another (a model split across devices trains with lomo or adalomo)", ErrSplit, k.cfg.Name, p.Name)
		}
	}
	k.step++
	lr := k.cfg.Schedule.At(k.step)
	scale := k.scaler.Scale
	invScale := float32(1 / scale)
	res := Result{Step: k.step, LR: lr, LossScale: scale, ClipCoef: 1}
	t := nn.NewTape(k.d, true)
	lossT, tokens, err := fwd(t, float32(scale))
	if err != nil {
		t.Release()
		return res, err
	}
	defer lossT.Release()
	var order []*nn.Param
	// Keep a copy of every gradient: memory for all of them at once.
	err = t.Backward(lossT, func(p *nn.Param, g *gpu.Buffer) error {
		kept, ok := k.grads[p]
		if !ok {
			var err error
			if kept, err = k.d.NewBuffer(gpu.TagGrad, g.Size()); err != nil {
				return err
			}
			k.grads[p] = kept
		}
		order = append(order, p)
		return k.d.Copy(g, 0, kept, 0, g.Size())
	})
	if err != nil {
		return res, err
	}
	if res.Loss, err = meanLoss(k.d, lossT, tokens); err != nil {
		return res, err
	}
	res.Tokens = tokens
	coef := float32(1)
	if _, err := statsBuffer(k.d, &k.stats); err != nil {
		return res, err
	}
	// One pass over the kept gradients, one read: their norm (when
	// clipping) and, under a dynamic loss scale, whether any scaled
	// gradient overflowed, which skips the step and lowers the scale.
	clip := k.cfg.ClipGradNorm > 0
	if clip || k.scaler.Dynamic {
		if err := wgsl.Fill(k.d, k.stats, 0, 2, 0); err != nil {
			return res, err
		}
		for _, p := range order {
			g := k.grads[p]
			if clip && k.scaler.Dynamic {
				if err := wgsl.GradStats(k.d, k.stats, g, p.GradDType(), p.Len(), invScale, k.limit); err != nil {
					return res, err
				}
				continue
			}
			if clip {
				if err := wgsl.SumSquares(k.d, k.stats, 0, g, p.GradDType(), p.Len(), invScale); err != nil {
					return res, err
				}
			}
			if k.scaler.Dynamic {
				if err := wgsl.CheckFinite(k.d, k.stats, 1, g, p.GradDType(), p.Len(), 1, k.limit); err != nil {
					return res, err
				}
			}
		}
		raw, err := k.d.Read(k.stats, 0, 8)
		if err != nil {
			return res, err
		}
		if k.scaler.Dynamic && k.scaler.Update(binary.LittleEndian.Uint32(raw[4:]) != 0) {
			res.Skipped, res.GradNorm = true, math.Inf(1)
			return res, nil
		}
		if clip {
			res.GradNorm = math.Sqrt(float64(math.Float32frombits(binary.LittleEndian.Uint32(raw))))
			coef = float32(math.Min(1, k.cfg.ClipGradNorm/(res.GradNorm+1e-6)))
			res.ClipCoef = float64(coef)
		}
	}
	k.t++
	if err := wgsl.Fill(k.d, k.stats, weightFlag, 1, 0); err != nil {
		return res, err
	}
	for _, p := range order {
		if err := k.apply(p, float32(lr), coef, invScale); err != nil {
			return res, err
		}
		if err := checkWeights(k.d, k.stats, p); err != nil {
			return res, err
		}
	}
	return res, weightsFinite(k.d, k.stats, params, k.step, lr)
}

func (k *keeping) apply(p *nn.Param, lr, coef, invScale float32) error {
	g := k.grads[p]
	if k.cfg.Name == "sgd" {
		return wgsl.LomoUpdate(k.d, p.Buf, g, p.DType, p.GradDType(), p.Len(), wgsl.LomoStep{
			LR: lr, WeightDecay: float32(k.cfg.WeightDecay), InvScale: invScale, ClipValue: float32(k.cfg.ClipGradValue), ClipCoef: coef,
			Seed: roundingSeed(k.step, p),
		})
	}
	st, ok := k.adam[p]
	if !ok {
		var err error
		if st[0], err = zeroed(k.d, p.Len()); err != nil {
			return err
		}
		if st[1], err = zeroed(k.d, p.Len()); err != nil {
			return err
		}
		if p.DType.Half() {
			// The f32 master copy starts from the 16-bit weights.
			if st[2], err = k.d.NewBuffer(gpu.TagOptimizer, 4*int64(p.Len())); err != nil {
				return err
			}
			if !k.d.Dry() { // a plan needs the bytes, not the values
				v, err := nn.ReadF32(k.d, p.Tensor)
				if err != nil {
					return err
				}
				if err := k.d.Write(st[2], 0, nn.EncodeF32(v, gpu.F32)); err != nil {
					return err
				}
			}
		}
		k.adam[p] = st
	}
	if k.cfg.ClipGradValue > 0 {
		return fmt.Errorf("optim: clip_grad_value is not supported with adamw")
	}
	b1, b2 := k.cfg.Beta1, k.cfg.Beta2
	return wgsl.AdamWUpdate(k.d, p.Buf, st[2], st[0], st[1], g, p.DType, p.GradDType(), p.Len(), wgsl.AdamWStep{
		LR: lr, Beta1: float32(b1), Beta2: float32(b2), Eps: float32(k.cfg.Eps), WeightDecay: float32(k.cfg.WeightDecay),
		BC1: float32(1 - math.Pow(b1, float64(k.t))), BC2: float32(1 - math.Pow(b2, float64(k.t))), GradScale: coef * invScale,
	})
}
