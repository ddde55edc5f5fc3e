//go:build !js

package web

import "embed"

// wasmFiles is the browser build for `lomo web`. Only native builds embed
// it: the browser build itself imports this package (through monitor), and
// would otherwise embed its own previous build.
//
//go:embed wasm
var wasmFiles embed.FS
