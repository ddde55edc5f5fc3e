package nn

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/internal/shared"
)

// secondDevice opens another device on the test adapter: two devices of
// one process, as a split model uses them, without two GPUs. (In the
// package's tests: testgpu, the TestMain every GPU package shares, must not
// import gpu, whose own tests use it.)
func secondDevice(t *testing.T) *gpu.Device {
	t.Helper()
	d, err := gpu.Open(gpu.Options{Adapter: strconv.Itoa(dev.Info.Index)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// stepRecord is what one forward+backward gives: the per-token losses and
// every parameter's gradient, by name, in callback order.
type stepRecord struct {
	loss  []float32
	grads map[string][]float32
	order []string
}

func runStep(t *testing.T, m *Llama, ids, labels []int, b, tt int) stepRecord {
	t.Helper()
	in, err := m.NewInputs(b, tt, ids, labels, make([]int, b))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Release()
	tape := NewTape(m.Device(), true)
	loss, err := m.Loss(tape, in, LossOptions{GradScale: 1 / float32(in.Count)})
	if err != nil {
		t.Fatal(err)
	}
	defer loss.Release()
	rec := stepRecord{grads: map[string][]float32{}}
	err = tape.Backward(loss, func(p *Param, g *gpu.Buffer) error {
		if g.Device() != p.Buf.Device() {
			return fmt.Errorf("gradient of %s on another device than the parameter", p.Name)
		}
		v, err := ReadBufferF32(g.Device(), g, p.Len(), p.GradDType())
		rec.grads[p.Name] = v
		rec.order = append(rec.order, p.Name)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if rec.loss, err = ReadF32(loss.Buf.Device(), loss); err != nil {
		t.Fatal(err)
	}
	return rec
}

func sameBits(a, b []float32) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// TestSplitMatchesOneDevice: a model split across two devices (stories260K
// 3+2 with its tied head, and an untied toy model 1+1) gives bit for bit
// the losses and every gradient of the model on one device, in the same
// callback order, with and without checkpointing, f32 and f16; each
// gradient lives on its parameter's device.
func TestSplitMatchesOneDevice(t *testing.T) {
	dev2 := secondDevice(t)
	dir := shared.Path(t, "models/stories260K")
	type model struct {
		name  string
		split []int
		load  func(pl Placement, dt gpu.DType) (*Llama, error)
	}
	models := []model{
		{"stories260K", []int{3, 2}, func(pl Placement, dt gpu.DType) (*Llama, error) { return LoadLlamaSplit(pl, dir, dt) }},
		{"toy-untied", []int{1, 1}, func(pl Placement, dt gpu.DType) (*Llama, error) {
			m, err := NewLlamaSplit(pl, toyConfig(false), dt)
			if err == nil {
				err = m.InitRandom(7, 0.3)
			}
			return m, err
		}},
	}
	for _, mod := range models {
		for _, dt := range []gpu.DType{gpu.F32, gpu.F16} {
			for _, ckpt := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%v/ckpt=%v", mod.name, dt, ckpt), func(t *testing.T) {
					one, err := mod.load(OnDevice(dev), dt)
					if err != nil {
						t.Fatal(err)
					}
					defer one.Release()
					two, err := mod.load(Placement{Devices: []*gpu.Device{dev, dev2}, Layers: mod.split}, dt)
					if err != nil {
						t.Fatal(err)
					}
					defer two.Release()
					one.Checkpointing, two.Checkpointing = ckpt, ckpt
					if got := two.Layers[len(two.Layers)-1].Q.Buf.Device(); got != dev2 {
						t.Fatalf("last block on %p, want the second device %p", got, dev2)
					}
					const b, tt = 2, 9
					r := rand.New(rand.NewPCG(3, 4))
					v := one.Cfg.VocabSize
					ids, labels := make([]int, b*tt), make([]int, b*tt)
					for i := range ids {
						ids[i], labels[i] = r.IntN(v), r.IntN(v)
					}
					labels[tt-1] = IgnoreIndex
					before := two.Transfers()
					a := runStep(t, one, ids, labels, b, tt)
					c := runStep(t, two, ids, labels, b, tt)
					if i := sameBits(a.loss, c.loss); i >= 0 {
						t.Errorf("loss differs at %d: one device %v, split %v", i, a.loss[i], c.loss[i])
					}
					if fmt.Sprint(a.order) != fmt.Sprint(c.order) {
						t.Errorf("callback order differs:\none   %v\nsplit %v", a.order, c.order)
					}
					for _, name := range a.order {
						if i := sameBits(a.grads[name], c.grads[name]); i >= 0 {
							t.Errorf("gradient of %s differs at %d: one device %v, split %v", name, i, a.grads[name][i], c.grads[name][i])
						}
					}
					// One boundary forward and back; a tied head adds the
					// hidden state's return to the first device.
					want := int64(2)
					if one.Cfg.TieWordEmbeddings {
						want = 4
					}
					if got := two.Transfers().Count - before.Count; got != want {
						t.Errorf("%d boundary copies in a step, want %d", got, want)
					}
					if one.Transfers().Count != 0 {
						t.Errorf("a model on one device made %d boundary copies", one.Transfers().Count)
					}
				})
			}
		}
	}
}

// TestSplitGenerate: greedy generation from a split model gives the tokens
// of the model on one device.
func TestSplitGenerate(t *testing.T) {
	dev2 := secondDevice(t)
	dir := shared.Path(t, "models/stories260K")
	one, err := LoadLlama(dev, dir, gpu.F32)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Release()
	two, err := LoadLlamaSplit(Placement{Devices: []*gpu.Device{dev, dev2}, Layers: []int{2, 3}}, dir, gpu.F32)
	if err != nil {
		t.Fatal(err)
	}
	defer two.Release()
	opt := SampleOptions{MaxNewTokens: 12, EOS: -1}
	a, err := one.Generate([]int{1}, opt, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := two.Generate([]int{1}, opt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("split generation %v, one device %v", b, a)
	}
}

// TestPlacementErrors: a placement that does not fit the model is refused
// with the reason, before anything is allocated.
func TestPlacementErrors(t *testing.T) {
	dev2 := secondDevice(t)
	cfg := toyConfig(false) // 2 layers
	cases := []struct {
		pl   Placement
		want string
	}{
		{Placement{}, "no device"},
		{Placement{Devices: []*gpu.Device{dev, dev2}}, "0 layer counts for 2 devices"},
		{Placement{Devices: []*gpu.Device{dev, dev2}, Layers: []int{2, 1}}, "covers 3 layers, the model has 2"},
		{Placement{Devices: []*gpu.Device{dev, dev2}, Layers: []int{2, 0}}, "at least one"},
		{Placement{Devices: []*gpu.Device{dev, dev}, Layers: []int{1, 1}}, "same device"},
		{Placement{Devices: []*gpu.Device{dev, dev2, dev2}, Layers: []int{1, 1, 0}}, "3 devices for a model of 2 layers"},
	}
	live := dev.Stats().Total.Live
	for _, c := range cases {
		m, err := NewLlamaSplit(c.pl, cfg, gpu.F32)
		if err == nil {
			m.Release()
			t.Errorf("%+v: accepted", c.pl.Layers)
			continue
		}
		if !errors.Is(err, ErrPlacement) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %q, want ErrPlacement saying %q", c.pl.Layers, err, c.want)
		}
	}
	if got := dev.Stats().Total.Live; got != live {
		t.Errorf("refused placements left %d bytes allocated", got-live)
	}
}
