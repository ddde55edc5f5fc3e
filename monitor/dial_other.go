//go:build !js

package monitor

import (
	"net/http"

	"github.com/coder/websocket"
)

// tokenInQuery: native publishers send the token in a header.
const tokenInQuery = false

func dialOptions(token string) *websocket.DialOptions {
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	return &websocket.DialOptions{HTTPHeader: h}
}
