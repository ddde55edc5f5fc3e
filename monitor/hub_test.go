//go:build !js

package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Viewers of made-up run ids create no runs: they are told to wait, the
// hub's run limit stays free, and a real publisher's run reaches the viewer
// that waited for it.
func TestViewersCreateNoRuns(t *testing.T) {
	hub := NewHub(HubOptions{MaxRuns: 4})
	srv := newTestServer(t, hub, Options{})
	ctx := testCtx(t, 15*time.Second)
	for i := range 20 {
		v := mustDialView(t, srv, fmt.Sprintf("made-up-%d", i), "")
		if m := readNotice(t, ctx, v, "waiting"); m.Run != fmt.Sprintf("made-up-%d", i) {
			t.Fatalf("waiting notice for %q", m.Run)
		}
	}
	waiter := mustDialView(t, srv, "real", "")
	readNotice(t, ctx, waiter, "waiting")
	if runs := hub.Runs(); len(runs) != 0 {
		t.Fatalf("viewers created runs: %+v", runs)
	}
	if _, ok := hub.Stats("made-up-0"); ok {
		t.Fatal("a viewer created a run slot")
	}

	p, err := Dial(ctx, srv.URL, "", "real")
	if err != nil {
		t.Fatalf("publisher after 21 viewers on a 4-run hub: %v", err)
	}
	defer p.Close()
	for _, ev := range []Event{runEvent(""), stepEvent("", 1)} {
		if err := p.Publish(ev); err != nil {
			t.Fatal(err)
		}
	}
	if ev := readEvent(t, ctx, waiter); ev.Kind != KindRun || ev.Seq != 1 {
		t.Fatalf("the waiting viewer got %+v, want the run event", ev)
	}
	if ev := readEvent(t, ctx, waiter); ev.Kind != KindStep || ev.Step.Step != 1 {
		t.Fatalf("then %+v, want step 1", ev)
	}
	if runs := hub.Runs(); len(runs) != 1 || runs[0].Run != "real" {
		t.Errorf("runs %+v, want only the published one", runs)
	}
}

// waitClosed reads c until it closes and returns the close status and
// reason.
func waitClosed(t *testing.T, ctx context.Context, c *websocket.Conn) (websocket.StatusCode, string) {
	t.Helper()
	for {
		_, _, err := c.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Reason
			}
			if ctx.Err() != nil {
				t.Fatal("connection not closed")
			}
			return -1, err.Error()
		}
	}
}

