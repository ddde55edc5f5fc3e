//go:build js

package monitor

import "github.com/coder/websocket"

// tokenInQuery: in a browser (the WASM trainer) a websocket cannot carry
// headers, so the token and the run key go in the URL's token and run_key
// parameters.
const tokenInQuery = true

func dialOptions(string, string) *websocket.DialOptions { return &websocket.DialOptions{} }
