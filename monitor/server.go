package monitor

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/lomo-dev/lomo/web"
)

// DefaultMaxFrameBytes is the default limit on one frame a publisher sends.
const DefaultMaxFrameBytes = 1 << 20

// maxViewerFrame bounds a viewer's frames (control messages are tiny).
const maxViewerFrame = 4096

// writeTimeout bounds one frame write to a peer.
const writeTimeout = 10 * time.Second

// Close codes the hub sends (4000-4999 is the private range).
const (
	// StatusTooSlow: a viewer dropped because its queue filled up (it did
	// not read fast enough).
	StatusTooSlow websocket.StatusCode = 4001
	// StatusRunReset: the run's history was discarded (the trainer serving
	// the hub took over a run id first created by a remote publisher); a
	// viewer that reconnects gets the new history.
	StatusRunReset websocket.StatusCode = 4002
	// StatusRunRefused: the hub refuses this publisher's events for the run
	// (it belongs to another publisher, the hub is full, an event is too
	// big); the reason says which.
	StatusRunRefused websocket.StatusCode = 4003
	// StatusRunGone: the run left the hub (expired, or made room for a new
	// one); a viewer that reconnects waits for a run of that id.
	StatusRunGone websocket.StatusCode = 4004
)

// RunKeyHeader carries a publisher's run key (the query parameter run_key
// does too, for browsers). The first publisher of a run id owns the run;
// the hub refuses any other key for it (see Hub).
const RunKeyHeader = "Lomo-Run-Key"

// Bounds of a run key's length; Dial makes 32 hex digits (128 bits).
const (
	minRunKey = 16
	maxRunKey = 256
)

// Options configures the HTTP server of NewServer.
type Options struct {
	// Token, when set, is required from viewers, publishers and control
	// requests, as "Authorization: Bearer TOKEN" or the query parameter
	// token=TOKEN. When empty, the server accepts anyone but only requests
	// whose Host is a loopback name (see Listen: a non-loopback listener
	// always gets a token), which defeats DNS rebinding.
	Token string
	// AllowedOrigins are extra Origin host patterns (path.Match syntax, e.g.
	// "dash.example.com" or "https://*.example.com") allowed to open
	// websockets, besides the same origin.
	AllowedOrigins []string
	// MaxFrameBytes bounds one publisher frame (default 1 MiB); a larger
	// frame closes that connection with status 1009 (message too big).
	MaxFrameBytes int64
}

// Server serves the dashboard, the run list and the websockets of a Hub.
//
// Routes:
//
//	GET  /                      the dashboard (package web)
//	GET  /api/runs              JSON []RunSummary
//	POST /api/control?run=ID&action=checkpoint|stop
//	GET  /ws/view?run=ID        websocket: events to the viewer; the viewer
//	                            may send {"type":"control","action":"stop"}
//	GET  /ws/publish?run=ID     websocket: events from a remote trainer, with
//	                            its run key (header Lomo-Run-Key or run_key=);
//	                            control messages go back to it
//
// Besides events and acknowledgements, the hub sends these notices:
//
//	{"type":"waiting","run":ID}   to a viewer of a run the hub does not have:
//	                              its events follow once a publisher creates it
//	{"type":"dropped","run":ID,"events":N,"reason":"..."}
//	                              to a viewer, before the history: N older
//	                              events of the run were dropped (budgets)
//	{"type":"ready","run":ID}     to a publisher: the run is its own; events
//	                              may follow. A refused publisher gets a close
//	                              frame with StatusRunRefused and the reason.
type Server struct {
	hub    *Hub
	opts   Options
	tokSum [32]byte
	static http.Handler
	mux    *http.ServeMux
}

