package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for HubOptions.
const (
	DefaultMaxHistory = 100_000
	DefaultQueueSize  = 4096
	DefaultMaxRuns    = 1000
)

// HubOptions tunes a Hub; zero fields take the defaults.
type HubOptions struct {
	// MaxHistory is how many events each run keeps for replay to new viewers
	// (the most recent ones; the run's first "run" event is always kept).
	MaxHistory int
	// QueueSize is how far (in events) a viewer may lag behind the live
	// stream: a viewer with more than QueueSize published events not yet
	// written to it is dropped. It should not exceed MaxHistory.
	QueueSize int
	// MaxRuns bounds the number of runs the hub tracks; Publish to a new run
	// beyond it fails with ErrTooManyRuns.
	MaxRuns int
}

// Control actions a viewer may send to a run's trainer.
const (
	ActionCheckpoint = "checkpoint" // save a checkpoint now
	ActionStop       = "stop"       // stop cleanly after the current step
)

// ValidAction reports whether a is a known control action.
func ValidAction(a string) bool { return a == ActionCheckpoint || a == ActionStop }

// Hub errors.
var (
	ErrTooManyRuns = errors.New("monitor: too many runs")
	ErrNoTrainer   = errors.New("monitor: no trainer listens for control on this run")
	ErrAction      = errors.New("monitor: unknown control action")
	ErrHubClosed   = errors.New("monitor: hub closed")
)

// Sink is where a trainer sends its events: a *Hub in the same process or a
// *Publisher connected to a remote hub.
type Sink interface {
	Publish(Event) error
}

// Hub keeps the runs' event histories and fans events out to viewers.
// All methods are safe for concurrent use.
type Hub struct {
	opts HubOptions

	mu     sync.RWMutex
	runs   map[string]*runState
	closed bool
	done   chan struct{} // closed by Close: stops the fan-out goroutines
}

// NewHub returns an empty hub.
func NewHub(opts HubOptions) *Hub {
	if opts.MaxHistory <= 0 {
		opts.MaxHistory = DefaultMaxHistory
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.MaxRuns <= 0 {
		opts.MaxRuns = DefaultMaxRuns
	}
	return &Hub{opts: opts, runs: make(map[string]*runState), done: make(chan struct{})}
}

// stored is one encoded event of a run's history.
type stored struct {
	seq  uint64
	data []byte // the JSON frame, shared by every viewer
}

type runState struct {
	id string

	mu        sync.Mutex
	ring      []stored // history: the last MaxHistory events, oldest at head
	head      int
	runSeq    uint64 // seq of the first "run" event, 0 if none yet
	pinned    []byte // the first "run" event once evicted from ring
	seq       uint64
	subs      map[*subscriber]struct{}
	subsList  []*subscriber // copy of subs, replaced (never mutated) on change
	wake      chan struct{} // cap 1: events were published
	fanOnce   sync.Once     // starts the fan-out goroutine at the first viewer
	sinks     map[int]func(string)
	nextSink  int
	info      *RunInfo
	lastStep  *Step
	end       *End
	started   time.Time
	updated   time.Time
	dropped   uint64 // viewers dropped for being too slow
	published uint64
}

// subscriber is one live viewer. Its "queue" is the run's history ring: it
// reads the events after cursor from there, so publishing costs the same
// whatever the number of viewers.
type subscriber struct {
	cursor atomic.Uint64 // seq of the last event handed to the viewer
	notify chan struct{} // cap 1: events after cursor may exist
	kick   chan struct{} // closed when the hub drops the viewer
	once   sync.Once
	reason kickReason
}

type kickReason int

const (
	kickTooSlow kickReason = iota + 1
	kickShutdown
)

func (s *subscriber) drop(r kickReason) {
	s.once.Do(func() {
		s.reason = r
		close(s.kick)
	})
}

func (h *Hub) run(id string, create bool) (*runState, error) {
	h.mu.RLock()
	r, ok := h.runs[id]
	h.mu.RUnlock()
	if ok || !create {
		return r, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if r, ok := h.runs[id]; ok {
		return r, nil
	}
	if len(h.runs) >= h.opts.MaxRuns {
		return nil, ErrTooManyRuns
	}
	r = &runState{
		id:    id,
		ring:  make([]stored, 0, min(h.opts.MaxHistory, 1024)),
		subs:  make(map[*subscriber]struct{}),
		sinks: make(map[int]func(string)),
		wake:  make(chan struct{}, 1),
	}
	h.runs[id] = r
	return r, nil
}

// Publish records ev in its run's history and queues it for every viewer of
// the run. It never blocks on viewers: a viewer whose queue is full is
// dropped. Publish fills in V (when 0), Time (when zero) and Seq (always:
// the hub numbers each run's events 1, 2, 3...), then validates the event.
func (h *Hub) Publish(ev Event) error {
	if ev.V == 0 {
		ev.V = SchemaVersion
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	if err := ev.Validate(); err != nil {
		return err
	}
	r, err := h.run(ev.Run, true)
	if err != nil {
		return err
	}
	return r.publish(&ev, h.opts)
}

func (r *runState) publish(ev *Event, opts HubOptions) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev.Seq = r.seq + 1
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("monitor: encoding event: %w", err)
	}
	r.seq++
	r.published++

	// History: a ring of the last MaxHistory events.
	st := stored{seq: ev.Seq, data: data}
	if len(r.ring) < opts.MaxHistory {
		r.ring = append(r.ring, st) // head stays 0 until the ring is full
	} else {
		if old := r.ring[r.head]; old.seq == r.runSeq {
			r.pinned = old.data // keep the run's first "run" event forever
		}
		r.ring[r.head] = st
		r.head = (r.head + 1) % len(r.ring)
	}

	switch ev.Kind {
	case KindRun:
		if r.runSeq == 0 {
			r.runSeq = ev.Seq
		}
		r.info = ev.RunInfo
		r.end = nil
	case KindStep:
		r.lastStep = ev.Step
	case KindEnd:
		r.end = ev.End
	}
	if r.started.IsZero() {
		r.started = ev.Time
	}
	r.updated = ev.Time

	// O(1) whatever the number of viewers: the run's fan-out goroutine
	// wakes them.
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return nil
}

// fanOut runs from the run's first viewer until the hub closes: after each
// batch of published events
// it wakes every viewer, and drops those lagging more than QueueSize events
// behind (stalled or too slow). It does this work so that Publish, on the
// trainer's goroutine, does not.
func (r *runState) fanOut(opts HubOptions, done <-chan struct{}) {
	var slow []*subscriber
	for {
		select {
		case <-r.wake:
		case <-done:
			return
		}
		r.mu.Lock()
		latest, subs := r.seq, r.subsList
		r.mu.Unlock()
		slow = slow[:0]
		for _, s := range subs {
			// cursor may have passed latest meanwhile: compare, then subtract.
			if cur := s.cursor.Load(); cur < latest && latest-cur > uint64(opts.QueueSize) {
				slow = append(slow, s)
				continue
			}
			select {
			case s.notify <- struct{}{}:
			default:
			}
		}
		for _, s := range slow {
			r.dropSlow(s)
		}
	}
}

// dropSlow drops a viewer that fell too far behind.
func (r *runState) dropSlow(s *subscriber) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.subs[s]; ok {
		r.removeSub(s)
		r.dropped++
		s.drop(kickTooSlow)
	}
}

