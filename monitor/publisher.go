package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// DefaultPublisherQueue is how many events a Publisher buffers while the
// network is slow or the hub unreachable.
const DefaultPublisherQueue = 4096

// Publisher errors.
var (
	// ErrPublisherClosed is returned by Publish after Close.
	ErrPublisherClosed = errors.New("monitor: publisher closed")
	// ErrRefused: the hub refused the publisher (a wrong token, a run that
	// belongs to another publisher, a full hub) or one of its events.
	ErrRefused = errors.New("monitor: hub refused the publisher")
)

// Publisher sends a run's events to a remote hub (`lomo monitor --listen`)
// over a websocket and receives the hub's control actions back.
//
// Publish never blocks the training loop: events go to a bounded queue that a
// background goroutine drains; when the queue is full the oldest event is
// dropped (never a "run" or "end" event) and counted (Dropped). A lost
// connection is redialed with backoff; queued events wait for it, and the
// run's latest "run" event is sent again first, so that a restarted hub
// knows the run's model and config.
//
// The Publisher owns its run on the hub through a random run key made by
// Dial: no other client can publish into the run. When the hub refuses the
// publisher or an event, the next Publish returns that error (wrapping
// ErrRefused), once until a connection is accepted again; the Publisher
// keeps queueing and redialing.
type Publisher struct {
	url  string
	opts *websocket.DialOptions
	run  string

	mu          sync.Mutex
	queue       []Event
	max         int
	closed      bool
	wake        chan struct{} // cap 1: the queue has something
	runEv       *Event        // the latest "run" event published
	announced   bool          // runEv (or an earlier one) reached a hub
	refusal     error         // a refusal not yet returned by Publish
	reported    bool          // a refusal was returned since the last accepted connection
	lastRefusal error

	dropped   atomic.Uint64
	sent      atomic.Uint64
	onControl atomic.Pointer[func(string)]

	ctx    context.Context // cancelled by Close after the flush
	cancel context.CancelFunc
	done   chan struct{}
	flush  chan struct{} // closed by Close: drain then stop
}

// Dial connects to the hub at hubURL (ws://, wss://, http:// or https://;
// with no path, /ws/publish is used) as the publisher of run, authenticating
// with token when it is not empty. It fails if the first connection fails
// (e.g. 401 for a wrong token); later connection losses are redialed in the
// background.
func Dial(ctx context.Context, hubURL, token, run string) (*Publisher, error) {
	if !ValidRunID(run) {
		return nil, fmt.Errorf("%w: %q", ErrRunID, run)
	}
	u, err := url.Parse(hubURL)
	if err != nil {
		return nil, fmt.Errorf("monitor: hub url: %w", err)
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return nil, fmt.Errorf("monitor: hub url %q: want ws://, wss://, http:// or https://", hubURL)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/ws/publish"
	}
	key, err := NewToken()
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("run", run)
	q.Del("token") // sent in the header where possible, kept out of logs
	q.Del("run_key")
	if tokenInQuery { // browsers cannot set headers on websockets
		if token != "" {
			q.Set("token", token)
		}
		q.Set("run_key", key)
	}
	u.RawQuery = q.Encode()
	p := &Publisher{
		url: u.String(), opts: dialOptions(token, key), run: run, max: DefaultPublisherQueue,
		wake: make(chan struct{}, 1), done: make(chan struct{}), flush: make(chan struct{}),
	}
	c, err := p.dial(ctx)
	if err != nil {
		return nil, err
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	go p.loop(c)
	return p, nil
}

func (p *Publisher) dial(ctx context.Context) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, p.url, p.opts)
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			return nil, fmt.Errorf("%w: wrong or missing token (401): %v", ErrRefused, err)
		}
		return nil, fmt.Errorf("monitor: dialing hub: %w", err)
	}
	c.SetReadLimit(maxViewerFrame)
	// The hub answers "ready", or refuses the run with a close frame.
	_, data, err := c.Read(ctx)
	if err != nil {
		c.CloseNow()
		if refused := p.refused(err); refused != nil {
			return nil, refused
		}
		return nil, fmt.Errorf("monitor: hub closed the connection before accepting run %q: %w", p.run, err)
	}
	var m noticeMsg
	if json.Unmarshal(data, &m) != nil || m.Type != "ready" || m.Run != p.run {
		c.CloseNow()
		return nil, fmt.Errorf("monitor: the hub answered %.60q instead of accepting run %q (a lomo monitor of another version?)", data, p.run)
	}
	return c, nil
}

// refused turns the hub's close frame into an error wrapping ErrRefused;
// nil for a connection that just ended.
func (p *Publisher) refused(err error) error {
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		return nil
	}
	switch ce.Code {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway:
		return nil
	case websocket.StatusMessageTooBig:
		return fmt.Errorf("%w: run %q: an event over the hub's frame limit (%s)", ErrRefused, p.run, ce.Reason)
	}
	return fmt.Errorf("%w: run %q: %s (status %d)", ErrRefused, p.run, ce.Reason, int(ce.Code))
}

// refuse records a refusal for Publish to return.
func (p *Publisher) refuse(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastRefusal = err
	if !p.reported {
		p.refusal = err
	}
}

// accepted: a connection was accepted; a later refusal is news again. The
// run is announced again first (the hub may have restarted).
func (p *Publisher) accepted() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reported = false
	if !p.announced || p.runEv == nil || (len(p.queue) > 0 && p.queue[0].Kind == KindRun) {
		return
	}
	ev := *p.runEv
	// A new time: a dashboard that saw the old hub's events tells the
	// new hub's history from them by (seq, time).
	ev.Time = time.Now().UTC()
	p.queue = append([]Event{ev}, p.queue...)
}