// Runs expire: an ended run EndedTTL after its last event, a run whose
// publisher left without ending it IdleTTL after; a run with its publisher
// attached stays however silent. Their viewers are told.
func TestRunsExpire(t *testing.T) {
	hub := NewHub(HubOptions{EndedTTL: 300 * time.Millisecond, IdleTTL: 100 * time.Millisecond})
	srv := newTestServer(t, hub, Options{})
	ctx := testCtx(t, 15*time.Second)

	ended := mustDialPublish(t, srv, "ended", testRunKey)
	crashed := mustDialPublish(t, srv, "crashed", testRunKey)
	live := mustDialPublish(t, srv, "live", testRunKey)
	send := func(c *websocket.Conn, ev Event) {
		ev.V = SchemaVersion
		if err := c.Write(ctx, websocket.MessageText, mustJSON(t, ev)); err != nil {
			t.Fatal(err)
		}
	}
	tEnd := time.Now() // the ended run's last event comes after this
	send(ended, runEvent("ended"))
	send(ended, Event{Run: "ended", Kind: KindEnd, End: &End{Reason: "done"}})
	send(crashed, runEvent("crashed"))
	send(live, runEvent("live"))
	mustPublish(t, hub, runEvent("local")) // this process's run: no idle expiry
	for len(hub.Runs()) != 4 {
		time.Sleep(time.Millisecond)
	}
	viewer := mustDialView(t, srv, "crashed", "")
	readEvent(t, ctx, viewer)
	ended.Close(websocket.StatusNormalClosure, "")
	crashed.CloseNow()

	if code, reason := waitClosed(t, ctx, viewer); code != StatusRunGone || !strings.Contains(reason, "expired") {
		t.Errorf("viewer of the expired run: closed with %d %q, want %d", code, reason, StatusRunGone)
	}
	for _, ok := hub.Stats("ended"); ok; _, ok = hub.Stats("ended") {
		if ctx.Err() != nil {
			t.Fatal("the ended run never expired")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := time.Since(tEnd); d < 300*time.Millisecond {
		t.Errorf("ended run dropped %v after its end, before its EndedTTL", d)
	}
	for _, id := range []string{"live", "local"} {
		if _, ok := hub.Stats(id); !ok {
			t.Errorf("run %q expired", id)
		}
	}
	// Viewing an expired id waits, as for any unknown run.
	readNotice(t, ctx, mustDialView(t, srv, "crashed", ""), "waiting")
}

// At the run limit, a new run takes the place of the least recently updated
// run nobody publishes to; with every run's publisher attached, the new
// publisher is refused, and says why.
func TestRunLimitMakesRoom(t *testing.T) {
	hub := NewHub(HubOptions{MaxRuns: 2})
	srv := newTestServer(t, hub, Options{})
	ctx := testCtx(t, 15*time.Second)
	mustPublish(t, hub, runEvent("old"))
	a := mustDialPublish(t, srv, "a", testRunKey)
	viewer := mustDialView(t, srv, "old", "")
	readEvent(t, ctx, viewer)

	p, err := Dial(ctx, srv.URL, "", "b") // "old" has no publisher attached: it goes
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if code, reason := waitClosed(t, ctx, viewer); code != StatusRunGone || !strings.Contains(reason, "room") {
		t.Errorf("viewer of the dropped run: %d %q", code, reason)
	}
	if _, err := Dial(ctx, srv.URL, "", "c"); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "too many runs") {
		t.Fatalf("third publisher on a full hub: %v", err)
	}
	a.CloseNow() // "a" published nothing: it goes with its publisher
	for _, ok := hub.Stats("a"); ok; _, ok = hub.Stats("a") {
		time.Sleep(time.Millisecond)
	}
	if p2, err := Dial(ctx, srv.URL, "", "c"); err != nil {
		t.Fatalf("after a run left: %v", err)
	} else {
		p2.Close()
	}
}

// The hub's memory is bounded by its byte budgets: 100 events of 1 MiB in
// one run keep at most the run's 64 MiB (the defaults).
func TestRunByteBudgetDefault(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	hub := NewHub(HubOptions{})
	defer hub.Close()
	text := strings.Repeat("m", 1<<20)
	mustPublish(t, hub, runEvent("big"))
	for i := range 100 {
		mustPublish(t, hub, Event{Run: "big", Kind: KindSample, Sample: &Sample{Step: i, Text: text}})
	}
	st, _ := hub.Stats("big")
	if st.Bytes > DefaultMaxRunBytes || hub.Bytes() != st.Bytes || st.DroppedEvents < 36 {
		t.Errorf("run keeps %d bytes (hub %d), dropped %d events; want at most %d bytes", st.Bytes, hub.Bytes(), st.DroppedEvents, DefaultMaxRunBytes)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("100 events of 1 MiB: the hub keeps %.1f MiB, heap grew %.1f MiB", float64(st.Bytes)/(1<<20), float64(grew)/(1<<20))
	if grew > DefaultMaxRunBytes+16<<20 {
		t.Errorf("heap grew by %d bytes, want about the run's budget of %d", grew, DefaultMaxRunBytes)
	}
	runtime.KeepAlive(hub)
}

// Over the total budget the oldest events of all runs go first; a run's
// latest "run" event stays; a viewer joining later is told how many events
// were dropped, and why.
func TestByteBudgetsDropOldestAndTellViewers(t *testing.T) {
	const kib = 1 << 10
	hub := NewHub(HubOptions{MaxRunBytes: 64 * kib, MaxTotalBytes: 128 * kib})
	srv := newTestServer(t, hub, Options{})
	ctx := testCtx(t, 15*time.Second)
	text := strings.Repeat("b", 4*kib)
	sample := func(run string, i int) Event {
		return Event{Run: run, Kind: KindSample, Sample: &Sample{Step: i, Text: text}}
	}
	// Published over the wire, as a remote trainer does.
	pubs := map[string]*websocket.Conn{}
	for _, run := range []string{"a", "b", "c"} {
		pubs[run] = mustDialPublish(t, srv, run, testRunKey)
	}
	send := func(ev Event) {
		ev.V = SchemaVersion
		if err := pubs[ev.Run].Write(ctx, websocket.MessageText, mustJSON(t, ev)); err != nil {
			t.Fatal(err)
		}
	}
	recorded := func(run string, n uint64) { // the runs' connections are served concurrently
		for st, _ := hub.Stats(run); st.Events != n; st, _ = hub.Stats(run) {
			time.Sleep(time.Millisecond)
		}
	}
	for _, run := range []string{"a", "b", "c"} {
		send(runEvent(run))
		for i := range 10 {
			send(sample(run, i))
		}
		recorded(run, 11)
	}
	for i := 10; i < 20; i++ {
		send(sample("c", i)) // c alone reaches its own budget
	}
	recorded("c", 21)
	if hub.Bytes() > 128*kib {
		t.Errorf("hub keeps %d bytes, budget %d", hub.Bytes(), 128*kib)
	}
	a, _ := hub.Stats("a")
	c, _ := hub.Stats("c")
	if a.DroppedEvents == 0 {
		t.Error("the oldest run lost nothing")
	}
	if c.Bytes > 64*kib || c.DroppedEvents == 0 {
		t.Errorf("run c keeps %d bytes, dropped %d: want its 64 KiB budget", c.Bytes, c.DroppedEvents)
	}

	v := mustDialView(t, srv, "a", "")
	m := readNotice(t, ctx, v, "dropped")
	if m.Events != a.DroppedEvents || !strings.Contains(m.Reason, "128 KiB") {
		t.Errorf("dropped notice %+v, want %d events and the total budget", m, a.DroppedEvents)
	}
	if ev := readEvent(t, ctx, v); ev.Kind != KindRun || ev.Seq != 1 {
		t.Errorf("after the notice: %+v, want the run event (seq 1), kept", ev)
	}
	if ev := readEvent(t, ctx, v); ev.Seq != 2+a.DroppedEvents {
		t.Errorf("then seq %d, want %d", ev.Seq, 2+a.DroppedEvents)
	}
}

// With the trainer's own hub (train --monitor), no websocket publisher can
// write into the trainer's run: not after the trainer started, and a
// publisher that came first loses the run to the trainer, its events
// discarded.
func TestInProcessRunRefusesRemotePublishers(t *testing.T) {
	hub := NewHub(HubOptions{})
	srv := newTestServer(t, hub, Options{})
	ctx := testCtx(t, 15*time.Second)

	// A publisher that comes before the trainer: fake steps, a fake end.
	early := mustDialPublish(t, srv, "t", testRunKey)
	for _, ev := range []Event{stepEvent("t", 999), {Run: "t", Kind: KindEnd, End: &End{Reason: "done"}}} {
		ev.V = SchemaVersion
		early.Write(ctx, websocket.MessageText, mustJSON(t, ev))
	}
	for st, _ := hub.Stats("t"); st.Events != 2; st, _ = hub.Stats("t") {
		time.Sleep(time.Millisecond)
	}
	watcher := mustDialView(t, srv, "t", "")
	readEvent(t, ctx, watcher)

	// The trainer starts: it listens for control, then publishes.
	actions := make(chan string, 1)
	defer hub.OnControl("t", func(a string) { actions <- a })()
	mustPublish(t, hub, runEvent("t"))
	if code, reason := waitClosed(t, ctx, early); code != StatusRunRefused || !strings.Contains(reason, "trainer") {
		t.Errorf("early publisher: closed with %d %q, want %d", code, reason, StatusRunRefused)
	}
	if code, _ := waitClosed(t, ctx, watcher); code != StatusRunReset {
		t.Errorf("viewer of the discarded history: closed with %d, want %d", code, StatusRunReset)
	}

	// Later publishers are refused, with and without the early key.
	for _, key := range []string{testRunKey, "another-key-0123456789"} {
		c, _, err := dialWS(t, srv, "/ws/publish?run=t", http.Header{RunKeyHeader: {key}})
		if err != nil {
			t.Fatal(err)
		}
		if code, reason := waitClosed(t, ctx, c); code != StatusRunRefused || !strings.Contains(reason, "belongs to another publisher") {
			t.Errorf("publisher into the trainer's run: closed with %d %q", code, reason)
		}
	}
	if _, err := Dial(ctx, srv.URL, "", "t"); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "trainer serving this hub") {
		t.Errorf("Dial into the trainer's run: %v", err)
	}

	mustPublish(t, hub, stepEvent("t", 1))
	v := mustDialView(t, srv, "t", "")
	if ev := readEvent(t, ctx, v); ev.Seq != 1 || ev.Kind != KindRun || ev.RunInfo.Model != "llama-test" {
		t.Errorf("history starts with %+v, want the trainer's run event", ev)
	}
	if ev := readEvent(t, ctx, v); ev.Seq != 2 || ev.Kind != KindStep || ev.Step.Step != 1 {
		t.Errorf("then %+v, want the trainer's step 1", ev)
	}
	if st, _ := hub.Stats("t"); st.Events != 2 || st.Ended {
		t.Errorf("run %+v: want the trainer's 2 events, not ended", st)
	}
	// Control still reaches the trainer.
	if err := hub.Control("t", ActionStop); err != nil || <-actions != ActionStop {
		t.Errorf("control: %v", err)
	}
}

// On a standalone hub a run belongs to the publisher that created it: a
// client with another run key can inject neither steps nor an end. Once the
// run has ended and its publisher left, a new publisher may continue it (a
// resumed run).
func TestStandaloneRunBelongsToItsPublisher(t *testing.T) {
	const tok = "hub-token"
	hub := NewHub(HubOptions{})
	srv := newTestServer(t, hub, Options{Token: tok})
	ctx := testCtx(t, 15*time.Second)
	owner, err := Dial(ctx, srv.URL, tok, "s")
	if err != nil {
		t.Fatal(err)
	}
	owner.Publish(runEvent(""))
	owner.Publish(stepEvent("", 1))

	if _, err := Dial(ctx, srv.URL, tok, "s"); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "belongs to another publisher") {
		t.Errorf("second publisher: %v", err)
	}
	intruder, _, err := dialWS(t, srv, "/ws/publish?run=s&token="+tok+"&run_key=intruder-key-0123456789", nil)
	if err != nil {
		t.Fatal(err)
	}
	intruder.Write(ctx, websocket.MessageText, []byte(`{"v":1,"kind":"end","end":{"reason":"done"}}`))
	if code, _ := waitClosed(t, ctx, intruder); code != StatusRunRefused {
		t.Errorf("intruder closed with %d, want %d", code, StatusRunRefused)
	}
	noKey, _, err := dialWS(t, srv, "/ws/publish?run=s&token="+tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, reason := waitClosed(t, ctx, noKey); code != StatusRunRefused || !strings.Contains(reason, "run key") {
		t.Errorf("publisher without a key: %d %q", code, reason)
	}

	owner.Publish(Event{Kind: KindEnd, End: &End{Reason: "stopped"}})
	if err := owner.Close(); err != nil {
		t.Fatal(err)
	}
	st, _ := hub.Stats("s")
	if st.Events != 3 || st.LastStep.Step != 1 || st.End.Reason != "stopped" {
		t.Fatalf("run %+v: want the owner's 3 events", st)
	}
	for st.Control { // the owner has left
		time.Sleep(time.Millisecond)
		st, _ = hub.Stats("s")
	}
	resumed, err := Dial(ctx, srv.URL, tok, "s")
	if err != nil {
		t.Fatalf("resuming an ended run: %v", err)
	}
	resumed.Publish(runEvent(""))
	resumed.Publish(stepEvent("", 2))
	if err := resumed.Close(); err != nil {
		t.Fatal(err)
	}
	if st, _ := hub.Stats("s"); st.Events != 5 || st.LastStep.Step != 2 || st.Ended {
		t.Errorf("resumed run %+v", st)
	}
}

// restartable serves a fresh hub on the same address each time it starts,
// and cuts every connection when it stops: a hub that restarts.
type restartable struct {
	addr  string
	hub   *Hub
	srv   *http.Server
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (r *restartable) start(t *testing.T) {
	t.Helper()
	addr := r.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.hub = NewHub(HubOptions{})
	r.conns = map[net.Conn]struct{}{}
	r.srv = &http.Server{Handler: NewServer(r.hub, Options{}), ConnState: func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			r.mu.Lock()
			r.conns[c] = struct{}{}
			r.mu.Unlock()
		}
	}}
	go r.srv.Serve(ln)
}