// removeSub unregisters s; r.mu must be held.
func (r *runState) removeSub(s *subscriber) {
	delete(r.subs, s)
	list := make([]*subscriber, 0, len(r.subs))
	for x := range r.subs {
		list = append(list, x)
	}
	r.subsList = list
}

// next returns the events after s.cursor (at most max), oldest first, and
// the seq of the last one. ok is false when some of them already left the
// history ring: the viewer fell too far behind.
func (r *runState) next(s *subscriber, max int) (frames [][]byte, last uint64, ok bool) {
	cur := s.cursor.Load()
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur >= r.seq {
		return nil, cur, true
	}
	oldest := r.ring[r.head].seq
	if cur+1 < oldest {
		return nil, cur, false
	}
	n := min(int(r.seq-cur), max)
	frames = make([][]byte, n)
	start := int(cur + 1 - oldest)
	for i := range frames {
		frames[i] = r.ring[(r.head+start+i)%len(r.ring)].data
	}
	return frames, cur + uint64(n), true
}

// subscribe registers a viewer of run id and returns the run's history at
// that instant; every later event goes to the subscriber's queue, so history
// followed by the queue is the whole stream, with no gap and no duplicate.
func (h *Hub) subscribe(id string) ([][]byte, *subscriber, error) {
	r, err := h.run(id, true)
	if err != nil {
		return nil, nil, err
	}
	s := &subscriber{notify: make(chan struct{}, 1), kick: make(chan struct{})}
	r.mu.Lock()
	defer r.mu.Unlock()
	h.mu.RLock()
	closed := h.closed
	h.mu.RUnlock()
	if closed {
		return nil, nil, ErrHubClosed
	}
	hist := make([][]byte, 0, len(r.ring)+1)
	if r.pinned != nil {
		hist = append(hist, r.pinned)
	}
	for i := range r.ring {
		hist = append(hist, r.ring[(r.head+i)%len(r.ring)].data)
	}
	r.fanOnce.Do(func() { go r.fanOut(h.opts, h.done) })
	s.cursor.Store(r.seq)
	r.subs[s] = struct{}{}
	r.subsList = append(r.subsList[:len(r.subsList):len(r.subsList)], s)
	return hist, s, nil
}

