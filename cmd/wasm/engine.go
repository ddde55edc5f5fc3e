//go:build js

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall/js"

	"github.com/lomo-dev/lomo/data"
	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/hf/tokenizer"
	"github.com/lomo-dev/lomo/monitor"
	"github.com/lomo-dev/lomo/nn"
	"github.com/lomo-dev/lomo/train"
)

// errNoWebGPU replaces gpu.ErrNoAdapter, whose hint is for native systems.
var errNoWebGPU = errors.New("no WebGPU: this browser offers no WebGPU adapter (navigator.gpu is missing, or it returned no adapter). Use a browser with WebGPU enabled: Chrome or Edge 113 or later, Safari 26, Firefox 141 on Windows; Chromium on Linux needs --enable-unsafe-webgpu (and --enable-features=Vulkan on some systems)")

// engine is the state behind the lomo object: one device, the loaded model
// and the last training run. Operations that use the device run one at a
// time; a second one while another runs is refused (the page must not wait
// on a call that cannot start).
type engine struct {
	mu   sync.Mutex
	busy string // the operation in progress, "" when idle

	d     *gpu.Device
	dir   string // memfs folder of the loaded model
	name  string // what the model was loaded from
	model *nn.Llama
	tok   *tokenizer.Tokenizer
	tr    *train.Trainer // the last run; its model is e.model once it ends
	loads int
	runs  int

	running atomic.Pointer[train.Trainer] // the run in progress, for stop

	lmu       sync.Mutex
	listeners map[string][]*listener
}

type listener struct{ fn js.Value }

func newEngine() *engine {
	return &engine{listeners: map[string][]*listener{}}
}

// object is the global lomo object.
func (e *engine) object() js.Value {
	o := js.Global().Get("Object").New()
	method := func(name string, fn func(args []js.Value) (any, error)) {
		o.Set(name, js.FuncOf(func(this js.Value, args []js.Value) any {
			return promise("lomo."+name, func() (any, error) { return fn(args) })
		}))
	}
	method("device", func([]js.Value) (any, error) { return e.deviceInfo() })
	method("load", func(a []js.Value) (any, error) { return e.load(arg(a, 0)) })
	method("generate", func(a []js.Value) (any, error) { return e.generate(arg(a, 0), arg(a, 1)) })
	method("train", func(a []js.Value) (any, error) { return e.train(arg(a, 0), arg(a, 1)) })
	method("evaluate", func([]js.Value) (any, error) { return e.evaluate() })
	method("save", func([]js.Value) (any, error) { return e.save() })
	method("memory", func([]js.Value) (any, error) { return e.memory() })
	// stop and on touch no device: they answer at once.
	o.Set("stop", js.FuncOf(func(this js.Value, args []js.Value) any {
		tr := e.running.Load()
		if tr != nil {
			tr.RequestStop()
		}
		return js.Global().Get("Promise").Call("resolve", tr != nil)
	}))
	o.Set("on", js.FuncOf(func(this js.Value, args []js.Value) any {
		kind, fn := arg(args, 0), arg(args, 1)
		if kind.Type() != js.TypeString || fn.Type() != js.TypeFunction {
			panic(js.Global().Get("TypeError").New("lomo.on(kind, fn): kind is an event kind (run, step, eval, sample, end, error) or \"*\", fn a function"))
		}
		return e.subscribe(kind.String(), fn)
	}))
	return o
}

func arg(args []js.Value, i int) js.Value {
	if i < len(args) {
		return args[i]
	}
	return js.Undefined()
}

