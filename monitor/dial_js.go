//go:build js

package monitor

import "github.com/coder/websocket"

// tokenInQuery: in a browser (the WASM trainer) a websocket cannot carry
// headers, so the token goes in the URL's token parameter.
const tokenInQuery = true

func dialOptions(string) *websocket.DialOptions { return &websocket.DialOptions{} }
