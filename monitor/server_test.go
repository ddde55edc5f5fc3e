//go:build !js

package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// A viewer joining after N events gets exactly those N, then the live ones,
// in order.
func TestHistoryThenLive(t *testing.T) {
	hub := NewHub(HubOptions{})
	srv := newTestServer(t, hub, Options{})
	const n = 50
	mustPublish(t, hub, runEvent("r1"))
	for i := 1; i < n; i++ {
		mustPublish(t, hub, stepEvent("r1", i))
	}
	c := mustDialView(t, srv, "r1", "")
	ctx := testCtx(t, 10*time.Second)
	for i := 1; i <= n; i++ {
		ev := readEvent(t, ctx, c)
		if ev.Seq != uint64(i) {
			t.Fatalf("history event %d has seq %d", i, ev.Seq)
		}
	}
	// Nothing more until the next publish.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	if _, b, err := c.Read(short); err == nil {
		t.Fatalf("unexpected frame after history: %s", b)
	}
	cancel()
	// A timed-out Read closes the connection: use a fresh viewer for live.
	c2 := mustDialView(t, srv, "r1", "")
	for i := 1; i <= n; i++ {
		readEvent(t, ctx, c2)
	}
	for i := n; i < n+20; i++ {
		mustPublish(t, hub, stepEvent("r1", i))
	}
	for i := n + 1; i <= n+20; i++ {
		if ev := readEvent(t, ctx, c2); ev.Seq != uint64(i) || ev.Kind != KindStep || ev.Step.Step != i-1 {
			t.Fatalf("live: got seq %d step %+v, want seq %d", ev.Seq, ev.Step, i)
		}
	}
}

