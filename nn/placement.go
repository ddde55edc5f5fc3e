package nn

import (
	"errors"
	"fmt"
	"time"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/config"
)

// Placement splits a model's decoder blocks over devices of one process:
// Layers[s] consecutive blocks on Devices[s], in order. The embedding lives
// with the first blocks, the final norm and an untied LM head with the last;
// a tied head is the embedding matrix, so it runs on the first device (the
// final hidden state goes back there). Activations and their gradients
// cross between devices through host memory at each stage boundary
// (WebGPU has no copies between devices). The same adapter may appear
// twice: two devices on one adapter.
type Placement struct {
	Devices []*gpu.Device
	Layers  []int // blocks per device; nil on one device means all
}

// ErrPlacement: a placement that does not fit the model.
var ErrPlacement = errors.New("nn: placement")

// OnDevice is the placement of a whole model on d.
func OnDevice(d *gpu.Device) Placement { return Placement{Devices: []*gpu.Device{d}} }

// check validates the placement for a model of n blocks and returns the
// stage of each block.
func (pl Placement) check(n int) ([]int, error) {
	if len(pl.Devices) == 0 {
		return nil, fmt.Errorf("%w: no device", ErrPlacement)
	}
	if len(pl.Devices) > n {
		return nil, fmt.Errorf("%w: %d devices for a model of %d layers: each device needs at least one layer", ErrPlacement, len(pl.Devices), n)
	}
	for i, d := range pl.Devices {
		if d == nil {
			return nil, fmt.Errorf("%w: device %d is nil", ErrPlacement, i)
		}
		for j := range i {
			if pl.Devices[j] == d {
				return nil, fmt.Errorf("%w: devices %d and %d are the same device (open the adapter twice for two devices on it)", ErrPlacement, j, i)
			}
		}
		if d.Caps.F16 != pl.Devices[0].Caps.F16 {
			return nil, fmt.Errorf("%w: devices 0 and %d differ in shader-f16, so their activations would differ in dtype", ErrPlacement, i)
		}
	}
	layers := pl.Layers
	if layers == nil && len(pl.Devices) == 1 {
		layers = []int{n}
	}
	if len(layers) != len(pl.Devices) {
		return nil, fmt.Errorf("%w: %d layer counts for %d devices (give the number of blocks on each)", ErrPlacement, len(layers), len(pl.Devices))
	}
	stage := make([]int, 0, n)
	for s, k := range layers {
		if k < 1 {
			return nil, fmt.Errorf("%w: device %d gets %d layers: each device needs at least one", ErrPlacement, s, k)
		}
		for range k {
			stage = append(stage, s)
		}
	}
	if len(stage) != n {
		return nil, fmt.Errorf("%w: the split %v covers %d layers, the model has %d", ErrPlacement, layers, len(stage), n)
	}
	return stage, nil
}

// deviceOf is the device that holds the parameter of this HF name.
func (m *Llama) deviceOf(name string) *gpu.Device {
	last := m.devs[len(m.devs)-1]
	switch name {
	case "model.embed_tokens.weight":
		return m.devs[0]
	case "model.norm.weight", "lm_head.weight":
		return last
	}
	var i int
	if _, err := fmt.Sscanf(name, "model.layers.%d.", &i); err == nil && i >= 0 && i < len(m.stage) {
		return m.devs[m.stage[i]]
	}
	return m.devs[0] // an unexpected name: place reports it
}

// NewLlama allocates the parameters of cfg on d (contents undefined: Load
// or InitRandom next).
func NewLlama(d *gpu.Device, cfg *config.Llama, dt gpu.DType) (*Llama, error) {
	return NewLlamaSplit(OnDevice(d), cfg, dt)
}

// LoadLlama is LoadLlamaSplit on one device.
func LoadLlama(d *gpu.Device, dir string, dt gpu.DType) (*Llama, error) {
	return LoadLlamaSplit(OnDevice(d), dir, dt)
}

// Devices lists the devices of the model's stages, in order (one for a
// model on one device).
func (m *Llama) Devices() []*gpu.Device { return m.devs }

// Split is the number of blocks on each device.
func (m *Llama) Split() []int {
	out := make([]int, len(m.devs))
	for _, s := range m.stage {
		out[s]++
	}
	return out
}

// headDevice is where the head and the loss run: the last device, or the
// first for a head tied to the embedding.
func (m *Llama) headDevice() *gpu.Device {
	if m.Cfg.TieWordEmbeddings {
		return m.devs[0]
	}
	return m.devs[len(m.devs)-1]
}

// Transfers counts the copies between devices at stage boundaries
// (forward activations and backward gradients), with the time spent in
// them after each source device finished its work.
type Transfers struct {
	Count int64         `json:"count"`
	Bytes int64         `json:"bytes"`
	Time  time.Duration `json:"time_ns"`
}

// Transfers returns the model's boundary copies since it was created.
func (m *Llama) Transfers() Transfers { return m.transfers }

// toStage moves x to device d for the next stage, releasing x; a no op
// when the tape is on d already.
func (m *Llama) toStage(t *Tape, x *Tensor, d *gpu.Device) (*Tensor, error) {
	if t.D == d {
		return x, nil
	}
	y, err := t.ToDevice(x, d, &m.transfers)
	x.Release()
	return y, err
}

// ToDevice copies x from the tape's device to d through host memory and
// makes d the tape's device: the ops recorded next run there. Backward
// copies the gradient back and makes x's device current again, so that
// the backward of the ops recorded before (which use the tape's device)
// runs where their tensors live. tr, if set, counts the copies.
func (t *Tape) ToDevice(x *Tensor, d *gpu.Device, tr *Transfers) (*Tensor, error) {
	src := t.D
	if x.Buf.Device() != src {
		return nil, fmt.Errorf("nn: to device: the tensor is not on the tape's device")
	}
	y, err := NewTensor(d, gpu.TagActivation, x.DType, x.Shape...)
	if err != nil {
		return nil, err
	}
	if err := crossCopy(src, x.Buf, d, y.Buf, x.DType.Bytes(x.Len()), tr); err != nil {
		y.Release()
		return nil, fmt.Errorf("nn: activation to the next device: %w", err)
	}
	t.D = d
	if !t.needs(x) {
		return y, nil
	}
	t.record(&op{
		name: "to device", outputs: []*Tensor{y},
		backward: func() error {
			t.D = src
			if y.grad == nil || !x.needsGrad {
				return nil
			}
			return t.addGrad(x, func(dst *gpu.Buffer) error {
				return crossCopy(d, y.grad, src, dst, x.GradDType().Bytes(x.Len()), tr)
			})
		},
	})
	return y, nil
}

// crossCopy copies n bytes from buffer a on device da to buffer b on db.
// da finishes its recorded work first (not counted as transfer time).
func crossCopy(da *gpu.Device, a *gpu.Buffer, db *gpu.Device, b *gpu.Buffer, n int64, tr *Transfers) error {
	if err := da.Sync(); err != nil {
		return err
	}
	t0 := time.Now()
	raw, err := da.Read(a, 0, n)
	if err != nil {
		return err
	}
	if err := db.Write(b, 0, raw); err != nil {
		return err
	}
	if tr != nil {
		tr.Count++
		tr.Bytes += n
		tr.Time += time.Since(t0)
	}
	return nil
}

// at returns the batch's buffers on device d (the batch itself on the
// model's first device, or for a model on one device).
func (in *Inputs) at(d *gpu.Device) *Inputs {
	if c := in.copies[d]; c != nil {
		return c
	}
	return in
}
