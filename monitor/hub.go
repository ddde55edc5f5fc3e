package monitor

import (
	"context"
	"crypto/sha256"
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
	// A step event is about 400 bytes, so 64 MiB holds some 150 000 steps:
	// more than DefaultMaxHistory events of an ordinary run, and 64 events
	// of the largest frame a publisher may send (DefaultMaxFrameBytes).
	DefaultMaxRunBytes = 64 << 20
	// 512 MiB in all: eight runs at their full budget.
	DefaultMaxTotalBytes = 512 << 20
	// An ended run stays a day, for whoever comes back to look at it.
	DefaultEndedTTL = 24 * time.Hour
	// A run that has not ended, with no publisher attached, lost its
	// trainer (killed, or cut off for an hour).
	DefaultIdleTTL = time.Hour
)

// HubOptions tunes a Hub; zero fields take the defaults.
type HubOptions struct {
	// MaxHistory is how many events each run keeps for replay to new viewers
	// (the most recent ones; the run's latest "run" event is always kept).
	MaxHistory int
	// QueueSize is how far (in events) a viewer may lag behind the live
	// stream: a viewer with more than QueueSize published events not yet
	// written to it is dropped. It should not exceed MaxHistory.
	QueueSize int
	// MaxRuns bounds the number of runs the hub tracks. A new run beyond it
	// takes the place of the least recently updated run that no publisher
	// is attached to; when every run has one, it fails with ErrTooManyRuns.
	MaxRuns int
	// MaxRunBytes bounds the encoded events a run keeps (default 64 MiB);
	// MaxTotalBytes bounds them over all runs (default 512 MiB). Over
	// either budget the oldest events are dropped first (never a run's
	// latest "run" event), and viewers that join later are told how many.
	MaxRunBytes   int64
	MaxTotalBytes int64
	// EndedTTL is how long a run that has ended stays after its last event
	// (default 24 h); IdleTTL is how long a run that has not ended stays
	// after its last event once no publisher is attached to it (default
	// 1 h). A run with a publisher attached never expires, nor does a run
	// published in this process (Publish, OnControl) before it ends.
	EndedTTL time.Duration
	IdleTTL  time.Duration
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
	// ErrRunOwned: the run belongs to another publisher. A run belongs to
	// whoever created it: the process of the Hub (Publish, OnControl) or
	// the remote publisher holding its run key.
	ErrRunOwned = errors.New("monitor: run belongs to another publisher")
	// ErrEventTooBig: one event larger than a run's whole byte budget.
	ErrEventTooBig = errors.New("monitor: event larger than a run's byte budget")
	// errNoRun: a viewer asked for a run the hub does not have (yet).
	errNoRun = errors.New("monitor: no such run")
)

// Sink is where a trainer sends its events: a *Hub in the same process or a
// *Publisher connected to a remote hub.
type Sink interface {
	Publish(Event) error
}

// Hub keeps the runs' event histories and fans events out to viewers.
// All methods are safe for concurrent use.
//
// Only a run's owner publishes into it. Events published through the Hub's
// methods come from this process, which owns its runs; a remote publisher
// (Server, /ws/publish) owns the runs it creates, proven by its run key. A
// run created remotely that this process then publishes into is reset: its
// history was not the trainer's.
//
// Locks: Hub.mu before runState.mu, never the other way round.
type Hub struct {
	opts HubOptions

	mu      sync.RWMutex
	runs    map[string]*runState
	created chan struct{} // closed (and replaced) whenever a run is created

	closed  atomic.Bool
	done    chan struct{} // closed by Close: stops the hub's goroutines
	total   atomic.Int64  // encoded bytes held by all runs
	arrival atomic.Uint64 // numbers every stored event in the order it came
	joining atomic.Int64  // viewers whose websocket is open and not yet subscribed (Drain waits for them)
	trimMu  sync.Mutex    // one global trim at a time
	janitor sync.Once     // starts the expiry goroutine with the first run

	// Why events leave a history, as viewers are told.
	whyHistory, whyRunBytes, whyTotalBytes string
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
	if opts.MaxRunBytes <= 0 {
		opts.MaxRunBytes = DefaultMaxRunBytes
	}
	if opts.MaxTotalBytes <= 0 {
		opts.MaxTotalBytes = DefaultMaxTotalBytes
	}
	if opts.EndedTTL <= 0 {
		opts.EndedTTL = DefaultEndedTTL
	}
	if opts.IdleTTL <= 0 {
		opts.IdleTTL = DefaultIdleTTL
	}
	return &Hub{
		opts: opts, runs: make(map[string]*runState), created: make(chan struct{}), done: make(chan struct{}),
		whyHistory:    fmt.Sprintf("the hub keeps the last %d events of a run", opts.MaxHistory),
		whyRunBytes:   fmt.Sprintf("the hub keeps at most %s of events per run", fmtBytes(opts.MaxRunBytes)),
		whyTotalBytes: fmt.Sprintf("the hub keeps at most %s of events in all", fmtBytes(opts.MaxTotalBytes)),
	}
}