// Viewers joining while a publisher runs see 1, 2, 3... with no gap and no
// duplicate at the junction of history and live events.
func TestJoinDuringPublish(t *testing.T) {
	hub := NewHub(HubOptions{})
	srv := newTestServer(t, hub, Options{})
	const total = 3000
	mustPublish(t, hub, stepEvent("j", 1)) // viewing needs a run
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 2; i <= total; i++ {
			hub.Publish(stepEvent("j", i))
			if i%100 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	ctx := testCtx(t, 20*time.Second)
	var wg sync.WaitGroup
	for v := 0; v < 8; v++ {
		time.Sleep(2 * time.Millisecond)
		c := mustDialView(t, srv, "j", "")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for want := uint64(1); want <= total; want++ {
				_, b, err := c.Read(ctx)
				if err != nil {
					t.Errorf("read: %v", err)
					return
				}
				var ev Event
				json.Unmarshal(b, &ev)
				if ev.Seq != want {
					t.Errorf("got seq %d, want %d", ev.Seq, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	<-done
}

// 200 viewers connected while a loop publishes at a steady rate all receive
// every event.
func TestManyViewers(t *testing.T) {
	hub := NewHub(HubOptions{})
	srv := newTestServer(t, hub, Options{})
	const viewers, events = 200, 300
	mustPublish(t, hub, runEvent("m"))
	ctx := testCtx(t, 25*time.Second)
	var wg sync.WaitGroup
	var complete atomic.Int32
	for v := 0; v < viewers; v++ {
		c := mustDialView(t, srv, "m", "")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for want := uint64(1); want <= events+1; want++ {
				_, b, err := c.Read(ctx)
				if err != nil {
					t.Errorf("read: %v", err)
					return
				}
				var ev Event
				if err := json.Unmarshal(b, &ev); err != nil || ev.Seq != want {
					t.Errorf("got seq %d (%v), want %d", ev.Seq, err, want)
					return
				}
			}
			complete.Add(1)
		}()
	}
	// Wait until all are subscribed, then publish at a steady rate.
	for {
		st, _ := hub.Stats("m")
		if st.Viewers == viewers {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	tick := time.NewTicker(2 * time.Millisecond)
	for i := 1; i <= events; i++ {
		<-tick.C
		mustPublish(t, hub, stepEvent("m", i))
	}
	tick.Stop()
	wg.Wait()
	if complete.Load() != viewers {
		t.Fatalf("%d of %d viewers got every event", complete.Load(), viewers)
	}
	if st, _ := hub.Stats("m"); st.Dropped != 0 {
		t.Errorf("%d viewers dropped", st.Dropped)
	}
}

// A viewer that connects and never reads is dropped; the publisher never
// waits for it, and a healthy viewer of the same run keeps getting events.
func TestStalledViewerDropped(t *testing.T) {
	hub := NewHub(HubOptions{QueueSize: 32})
	srv := newTestServer(t, hub, Options{})
	mustPublish(t, hub, runEvent("s"))

	stalled := mustDialView(t, srv, "s", "") // never read from
	healthy := mustDialView(t, srv, "s", "")
	ctx := testCtx(t, 25*time.Second)
	got := make(chan uint64, 1024)
	go func() {
		defer close(got)
		for {
			_, b, err := healthy.Read(ctx)
			if err != nil {
				return
			}
			var ev Event
			json.Unmarshal(b, &ev)
			got <- ev.Seq
		}
	}()
	for st, _ := hub.Stats("s"); st.Viewers != 2; st, _ = hub.Stats("s") {
		time.Sleep(time.Millisecond)
	}

	// 8 KiB samples fill the stalled viewer's socket buffers after a few
	// MiB; after that its queue fills and the hub must drop it. The loop
	// publishes one event, then waits for the healthy viewer to see it, so
	// the healthy one never falls behind; the stalled one is never read.
	text := strings.Repeat("x", 8<<10)
	const maxEvents = 20000
	published := 0
	var slowest time.Duration
	for i := 1; i <= maxEvents; i++ {
		t0 := time.Now()
		mustPublish(t, hub, Event{Run: "s", Kind: KindSample, Sample: &Sample{Step: i, Text: text}})
		slowest = max(slowest, time.Since(t0))
		published++
		want := uint64(i + 1)
		for seq := range got {
			if seq == want {
				break
			}
		}
		if st, _ := hub.Stats("s"); st.Dropped > 0 {
			break
		}
	}
	st, _ := hub.Stats("s")
	if st.Dropped != 1 || st.Viewers != 1 {
		t.Fatalf("after %d events: dropped %d, viewers %d; want the stalled viewer dropped", published, st.Dropped, st.Viewers)
	}
	t.Logf("stalled viewer dropped after %d events of 8 KiB; slowest Publish %v", published, slowest)
	// The publish loop finished while the stalled viewer is still stalled;
	// the healthy viewer keeps receiving.
	for i := 0; i < 10; i++ {
		mustPublish(t, hub, stepEvent("s", i))
	}
	want := uint64(published + 1 + 10)
	for seq := range got {
		if seq == want {
			break
		}
	}
	if ctx.Err() != nil {
		t.Fatal("healthy viewer stopped receiving")
	}
	// Finally the stalled viewer reads: it sees events, then the closed
	// connection (status 4001 "too slow" if the close frame got through,
	// else an abrupt end: its socket buffers were full).
	var err error
	for err == nil {
		_, _, err = stalled.Read(ctx)
	}
	t.Logf("stalled viewer's read ended with: %v (status %d)", err, websocket.CloseStatus(err))
	if ctx.Err() != nil {
		t.Fatal("stalled viewer's connection was not closed")
	}
}

// A slow (not stalled) viewer that falls too far behind is told why.
func TestSlowViewerGetsTooSlowStatus(t *testing.T) {
	hub := NewHub(HubOptions{QueueSize: 4})
	srv := newTestServer(t, hub, Options{})
	mustPublish(t, hub, runEvent("q"))
	c := mustDialView(t, srv, "q", "")
	for st, _ := hub.Stats("q"); st.Viewers != 1; st, _ = hub.Stats("q") {
		time.Sleep(time.Millisecond)
	}
	// Small events so nothing blocks on the socket: the queue overflows only
	// because publishing outruns the server's writer.
	for i := 0; i < 10000; i++ {
		hub.Publish(stepEvent("q", i))
		if st, _ := hub.Stats("q"); st.Dropped > 0 {
			break
		}
	}
	if st, _ := hub.Stats("q"); st.Dropped != 1 {
		t.Skip("viewer kept up with 10000 events; nothing to check")
	}
	ctx := testCtx(t, 15*time.Second)
	var err error
	for err == nil {
		_, _, err = c.Read(ctx)
	}
	if s := websocket.CloseStatus(err); s != StatusTooSlow {
		t.Fatalf("closed with %v (status %d), want %d", err, s, StatusTooSlow)
	}
}

func TestTokenRequired(t *testing.T) {
	const tok = "s3cret-token"
	hub := NewHub(HubOptions{})
	srv := newTestServer(t, hub, Options{Token: tok})
	mustPublish(t, hub, runEvent("a"))

	for _, path := range []string{"/ws/view?run=a", "/ws/publish?run=pa&run_key=" + testRunKey} {
		for _, bad := range []string{"", "&token=wrong", "&token=" + tok + "x"} {
			_, resp, err := dialWS(t, srv, path+bad, nil)
			if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s%s: err %v, resp %v; want 401", path, bad, err, resp)
			}
		}
		_, resp, err := dialWS(t, srv, path, http.Header{"Authorization": {"Bearer nope"}})
		if err == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s with wrong bearer: want 401", path)
		}
		if _, _, err := dialWS(t, srv, path+"&token="+tok, nil); err != nil {
			t.Errorf("%s with query token: %v", path, err)
		}
		if _, _, err := dialWS(t, srv, path, http.Header{"Authorization": {"Bearer " + tok}}); err != nil {
			t.Errorf("%s with bearer token: %v", path, err)
		}
	}

	// Control over HTTP and the run list need the token as well.
	var got atomic.Value
	defer hub.OnControl("a", func(a string) { got.Store(a) })()
	for _, u := range []string{"/api/control?run=a&action=stop", "/api/control?run=a&action=stop&token=bad"} {
		resp, err := http.Post(srv.URL+u, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST %s: %d, want 401", u, resp.StatusCode)
		}
	}
	if got.Load() != nil {
		t.Fatal("unauthenticated control reached the trainer")
	}
	resp, err := http.Post(srv.URL+"/api/control?run=a&action=checkpoint&token="+tok, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || got.Load() != "checkpoint" {
		t.Errorf("authorized control: %d, %v", resp.StatusCode, got.Load())
	}
	resp, _ = http.Get(srv.URL + "/api/runs")
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/api/runs without token: %d", resp.StatusCode)
	}

	// An authenticated viewer's control message reaches the trainer.
	c := mustDialView(t, srv, "a", tok)
	ctx := testCtx(t, 10*time.Second)
	readEvent(t, ctx, c)
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"control","action":"stop"}`)); err != nil {
		t.Fatal(err)
	}
	_, b, err := c.Read(ctx)
	if err != nil || !strings.Contains(string(b), `"ok":true`) || got.Load() != "stop" {
		t.Fatalf("ack %s, %v; trainer got %v", b, err, got.Load())
	}
}

func TestListenLoopbackNeedsNoToken(t *testing.T) {
	ln, tok, err := Listen("127.0.0.1:0", "")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if tok != "" {
		t.Fatalf("loopback listener got token %q", tok)
	}
	hub := NewHub(HubOptions{})
	go http.Serve(ln, NewServer(hub, Options{Token: tok}))
	mustPublish(t, hub, runEvent("l"))
	ctx := testCtx(t, 10*time.Second)
	c, _, err := websocket.Dial(ctx, "ws://"+ln.Addr().String()+"/ws/view?run=l", nil)
	if err != nil {
		t.Fatalf("loopback viewer without token: %v", err)
	}
	defer c.CloseNow()
	readEvent(t, ctx, c)
	if u := DashboardURL(ln, tok, "l"); !strings.HasPrefix(u, "http://127.0.0.1:") || strings.Contains(u, "token") {
		t.Errorf("url %s", u)
	}

	// Without a token, a non-loopback Host header (DNS rebinding) is refused.
	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/api/runs", nil)
	req.Host = "evil.example:80"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("rebinding Host: %d, want 403", resp.StatusCode)
	}

	// Any other bind address gets a generated 128-bit token.
	ln2, tok2, err := Listen(":0", "")
	if err != nil {
		t.Skipf("cannot bind all interfaces here: %v", err)
	}
	defer ln2.Close()
	if len(tok2) != 32 {
		t.Errorf("generated token %q: want 32 hex digits", tok2)
	}
	if _, tok3, _ := Listen("127.0.0.1:0", "given"); tok3 != "given" {
		t.Errorf("explicit token replaced: %q", tok3)
	}
	if !IsLoopback("localhost:1") || !IsLoopback("[::1]:2") || IsLoopback(":8080") || IsLoopback("0.0.0.0:1") {
		t.Error("IsLoopback")
	}
}

func TestOriginRefused(t *testing.T) {
	hub := NewHub(HubOptions{})
	srv := newTestServer(t, hub, Options{AllowedOrigins: []string{"dash.example.com"}})
	_, resp, err := dialWS(t, srv, "/ws/view?run=o", http.Header{"Origin": {"http://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: err %v resp %v; want 403", err, resp)
	}
	_, resp, err = dialWS(t, srv, "/ws/publish?run=o", http.Header{"Origin": {"http://evil.example"}})
	if err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin publisher: want 403")
	}
	if _, _, err := dialWS(t, srv, "/ws/view?run=o", http.Header{"Origin": {"https://dash.example.com"}}); err != nil {
		t.Fatalf("allowed origin: %v", err)
	}
	if _, _, err := dialWS(t, srv, "/ws/view?run=o", http.Header{"Origin": {srv.URL}}); err != nil {
		t.Fatalf("same origin: %v", err)
	}
	req, _ := http.NewRequest("POST", srv.URL+"/api/control?run=o&action=stop", nil)
	req.Header.Set("Origin", "http://evil.example")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site control POST: %d, want 403", resp.StatusCode)
	}
}

// Oversized and malformed frames close that connection only.
func TestBadFramesCloseOnlyThatConnection(t *testing.T) {
	hub := NewHub(HubOptions{})
	srv := newTestServer(t, hub, Options{MaxFrameBytes: 1024})
	viewer := mustDialView(t, srv, "f", "")
	ctx := testCtx(t, 10*time.Second)
	readNotice(t, ctx, viewer, "waiting")
	good := mustDialPublish(t, srv, "f", testRunKey)
	send := func(c *websocket.Conn, typ websocket.MessageType, b []byte) error {
		return c.Write(ctx, typ, b)
	}
	closedWith := func(c *websocket.Conn) websocket.StatusCode {
		for {
			_, _, err := c.Read(ctx)
			if err != nil {
				return websocket.CloseStatus(err)
			}
		}
	}
	ev := func(i int) []byte { e := stepEvent("f", i); e.V = 1; return mustJSON(t, e) }

	big := Event{V: 1, Run: "f", Kind: KindSample, Sample: &Sample{Text: strings.Repeat("y", 2000)}}
	bad := []struct {
		name string
		typ  websocket.MessageType
		data []byte
		want websocket.StatusCode
	}{
		{"oversized", websocket.MessageText, mustJSON(t, big), websocket.StatusMessageTooBig},
		{"not json", websocket.MessageText, []byte("{{{"), websocket.StatusPolicyViolation},
		{"binary", websocket.MessageBinary, ev(1), websocket.StatusPolicyViolation},
		{"bad kind", websocket.MessageText, []byte(`{"v":1,"kind":"nope"}`), websocket.StatusPolicyViolation},
		{"other run", websocket.MessageText, []byte(`{"v":1,"run":"g","kind":"end","end":{}}`), websocket.StatusPolicyViolation},
		{"old schema", websocket.MessageText, []byte(`{"v":0,"kind":"end","end":{}}`), websocket.StatusPolicyViolation},
	}
	for i, b := range bad {
		c := mustDialPublish(t, srv, "f", testRunKey)
		send(c, b.typ, b.data)
		if got := closedWith(c); got != b.want {
			t.Errorf("%s: closed with %d, want %d", b.name, got, b.want)
		}
		// The hub still serves the good publisher and the viewer.
		if err := send(good, websocket.MessageText, ev(i)); err != nil {
			t.Fatalf("good publisher after %s: %v", b.name, err)
		}
		if e := readEvent(t, ctx, viewer); e.Kind != KindStep || e.Step.Step != i {
			t.Fatalf("viewer after %s: %+v", b.name, e)
		}
	}

	// Hostile viewer frames: too big, garbage, unknown action.
	for _, b := range []struct {
		data []byte
		want websocket.StatusCode
	}{
		{[]byte(strings.Repeat("z", 5000)), websocket.StatusMessageTooBig},
		{[]byte("\x00\xff"), websocket.StatusPolicyViolation},
		{[]byte(`{"type":"shell","action":"rm"}`), websocket.StatusPolicyViolation},
	} {
		v := mustDialView(t, srv, "f", "")
		send(v, websocket.MessageText, b.data)
		if got := closedWith(v); got != b.want {
			t.Errorf("viewer frame %.10q: closed with %d, want %d", b.data, got, b.want)
		}
	}
	send(good, websocket.MessageText, ev(99))
	if e := readEvent(t, ctx, viewer); e.Step.Step != 99 {
		t.Fatalf("viewer after hostile viewers: %+v", e)
	}
	// An unknown action is refused politely, the connection stays.
	send(viewer, websocket.MessageText, []byte(`{"type":"control","action":"format-disk"}`))
	if _, b, err := viewer.Read(ctx); err != nil || !strings.Contains(string(b), `"ok":false`) {
		t.Fatalf("unknown action ack: %s %v", b, err)
	}
}

// A Publisher dialed to a hub delivers events and receives control.
func TestPublisherDeliversAndReceivesControl(t *testing.T) {
	const tok = "tk"
	hub := NewHub(HubOptions{})
	srv := newTestServer(t, hub, Options{Token: tok})
	ctx := testCtx(t, 15*time.Second)

	if _, err := Dial(ctx, srv.URL, "wrong", "p"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong token: %v", err)
	}
	p, err := Dial(ctx, srv.URL, tok, "p")
	if err != nil {
		t.Fatal(err)
	}
	actions := make(chan string, 4)
	p.OnControl(func(a string) { actions <- a })
	var sink Sink = p
	sink.Publish(runEvent(""))
	for i := 1; i <= 20; i++ {
		if err := sink.Publish(stepEvent("", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Publish(Event{Kind: "bogus"}); err == nil {
		t.Error("invalid event accepted")
	}
	v := mustDialView(t, srv, "p", tok)
	for i := 1; i <= 21; i++ {
		ev := readEvent(t, ctx, v)
		if ev.Seq != uint64(i) || ev.Run != "p" {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
	if err := v.Write(ctx, websocket.MessageText, []byte(`{"type":"control","action":"checkpoint"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-actions:
		if a != "checkpoint" {
			t.Fatalf("action %q", a)
		}
	case <-ctx.Done():
		t.Fatal("publisher got no control message")
	}
	_, ack, _ := v.Read(ctx)
	if !strings.Contains(string(ack), `"ok":true`) {
		t.Errorf("ack %s", ack)
	}
	sink.Publish(Event{Kind: KindEnd, End: &End{Reason: "done"}})
	p.Close()
	if ev := readEvent(t, ctx, v); ev.Kind != KindEnd {
		t.Fatalf("last event %+v", ev)
	}
	if p.Sent() != 22 || p.Dropped() != 0 {
		t.Errorf("sent %d dropped %d", p.Sent(), p.Dropped())
	}
	if err := p.Publish(stepEvent("", 1)); !errors.Is(err, ErrPublisherClosed) {
		t.Errorf("publish after close: %v", err)
	}
	// After the publisher left, control has nobody to go to.
	for st, _ := hub.Stats("p"); st.Control; st, _ = hub.Stats("p") {
		time.Sleep(time.Millisecond)
	}
	if err := hub.Control("p", "stop"); !errors.Is(err, ErrNoTrainer) {
		t.Errorf("control without trainer: %v", err)
	}
}

// Publish never blocks: against a hub that stops reading, the queue fills
// and drops the oldest events, counting them.
func TestPublisherNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		c.Write(r.Context(), websocket.MessageText, []byte(`{"type":"ready","run":"d"}`))
		<-release // a stalled hub: never reads
		c.CloseNow()
	}))
	defer srv.Close()
	defer close(release)
	ctx := testCtx(t, 10*time.Second)
	p, err := Dial(ctx, srv.URL, "", "d")
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.max = 16
	p.mu.Unlock()
	text := strings.Repeat("w", 64<<10)
	p.Publish(runEvent(""))
	// Paced, so that the writer really sends until the socket buffers are
	// full and then blocks; the queue then fills and drops.
	const n = 5000
	published, lastDropped := 0, uint64(0)
	var slowest time.Duration
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if err := p.Publish(Event{Kind: KindSample, Sample: &Sample{Step: i, Text: text}}); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(t0))
		published++
		if d := p.Dropped(); d > 100 && p.Sent() > 1 {
			lastDropped = d
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	if lastDropped == 0 || p.Sent()+p.Dropped() > uint64(published)+1 {
		t.Errorf("sent %d, dropped %d of %d", p.Sent(), p.Dropped(), published+1)
	}
	t.Logf("slowest Publish %v", slowest)
	p.mu.Lock()
	queued := len(p.queue)
	p.mu.Unlock()
	t.Logf("stalled hub: sent %d, dropped %d, queued %d", p.Sent(), p.Dropped(), queued)
	go p.Close() // gives up after its 5 s flush bound; not waited for here
}