// promise runs fn on a goroutine and settles a promise with its result
// (converted to JavaScript through JSON unless it is a js.Value) or its
// error. A panic becomes a rejection, so that no promise is left pending.
func promise(name string, fn func() (any, error)) js.Value {
	var executor js.Func
	executor = js.FuncOf(func(this js.Value, args []js.Value) any {
		resolve, reject := args[0], args[1]
		go func() {
			defer executor.Release()
			v, err := safely(fn)
			if err == nil {
				var jv js.Value
				if jv, err = toJS(v); err == nil {
					resolve.Invoke(jv)
					return
				}
			}
			reject.Invoke(jsError(name, err))
		}()
		return nil
	})
	return js.Global().Get("Promise").New(executor)
}

func safely(fn func() (any, error)) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "lomo: panic: %v\n%s", r, debug.Stack())
			err = fmt.Errorf("internal error: %v", r)
		}
	}()
	return fn()
}

func toJS(v any) (js.Value, error) {
	switch v := v.(type) {
	case js.Value:
		return v, nil
	case nil:
		return js.Undefined(), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return js.Undefined(), err
	}
	return js.Global().Get("JSON").Call("parse", string(b)), nil
}

// jsError is an Error whose message is lomo's, as the CLI would print it,
// with a code the page can act on.
func jsError(name string, err error) js.Value {
	e := js.Global().Get("Error").New(err.Error())
	e.Set("op", name)
	code := "error"
	var ge *gpu.Error
	switch {
	case errors.Is(err, errNoWebGPU):
		code = "no-webgpu"
	case errors.Is(err, errBusy):
		code = "busy"
	case errors.Is(err, gpu.ErrDeviceLost):
		code = "device-lost"
	case strings.Contains(err.Error(), "larger than this device's"):
		code = "too-large"
	case errors.As(err, &ge):
		code = "gpu"
	}
	e.Set("code", code)
	return e
}

var errBusy = errors.New("busy")

// acquire marks the engine busy with op, or says what it is busy with.
func (e *engine) acquire(op string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.busy != "" {
		hint := "wait for it to finish"
		if e.busy == "train" {
			hint = "lomo.stop() ends it after the current step"
		}
		return fmt.Errorf("%w: lomo.%s is running (%s)", errBusy, e.busy, hint)
	}
	e.busy = op
	return nil
}

func (e *engine) release() {
	e.mu.Lock()
	e.busy = ""
	e.mu.Unlock()
}

// device opens the adapter's device on first use.
func (e *engine) device() (*gpu.Device, error) {
	if e.d != nil {
		return e.d, nil
	}
	d, err := gpu.Open(gpu.Options{})
	if errors.Is(err, gpu.ErrNoAdapter) {
		return nil, errNoWebGPU
	}
	if err != nil {
		return nil, err
	}
	e.d = d
	fmt.Fprintf(os.Stderr, "lomo: adapter %s (%s, %s)\n", d.Info.Name, d.Info.Type, d.Info.Backend)
	return d, nil
}

// deviceInfo describes the adapter and the limits the device was granted.
func (e *engine) deviceInfo() (any, error) {
	if err := e.acquire("device"); err != nil {
		return nil, err
	}
	defer e.release()
	d, err := e.device()
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"name": d.Info.Name, "type": d.Info.Type, "backend": d.Info.Backend, "driver": d.Info.Driver,
		"software": d.Info.Software, "features": d.Info.Features, "caps": d.Caps,
		"limits": d.Limits(), "adapter_limits": d.Info.Limits,
	}, nil
}

// memfs is the in-memory filesystem of web/finetune/memfs.js.
func memfs() (js.Value, error) {
	m := js.Global().Get("fs").Get("memfs")
	if !m.Truthy() {
		return js.Undefined(), errors.New("the in-memory filesystem is missing: the page must load memfs.js before wasm_exec.js")
	}
	return m, nil
}