// owner is who may publish into a run: this process (local) or the remote
// publisher whose run key hashes to key.
type owner struct {
	local bool
	key   [32]byte
}

var localOwner = owner{local: true}

func remoteOwner(runKey string) owner { return owner{key: sha256.Sum256([]byte(runKey))} }

// stored is one encoded event of a run's history.
type stored struct {
	seq     uint64
	arrival uint64 // hub-wide order of arrival: the oldest goes first
	data    []byte // the JSON frame, shared by every viewer
}

// remotePub is a remote publisher's connection attached to a run.
type remotePub struct {
	ctrl   func(action string) // sends a control action back to it; must not block
	kick   chan struct{}       // closed when the hub detaches it
	once   sync.Once
	reason string // why it was detached; set before kick is closed
}

func (p *remotePub) drop(reason string) {
	p.once.Do(func() {
		p.reason = reason
		close(p.kick)
	})
}

type runState struct {
	id   string
	gone chan struct{} // closed when the run leaves the hub

	mu       sync.Mutex
	removed  bool
	owner    owner
	remotes  map[*remotePub]struct{} // attached remote publishers
	sinks    map[int]func(string)    // control sinks of this process
	nextSink int

	hist     []stored // history, oldest first, from index off
	off      int
	pinned   *stored // the latest "run" event, once it left hist
	runSeq   uint64  // seq of the latest "run" event, 0 if none yet
	bytes    int64   // encoded bytes of hist[off:] and pinned
	evicted  uint64  // events dropped from the history
	evictWhy string  // the budget that dropped the last of them

	seq       uint64
	subs      map[*subscriber]struct{}
	subsList  []*subscriber // copy of subs, replaced (never mutated) on change
	wake      chan struct{} // cap 1: events were published
	fanOnce   sync.Once     // starts the fan-out goroutine at the first viewer
	info      *RunInfo
	lastStep  *Step
	end       *End
	started   time.Time // event times, as the publisher stamped them
	updated   time.Time
	lastEvent time.Time // hub clock: when the last event (or the creation) came
	dropped   uint64    // viewers dropped for being too slow
}

// subscriber is one live viewer. Its "queue" is the run's history: it reads
// the events after cursor from there, so publishing costs the same whatever
// the number of viewers.
type subscriber struct {
	run    *runState
	cursor atomic.Uint64 // seq of the last event handed to the viewer
	notify chan struct{} // cap 1: events after cursor may exist
	kick   chan struct{} // closed when the hub drops the viewer
	once   sync.Once
	reason kickReason
	text   string // why, for the close frame
}

type kickReason int

const (
	kickTooSlow  kickReason = iota + 1
	kickShutdown            // the hub closes
	kickReset               // the run's history was discarded (taken over)
	kickGone                // the run expired or made room for another
)

func (s *subscriber) drop(r kickReason, text string) {
	s.once.Do(func() {
		s.reason, s.text = r, text
		close(s.kick)
	})
}

func (h *Hub) newRun(id string, o owner) *runState {
	h.janitor.Do(func() { go h.expireLoop() })
	r := &runState{
		id:        id,
		gone:      make(chan struct{}),
		owner:     o,
		remotes:   make(map[*remotePub]struct{}),
		sinks:     make(map[int]func(string)),
		hist:      make([]stored, 0, min(h.opts.MaxHistory, 1024)),
		subs:      make(map[*subscriber]struct{}),
		wake:      make(chan struct{}, 1),
		lastEvent: time.Now(),
	}
	h.runs[id] = r
	close(h.created)
	h.created = make(chan struct{})
	return r
}

// lookup returns the run id, or nil.
func (h *Hub) lookup(id string) *runState {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.runs[id]
}

