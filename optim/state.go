package optim

import (
	"fmt"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/nn"
)

// State is what an optimizer needs to continue after a restart: its step
// counters (the schedule's position), the loss scaler, and per-parameter
// tensors named "<parameter>/<slot>" (AdaLomo's r, c or v; AdamW's m, v and
// f32 master copy).
type State struct {
	Steps     int                  `json:"steps"`
	T         int                  `json:"t,omitempty"`      // AdaLomo's good-step counter (AdamW's under LoRA alone)
	LoRAT     int                  `json:"lora_t,omitempty"` // LoRA adapters' AdamW step counter, with the base trained
	LossScale float64              `json:"loss_scale"`
	GoodSteps int                  `json:"good_steps"`
	Tensors   map[string][]float32 `json:"-"`
}

func readState(d *gpu.Device, b *gpu.Buffer) ([]float32, error) {
	return nn.ReadBufferF32(d, b, int(b.Size()/4), gpu.F32)
}

// restore allocates an optimizer-state buffer holding v.
func restore(d *gpu.Device, v []float32) (*gpu.Buffer, error) {
	b, err := d.NewBuffer(gpu.TagOptimizer, 4*int64(len(v)))
	if err != nil {
		return nil, err
	}
	if err := d.Write(b, 0, nn.EncodeF32(v, gpu.F32)); err != nil {
		b.Release()
		return nil, err
	}
	return b, nil
}

func (o *fused) SaveState() (State, error) {
	s := State{Steps: o.step, T: o.t, LoRAT: o.loraT, LossScale: o.scaler.Scale, GoodSteps: o.scaler.good, Tensors: map[string][]float32{}}
	for p, st := range o.adapters {
		for i, slot := range []string{"m", "v"} {
			v, err := readState(o.d, st[i])
			if err != nil {
				return s, err
			}
			s.Tensors[p.Name+"/"+slot] = v
		}
	}
	for p, st := range o.state {
		for i, slot := range []string{"r", "c"} {
			if st[i] == nil {
				continue
			}
			v, err := readState(st[i].Device(), st[i])
			if err != nil {
				return s, err
			}
			s.Tensors[p.Name+"/"+slot] = v
		}
	}
	return s, nil
}

func (o *fused) LoadState(params []*nn.Param, s State) error {
	o.step, o.t, o.loraT = s.Steps, s.T, s.LoRAT
	if s.LossScale > 0 {
		o.scaler.Scale, o.scaler.good = s.LossScale, s.GoodSteps
	}
	if o.adapters != nil {
		for _, p := range params {
			m, okM := s.Tensors[p.Name+"/m"]
			v, okV := s.Tensors[p.Name+"/v"]
			if !p.LoRA || !okM || !okV {
				continue
			}
			if len(m) != p.Len() || len(v) != p.Len() {
				return fmt.Errorf("optim: state of %s has %d and %d values for %d parameters", p.Name, len(m), len(v), p.Len())
			}
			var st [2]*gpu.Buffer
			var err error
			if st[0], err = restore(o.d, m); err == nil {
				st[1], err = restore(o.d, v)
			}
			if err != nil {
				return err
			}
			o.adapters[p] = st
		}
	}
	if o.state == nil {
		return nil
	}
	for _, p := range params {
		r, ok := s.Tensors[p.Name+"/r"]
		if !ok {
			continue
		}
		var st [2]*gpu.Buffer
		var err error
		if st[0], err = restore(p.Buf.Device(), r); err != nil {
			return err
		}
		if c, ok := s.Tensors[p.Name+"/c"]; ok {
			if st[1], err = restore(p.Buf.Device(), c); err != nil {
				return err
			}
		}
		o.state[p] = st
	}
	return nil
}

func (k *keeping) SaveState() (State, error) {
	s := State{Steps: k.step, T: k.t, LossScale: k.scaler.Scale, GoodSteps: k.scaler.good, Tensors: map[string][]float32{}}
	for p, st := range k.adam {
		for i, slot := range []string{"m", "v", "master"} {
			if st[i] == nil {
				continue
			}
			v, err := readState(k.d, st[i])
			if err != nil {
				return s, err
			}
			s.Tensors[p.Name+"/"+slot] = v
		}
	}
	return s, nil
}

func (k *keeping) LoadState(params []*nn.Param, s State) error {
	k.step, k.t = s.Steps, s.T
	if s.T == 0 { // a state from before skipped steps were possible here
		k.t = s.Steps
	}
	if s.LossScale > 0 && k.scaler.Dynamic {
		k.scaler.Scale, k.scaler.good = s.LossScale, s.GoodSteps
	}
	if k.adam == nil {
		return nil
	}
	for _, p := range params {
		var st [3]*gpu.Buffer
		n := 0
		for i, slot := range []string{"m", "v", "master"} {
			v, ok := s.Tensors[p.Name+"/"+slot]
			if !ok {
				continue
			}
			if len(v) != p.Len() {
				return fmt.Errorf("optim: state %s/%s has %d values for %d parameters", p.Name, slot, len(v), p.Len())
			}
			b, err := restore(k.d, v)
			if err != nil {
				return err
			}
			st[i] = b
			n++
		}
		if n > 0 {
			k.adam[p] = st
		}
	}
	return nil
}