// await waits for a promise (on a goroutine, never in a callback).
func await(p js.Value) (js.Value, error) {
	type result struct {
		v   js.Value
		err error
	}
	ch := make(chan result, 1)
	var ok, fail js.Func
	ok = js.FuncOf(func(this js.Value, args []js.Value) any { ch <- result{v: arg(args, 0)}; return nil })
	fail = js.FuncOf(func(this js.Value, args []js.Value) any {
		msg := arg(args, 0)
		if m := msg.Get("message"); m.Type() == js.TypeString {
			msg = m
		}
		ch <- result{err: errors.New(msg.String())}
		return nil
	})
	defer ok.Release()
	defer fail.Release()
	p.Call("then", ok, fail)
	r := <-ch
	return r.v, r.err
}

// putFile copies a File (or Blob) into memfs at p.
func putFile(fs js.Value, p string, f js.Value) error {
	ab, err := await(f.Call("arrayBuffer"))
	if err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	fs.Call("put", p, js.Global().Get("Uint8Array").New(ab))
	return nil
}

// fileName is a File's name without any folder (a folder picked with
// webkitdirectory gives "folder/config.json" as its relative path).
func fileName(f js.Value, fallback string) string {
	if n := f.Get("name"); n.Type() == js.TypeString && n.String() != "" {
		return path.Base(n.String())
	}
	return fallback
}

// modelInfo is what load resolves to.
type modelInfo struct {
	Name      string `json:"name"`
	Params    int64  `json:"params"`
	Layers    int    `json:"layers"`
	Hidden    int    `json:"hidden"`
	Heads     int    `json:"heads"`
	Vocab     int    `json:"vocab"`
	DType     string `json:"dtype"`      // storage on the device
	FileDType string `json:"file_dtype"` // torch_dtype of config.json, else the weights' (nn.FileDType)
}

func (e *engine) info() modelInfo {
	c := e.model.Cfg
	file := c.TorchDType
	if file == "" {
		file = nn.TorchDType(nn.FileDType(e.dir, c))
	}
	return modelInfo{Name: e.name, Params: c.NumParams(), Layers: c.NumLayers, Hidden: c.HiddenSize, Heads: c.NumHeads,
		Vocab: c.VocabSize, DType: e.model.DType.String(), FileDType: file}
}

// load reads a model folder given as File objects (or the built-in model
// when files is empty) into memfs and onto the device, as `lomo generate
// --model DIR` does.
func (e *engine) load(files js.Value) (any, error) {
	if err := e.acquire("load"); err != nil {
		return nil, err
	}
	defer e.release()
	if err := e.loadLocked(files); err != nil {
		return nil, err
	}
	return e.info(), nil
}

func (e *engine) loadLocked(files js.Value) error {
	d, err := e.device()
	if err != nil {
		return err
	}
	e.loads++
	dir := fmt.Sprintf("/models/%d", e.loads)
	name := "built-in"
	if files.Truthy() && files.Length() > 0 {
		fs, err := memfs()
		if err != nil {
			return err
		}
		list := js.Global().Get("Array").Call("from", files)
		var names []string
		for i := 0; i < list.Length(); i++ {
			f := list.Index(i)
			n := fileName(f, fmt.Sprintf("file%d", i))
			if err := putFile(fs, dir+"/"+n, f); err != nil {
				return err
			}
			names = append(names, n)
		}
		name = strings.Join(names, ", ")
		if rel := list.Index(0).Get("webkitRelativePath"); rel.Type() == js.TypeString && strings.Contains(rel.String(), "/") {
			name = path.Dir(rel.String())
		}
	} else if err := data.WriteDemoModel(dir); err != nil {
		return err
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		return err
	}
	m, err := loadModel(d, dir)
	if err != nil {
		return err
	}
	if tok.VocabSize() > m.Cfg.VocabSize {
		m.Release()
		return fmt.Errorf("tokenizer has %d tokens, model vocabulary %d", tok.VocabSize(), m.Cfg.VocabSize)
	}
	e.dropModel()
	e.dir, e.name, e.model, e.tok = dir, name, m, tok
	return nil
}

