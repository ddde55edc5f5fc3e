package web

import "embed"

// wasmFiles is empty in the browser build (see wasm_embed.go).
var wasmFiles embed.FS
