package train

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/monitor"
	"github.com/lomo-dev/lomo/nn"
	"github.com/lomo-dev/lomo/optim"
)

// BenchmarkStepWithViewers times a LOMO training step (a small model on the
// test adapter) that publishes its step event to a hub, with 0 and with 200
// websocket viewers reading the stream over loopback. A viewer never slows
// the publisher (bounded queues, dropped when stuck), so the step time should
// stay within noise; the viewers' own CPU is the only coupling on a machine
// with few cores.
//
//	go test -run '^$' -bench StepWithViewers ./train/
func BenchmarkStepWithViewers(b *testing.B) {
	cfg := &config.Llama{HiddenSize: 64, IntermediateSize: 128, NumLayers: 2, NumHeads: 4, NumKVHeads: 2, VocabSize: 256,
		RopeTheta: 10000, RMSNormEps: 1e-5, MaxPositionEmbeddings: 64, HeadDim: 16, ModelType: "llama", TorchDType: "float32",
		BOSTokenID: 1, EOSTokenID: 2, HiddenAct: "silu"}
	for _, viewers := range []int{0, 200} {
		b.Run(fmt.Sprintf("viewers=%d", viewers), func(b *testing.B) {
			m, err := nn.NewLlama(dev, cfg, gpu.F32)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Release()
			m.InitRandom(1, 0.02)
			opt, err := optim.New(dev, optim.Config{Name: "lomo", Schedule: optim.Schedule{Kind: "constant", LR: 1e-3}}, gpu.F32)
			if err != nil {
				b.Fatal(err)
			}
			defer opt.Release()
			ids := make([]int, 4*16)
			for i := range ids {
				ids[i] = (i * 13) % cfg.VocabSize
			}
			in, err := m.NewInputs(4, 16, ids, ids, make([]int, 4))
			if err != nil {
				b.Fatal(err)
			}
			defer in.Release()
			hub := monitor.NewHub(monitor.HubOptions{})
			defer hub.Close()
			srv := httptest.NewServer(monitor.NewServer(hub, monitor.Options{}))
			defer srv.Close()
			hub.Publish(monitor.Event{Kind: monitor.KindRun, Run: "bench", RunInfo: &monitor.RunInfo{Model: "bench", Optimizer: "lomo", Dtype: "f32"}})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var received atomic.Int64
			for v := 0; v < viewers; v++ {
				c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws/view?run=bench", nil)
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					for {
						if _, _, err := c.Read(ctx); err != nil {
							return
						}
						received.Add(1)
					}
				}()
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				res, err := opt.Step(m.Params(), StepForward(m, in, 0))
				if err == nil {
					err = dev.Sync()
				}
				if err != nil {
					b.Fatal(err)
				}
				hub.Publish(monitor.Event{Kind: monitor.KindStep, Run: "bench", Step: &monitor.Step{Step: i + 1, Loss: res.Loss, LR: res.LR}})
			}
			b.StopTimer()
			st, _ := hub.Stats("bench")
			b.ReportMetric(float64(st.Dropped), "dropped")
			b.ReportMetric(float64(received.Load())/float64(max(1, viewers)), "events/viewer")
		})
	}
}
