//go:build !js

package monitor

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// newTestServer starts a real HTTP server on loopback for hub.
func newTestServer(t testing.TB, hub *Hub, opts Options) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(NewServer(hub, opts))
	t.Cleanup(srv.Close)
	t.Cleanup(hub.Close)
	return srv
}

func wsURL(srv *httptest.Server, path string) string {
	return "ws" + strings.TrimPrefix(srv.URL, "http") + path
}

// dialWS opens a websocket to path; header may carry Authorization/Origin.
func dialWS(t testing.TB, srv *httptest.Server, path string, header http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, wsURL(srv, path), &websocket.DialOptions{HTTPHeader: header})
	if err == nil {
		c.SetReadLimit(1 << 24)
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

func mustDialView(t testing.TB, srv *httptest.Server, run, token string) *websocket.Conn {
	t.Helper()
	path := "/ws/view?run=" + run
	if token != "" {
		path += "&token=" + token
	}
	c, _, err := dialWS(t, srv, path, nil)
	if err != nil {
		t.Fatalf("dial view: %v", err)
	}
	return c
}

// testRunKey is a publisher's run key for tests that publish over raw
// websockets (a Publisher makes a random one).
const testRunKey = "0123456789abcdef-test-key"

// mustDialPublish opens a publisher's websocket to run with run key key and
// reads the hub's "ready".
func mustDialPublish(t testing.TB, srv *httptest.Server, run, key string) *websocket.Conn {
	t.Helper()
	c, _, err := dialWS(t, srv, "/ws/publish?run="+run, http.Header{RunKeyHeader: {key}})
	if err != nil {
		t.Fatalf("dial publish: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	readNotice(t, ctx, c, "ready")
	return c
}

// readNotice reads a frame and checks that it is a notice of type typ.
func readNotice(t testing.TB, ctx context.Context, c *websocket.Conn, typ string) noticeMsg {
	t.Helper()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read %q notice: %v", typ, err)
	}
	var m noticeMsg
	if err := json.Unmarshal(b, &m); err != nil || m.Type != typ {
		t.Fatalf("got %s, want a %q notice", b, typ)
	}
	return m
}

func readEvent(t testing.TB, ctx context.Context, c *websocket.Conn) Event {
	t.Helper()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("frame type %v", typ)
	}
	ev, err := DecodeEvent(b)
	if err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return ev
}

func runEvent(run string) Event {
	return Event{Run: run, Kind: KindRun, RunInfo: &RunInfo{Model: "llama-test", Params: 1234, Optimizer: "lomo", Dtype: "f16"}}
}

func stepEvent(run string, i int) Event {
	return Event{Run: run, Kind: KindStep, Step: &Step{
		Step: i, Loss: 3 - float64(i)/1000, LR: 1e-3, GradNorm: 1.5, ClipCoef: 1, LossScale: 1024,
		TokensPerSec: 1000, Memory: map[string]MemStat{"weights": {Live: 100, Peak: 120}},
	}}
}

func mustPublish(t testing.TB, h *Hub, ev Event) {
	t.Helper()
	if err := h.Publish(ev); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
