//go:build !js

package monitor

import (
	"net/http"

	"github.com/coder/websocket"
)

// tokenInQuery: native publishers send the token and the run key in headers.
const tokenInQuery = false

func dialOptions(token, runKey string) *websocket.DialOptions {
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	h.Set(RunKeyHeader, runKey)
	return &websocket.DialOptions{HTTPHeader: h}
}
