package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/web"
)

// TestWeb: a lomo built without the WASM says how to build it and serves
// nothing; one built with it serves the page and the WASM, compressed for
// browsers that accept it.
func TestWeb(t *testing.T) {
	if !web.HasWASM() {
		code, stdout, errs := lomo(t, "web", "--listen", "127.0.0.1:0")
		if code != 1 || stdout != "" || !strings.Contains(errs, "just web") || !strings.Contains(errs, "GOOS=js GOARCH=wasm go build") {
			t.Errorf("lomo web without the WASM build: exit %d, stdout %q, stderr %q; want exit 1 saying how to build it", code, stdout, errs)
		}
		t.Log("this lomo embeds no WASM build (`just wasm` makes one): checked the message only")
		return
	}
	h, err := newWebHandler()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, tc := range []struct {
		path, encoding, wantType, wantEncoding string
	}{
		{"/finetune/", "", "text/html", ""},
		{"/finetune/lomo.wasm", "gzip", "application/wasm", "gzip"},
		{"/finetune/lomo.wasm", "", "application/wasm", ""},
	} {
		req, _ := http.NewRequest("GET", srv.URL+tc.path, nil)
		req.Header.Set("Accept-Encoding", tc.encoding) // empty: no transparent gzip
		res, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), tc.wantType) || res.Header.Get("Content-Encoding") != tc.wantEncoding || len(body) == 0 {
			t.Errorf("GET %s (Accept-Encoding %q): %d, type %q, encoding %q, %d bytes", tc.path, tc.encoding, res.StatusCode, res.Header.Get("Content-Type"), res.Header.Get("Content-Encoding"), len(body))
		}
		if tc.path == "/finetune/lomo.wasm" && tc.encoding == "" && !strings.HasPrefix(string(body), "\x00asm") {
			t.Errorf("GET %s: not a WASM module", tc.path)
		}
	}
}