// loadModel loads the model of dir in its file's dtype (nn.FileDType), as
// a run with dtype auto does: a 16-bit checkpoint takes its own size of
// the tab's memory, not twice it as f32.
func loadModel(d *gpu.Device, dir string) (*nn.Llama, error) {
	c, err := config.Load(dir)
	if err != nil {
		return nil, err
	}
	return nn.LoadLlama(d, dir, nn.FileDType(dir, c))
}

// dropModel releases the current model and run.
func (e *engine) dropModel() {
	if e.tr != nil {
		e.tr.Release() // its model is e.model
		e.tr = nil
	} else if e.model != nil {
		e.model.Release()
	}
	e.model = nil
}

// ensureModel loads the built-in model when none is loaded.
func (e *engine) ensureModel() error {
	if e.model != nil {
		return nil
	}
	return e.loadLocked(js.Undefined())
}

// generate continues prompt as `lomo generate --prompt P` does, with its
// defaults: greedy at temperature 0.
func (e *engine) generate(prompt, opts js.Value) (any, error) {
	if err := e.acquire("generate"); err != nil {
		return nil, err
	}
	defer e.release()
	if err := e.ensureModel(); err != nil {
		return nil, err
	}
	text := ""
	if prompt.Type() == js.TypeString {
		text = prompt.String()
	}
	o := nn.DefaultSampleOptions()
	o.EOS = e.tok.EOS()
	for _, f := range []struct {
		key string
		set func(float64)
	}{
		{"maxNewTokens", func(v float64) { o.MaxNewTokens = int(v) }},
		{"temperature", func(v float64) { o.Temperature = v }},
		{"topK", func(v float64) { o.TopK = int(v) }},
		{"topP", func(v float64) { o.TopP = v }},
		{"repetitionPenalty", func(v float64) { o.RepetitionPenalty = v }},
		{"seed", func(v float64) { o.Seed = uint64(v) }},
	} {
		if !opts.Truthy() {
			break
		}
		v := opts.Get(f.key)
		switch v.Type() {
		case js.TypeUndefined, js.TypeNull:
		case js.TypeNumber:
			f.set(v.Float())
		default:
			return nil, fmt.Errorf("%s must be a number, not %s", f.key, v.Type())
		}
	}
	if o.MaxNewTokens < 0 || o.Temperature < 0 {
		return nil, errors.New("maxNewTokens and temperature must not be negative")
	}
	ids, err := train.PromptIDs(e.tok, text)
	if err != nil {
		return nil, err
	}
	out, err := e.model.Generate(ids, o, nil)
	if err != nil {
		return nil, err
	}
	return e.tok.Decode(out), nil
}

