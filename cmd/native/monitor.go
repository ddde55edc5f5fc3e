package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path"
	"strings"
	"time"

	"github.com/lomo-dev/lomo/monitor"
)

func init() {
	register("monitor", "run a standalone hub that trainers publish to and dashboards watch", cmdMonitor)
}

// serveMonitor starts a hub and its HTTP server on addr and prints the
// dashboard URL. Binding beyond loopback needs a token (given or generated).
func serveMonitor(addr, token, run string, hubOpts monitor.HubOptions, origins []string, log io.Writer) (*monitor.Hub, func(), error) {
	ln, tok, err := monitor.Listen(addr, token)
	if err != nil {
		return nil, nil, fmt.Errorf("monitor: listen on %s: %w", addr, err)
	}
	hub := monitor.NewHub(hubOpts)
	srv := &http.Server{Handler: monitor.NewServer(hub, monitor.Options{Token: tok, AllowedOrigins: origins}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	fmt.Fprintf(log, "dashboard: %s\n", monitor.DashboardURL(ln, tok, run))
	stop := func() {
		// Let open dashboards receive the run's last events (its end) first.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		hub.Drain(ctx)
		srv.Shutdown(ctx)
		hub.Close()
	}
	return hub, stop, nil
}

func cmdMonitor(args []string, stdout, stderr io.Writer) error {
	o := newOptions("monitor", stderr)
	fs := o.FlagSet
	listen := fs.String("listen", "127.0.0.1:8080", "address to serve on; beyond loopback a token is required")
	token := fs.String("token", "", "token for viewers, publishers and control (default: generated when not on loopback)")
	maxRuns := fs.Int("max-runs", monitor.DefaultMaxRuns, "runs the hub keeps; a new one beyond replaces the least recently updated run without a publisher")
	runMiB := fs.Int("run-budget", monitor.DefaultMaxRunBytes>>20, "MiB of events kept per run (the oldest dropped first, viewers told)")
	totalMiB := fs.Int("total-budget", monitor.DefaultMaxTotalBytes>>20, "MiB of events kept over all runs")
	endedTTL := fs.Duration("ended-ttl", monitor.DefaultEndedTTL, "how long an ended run stays after its last event")
	idleTTL := fs.Duration("idle-ttl", monitor.DefaultIdleTTL, "how long a run that has not ended stays without a publisher")
	allow := fs.String("allow-origin", "", "comma-separated origins (host, or scheme://host; * wildcards) whose pages may open websockets besides the hub's own, e.g. the page of lomo web elsewhere")
	o.atLeast("max-runs", maxRuns, 1)
	o.atLeast("run-budget", runMiB, 1)
	o.check(func() error {
		if *totalMiB < *runMiB {
			return fmt.Errorf("--total-budget %d: below --run-budget %d", *totalMiB, *runMiB)
		}
		for _, o := range origins(*allow) {
			if _, err := path.Match(o, ""); err != nil {
				return fmt.Errorf("--allow-origin %q: %q is not a valid pattern", *allow, o)
			}
		}
		if *endedTTL <= 0 || *idleTTL <= 0 {
			return fmt.Errorf("--ended-ttl %v, --idle-ttl %v: both must be positive", *endedTTL, *idleTTL)
		}
		return nil
	})
	if err := o.parse(args); err != nil {
		return err
	}
	opts := monitor.HubOptions{MaxRuns: *maxRuns, MaxRunBytes: int64(*runMiB) << 20, MaxTotalBytes: int64(*totalMiB) << 20, EndedTTL: *endedTTL, IdleTTL: *idleTTL}
	_, stop, err := serveMonitor(*listen, *token, "", opts, origins(*allow), stdout)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintln(stdout, "trainers publish to ws://HOST:PORT/ws/publish?run=ID; Ctrl-C stops the hub")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	<-sig
	return errors.New("interrupted")
}

// origins splits the comma-separated --allow-origin.
func origins(list string) []string {
	var out []string
	for _, o := range strings.Split(list, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}
