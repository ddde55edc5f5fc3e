package train

import (
	"fmt"
	"testing"
	"time"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/internal/shared"
	"github.com/lomo-dev/lomo/nn"
	"github.com/lomo-dev/lomo/optim"
)

// BenchmarkSplitStep: a LOMO step (clip_grad_norm 1: two passes) of
// stories260K on one device and split 3+2 over two devices of the same
// adapter, batch 4 of 64 tokens, f32, checkpointing. The devices work in
// turn, so the split step costs the one-device step plus the boundary
// copies: transfer-ms/step is their time (after the source device
// finished), transfer-B/step their bytes; each device's peak is reported.
func BenchmarkSplitStep(b *testing.B) {
	dir := shared.Path(b, "models/stories260K")
	for _, devices := range []int{1, 2} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) {
			ds := []*gpu.Device{dev}
			split := []int{5}
			if devices == 2 {
				d2, err := gpu.Open(gpu.Options{Adapter: fmt.Sprint(dev.Info.Index)})
				if err != nil {
					b.Fatal(err)
				}
				defer d2.Close()
				ds, split = append(ds, d2), []int{3, 2}
			}
			m, err := nn.LoadLlamaSplit(nn.Placement{Devices: ds, Layers: split}, dir, gpu.F32)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Release()
			m.Checkpointing = true
			opt, err := optim.New(dev, optim.Config{Name: "lomo", Schedule: optim.Schedule{Kind: "constant", LR: 1e-4}, ClipGradNorm: 1}, gpu.F32)
			if err != nil {
				b.Fatal(err)
			}
			defer opt.Release()
			const batch, seq = 4, 64
			ids, labels := make([]int, batch*seq), make([]int, batch*seq)
			for i := range ids {
				ids[i], labels[i] = (i*13)%m.Cfg.VocabSize, (i*13+13)%m.Cfg.VocabSize
			}
			in, err := m.NewInputs(batch, seq, ids, labels, make([]int, batch))
			if err != nil {
				b.Fatal(err)
			}
			defer in.Release()
			step := func() {
				if _, err := opt.Step(m.Params(), StepForward(m, in, 0)); err != nil {
					b.Fatal(err)
				}
				for _, d := range ds {
					if err := d.Sync(); err != nil {
						b.Fatal(err)
					}
				}
			}
			step() // compile the kernels
			for _, d := range ds {
				d.TrimCache()
				d.ResetPeak()
			}
			x0 := m.Transfers()
			b.ResetTimer()
			t0 := time.Now()
			for i := 0; i < b.N; i++ {
				step()
			}
			el := time.Since(t0)
			b.StopTimer()
			x := m.Transfers()
			n := float64(b.N)
			b.ReportMetric(el.Seconds()*1e3/n, "ms/step")
			b.ReportMetric(float64(batch*seq)*n/el.Seconds(), "tokens/s")
			b.ReportMetric((x.Time-x0.Time).Seconds()*1e3/n, "transfer-ms/step")
			b.ReportMetric(float64(x.Bytes-x0.Bytes)/n, "transfer-B/step")
			for i, d := range ds {
				b.ReportMetric(float64(d.Stats().Total.Peak), fmt.Sprintf("peak-B/dev%d", i))
			}
		})
	}
}