// NewServer returns the HTTP handler for hub.
func NewServer(hub *Hub, opts Options) *Server {
	if opts.MaxFrameBytes <= 0 {
		opts.MaxFrameBytes = DefaultMaxFrameBytes
	}
	s := &Server{hub: hub, opts: opts, static: http.FileServerFS(web.Dashboard)}
	if opts.Token != "" {
		s.tokSum = sha256.Sum256([]byte(opts.Token))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/runs", s.guard(s.serveRuns))
	mux.HandleFunc("POST /api/control", s.guard(s.serveControl))
	mux.HandleFunc("GET /ws/view", s.guard(s.serveView))
	mux.HandleFunc("GET /ws/publish", s.guard(s.servePublish))
	mux.HandleFunc("GET /", s.serveStatic)
	s.mux = mux
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.opts.Token == "" && !loopbackHost(r.Host) {
		http.Error(w, "monitor: without a token only loopback host names are served", http.StatusForbidden)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) serveStatic(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer") // the page URL may carry ?token=
	s.static.ServeHTTP(w, r)
}

// loopbackHost reports whether an HTTP Host header names the loopback
// interface: localhost, 127.0.0.0/8 or ::1, with any port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// authorized checks the request's token in constant time.
func (s *Server) authorized(r *http.Request) bool {
	if s.opts.Token == "" {
		return true
	}
	tok := r.URL.Query().Get("token")
	if a := r.Header.Get("Authorization"); a != "" {
		if len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
			tok = strings.TrimSpace(a[7:])
		}
	}
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], s.tokSum[:]) == 1
}

