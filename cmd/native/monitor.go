package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/lomo-dev/lomo/monitor"
)

func init() {
	register("monitor", "run a standalone hub that trainers publish to and dashboards watch", cmdMonitor)
}

// serveMonitor starts a hub and its HTTP server on addr and prints the
// dashboard URL. Binding beyond loopback needs a token (given or generated).
func serveMonitor(addr, token, run string, log io.Writer) (*monitor.Hub, func(), error) {
	ln, tok, err := monitor.Listen(addr, token)
	if err != nil {
		return nil, nil, fmt.Errorf("monitor: listen on %s: %w", addr, err)
	}
	hub := monitor.NewHub(monitor.HubOptions{})
	srv := &http.Server{Handler: monitor.NewServer(hub, monitor.Options{Token: tok}), ReadHeaderTimeout: 10 * time.Second}
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
	fs := newFlags("monitor", stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address to serve on; beyond loopback a token is required")
	token := fs.String("token", "", "token for viewers, publishers and control (default: generated when not on loopback)")
	if err := parse(fs, args); err != nil {
		return err
	}
	_, stop, err := serveMonitor(*listen, *token, "", stdout)
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