// The queue's drop policy: oldest first, never a "run" or "end" event.
func TestPublisherQueuePolicy(t *testing.T) {
	p := &Publisher{run: "d", max: 8, wake: make(chan struct{}, 1)}
	p.Publish(runEvent(""))
	for i := 0; i < 20; i++ {
		p.Publish(stepEvent("", i))
	}
	p.Publish(Event{Kind: KindEnd, End: &End{Reason: "done"}})
	if len(p.queue) != 8 || p.Dropped() != 14 {
		t.Fatalf("queue %d, dropped %d", len(p.queue), p.Dropped())
	}
	if p.queue[0].Kind != KindRun || p.queue[7].Kind != KindEnd || p.queue[1].Step.Step != 14 {
		t.Errorf("queue: %s, step %d, ..., %s", p.queue[0].Kind, p.queue[1].Step.Step, p.queue[7].Kind)
	}
}

func TestStaticAndRuns(t *testing.T) {
	hub := NewHub(HubOptions{})
	srv := newTestServer(t, hub, Options{})
	mustPublish(t, hub, runEvent("x"))
	mustPublish(t, hub, stepEvent("x", 5))
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, `id="loss-chart"`) || !strings.Contains(body, `id="status"`) {
		t.Errorf("GET /: %d", code)
	}
	for _, p := range []string{"/app.js", "/style.css", "/vendor/uPlot.iife.min.js", "/vendor/uPlot.min.css"} {
		if code, _ := get(p); code != 200 {
			t.Errorf("GET %s: %d", p, code)
		}
	}
	code, body := get("/api/runs")
	var runs []RunSummary
	if err := json.Unmarshal([]byte(body), &runs); code != 200 || err != nil || len(runs) != 1 ||
		runs[0].Run != "x" || runs[0].LastStep == nil || runs[0].LastStep.Step != 5 {
		t.Errorf("/api/runs: %d %s", code, body)
	}
	if code, _ := get("/ws/view"); code != http.StatusBadRequest {
		t.Errorf("view without run: %d", code)
	}
}

