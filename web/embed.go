// Package web holds lomo's pages: the live training dashboard served by
// package monitor, and the fine-tuning page that `lomo web` serves.
//
// The dashboard (dashboard/) is embedded in the Go binary so that `lomo
// monitor` and the trainer serve it without any network access. For the same
// reason its charting library, uPlot (MIT), is vendored under
// dashboard/vendor/ rather than loaded from a CDN: the files are copied from
// node_modules by `npm run vendor` (see package.json) and committed. Its
// chart components (dashboard/charts.js) are shared with the fine-tuning page.
//
// The fine-tuning page (finetune/) runs lomo itself in the browser: the WASM
// build of cmd/wasm, which is built, not committed: `just wasm` writes
// wasm/lomo.wasm and wasm/wasm_exec.js (git-ignored), and the native build
// embeds what is there then (see HasWASM).
package web

import (
	"embed"
	"io/fs"
)

//go:embed dashboard finetune
var files embed.FS

// Dashboard is the dashboard's file tree, rooted at dashboard/ (index.html at
// its top).
var Dashboard fs.FS

// Finetune is the fine-tuning page's file tree (index.html at its top); it
// loads the dashboard's charts from "../" and lomo.wasm and wasm_exec.js
// from beside itself (WASM).
var Finetune fs.FS

// WASM holds lomo.wasm and wasm_exec.js when `just wasm` built them before
// this binary was built.
var WASM fs.FS

func init() {
	Dashboard = sub(files, "dashboard")
	Finetune = sub(files, "finetune")
	WASM = sub(wasmFiles, "wasm")
}

func sub(f embed.FS, dir string) fs.FS {
	s, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // cannot happen: dir is a valid, embedded path
	}
	return s
}

// HasWASM reports whether the WASM build was embedded.
func HasWASM() bool {
	for _, name := range []string{"lomo.wasm", "wasm_exec.js"} {
		if _, err := fs.Stat(WASM, name); err != nil {
			return false
		}
	}
	return true
}