func (h *Hub) unsubscribe(id string, s *subscriber) {
	r, _ := h.run(id, false)
	if r == nil {
		return
	}
	r.mu.Lock()
	if _, ok := r.subs[s]; ok {
		r.removeSub(s)
	}
	r.mu.Unlock()
}

// OnControl registers fn to receive the control actions viewers send to run
// ("checkpoint", "stop"). fn is called from the viewer's connection goroutine:
// it must not block (set a flag or do a non-blocking channel send). The
// returned function unregisters fn.
func (h *Hub) OnControl(run string, fn func(action string)) (cancel func()) {
	r, err := h.run(run, true)
	if err != nil {
		return func() {}
	}
	r.mu.Lock()
	id := r.nextSink
	r.nextSink++
	r.sinks[id] = fn
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		delete(r.sinks, id)
		r.mu.Unlock()
	}
}

// Control delivers a control action to every sink registered for run. It
// fails with ErrAction for an unknown action and ErrNoTrainer when no trainer
// listens.
func (h *Hub) Control(run, action string) error {
	if !ValidAction(action) {
		return ErrAction
	}
	r, _ := h.run(run, false)
	if r == nil {
		return ErrNoTrainer
	}
	r.mu.Lock()
	fns := make([]func(string), 0, len(r.sinks))
	for _, fn := range r.sinks {
		fns = append(fns, fn)
	}
	r.mu.Unlock()
	if len(fns) == 0 {
		return ErrNoTrainer
	}
	for _, fn := range fns {
		fn(action)
	}
	return nil
}

// RunSummary describes a run for GET /api/runs.
type RunSummary struct {
	Run      string    `json:"run"`
	Info     *RunInfo  `json:"info,omitempty"`
	LastStep *Step     `json:"last_step,omitempty"`
	End      *End      `json:"end,omitempty"`
	Ended    bool      `json:"ended"`
	Events   uint64    `json:"events"` // events published (= last Seq)
	Viewers  int       `json:"viewers"`
	Dropped  uint64    `json:"dropped_viewers"`
	Control  bool      `json:"control"` // a trainer listens for control
	Started  time.Time `json:"started"`
	Updated  time.Time `json:"updated"`
}

// Runs lists the runs that have published at least one event, most recently
// started first.
func (h *Hub) Runs() []RunSummary {
	h.mu.RLock()
	rs := make([]*runState, 0, len(h.runs))
	for _, r := range h.runs {
		rs = append(rs, r)
	}
	h.mu.RUnlock()
	out := make([]RunSummary, 0, len(rs))
	for _, r := range rs {
		s := r.summary()
		if s.Events > 0 {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Started.Equal(out[j].Started) {
			return out[i].Started.After(out[j].Started)
		}
		return out[i].Run < out[j].Run
	})
	return out
}

// Stats returns the summary of one run (ok false if the hub never saw it).
func (h *Hub) Stats(run string) (RunSummary, bool) {
	r, _ := h.run(run, false)
	if r == nil {
		return RunSummary{}, false
	}
	return r.summary(), true
}

func (r *runState) summary() RunSummary {
	r.mu.Lock()
	defer r.mu.Unlock()
	return RunSummary{
		Run: r.id, Info: r.info, LastStep: r.lastStep, End: r.end, Ended: r.end != nil,
		Events: r.seq, Viewers: len(r.subs), Dropped: r.dropped, Control: len(r.sinks) > 0,
		Started: r.started, Updated: r.updated,
	}
}

// Drain waits until every viewer has been sent every event published so
// far, or until ctx ends. A trainer calls it before shutting its hub down,
// so that open dashboards see the run's last steps and its end.
func (h *Hub) Drain(ctx context.Context) error {
	for !h.drained() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

func (h *Hub) drained() bool {
	h.mu.RLock()
	rs := make([]*runState, 0, len(h.runs))
	for _, r := range h.runs {
		rs = append(rs, r)
	}
	h.mu.RUnlock()
	for _, r := range rs {
		r.mu.Lock()
		seq, subs := r.seq, r.subsList
		r.mu.Unlock()
		for _, s := range subs {
			if s.cursor.Load() < seq {
				return false
			}
		}
	}
	return true
}

// Close disconnects every viewer (status "going away") and makes later
// subscriptions fail. Publish keeps recording history.
// It is meant for shutdown.
func (h *Hub) Close() {
	h.mu.Lock()
	if !h.closed {
		close(h.done)
	}
	h.closed = true
	rs := make([]*runState, 0, len(h.runs))
	for _, r := range h.runs {
		rs = append(rs, r)
	}
	h.mu.Unlock()
	for _, r := range rs {
		r.mu.Lock()
		for s := range r.subs {
			s.drop(kickShutdown)
		}
		clear(r.subs)
		r.subsList = nil
		r.mu.Unlock()
	}
}
