//go:build js

package gpu

import (
	"fmt"
	"strings"
	"sync"
	"syscall/js"
	"unsafe"

	"github.com/oliverbestmann/webgpu/jsx"
	"github.com/oliverbestmann/webgpu/wgpu"
)

// The browser build. WebGPU reports validation errors asynchronously, and
// the binding (oliverbestmann/webgpu v1.34.1) only turns synchronous
// exceptions into errors; it also drops requiredLimits when requesting the
// device, which then gets WebGPU's defaults (128 MiB per storage binding),
// and reports no adapter info. So lomo requests the device itself, wraps
// every operation whose errors it reports in error scopes (pushErrorScope /
// popErrorScope), and listens for uncaptured errors and device loss.
//
// The binding keeps each object's JS value as the only field of its struct:
// jsValueOf and deviceFromJS rely on that (checked when the device opens).
//
// Calls that wait on a promise (opening the device, popping error scopes,
// mapping, waiting for the queue) block the calling goroutine: call lomo from
// a goroutine, never from inside a JS callback.

func jsValueOf[T any](obj *T) js.Value { return *(*js.Value)(unsafe.Pointer(obj)) }

func deviceFromJS(v js.Value) *wgpu.Device {
	d := new(wgpu.Device)
	*(*js.Value)(unsafe.Pointer(d)) = v
	return d
}

func newInstance() *wgpu.Instance {
	if !js.Global().Get("navigator").Get("gpu").Truthy() {
		return nil
	}
	return wgpu.CreateInstance(nil)
}

// enumerate: the browser offers one adapter through navigator.gpu.
func enumerate(inst *wgpu.Instance) []candidate {
	a, err := inst.RequestAdapter(&wgpu.RequestAdapterOptions{PowerPreference: wgpu.PowerPreferenceHighPerformance})
	if err != nil || a == nil {
		return nil
	}
	ja := jsValueOf(a)
	if ja.Type() != js.TypeObject || ja.Get("requestDevice").Type() != js.TypeFunction {
		return nil // the binding's layout changed: see jsValueOf
	}
	info := AdapterInfo{Name: "browser WebGPU", Type: "unknown", Backend: "webgpu", Limits: limitsOf(a.GetLimits())}
	if ai := ja.Get("info"); ai.Truthy() {
		name := ai.Get("vendor").String()
		if dev := ai.Get("device").String(); dev != "" {
			name += " " + dev
		} else if arch := ai.Get("architecture").String(); arch != "" {
			name += " " + arch
		}
		if name != "" {
			info.Name = name
		}
		info.Driver = ai.Get("description").String()
		// Chromium reports SwiftShader, its CPU implementation, as a
		// fallback adapter only where no GPU was found; where it was
		// asked for (--use-webgpu-adapter=swiftshader), by its name.
		if ai.Get("isFallbackAdapter").Truthy() || strings.Contains(strings.ToLower(info.Name), "swiftshader") {
			info.Type, info.Software = "cpu", true
		}
	}
	feats := js.Global().Get("Array").Call("from", ja.Get("features"))
	for i := 0; i < feats.Length(); i++ {
		f := feats.Index(i).String()
		info.Features = append(info.Features, f)
		switch f {
		case "shader-f16":
			info.Caps.F16 = true
		case "subgroups":
			info.Caps.Subgroups = true
		case "timestamp-query":
			info.Caps.Timestamps = true
		}
	}
	return []candidate{{adapter: a, info: info, rank: 2}}
}

// platform holds the device's JS value, errors raised outside any scope
// (the uncapturederror event) and the loss of the device.
type platform struct {
	dev   js.Value
	funcs []js.Func
	mu    sync.Mutex
	errs  []*Error
	lost  string
	depth int // error scopes pushed and not yet popped
}

func (d *Device) openPlatform(c candidate) error {
	ja := jsValueOf(c.adapter)
	var feats []any
	for _, f := range c.info.Features {
		if f == "shader-f16" || f == "subgroups" || f == "timestamp-query" {
			feats = append(feats, f)
		}
	}
	req := requiredLimits(c.adapter.GetLimits())
	limits := map[string]any{
		"maxBufferSize":                     float64(req.MaxBufferSize),
		"maxStorageBufferBindingSize":       float64(req.MaxStorageBufferBindingSize),
		"maxStorageBuffersPerShaderStage":   req.MaxStorageBuffersPerShaderStage,
		"maxComputeWorkgroupStorageSize":    req.MaxComputeWorkgroupStorageSize,
		"maxComputeInvocationsPerWorkgroup": req.MaxComputeInvocationsPerWorkgroup,
		"maxComputeWorkgroupSizeX":          req.MaxComputeWorkgroupSizeX,
		"maxComputeWorkgroupSizeY":          req.MaxComputeWorkgroupSizeY,
	}
	desc := map[string]any{"label": "lomo", "requiredFeatures": feats, "requiredLimits": limits}
	jd, ok := jsx.Await(ja.Call("requestDevice", desc))
	if !ok || !jd.Truthy() {
		return fmt.Errorf("requestDevice: %s", jsMessage(jd))
	}
	p := &platform{dev: jd}
	onError := js.FuncOf(func(this js.Value, args []js.Value) any {
		e := args[0].Get("error")
		p.mu.Lock()
		if len(p.errs) < 16 {
			p.errs = append(p.errs, &Error{Kind: gpuErrorKind(e), Msg: e.Get("message").String()})
		}
		p.mu.Unlock()
		return nil
	})
	onLost := js.FuncOf(func(this js.Value, args []js.Value) any {
		info := args[0]
		p.mu.Lock()
		if p.lost == "" {
			p.lost = fmt.Sprintf("%s: %s", info.Get("reason").String(), info.Get("message").String())
		}
		p.mu.Unlock()
		return nil
	})
	p.funcs = []js.Func{onError, onLost}
	jd.Call("addEventListener", "uncapturederror", onError)
	jd.Get("lost").Call("then", onLost)
	d.plat = p
	d.dev = deviceFromJS(jd)
	d.queue = d.dev.GetQueue()
	d.limits = limitsOf(d.dev.GetLimits())
	return nil
}