func Example() {
	hub := NewHub(HubOptions{})
	stop := make(chan struct{}, 1)
	defer hub.OnControl("run-1", func(a string) {
		if a == ActionStop {
			select {
			case stop <- struct{}{}:
			default:
			}
		}
	})()
	hub.Publish(Event{Run: "run-1", Kind: KindRun, RunInfo: &RunInfo{Model: "llama"}})
	hub.Publish(Event{Run: "run-1", Kind: KindStep, Step: &Step{Step: 1, Loss: 2.5}})
	st, _ := hub.Stats("run-1")
	fmt.Println(st.Events, st.LastStep.Loss)
	// Output: 2 2.5
}

// A Publisher whose connection is cut redials and goes on delivering.
func TestPublisherReconnects(t *testing.T) {
	hub := NewHub(HubOptions{})
	srv := newTestServer(t, hub, Options{})
	ctx := testCtx(t, 15*time.Second)

	// A TCP proxy in front of the hub, whose connections we can cut.
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := pl.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			go io.Copy(c, u)
			go io.Copy(u, c)
		}
	}()
	cut := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	controlIs := func(want bool) {
		for st, _ := hub.Stats("rc"); st.Control != want; st, _ = hub.Stats("rc") {
			if ctx.Err() != nil {
				t.Fatalf("control never became %v", want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	p, err := Dial(ctx, "ws://"+pl.Addr().String(), "", "rc")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	v := mustDialView(t, srv, "rc", "")
	for i := 1; i <= 5; i++ {
		p.Publish(stepEvent("", i))
	}
	for i := 1; i <= 5; i++ {
		readEvent(t, ctx, v)
	}
	controlIs(true)
	cut()
	controlIs(false)
	controlIs(true) // redialed
	for i := 6; i <= 10; i++ {
		p.Publish(stepEvent("", i))
	}
	for i := 6; i <= 10; i++ {
		if ev := readEvent(t, ctx, v); ev.Step.Step != i || ev.Seq != uint64(i) {
			t.Fatalf("after reconnect: %+v", ev)
		}
	}
}

// TestDrain: Drain returns once a live viewer has been sent every event,
// so a trainer that shuts its hub down after the run's end event does not
// cut it off from open dashboards.
func TestDrain(t *testing.T) {
	hub := NewHub(HubOptions{})
	srv := newTestServer(t, hub, Options{})
	mustPublish(t, hub, runEvent("d"))
	c := mustDialView(t, srv, "d", "")
	for i := 1; i <= 200; i++ {
		mustPublish(t, hub, stepEvent("d", i))
	}
	mustPublish(t, hub, Event{Kind: KindEnd, Run: "d", End: &End{Reason: "done"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hub.Drain(ctx); err != nil {
		t.Fatalf("drain: %v", err)
	}
	hub.Close()
	// Everything up to the end event was written before the close.
	n := 0
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			break
		}
		n++
		if ev, err := DecodeEvent(data); err == nil && ev.Kind == KindEnd {
			break
		}
	}
	if n != 202 {
		t.Errorf("viewer read %d events before the close, want 202 (run, 200 steps, end)", n)
	}
}
