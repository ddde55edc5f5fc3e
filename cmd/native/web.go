package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/lomo-dev/lomo/monitor"
	"github.com/lomo-dev/lomo/web"
)

func init() {
	register("web", "serve the page that fine-tunes in the browser (lomo as WASM), with a monitoring hub", cmdWeb)
}

// errNoWASM: this binary was built before the WASM build existed.
var errNoWASM = errors.New("this lomo was built without the page's WASM build: run `just web` (it builds the WASM, then lomo, and serves), " +
	"or build it yourself: GOOS=js GOARCH=wasm go build -o web/wasm/lomo.wasm ./cmd/wasm && cp \"$(go env GOROOT)/lib/wasm/wasm_exec.js\" web/wasm/, then go build ./cmd/native")

func cmdWeb(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("web", stderr)
	listen := fs.String("listen", "127.0.0.1:8090", "address to serve on; beyond loopback the hub needs a token (WebGPU needs https there too)")
	token := fs.String("token", "", "token for the hub's publishers, viewers and control (default: generated when not on loopback)")
	if err := parse(fs, args); err != nil {
		return err
	}
	h, err := newWebHandler()
	if err != nil {
		return err
	}
	ln, tok, err := monitor.Listen(*listen, *token)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	hub := monitor.NewHub(monitor.HubOptions{})
	mux := http.NewServeMux()
	mux.Handle("/finetune/", h)
	mux.Handle("/", monitor.NewServer(hub, monitor.Options{Token: tok}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	dash := monitor.DashboardURL(ln, tok, "browser")
	page := strings.Replace(monitor.DashboardURL(ln, tok, ""), "/?", "/finetune/?", 1)
	if !strings.Contains(page, "/finetune/") {
		page = strings.TrimSuffix(page, "/") + "/finetune/"
	}
	fmt.Fprintf(stdout, "fine-tune in the browser: %s\n", page)
	fmt.Fprintf(stdout, "dashboard of the page's runs (when it publishes): %s\n", dash)
	fmt.Fprintln(stdout, "Ctrl-C stops the server")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	hub.Close()
	return nil
}

// webHandler serves the page under /finetune/: its files, and the WASM
// build beside them (gzip-compressed once, at start, for browsers that
// accept it: about a third of its size).
type webHandler struct {
	files   http.Handler
	wasm    []byte
	wasmGz  []byte
	wasmMod time.Time
}

func newWebHandler() (*webHandler, error) {
	if !web.HasWASM() {
		return nil, errNoWASM
	}
	b, err := fs.ReadFile(web.WASM, "lomo.wasm")
	if err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return &webHandler{files: http.FileServerFS(overlay{web.Finetune, web.WASM}), wasm: b, wasmGz: gz.Bytes(), wasmMod: time.Now()}, nil
}

func (h *webHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/finetune/")
	w.Header().Set("Cache-Control", "no-cache")
	if name != "lomo.wasm" {
		http.StripPrefix("/finetune", h.files).ServeHTTP(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/wasm")
	w.Header().Set("Vary", "Accept-Encoding")
	body := h.wasm
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") && r.Header.Get("Range") == "" {
		w.Header().Set("Content-Encoding", "gzip")
		body = h.wasmGz
	}
	http.ServeContent(w, r, "lomo.wasm", h.wasmMod, bytes.NewReader(body))
}

// overlay reads a name from the first file system that has it.
type overlay []fs.FS

func (o overlay) Open(name string) (fs.File, error) {
	var first error
	for _, f := range o {
		file, err := f.Open(name)
		if err == nil {
			return file, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}
