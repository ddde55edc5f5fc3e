//go:build !js

package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPublish measures Hub.Publish with no viewer and with 200 real
// websocket viewers (loopback) that drain their streams. publish-ns/op is the
// time spent inside Publish (the publisher's cost: encoding the event once,
// recording it, queueing it for every viewer); ns/op also counts the CPU the
// 200 viewer connections take from the publisher while they drain
// concurrently (on few cores, most of it). Every 1024 events the timer stops
// until all viewers caught up, so their queues never overflow; "dropped"
// must stay 0.
//
//	go test -run '^$' -bench BenchmarkPublish ./monitor/
func BenchmarkPublish(b *testing.B) {
	for _, viewers := range []int{0, 200} {
		b.Run(fmt.Sprintf("viewers=%d", viewers), func(b *testing.B) {
			hub := NewHub(HubOptions{QueueSize: 2048})
			srv := newTestServer(b, hub, Options{})
			mustPublish(b, hub, runEvent("b"))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			seen := make([]atomic.Uint64, viewers)
			for v := 0; v < viewers; v++ {
				c := mustDialView(b, srv, "b", "")
				go func() {
					for {
						_, data, err := c.Read(ctx)
						if err != nil {
							return
						}
						var ev struct{ Seq uint64 }
						json.Unmarshal(data, &ev)
						seen[v].Store(ev.Seq)
					}
				}()
			}
			for st, _ := hub.Stats("b"); st.Viewers != viewers; st, _ = hub.Stats("b") {
				time.Sleep(time.Millisecond)
			}
			catchUp := func(seq uint64) {
				for v := range seen {
					for seen[v].Load() < seq {
						if st, _ := hub.Stats("b"); st.Dropped > 0 {
							b.Fatalf("%d viewers dropped", st.Dropped)
						}
						time.Sleep(50 * time.Microsecond)
					}
				}
			}
			ev := stepEvent("b", 0)
			b.ReportAllocs()
			var inPublish time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ev.Step.Step = i
				t0 := time.Now()
				if err := hub.Publish(ev); err != nil {
					b.Fatal(err)
				}
				inPublish += time.Since(t0)
				if i%1024 == 1023 && viewers > 0 {
					b.StopTimer()
					catchUp(uint64(i + 2))
					b.StartTimer()
				}
			}
			b.StopTimer()
			st, _ := hub.Stats("b")
			b.ReportMetric(float64(st.Dropped), "dropped")
			b.ReportMetric(float64(inPublish.Nanoseconds())/float64(b.N), "publish-ns/op")
		})
	}
}

// BenchmarkPublishSubscribers isolates the publisher's own cost: 200 hub
// subscribers without sockets (their cursors are advanced while the timer is
// stopped), so no viewer connection competes for the CPU. Compare with
// viewers=0 of BenchmarkPublish: Publish does not touch the viewers; the
// run's fan-out goroutine does.
func BenchmarkPublishSubscribers(b *testing.B) {
	for _, n := range []int{0, 200} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			hub := NewHub(HubOptions{QueueSize: 2048})
			mustPublish(b, hub, runEvent("b")) // viewing needs a run
			subs := make([]*subscriber, n)
			for i := range subs {
				_, subs[i], _, _ = hub.subscribe("b")
			}
			ev := stepEvent("b", 0)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ev.Step.Step = i
				if err := hub.Publish(ev); err != nil {
					b.Fatal(err)
				}
				if i%1024 == 1023 {
					b.StopTimer()
					for _, s := range subs {
						s.cursor.Store(uint64(i + 2))
					}
					b.StartTimer()
				}
			}
			b.StopTimer()
			st, _ := hub.Stats("b")
			b.ReportMetric(float64(st.Dropped), "dropped")
		})
	}
}