// claim returns run id for owner o, creating it when the hub has none. A
// remote publisher rp (nil for this process) is attached to it. This
// process takes over a run created remotely, discarding its history; a
// remote publisher may continue another's run only once that run has ended
// and its publisher left (a resumed run).
func (h *Hub) claim(id string, o owner, rp *remotePub) (*runState, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.runs[id]
	if r != nil {
		r.mu.Lock()
		switch {
		case r.owner == o:
		case o.local:
			r.retireLocked(h, kickReset, "run reset: taken over by the trainer serving this hub",
				"run taken over by the trainer serving this hub")
			delete(h.runs, id)
			r.mu.Unlock()
			r = nil
		case r.owner.local:
			r.mu.Unlock()
			return nil, fmt.Errorf("%w: the trainer serving this hub publishes it", ErrRunOwned)
		case r.end != nil && len(r.remotes) == 0:
			r.owner = o // the run ended and its publisher left: continue it
		default:
			r.mu.Unlock()
			return nil, fmt.Errorf("%w (free once it has ended, or after %v without events or publisher)", ErrRunOwned, h.opts.IdleTTL)
		}
		if r != nil {
			if rp != nil {
				r.remotes[rp] = struct{}{}
			}
			r.mu.Unlock()
			return r, nil
		}
	}
	if len(h.runs) >= h.opts.MaxRuns && !h.makeRoom() {
		return nil, fmt.Errorf("%w: %d runs, each with a publisher attached", ErrTooManyRuns, len(h.runs))
	}
	r = h.newRun(id, o)
	if rp != nil {
		r.remotes[rp] = struct{}{}
	}
	return r, nil
}

// makeRoom drops the least recently updated run that nobody publishes to;
// h.mu must be held. It reports whether there is room now.
func (h *Hub) makeRoom() bool {
	var victim *runState
	var at time.Time
	for _, r := range h.runs {
		r.mu.Lock()
		if !r.liveLocked() && (victim == nil || r.lastEvent.Before(at)) {
			victim, at = r, r.lastEvent
		}
		r.mu.Unlock()
	}
	if victim == nil {
		return false
	}
	victim.mu.Lock()
	victim.retireLocked(h, kickGone, "run dropped: the hub needed room for a new run", "")
	victim.mu.Unlock()
	delete(h.runs, victim.id)
	return true
}

// liveLocked: a publisher is attached (r.mu held).
func (r *runState) liveLocked() bool { return len(r.remotes) > 0 || len(r.sinks) > 0 }

// retireLocked marks r as gone and tells its viewers and remote publishers
// why; the caller holds r.mu and removes r from h.runs.
func (r *runState) retireLocked(h *Hub, why kickReason, viewers, publishers string) {
	if r.removed {
		return
	}
	r.removed = true
	close(r.gone)
	for s := range r.subs {
		s.drop(why, viewers)
	}
	clear(r.subs)
	r.subsList = nil
	if publishers == "" {
		publishers = viewers
	}
	for p := range r.remotes {
		p.drop(publishers)
	}
	clear(r.remotes)
	clear(r.sinks)
	h.total.Add(-r.bytes)
	r.bytes, r.hist, r.off, r.pinned = 0, nil, 0, nil
}

// remove drops r from the hub (if it is still there).
func (h *Hub) remove(r *runState, why kickReason, text string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r.mu.Lock()
	r.retireLocked(h, why, text, "")
	r.mu.Unlock()
	if h.runs[r.id] == r {
		delete(h.runs, r.id)
	}
}

// Publish records ev in its run's history and queues it for every viewer of
// the run. It never blocks on viewers: a viewer whose queue is full is
// dropped. Publish fills in V (when 0), Time (when zero) and Seq (always:
// the hub numbers each run's events 1, 2, 3...), then validates the event.
// The run belongs to this process from then on (see Hub).
func (h *Hub) Publish(ev Event) error {
	if err := ev.complete(); err != nil {
		return err
	}
	for {
		if r := h.lookup(ev.Run); r != nil {
			r.mu.Lock()
			if !r.removed && r.owner.local {
				err := r.publishLocked(h, &ev)
				r.mu.Unlock()
				h.trim()
				return err
			}
			r.mu.Unlock()
		}
		if _, err := h.claim(ev.Run, localOwner, nil); err != nil {
			return err
		}
	}
}