func (r *restartable) stop() {
	r.srv.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.hub.Close()
}

// A hub restarted under a publishing run learns the run again: the
// publisher sends its "run" event first on every reconnection.
func TestPublisherReannouncesAfterHubRestart(t *testing.T) {
	var h restartable
	h.start(t)
	ctx := testCtx(t, 20*time.Second)
	p, err := Dial(ctx, "ws://"+h.addr, "", "r")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Publish(runEvent(""))
	p.Publish(stepEvent("", 1))
	for st, _ := h.hub.Stats("r"); st.Events != 2; st, _ = h.hub.Stats("r") {
		time.Sleep(time.Millisecond)
	}
	h.stop()
	h.start(t)
	defer h.stop()
	for st, _ := h.hub.Stats("r"); !st.Control; st, _ = h.hub.Stats("r") {
		if ctx.Err() != nil {
			t.Fatal("the publisher never reconnected")
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.Publish(stepEvent("", 2))
	for st, _ := h.hub.Stats("r"); st.Events != 2; st, _ = h.hub.Stats("r") {
		if ctx.Err() != nil {
			t.Fatalf("new hub has %d events, want 2", st.Events)
		}
		time.Sleep(time.Millisecond)
	}
	st, _ := h.hub.Stats("r")
	if st.Info == nil || st.Info.Model != "llama-test" || st.LastStep.Step != 2 {
		t.Fatalf("restarted hub: %+v, want the run's model and step 2", st)
	}
	c, _, err := websocket.Dial(ctx, "ws://"+h.addr+"/ws/view?run=r", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if ev := readEvent(t, ctx, c); ev.Seq != 1 || ev.Kind != KindRun || ev.RunInfo.Params != 1234 {
		t.Errorf("restarted hub's history starts with %+v, want the run event", ev)
	}
}

// A publish the hub refuses is an error: Dial fails when the hub refuses
// the run; a refusal later on is returned by the next Publish, once, while
// the publisher keeps going; Close reports what was never delivered.
func TestPublisherReportsRefusalOnce(t *testing.T) {
	hub := NewHub(HubOptions{})
	srv := newTestServer(t, hub, Options{})
	ctx := testCtx(t, 20*time.Second)
	p, err := Dial(ctx, srv.URL, "", "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(runEvent("")); err != nil {
		t.Fatal(err)
	}
	for st, _ := hub.Stats("x"); st.Events != 1; st, _ = hub.Stats("x") {
		time.Sleep(time.Millisecond)
	}
	mustPublish(t, hub, runEvent("x")) // this process takes the run

	var errs []error
	for i := 1; len(errs) == 0; i++ {
		if err := p.Publish(stepEvent("", i)); err != nil {
			errs = append(errs, err)
		}
		if ctx.Err() != nil {
			t.Fatal("the refusal was never reported")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The publisher keeps redialing (refused each time): no more reports.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		if err := p.Publish(stepEvent("", 100+i)); err != nil {
			errs = append(errs, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if len(errs) != 1 || !errors.Is(errs[0], ErrRefused) || !strings.Contains(errs[0].Error(), `run "x"`) {
		t.Fatalf("reports %v: want one error wrapping ErrRefused that names the run", errs)
	}
	t.Logf("reported: %v", errs[0])
	if err := p.Close(); err == nil || !strings.Contains(err.Error(), "not delivered") || !errors.Is(err, ErrRefused) {
		t.Errorf("Close: %v", err)
	}
	if st, _ := hub.Stats("x"); st.Events != 1 || st.LastStep != nil {
		t.Errorf("refused events reached the run: %+v", st)
	}
	// A refusal at the start fails Dial with the reason.
	if _, err := Dial(ctx, srv.URL, "", "x"); !errors.Is(err, ErrRefused) {
		t.Errorf("Dial into a refused run: %v", err)
	}
}

// An event larger than a run's byte budget is refused with a clear error,
// in process and over the wire.
func TestEventOverBudgetRefused(t *testing.T) {
	hub := NewHub(HubOptions{MaxRunBytes: 1 << 10})
	srv := newTestServer(t, hub, Options{})
	ctx := testCtx(t, 10*time.Second)
	big := Event{Run: "e", Kind: KindSample, Sample: &Sample{Text: strings.Repeat("e", 2<<10)}}
	if err := hub.Publish(big); !errors.Is(err, ErrEventTooBig) {
		t.Errorf("in process: %v", err)
	}
	c := mustDialPublish(t, srv, "w", testRunKey)
	big.Run, big.V = "w", SchemaVersion
	c.Write(ctx, websocket.MessageText, mustJSON(t, big))
	if code, reason := waitClosed(t, ctx, c); code != StatusRunRefused || !strings.Contains(reason, "byte budget") {
		t.Errorf("over the wire: %d %q", code, reason)
	}
}

// The notices are JSON objects with a type, which the dashboard tells from
// events (these have none).
func TestNoticeShape(t *testing.T) {
	var m map[string]any
	if err := json.Unmarshal(notice(noticeMsg{Type: "dropped", Run: "r", Events: 3, Reason: "why"}), &m); err != nil {
		t.Fatal(err)
	}
	if m["type"] != "dropped" || m["run"] != "r" || m["events"] != 3.0 || m["reason"] != "why" {
		t.Errorf("notice %v", m)
	}
	if _, err := DecodeEvent(notice(noticeMsg{Type: "waiting", Run: "r"})); err == nil {
		t.Error("a notice decodes as an event")
	}
}

// A run event the hub could not encode (NaN in its config) is an error at
// Publish, not an event skipped on the way.
func TestPublisherRefusesUnencodableRunInfo(t *testing.T) {
	p := &Publisher{run: "n", max: 8, wake: make(chan struct{}, 1)}
	ev := runEvent("")
	ev.RunInfo.Config = map[string]any{"learning_rate": math.NaN()}
	if err := p.Publish(ev); err == nil || !strings.Contains(err.Error(), "NaN") {
		t.Errorf("Publish: %v, want an encoding error", err)
	}
	if len(p.queue) != 0 {
		t.Error("the event was queued")
	}
}
