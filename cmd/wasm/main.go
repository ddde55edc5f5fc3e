//go:build js

// Command wasm is lomo in the browser: the packages of the native CLI
// (train, nn, optim, data, hf, gpu, wgsl) compiled to WASM and exposed to
// JavaScript as a global `lomo` object whose methods return promises:
//
//	lomo.device()                  the adapter: name, features, limits
//	lomo.load(files)               a Hugging Face model folder as File objects, or none: the built-in model
//	lomo.generate(prompt, opts)    the continuation, as `lomo generate` prints it
//	lomo.train(config, opts)       a run with the YAML keys of `lomo train`; resolves to its summary
//	lomo.stop()                    stop the run after the current step
//	lomo.on(kind, fn)              the run's events, in the monitor schema ("*" for all); returns an unsubscribe function
//	lomo.evaluate()                the current model on the run's (or the built-in) evaluation task
//	lomo.save()                    the fine-tuned model as File objects (Hugging Face layout)
//
// Files live in an in-memory filesystem (web/finetune/memfs.js), which the
// page installs as globalThis.fs before wasm_exec.js, so that the trainer,
// the loaders and the writers are those of the CLI, unchanged. The page must
// also set globalThis.wasm to the instantiated module before go.run: the
// WebGPU binding reads WASM memory through it.
//
// Every method runs on a goroutine of its own: WebGPU calls wait on
// promises, which would deadlock inside a JavaScript callback.
package main

import (
	"syscall/js"
)

func main() {
	e := newEngine()
	js.Global().Set("lomo", e.object())
	js.Global().Call("dispatchEvent", js.Global().Get("Event").New("lomo-ready"))
	select {} // serve calls until the page goes away
}