// publishRemote records an event from the remote publisher rp attached to
// r; it fails when rp no longer may publish there.
func (h *Hub) publishRemote(r *runState, rp *remotePub, ev Event) error {
	if err := ev.complete(); err != nil {
		return err
	}
	r.mu.Lock()
	if _, ok := r.remotes[rp]; !ok || r.removed {
		r.mu.Unlock()
		why := "publisher detached from the run"
		select {
		case <-rp.kick:
			why = rp.reason
		default:
		}
		return fmt.Errorf("%w: %s", ErrRunOwned, why)
	}
	err := r.publishLocked(h, &ev)
	r.mu.Unlock()
	h.trim()
	return err
}

// publishLocked appends ev to r (r.mu held).
func (r *runState) publishLocked(h *Hub, ev *Event) error {
	ev.Seq = r.seq + 1
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("monitor: encoding event: %w", err)
	}
	if n := int64(len(data)); n > h.opts.MaxRunBytes {
		return fmt.Errorf("%w: %d bytes, budget %d", ErrEventTooBig, n, h.opts.MaxRunBytes)
	}
	r.seq++
	if r.off > 0 && 2*r.off >= len(r.hist) { // reclaim the popped front
		n := copy(r.hist, r.hist[r.off:])
		clear(r.hist[n:])
		r.hist, r.off = r.hist[:n], 0
	}
	r.hist = append(r.hist, stored{seq: ev.Seq, arrival: h.arrival.Add(1), data: data})
	r.bytes += int64(len(data))
	h.total.Add(int64(len(data)))

	switch ev.Kind {
	case KindRun:
		if r.pinned != nil { // superseded by this one
			r.forget(h, *r.pinned, "")
			r.pinned = nil
		}
		r.runSeq = ev.Seq
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
	r.lastEvent = time.Now()

	for len(r.hist)-r.off > h.opts.MaxHistory {
		r.evictOldest(h, h.whyHistory)
	}
	for r.bytes > h.opts.MaxRunBytes && r.evictOldest(h, h.whyRunBytes) {
	}

	// O(1) whatever the number of viewers: the run's fan-out goroutine
	// wakes them.
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return nil
}

// evictOldest drops the oldest event of the history (r.mu held); the
// latest "run" event moves to pinned instead. It reports whether there was
// one to drop.
func (r *runState) evictOldest(h *Hub, why string) bool {
	if r.off >= len(r.hist) {
		return false
	}
	st := r.hist[r.off]
	r.hist[r.off] = stored{}
	r.off++
	if st.seq == r.runSeq {
		r.pinned = &st // still counted in bytes
		return true
	}
	r.forget(h, st, why)
	return true
}

// forget releases the bytes of a dropped event and counts it.
func (r *runState) forget(h *Hub, st stored, why string) {
	r.bytes -= int64(len(st.data))
	h.total.Add(-int64(len(st.data)))
	r.evicted++
	if why != "" {
		r.evictWhy = why
	}
}

// trim drops the oldest events of all runs while the hub holds more than
// MaxTotalBytes. It runs outside any run's lock (it takes them one at a
// time), so the total may pass the budget briefly.
func (h *Hub) trim() {
	if h.total.Load() <= h.opts.MaxTotalBytes {
		return
	}
	h.trimMu.Lock()
	defer h.trimMu.Unlock()
	target := h.opts.MaxTotalBytes - h.opts.MaxTotalBytes/64 // a little slack: not one scan per event
	for h.total.Load() > h.opts.MaxTotalBytes {
		h.mu.RLock()
		var oldest *runState
		var first uint64
		for _, r := range h.runs {
			r.mu.Lock()
			if r.off < len(r.hist) && (oldest == nil || r.hist[r.off].arrival < first) {
				oldest, first = r, r.hist[r.off].arrival
			}
			r.mu.Unlock()
		}
		h.mu.RUnlock()
		if oldest == nil {
			return // only pinned "run" events left
		}
		oldest.mu.Lock()
		for i := 0; i < 64 && h.total.Load() > target && oldest.evictOldest(h, h.whyTotalBytes); i++ {
		}
		oldest.mu.Unlock()
	}
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// expireLoop drops expired runs until the hub closes.
func (h *Hub) expireLoop() {
	every := min(h.opts.EndedTTL, h.opts.IdleTTL) / 4
	every = max(5*time.Millisecond, min(every, time.Minute))
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-h.done:
			return
		case now := <-t.C:
			h.expire(now)
		}
	}
}