// OnControl sets the function that receives the control actions
// ("checkpoint", "stop") viewers send to this run. It runs on the
// publisher's reader goroutine: it must not block.
func (p *Publisher) OnControl(fn func(action string)) {
	p.onControl.Store(&fn)
}

// Publish queues ev for the hub and returns at once. It fills in Run (when
// empty), V (when 0) and Time (when zero) and validates the event; the hub
// assigns Seq. An error wrapping ErrRefused reports that the hub refused the
// publisher or an event since the last such report (ev itself is queued).
func (p *Publisher) Publish(ev Event) error {
	if ev.Run == "" {
		ev.Run = p.run
	}
	if err := ev.complete(); err != nil {
		return err
	}
	if ev.Run != p.run {
		return fmt.Errorf("%w: publisher is for run %q", ErrRunID, p.run)
	}
	if ev.RunInfo != nil { // the only payload encoding/json may refuse (NaN in Config)
		if _, err := json.Marshal(ev.RunInfo); err != nil {
			return fmt.Errorf("monitor: encoding event: %w", err)
		}
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrPublisherClosed
	}
	refusal := p.refusal
	if refusal != nil {
		p.refusal, p.reported = nil, true
	}
	if ev.Kind == KindRun {
		c := ev
		p.runEv = &c
	}
	if len(p.queue) >= p.max {
		i := 0
		for i < len(p.queue) && (p.queue[i].Kind == KindRun || p.queue[i].Kind == KindEnd) {
			i++
		}
		if i == len(p.queue) { // nothing droppable: drop the new event
			p.mu.Unlock()
			p.dropped.Add(1)
			return refusal
		}
		if i == 0 {
			p.queue[0] = Event{}
			p.queue = p.queue[1:]
		} else {
			p.queue = append(p.queue[:i], p.queue[i+1:]...)
		}
		p.dropped.Add(1)
	}
	p.queue = append(p.queue, ev)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return refusal
}

// Dropped is the number of events dropped because the queue was full.
func (p *Publisher) Dropped() uint64 { return p.dropped.Load() }

// Sent is the number of events written to the hub.
func (p *Publisher) Sent() uint64 { return p.sent.Load() }

// Close sends the events still queued (waiting at most 5 s for the hub) and
// closes the connection. Publish fails after Close. It returns an error when
// events were left undelivered, with the hub's last refusal if any.
func (p *Publisher) Close() error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if !already {
		close(p.flush)
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cancel()
		<-p.done
	}
	p.cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.queue); n > 0 {
		if p.lastRefusal != nil {
			return fmt.Errorf("monitor: %d events not delivered: %w", n, p.lastRefusal)
		}
		return fmt.Errorf("monitor: %d events not delivered: the hub was unreachable", n)
	}
	return nil
}

// next takes the oldest queued event, if any.
func (p *Publisher) next() (Event, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		return Event{}, false
	}
	ev := p.queue[0]
	p.queue[0] = Event{}
	p.queue = p.queue[1:]
	return ev, true
}

// requeue puts back an event that could not be sent.
func (p *Publisher) requeue(ev Event) {
	p.mu.Lock()
	p.queue = append([]Event{ev}, p.queue...)
	p.mu.Unlock()
}

func (p *Publisher) loop(c *websocket.Conn) {
	defer close(p.done)
	backoff := 250 * time.Millisecond
	for {
		err := p.serve(c)
		if err == nil { // flushed after Close
			c.Close(websocket.StatusNormalClosure, "publisher closed")
			return
		}
		c.CloseNow()
		if refused := p.refused(err); refused != nil {
			p.refuse(refused)
		}
		for {
			select {
			case <-p.ctx.Done():
				return
			case <-p.flush:
				// Closing while disconnected: try once more, briefly.
			case <-time.After(backoff):
			}
			if p.ctx.Err() != nil {
				return
			}
			c, err = p.dial(p.ctx)
			if err == nil {
				backoff = 250 * time.Millisecond
				p.accepted()
				break
			}
			if errors.Is(err, ErrRefused) {
				p.refuse(err)
			}
			select {
			case <-p.flush: // closed and the hub is unreachable: give up
				return
			default:
			}
			backoff = min(backoff*2, 10*time.Second)
		}
	}
}

// serve writes queued events to c and reads control messages from it until
// the connection fails (error) or Close has flushed the queue (nil).
func (p *Publisher) serve(c *websocket.Conn) error {
	readErr := make(chan error, 1)
	go func() {
		for {
			_, data, err := c.Read(p.ctx)
			if err != nil {
				readErr <- err
				return
			}
			var m controlMsg
			if json.Unmarshal(data, &m) != nil || m.Type != "control" || !ValidAction(m.Action) {
				continue
			}
			if fn := p.onControl.Load(); fn != nil {
				(*fn)(m.Action)
			}
		}
	}()
	for {
		ev, ok := p.next()
		if !ok {
			select {
			case <-p.wake:
				continue
			case <-p.flush:
				if ev, ok = p.next(); !ok {
					return nil
				}
			case err := <-readErr:
				return err
			case <-p.ctx.Done():
				return p.ctx.Err()
			}
		}
		b, err := json.Marshal(ev)
		if err != nil {
			continue // cannot happen: Publish encoded the one payload that may fail
		}
		if err := writeFrame(p.ctx, c, b); err != nil {
			p.requeue(ev)
			// A hub that refused something closes with the reason, which
			// the reader sees: prefer it to the bare write error.
			select {
			case rerr := <-readErr:
				if p.refused(rerr) != nil {
					return rerr
				}
			case <-time.After(time.Second):
			}
			return err
		}
		p.sent.Add(1)
		if ev.Kind == KindRun {
			p.mu.Lock()
			p.announced = true
			p.mu.Unlock()
		}
	}
}
