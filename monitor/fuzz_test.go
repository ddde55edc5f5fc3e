//go:build !js

package monitor

import (
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// FuzzHandleFrame feeds arbitrary bytes to the code that handles publisher
// and viewer frames. It must never panic; whatever it accepts must be a valid
// event that the hub recorded.
//
//	go test -run '^$' -fuzz FuzzHandleFrame ./monitor/
func FuzzHandleFrame(f *testing.F) {
	seeds := []string{
		`{"v":1,"run":"r","kind":"step","step":{"step":1,"loss":"NaN","lr":1e-3,"memory":{"w":{"live":1,"peak":2}}}}`,
		`{"v":1,"kind":"run","run_info":{"model":"m","config":{"a":[1,{"b":null}]},"params":7}}`,
		`{"v":1,"kind":"eval","eval":{"step":2,"task":"t","metric":"acc","value":"-Inf","zero_shot":true}}`,
		`{"v":1,"kind":"sample","sample":{"step":3,"prompt":"p","text":"\u0000\ud800"}}`,
		`{"v":1,"kind":"end","end":{"reason":"done"}}`,
		`{"v":1,"kind":"error","end":{"err":"oom"}}`,
		`{"v":1,"kind":"step","step":{"loss":1e999}}`,
		`{"v":1,"kind":"step","step":null}`,
		`{"type":"control","action":"stop"}`,
		`{"type":"control","action":"checkpoint"}`,
		`{"type":"control","action":7}`,
		`[]`, `null`, `"`, `{"v":1e400}`, strings.Repeat("[", 10000),
	}
	for _, s := range seeds {
		f.Add(byte(0), []byte(s))
		f.Add(byte(1), []byte(s))
	}
	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		hub := NewHub(HubOptions{MaxHistory: 16, MaxRuns: 4, QueueSize: 4})
		defer hub.Close()
		typ := websocket.MessageText
		if mode&2 != 0 {
			typ = websocket.MessageBinary
		}
		if mode&1 == 0 {
			rp := &remotePub{kick: make(chan struct{})}
			r, err := hub.attach("r", "fuzz-publisher-run-key", rp)
			if err != nil {
				t.Fatal(err)
			}
			err = handlePublishFrame(hub, r, rp, typ, data)
			st, _ := hub.Stats("r")
			if err == nil && st.Events != 1 {
				t.Fatalf("accepted frame recorded %d events", st.Events)
			}
			if err != nil && st.Events != 0 {
				t.Fatalf("rejected frame recorded %d events", st.Events)
			}
			if err == nil {
				rep, sub, _, err := hub.subscribe("r")
				if err != nil {
					t.Fatal(err)
				}
				hub.unsubscribe(sub)
				if _, err := DecodeEvent(rep.frames[0]); err != nil {
					t.Fatalf("recorded event does not decode: %v: %s", err, rep.frames[0])
				}
			}
		} else {
			var actions int
			defer hub.OnControl("r", func(string) { actions++ })()
			ack, err := handleViewerFrame(hub, "r", typ, data)
			if err == nil && len(ack) == 0 {
				t.Fatal("accepted viewer frame without ack")
			}
			if actions > 1 {
				t.Fatalf("%d actions from one frame", actions)
			}
		}
		DecodeEvent(data)
	})
}