// expire drops the runs whose time is up at now (see HubOptions).
func (h *Hub) expire(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, r := range h.runs {
		r.mu.Lock()
		var why string
		switch idle := now.Sub(r.lastEvent); {
		case r.liveLocked():
		case r.seq == 0:
			why = "run dropped: its publisher left before publishing"
		case r.end != nil && idle > h.opts.EndedTTL:
			why = fmt.Sprintf("run expired: ended %v ago", h.opts.EndedTTL)
		case r.end == nil && !r.owner.local && idle > h.opts.IdleTTL:
			why = fmt.Sprintf("run expired: no event and no publisher for %v", h.opts.IdleTTL)
		}
		if why != "" {
			r.retireLocked(h, kickGone, why, "")
			delete(h.runs, id)
		}
		r.mu.Unlock()
	}
}

// fanOut runs from the run's first viewer until the run leaves the hub or
// the hub closes: after each batch of published events it wakes every
// viewer, and drops those lagging more than QueueSize events behind
// (stalled or too slow). It does this work so that Publish, on the
// trainer's goroutine, does not.
func (r *runState) fanOut(opts HubOptions, done <-chan struct{}) {
	var slow []*subscriber
	for {
		select {
		case <-r.wake:
		case <-r.gone:
			return
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
		s.drop(kickTooSlow, "viewer too slow")
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
// history: the viewer fell too far behind.
func (r *runState) next(s *subscriber, max int) (frames [][]byte, last uint64, ok bool) {
	cur := s.cursor.Load()
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur >= r.seq || r.removed {
		return nil, cur, true
	}
	if r.off >= len(r.hist) || cur+1 < r.hist[r.off].seq {
		return nil, cur, false
	}
	n := min(int(r.seq-cur), max)
	start := r.off + int(cur+1-r.hist[r.off].seq)
	frames = make([][]byte, n)
	for i := range frames {
		frames[i] = r.hist[start+i].data
	}
	return frames, cur + uint64(n), true
}

// replay is what a new viewer gets first: the run's history, and how many
// of its events the hub dropped before (and why).
type replay struct {
	frames  [][]byte
	evicted uint64
	why     string
}

// subscribe registers a viewer of run id and returns the run's history at
// that instant; every later event goes to the subscriber's queue, so history
// followed by the queue is the whole stream, with no gap and no duplicate.
// Viewing never creates a run: for an unknown id it fails with errNoRun and
// returns a channel closed when the next run is created.
func (h *Hub) subscribe(id string) (replay, *subscriber, <-chan struct{}, error) {
	for {
		h.mu.RLock()
		r, created := h.runs[id], h.created
		h.mu.RUnlock()
		if h.closed.Load() {
			return replay{}, nil, nil, ErrHubClosed
		}
		if r == nil {
			return replay{}, nil, created, errNoRun
		}
		s := &subscriber{run: r, notify: make(chan struct{}, 1), kick: make(chan struct{})}
		r.mu.Lock()
		if r.removed {
			r.mu.Unlock()
			continue
		}
		if h.closed.Load() { // checked under r.mu: Close kicks r's viewers after us
			r.mu.Unlock()
			return replay{}, nil, nil, ErrHubClosed
		}
		rp := replay{frames: make([][]byte, 0, len(r.hist)-r.off+1), evicted: r.evicted, why: r.evictWhy}
		if r.pinned != nil {
			rp.frames = append(rp.frames, r.pinned.data)
		}
		for _, st := range r.hist[r.off:] {
			rp.frames = append(rp.frames, st.data)
		}
		r.fanOnce.Do(func() { go r.fanOut(h.opts, h.done) })
		s.cursor.Store(r.seq)
		r.subs[s] = struct{}{}
		r.subsList = append(r.subsList[:len(r.subsList):len(r.subsList)], s)
		r.mu.Unlock()
		return rp, s, nil, nil
	}
}

func (h *Hub) unsubscribe(s *subscriber) {
	r := s.run
	r.mu.Lock()
	if _, ok := r.subs[s]; ok {
		r.removeSub(s)
	}
	r.mu.Unlock()
}

// attach makes the remote publisher rp, holding runKey, the publisher of
// run id (see claim).
func (h *Hub) attach(id, runKey string, rp *remotePub) (*runState, error) {
	return h.claim(id, remoteOwner(runKey), rp)
}

// detach is the end of rp's connection. A run left with no event and no
// publisher goes at once.
func (h *Hub) detach(r *runState, rp *remotePub) {
	r.mu.Lock()
	delete(r.remotes, rp)
	empty := !r.removed && r.seq == 0 && !r.liveLocked()
	r.mu.Unlock()
	if empty {
		h.remove(r, kickGone, "run dropped: its publisher left before publishing")
	}
}

// OnControl registers fn to receive the control actions viewers send to run
// ("checkpoint", "stop"). fn is called from the viewer's connection goroutine:
// it must not block (set a flag or do a non-blocking channel send). The
// returned function unregisters fn. Like Publish, it makes run this
// process's own.
func (h *Hub) OnControl(run string, fn func(action string)) (cancel func()) {
	var r *runState
	var id int
	for {
		var err error
		if r, err = h.claim(run, localOwner, nil); err != nil {
			return func() {}
		}
		r.mu.Lock()
		if !r.removed {
			id = r.nextSink
			r.nextSink++
			r.sinks[id] = fn
			r.mu.Unlock()
			break
		}
		r.mu.Unlock()
	}
	return func() {
		r.mu.Lock()
		delete(r.sinks, id)
		empty := !r.removed && r.seq == 0 && !r.liveLocked()
		r.mu.Unlock()
		if empty {
			h.remove(r, kickGone, "run dropped: its trainer left before publishing")
		}
	}
}

// Control delivers a control action to the trainer of run: the sinks of
// OnControl and the remote publishers attached to it. It fails with
// ErrAction for an unknown action and ErrNoTrainer when no trainer listens.
func (h *Hub) Control(run, action string) error {
	if !ValidAction(action) {
		return ErrAction
	}
	r := h.lookup(run)
	if r == nil {
		return ErrNoTrainer
	}
	r.mu.Lock()
	fns := make([]func(string), 0, len(r.sinks)+len(r.remotes))
	for _, fn := range r.sinks {
		fns = append(fns, fn)
	}
	for p := range r.remotes {
		if p.ctrl != nil {
			fns = append(fns, p.ctrl)
		}
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
	Run           string    `json:"run"`
	Info          *RunInfo  `json:"info,omitempty"`
	LastStep      *Step     `json:"last_step,omitempty"`
	End           *End      `json:"end,omitempty"`
	Ended         bool      `json:"ended"`
	Events        uint64    `json:"events"` // events published (= last Seq)
	Viewers       int       `json:"viewers"`
	Dropped       uint64    `json:"dropped_viewers"`
	Control       bool      `json:"control"`        // a trainer listens for control
	Bytes         int64     `json:"bytes"`          // encoded events kept for replay
	DroppedEvents uint64    `json:"dropped_events"` // events dropped from the history (budgets)
	Started       time.Time `json:"started"`
	Updated       time.Time `json:"updated"`
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

// Stats returns the summary of one run (ok false if the hub does not have
// it).
func (h *Hub) Stats(run string) (RunSummary, bool) {
	r := h.lookup(run)
	if r == nil {
		return RunSummary{}, false
	}
	return r.summary(), true
}

// Bytes is the encoded size of the events all runs keep.
func (h *Hub) Bytes() int64 { return h.total.Load() }

func (r *runState) summary() RunSummary {
	r.mu.Lock()
	defer r.mu.Unlock()
	return RunSummary{
		Run: r.id, Info: r.info, LastStep: r.lastStep, End: r.end, Ended: r.end != nil,
		Events: r.seq, Viewers: len(r.subs), Dropped: r.dropped, Control: r.liveLocked(),
		Bytes: r.bytes, DroppedEvents: r.evicted, Started: r.started, Updated: r.updated,
	}
}

// Drain waits until every viewer has been sent every event published so
// far, or until ctx ends, counting a viewer whose websocket has just
// opened and whose subscription is under way. A trainer calls it before
// shutting its hub down, so that open dashboards see the run's last steps
// and its end.
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
	if h.joining.Load() > 0 {
		return false // a viewer's dial has returned, and its subscription is on its way
	}
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
	if !h.closed.Swap(true) {
		close(h.done)
	}
	rs := make([]*runState, 0, len(h.runs))
	for _, r := range h.runs {
		rs = append(rs, r)
	}
	h.mu.Unlock()
	for _, r := range rs {
		r.mu.Lock()
		for s := range r.subs {
			s.drop(kickShutdown, "hub shutting down")
		}
		clear(r.subs)
		r.subsList = nil
		r.mu.Unlock()
	}
}