func (s *Server) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="lomo monitor"`)
			http.Error(w, "monitor: missing or wrong token", http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}

// originAllowed applies the websocket origin rule to plain HTTP requests: no
// Origin header (not a browser), the same origin, or an allowed pattern.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, p := range s.opts.AllowedOrigins {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}

func (s *Server) serveRuns(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(s.hub.Runs())
}

func (s *Server) serveControl(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		http.Error(w, "monitor: origin not allowed", http.StatusForbidden)
		return
	}
	run, action := r.URL.Query().Get("run"), r.URL.Query().Get("action")
	if !ValidRunID(run) || !ValidAction(action) {
		http.Error(w, "monitor: need run=ID and action=checkpoint|stop", http.StatusBadRequest)
		return
	}
	if err := s.hub.Control(run, action); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) accept(w http.ResponseWriter, r *http.Request) (*websocket.Conn, string, bool) {
	run := r.URL.Query().Get("run")
	if !ValidRunID(run) {
		http.Error(w, "monitor: missing or invalid run", http.StatusBadRequest)
		return nil, "", false
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: s.opts.AllowedOrigins})
	if err != nil {
		return nil, "", false // Accept wrote the response (403 for a bad origin)
	}
	return c, run, true
}

// controlMsg is the control message, both from viewers to the hub and from
// the hub to a remote trainer.
type controlMsg struct {
	Type   string `json:"type"` // "control"
	Action string `json:"action"`
}

// ackMsg answers a viewer's control message.
type ackMsg struct {
	Type   string `json:"type"` // "ack"
	Action string `json:"action"`
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
}

// noticeMsg is a message about a run rather than one of its events (see
// Server).
type noticeMsg struct {
	Type   string `json:"type"` // "waiting", "dropped", "ready"
	Run    string `json:"run"`
	Events uint64 `json:"events,omitempty"`
	Reason string `json:"reason,omitempty"`
}

func notice(m noticeMsg) []byte {
	b, _ := json.Marshal(m)
	return b
}

// errPolicy marks a frame that violates the protocol.
var errPolicy = errors.New("monitor: bad frame")

// handleViewerFrame handles one frame a viewer sent: a control message. It
// returns the acknowledgement to send back, or an error wrapping errPolicy
// for a frame that must close the connection.
func handleViewerFrame(hub *Hub, run string, typ websocket.MessageType, data []byte) ([]byte, error) {
	if typ != websocket.MessageText {
		return nil, fmt.Errorf("%w: binary frame", errPolicy)
	}
	var m controlMsg
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", errPolicy, err)
	}
	if m.Type != "control" {
		return nil, fmt.Errorf("%w: unknown message type", errPolicy)
	}
	ack := ackMsg{Type: "ack", Action: m.Action, OK: true}
	if err := hub.Control(run, m.Action); err != nil {
		ack.OK, ack.Error = false, err.Error()
		if errors.Is(err, ErrAction) {
			ack.Action = ""
		}
	}
	b, _ := json.Marshal(ack)
	return b, nil
}

// handlePublishFrame handles one frame that the remote publisher rp of run
// r sent: an event of the run. It returns an error wrapping errPolicy for a
// frame that breaks the protocol, and the hub's error when it refuses the
// event.
func handlePublishFrame(hub *Hub, r *runState, rp *remotePub, typ websocket.MessageType, data []byte) error {
	if typ != websocket.MessageText {
		return fmt.Errorf("%w: binary frame", errPolicy)
	}
	var ev Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return fmt.Errorf("%w: %v", errPolicy, err)
	}
	if ev.Run == "" {
		ev.Run = r.id
	}
	if ev.Run != r.id {
		return fmt.Errorf("%w: event for another run", errPolicy)
	}
	if err := ev.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errPolicy, err)
	}
	return hub.publishRemote(r, rp, ev)
}

// runKeyOf returns the run key a publisher sent.
func runKeyOf(r *http.Request) string {
	if k := r.Header.Get(RunKeyHeader); k != "" {
		return k
	}
	return r.URL.Query().Get("run_key")
}

// closeReason fits an error into a close frame's reason (at most 123 bytes).
func closeReason(err error) string {
	s := strings.TrimPrefix(err.Error(), "monitor: ")
	if len(s) > 120 {
		s = s[:120]
	}
	return strings.ToValidUTF8(s, "?")
}

func writeFrame(ctx context.Context, c *websocket.Conn, b []byte) error {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	return c.Write(ctx, websocket.MessageText, b)
}

func (s *Server) serveView(w http.ResponseWriter, r *http.Request) {
	// Counted as joining from before the upgrade (when the viewer's dial
	// returns) to its first subscription attempt, so that Drain does not
	// miss a viewer that connected just before it.
	s.hub.joining.Add(1)
	joining := true
	joined := func() {
		if joining {
			joining = false
			s.hub.joining.Add(-1)
		}
	}
	defer joined()
	c, run, ok := s.accept(w, r)
	if !ok {
		return
	}
	c.SetReadLimit(min(s.opts.MaxFrameBytes, maxViewerFrame))
	defer c.CloseNow()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	acks := make(chan []byte, 4)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			typ, data, err := c.Read(ctx)
			if err != nil {
				return // closed, or too big (the library sent 1009)
			}
			ack, err := handleViewerFrame(s.hub, run, typ, data)
			if err != nil {
				c.Close(websocket.StatusPolicyViolation, closeReason(err))
				return
			}
			select {
			case acks <- ack:
			default: // a viewer flooding control messages loses acks
			}
		}
	}()

	// Viewing never creates a run: the viewer is told, and waits for one.
	var rep replay
	var sub *subscriber
	var err error
	for told := false; ; {
		var created <-chan struct{}
		rep, sub, created, err = s.hub.subscribe(run)
		joined()
		if !errors.Is(err, errNoRun) {
			break
		}
		if !told {
			told = true
			if writeFrame(ctx, c, notice(noticeMsg{Type: "waiting", Run: run})) != nil {
				return
			}
		}
	wait:
		for {
			select {
			case <-created:
				break wait
			case b := <-acks:
				if writeFrame(ctx, c, b) != nil {
					return
				}
			case <-readDone:
				return
			case <-s.hub.done:
				c.Close(websocket.StatusGoingAway, "hub shutting down")
				return
			}
		}
	}
	if err != nil {
		c.Close(websocket.StatusTryAgainLater, closeReason(err))
		return
	}
	defer s.hub.unsubscribe(sub)

	// On a kick by the hub, close with a status saying why. If a write is
	// stuck on a stalled peer, Close gives up on the close frame after a
	// few seconds and tears the connection down, which ends the write. The
	// handler waits for it before cancelling ctx (which would cut the
	// connection without a status).
	exited, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-sub.kick:
		case <-exited:
		}
		select {
		case <-sub.kick:
			switch sub.reason {
			case kickShutdown:
				c.Close(websocket.StatusGoingAway, "hub shutting down")
			case kickReset:
				c.Close(StatusRunReset, closeReason(errors.New(sub.text)))
			case kickGone:
				c.Close(StatusRunGone, closeReason(errors.New(sub.text)))
			default:
				c.Close(StatusTooSlow, "viewer too slow")
			}
		default:
		}
	}()
	defer func() {
		close(exited)
		<-watched
	}()

	if rep.evicted > 0 {
		if writeFrame(ctx, c, notice(noticeMsg{Type: "dropped", Run: run, Events: rep.evicted, Reason: rep.why})) != nil {
			c.CloseNow()
			return
		}
	}
	for _, b := range rep.frames {
		select {
		case <-sub.kick:
			return
		case <-readDone:
			return
		default:
		}
		if err := writeFrame(ctx, c, b); err != nil {
			c.CloseNow()
			return
		}
	}
	rs := sub.run
	for {
		select {
		case <-sub.notify:
		case b := <-acks:
			if err := writeFrame(ctx, c, b); err != nil {
				c.CloseNow()
				return
			}
			continue
		case <-sub.kick:
			return
		case <-readDone:
			return
		}
		for {
			frames, last, ok := rs.next(sub, 256)
			if !ok { // fell out of the history: too slow
				rs.dropSlow(sub)
				return
			}
			if len(frames) == 0 {
				break
			}
			first := last - uint64(len(frames))
			for i, b := range frames {
				if err := writeFrame(ctx, c, b); err != nil {
					c.CloseNow()
					return
				}
				sub.cursor.Store(first + uint64(i) + 1)
			}
		}
	}
}

func (s *Server) servePublish(w http.ResponseWriter, r *http.Request) {
	c, run, ok := s.accept(w, r)
	if !ok {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(s.opts.MaxFrameBytes)
	// Refusals are close frames, which a browser's publisher can read (it
	// sees no HTTP status).
	key := runKeyOf(r)
	if len(key) < minRunKey || len(key) > maxRunKey {
		c.Close(StatusRunRefused, fmt.Sprintf("a publisher needs a run key of %d to %d characters (header %s or run_key=)",
			minRunKey, maxRunKey, RunKeyHeader))
		return
	}

	// Control actions for this run go back to the trainer over this
	// connection; a full queue drops them (a trainer that does not read).
	ctrl := make(chan string, 16)
	rp := &remotePub{kick: make(chan struct{}), ctrl: func(a string) {
		select {
		case ctrl <- a:
		default:
		}
	}}
	rs, err := s.hub.attach(run, key, rp)
	if err != nil {
		c.Close(StatusRunRefused, closeReason(err))
		return
	}
	defer s.hub.detach(rs, rp)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if writeFrame(ctx, c, notice(noticeMsg{Type: "ready", Run: run})) != nil {
		return
	}
	go func() {
		for {
			select {
			case a := <-ctrl:
				b, _ := json.Marshal(controlMsg{Type: "control", Action: a})
				if err := writeFrame(ctx, c, b); err != nil {
					return
				}
			case <-rp.kick: // the run was taken from this publisher
				c.Close(StatusRunRefused, closeReason(errors.New(rp.reason)))
				return
			case <-ctx.Done():
				return
			}
		}
	}()

	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return // peer closed, or too big (the library sent 1009)
		}
		if err := handlePublishFrame(s.hub, rs, rp, typ, data); err != nil {
			code := StatusRunRefused
			if errors.Is(err, errPolicy) {
				code = websocket.StatusPolicyViolation
			}
			c.Close(code, closeReason(err))
			return
		}
	}
}