// train runs `lomo train` with the keys of cfg over its defaults: on the
// built-in task when cfg has no train_file (with the demo's
// hyperparameters), else on the File given as train_file (eval_file too).
// opts: {run, publish, token, task: {train, eval, seed}}.
func (e *engine) train(cfgObj, opts js.Value) (any, error) {
	if err := e.acquire("train"); err != nil {
		return nil, err
	}
	defer e.release()
	if err := e.ensureModel(); err != nil {
		return nil, err
	}
	fs, err := memfs()
	if err != nil {
		return nil, err
	}
	e.runs++
	out := fmt.Sprintf("/runs/%d", e.runs)
	var keys []string
	if cfgObj.Type() == js.TypeObject {
		ks := js.Global().Get("Object").Call("keys", cfgObj)
		for i := 0; i < ks.Length(); i++ {
			keys = append(keys, ks.Index(i).String())
		}
	}
	has := func(k string) bool {
		for _, x := range keys {
			if x == k {
				v := cfgObj.Get(k)
				return v.Type() != js.TypeUndefined && v.Type() != js.TypeNull
			}
		}
		return false
	}
	var cfg train.Config
	if has("train_file") {
		cfg = train.DefaultConfig()
	} else {
		o := train.DefaultDemo()
		o.Out = out + "/task"
		if t := opt(opts, "task"); t.Truthy() {
			for _, f := range []struct {
				key string
				dst *int
			}{{"train", &o.TrainN}, {"eval", &o.EvalN}} {
				if v := t.Get(f.key); v.Type() == js.TypeNumber {
					*f.dst = v.Int()
				}
			}
			if v := t.Get("seed"); v.Type() == js.TypeNumber {
				o.Seed = uint64(v.Int())
			}
		}
		if o.TrainN <= 0 || o.EvalN <= 0 {
			return nil, errors.New("the built-in task needs task.train and task.eval above 0")
		}
		trainFile, evalFile, err := train.WriteDemoTask(o)
		if err != nil {
			return nil, err
		}
		cfg = train.DemoConfig(o, e.dir, trainFile, evalFile)
		cfg.ZeroShotEval = true
	}
	cfg.ModelNameOrPath = e.dir
	cfg.OutputDir = out
	for _, k := range keys {
		v := cfgObj.Get(k)
		var s string
		switch {
		case v.Type() == js.TypeUndefined || v.Type() == js.TypeNull:
			continue
		case v.Type() == js.TypeObject && v.InstanceOf(js.Global().Get("Blob")):
			s = out + "/data/" + fileName(v, k+".jsonl")
			if err := putFile(fs, s, v); err != nil {
				return nil, err
			}
		case v.Type() == js.TypeObject:
			return nil, fmt.Errorf("train: --%s: want a string, number, boolean or File", k)
		default:
			s = js.Global().Call("String", v).String()
		}
		if err := cfg.Set(k, s); err != nil {
			return nil, err
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	run := "browser"
	if r := opt(opts, "run"); r.Type() == js.TypeString && r.String() != "" {
		run = r.String()
	}
	var sink monitor.Sink = &jsSink{e: e}
	var pub *monitor.Publisher
	if u := opt(opts, "publish"); u.Type() == js.TypeString && u.String() != "" {
		token := ""
		if t := opt(opts, "token"); t.Type() == js.TypeString {
			token = t.String()
		}
		if pub, err = monitor.Dial(context.Background(), u.String(), token, run); err != nil {
			return nil, err
		}
		defer pub.Close()
		sink = teeSink{sink, pub}
		fmt.Fprintf(os.Stderr, "lomo: publishing run %q to %s\n", run, u.String())
	}
	// The trainer loads its own copy of the model: free this one first.
	e.dropModel()
	tr, err := train.New(cfg, e.d, train.Options{Sink: sink, Run: run, Log: os.Stderr})
	if err != nil {
		if lerr := e.reload(); lerr != nil {
			return nil, fmt.Errorf("%w (and reloading the model failed: %v)", err, lerr)
		}
		return nil, err
	}
	e.tr, e.model, e.tok = tr, tr.Model, tr.Tok
	if pub != nil {
		pub.OnControl(tr.Control)
	}
	e.running.Store(tr)
	defer e.running.Store(nil)
	s, err := tr.Run()
	if err != nil {
		return nil, err
	}
	return s, nil
}

func opt(opts js.Value, key string) js.Value {
	if opts.Type() != js.TypeObject {
		return js.Undefined()
	}
	return opts.Get(key)
}

// reload loads the model of e.dir again (after a run that could not start).
func (e *engine) reload() error {
	m, err := loadModel(e.d, e.dir)
	if err != nil {
		return err
	}
	e.model = m
	return nil
}

// evaluate scores the current model on the last run's evaluation task, or
// without a run on the built-in task's held-out examples.
func (e *engine) evaluate() (any, error) {
	if err := e.acquire("evaluate"); err != nil {
		return nil, err
	}
	defer e.release()
	if err := e.ensureModel(); err != nil {
		return nil, err
	}
	if e.tr != nil {
		return e.tr.Evaluate(e.tr.Eval)
	}
	o := train.DefaultDemo()
	o.Out = "/builtin-task"
	_, evalFile, err := train.WriteDemoTask(o)
	if err != nil {
		return nil, err
	}
	task, err := data.LoadTask("boolq", evalFile)
	if err != nil {
		return nil, err
	}
	cfg := train.DemoConfig(o, e.dir, "", evalFile)
	return train.Evaluate(e.model, e.tok, task, train.EvalOptions{BatchSize: cfg.EvalBatchSize, MaxLen: cfg.DataMaxLength, Mean: cfg.ScoreBy == "mean", MaxNewTokens: cfg.MaxNewTokens})
}

// save writes the fine-tuned model (Hugging Face layout, with the
// tokenizer) and resolves to its files as File objects.
func (e *engine) save() (any, error) {
	if err := e.acquire("save"); err != nil {
		return nil, err
	}
	defer e.release()
	if e.tr == nil {
		return nil, errors.New("nothing fine-tuned yet: run lomo.train first")
	}
	fs, err := memfs()
	if err != nil {
		return nil, err
	}
	if err := e.tr.SaveFinal(); err != nil {
		return nil, err
	}
	dir := e.tr.Cfg.OutputDir + "/final"
	names := fs.Call("list", dir)
	files := js.Global().Get("Array").New()
	for i := 0; i < names.Length(); i++ {
		n := names.Index(i).String()
		b := fs.Call("get", dir+"/"+n)
		parts := js.Global().Get("Array").New(b)
		opts := map[string]any{"type": "application/octet-stream"}
		if strings.HasSuffix(n, ".json") {
			opts["type"] = "application/json"
		}
		files.Call("push", js.Global().Get("File").New(parts, n, opts))
	}
	return files, nil
}

// memory is the device accounting by tag (live and peak bytes).
func (e *engine) memory() (any, error) {
	if e.d == nil {
		return map[string]gpu.MemStat{}, nil
	}
	return e.d.Stats().Map(), nil
}

// subscribe adds a listener and returns its unsubscribe function.
func (e *engine) subscribe(kind string, fn js.Value) js.Func {
	l := &listener{fn: fn}
	e.lmu.Lock()
	e.listeners[kind] = append(e.listeners[kind], l)
	e.lmu.Unlock()
	var off js.Func
	off = js.FuncOf(func(js.Value, []js.Value) any {
		e.lmu.Lock()
		ls := e.listeners[kind]
		for i, x := range ls {
			if x == l {
				e.listeners[kind] = append(ls[:i:i], ls[i+1:]...)
				break
			}
		}
		e.lmu.Unlock()
		return nil
	})
	return off
}

// emit calls the listeners of kind and of "*" with the event. A listener
// that throws is reported on the console and does not stop the run.
func (e *engine) emit(kind string, ev js.Value) {
	e.lmu.Lock()
	ls := append(append([]*listener{}, e.listeners[kind]...), e.listeners["*"]...)
	e.lmu.Unlock()
	for _, l := range ls {
		func() {
			defer func() {
				if r := recover(); r != nil {
					js.Global().Get("console").Call("error", fmt.Sprintf("lomo.on(%q) listener: %v", kind, r))
				}
			}()
			l.fn.Invoke(ev)
		}()
	}
}

// jsSink hands the trainer's events to the listeners, numbered as a hub
// numbers them, in the monitor's JSON schema.
type jsSink struct {
	e   *engine
	seq uint64
}

func (s *jsSink) Publish(ev monitor.Event) error {
	s.seq++
	ev.Seq = s.seq
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	s.e.emit(ev.Kind, js.Global().Get("JSON").Call("parse", string(b)))
	return nil
}

// teeSink publishes to several sinks; the first error is returned.
type teeSink []monitor.Sink

func (t teeSink) Publish(ev monitor.Event) error {
	var first error
	for _, s := range t {
		if err := s.Publish(ev); err != nil && first == nil {
			first = err
		}
	}
	return first
}