// gpuErrorKind names a GPUError by its class.
func gpuErrorKind(e js.Value) string {
	switch e.Get("constructor").Get("name").String() {
	case "GPUOutOfMemoryError":
		return "out-of-memory"
	case "GPUInternalError":
		return "internal"
	}
	return "validation"
}

func jsMessage(v js.Value) string {
	if v.Type() == js.TypeObject && v.Get("message").Type() == js.TypeString {
		return v.Get("message").String()
	}
	if v.Type() == js.TypeUndefined || v.Type() == js.TypeNull {
		return "no device"
	}
	return v.String()
}

var scopeFilters = [...]string{"out-of-memory", "internal", "validation"}

func (p *platform) pushScope() {
	if p == nil {
		return
	}
	for _, f := range scopeFilters {
		p.dev.Call("pushErrorScope", f)
	}
	p.depth++
}

// popScope pops the scopes of the last pushScope and returns err, or else
// the first error they caught, or an uncaptured one, as an *Error naming op.
func (p *platform) popScope(op string, err error) error {
	if p == nil {
		return err
	}
	var caught *Error
	if p.depth > 0 {
		p.depth--
		var proms []js.Value
		for range scopeFilters {
			proms = append(proms, p.dev.Call("popErrorScope"))
		}
		for _, pr := range proms {
			v, ok := jsx.Await(pr)
			switch {
			case !ok && caught == nil:
				caught = &Error{Kind: "validation", Msg: "popErrorScope: " + jsMessage(v)}
			case ok && v.Truthy() && caught == nil:
				caught = &Error{Kind: gpuErrorKind(v), Msg: v.Get("message").String()}
			}
		}
	}
	p.mu.Lock()
	errs := p.errs
	p.errs = nil
	lost := p.lost
	p.mu.Unlock()
	switch {
	case err != nil:
		if e, ok := err.(*Error); ok {
			return e
		}
		return bindingError(op, err)
	case caught != nil:
		caught.Op = op
		return caught
	case len(errs) > 0:
		e := *errs[0]
		e.Op = op
		return &e
	case lost != "":
		return &Error{Op: op, Kind: "device-lost", Msg: lost}
	}
	return nil
}

func (p *platform) lostError() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lost != "" {
		return &Error{Op: "use the device", Kind: "device-lost", Msg: p.lost}
	}
	return nil
}

func (p *platform) close() {
	p.dev.Call("removeEventListener", "uncapturederror", p.funcs[0])
	// p.funcs[1] stays: the lost promise may still resolve (destroy).
	p.funcs[0].Release()
}

// createModule compiles a kernel's WGSL (the browser applies its own checks).
func (d *Device) createModule(label, code string) (*wgpu.ShaderModule, error) {
	return d.dev.TryCreateShaderModule(&wgpu.ShaderModuleDescriptor{Label: label, WGSLSource: &wgpu.ShaderSourceWGSL{Code: code}})
}

// moduleError: the browser's createShaderModule reports its own errors
// (createModule), so there is nothing to recover.
func (d *Device) moduleError(label, code string) error { return nil }

// mapRead blocks on a promise: call it from a goroutine, never from inside a
// JS callback.
func (d *Device) mapRead(b *wgpu.Buffer, size uint64) ([]byte, error) {
	status := wgpu.MapAsyncStatus(0)
	err := d.guard("map the staging buffer", func() error {
		return b.TryMapAsync(wgpu.MapModeRead, 0, size, func(s wgpu.MapAsyncStatus) { status = s })
	})
	if err != nil {
		return nil, err
	}
	if status != wgpu.MapAsyncStatusSuccess {
		if err := d.usable(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("map the staging buffer: status %v", status)
	}
	out := b.GetMappedRange(0, uint(size)) // a copy in the browser build
	return out, d.guard("unmap the staging buffer", b.TryUnmap)
}

// waitIdle blocks until the queue has finished all submitted work.
func (d *Device) waitIdle() { d.queue.OnSubmittedWorkDone(func(wgpu.QueueWorkDoneStatus) {}) }

// pipelineDescriptor: the binding's browser descriptor has no label.
func pipelineDescriptor(label string, layout *wgpu.PipelineLayout, module *wgpu.ShaderModule, entry string) *wgpu.ComputePipelineDescriptor {
	return &wgpu.ComputePipelineDescriptor{Layout: layout, Compute: wgpu.ProgrammableStageDescriptor{Module: module, EntryPoint: entry}}
}
