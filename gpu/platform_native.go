//go:build !js

package gpu

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/oliverbestmann/webgpu/wgpu"
)

// logLevel is wgpu-native's log level (LOMO_WGPU_LOG, errors only by
// default).
var logLevel = wgpu.LogLevelError

func init() {
	// wgpu-native logs warnings (missing windowing, surfaceless) to stderr
	// on every start; lomo reports errors itself. LOMO_WGPU_LOG=warn|info|debug
	// brings them back.
	switch os.Getenv("LOMO_WGPU_LOG") {
	case "warn":
		logLevel = wgpu.LogLevelWarn
	case "info":
		logLevel = wgpu.LogLevelInfo
	case "debug":
		logLevel = wgpu.LogLevelDebug
	}
	wgpu.SetLogLevel(logLevel)
	setLogCallback() // after the binding's init, whose callback misreads v29's messages
	// Mesa's EGL, probed while adapters are enumerated, complains on stderr
	// when XDG_RUNTIME_DIR is unset (headless servers, CI).
	if os.Getenv("XDG_RUNTIME_DIR") == "" {
		os.Setenv("XDG_RUNTIME_DIR", os.TempDir())
	}
}

// Only Vulkan, Metal and D3D12 (webgpu.h's WGPUInstanceBackend bits): GL's
// compute support is partial.
const nativeBackends = wgpu.InstanceBackend(1<<0 | 1<<2 | 1<<3)

func newInstance() (inst *wgpu.Instance) {
	defer func() {
		if recover() != nil { // the binding panics when wgpu-native has no instance
			inst = nil
		}
	}()
	return wgpu.CreateInstance(&wgpu.InstanceDescriptor{Backends: nativeBackends})
}

func enumerate(inst *wgpu.Instance) []candidate {
	var cs []candidate
	for _, a := range inst.EnumerateAdapters(nil) {
		ai := a.GetInfo()
		if ai.BackendType == wgpu.BackendTypeOpenGL || ai.BackendType == wgpu.BackendTypeOpenGLES {
			a.Release()
			continue
		}
		info := AdapterInfo{
			Name:    adapterName(ai),
			Type:    adapterType(ai.AdapterType),
			Backend: strings.ToLower(ai.BackendType.String()),
			Driver:  ai.Description,
			Limits:  limitsOf(a.GetLimits()),
		}
		info.Software = info.Type == "cpu"
		for _, f := range a.GetFeatures() {
			info.Features = append(info.Features, f.String())
			switch f {
			case wgpu.FeatureNameShaderF16:
				info.Caps.F16 = true
			case wgpu.FeatureNameSubgroups, wgpu.NativeFeatureSubgroup:
				info.Caps.Subgroups = true
			case wgpu.FeatureNameTimestampQuery:
				info.Caps.Timestamps = true
			}
		}
		cs = append(cs, candidate{adapter: a, info: info, rank: rankOf(info.Type)})
	}
	sortCandidates(cs)
	return cs
}

// adapterName prefers the device name; some drivers report it as a number,
// so fall back to the driver description.
func adapterName(ai wgpu.AdapterInfo) string {
	if ai.Device == "" || strings.HasPrefix(ai.Device, "0x") {
		return ai.Description
	}
	return ai.Device
}

func adapterType(t wgpu.AdapterType) string {
	switch t {
	case wgpu.AdapterTypeDiscreteGPU:
		return "discrete"
	case wgpu.AdapterTypeIntegratedGPU:
		return "integrated"
	case wgpu.AdapterTypeCPU:
		return "cpu"
	}
	return "unknown"
}

// features returns the device features that give the adapter's caps.
// Cooperative matrices are not among them, where an adapter offers them:
// they are an experimental feature in wgpu 29, and wgpu-native's C API has
// no way to enable experimental features, so a device request naming one
// fails ("experimental features are not enabled") and lomo would open no
// device at all on such an adapter (NVIDIA's, or Mesa 26's lavapipe).
func features(c candidate) []wgpu.FeatureName {
	var fs []wgpu.FeatureName
	has := map[string]bool{}
	for _, f := range c.info.Features {
		has[f] = true
	}
	for _, f := range []wgpu.FeatureName{wgpu.FeatureNameShaderF16, wgpu.FeatureNameTimestampQuery,
		wgpu.FeatureNameSubgroups, wgpu.NativeFeatureSubgroup} {
		if has[f.String()] {
			fs = append(fs, f)
		}
	}
	return fs
}

// platform holds what wgpu-native reports through the device's callbacks:
// errors outside any error scope and the loss of the device. The callbacks
// may come from any thread.
type platform struct {
	id     uintptr
	mu     sync.Mutex
	errs   []*Error // uncaptured errors not yet reported
	lost   string   // why the device was lost; "" while it is not
	closed atomic.Bool
}

var (
	platformsMu sync.Mutex
	platforms   = map[uintptr]*platform{}
	platformIDs uintptr
)

func lookupPlatform(id uintptr) *platform {
	platformsMu.Lock()
	defer platformsMu.Unlock()
	return platforms[id]
}

func (p *platform) onLost(reason, msg string) {
	if p.closed.Load() {
		return // the device is being released by Close
	}
	p.mu.Lock()
	if p.lost == "" {
		p.lost = fmt.Sprintf("%s: %s", reason, msg)
	}
	p.mu.Unlock()
}

func (p *platform) onError(kind, msg string) {
	p.mu.Lock()
	if len(p.errs) < 16 {
		p.errs = append(p.errs, &Error{Kind: kind, Msg: msg})
	}
	p.mu.Unlock()
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

// pushScope is a no-op natively: the binding's Try* calls scope their own
// validation errors, and the uncaptured-error callback catches the rest.
func (p *platform) pushScope() {}

// popScope turns err (from a binding call) and any uncaptured error since
// the last call into one *Error naming op.
func (p *platform) popScope(op string, err error) error {
	if p == nil {
		return err
	}
	p.mu.Lock()
	errs := p.errs
	p.errs = nil
	lost := p.lost
	p.mu.Unlock()
	if err != nil {
		if e, ok := err.(*Error); ok {
			return e
		}
		return bindingError(op, err)
	}
	if len(errs) > 0 {
		e := *errs[0]
		e.Op = op
		if len(errs) > 1 {
			e.Msg += fmt.Sprintf(" (and %d more errors)", len(errs)-1)
		}
		return &e
	}
	if lost != "" {
		return &Error{Op: op, Kind: "device-lost", Msg: lost}
	}
	return nil
}

func (p *platform) close() {
	p.closed.Store(true)
	platformsMu.Lock()
	delete(platforms, p.id)
	platformsMu.Unlock()
}

func (d *Device) openPlatform(c candidate) error {
	p := &platform{}
	platformsMu.Lock()
	platformIDs++
	p.id = platformIDs
	platforms[p.id] = p
	platformsMu.Unlock()
	dev, err := requestDevice(c.adapter, p.id, features(c), requiredLimits(c.adapter.GetLimits()))
	if err != nil {
		p.close()
		return err
	}
	d.plat = p
	d.dev = dev
	d.queue = dev.GetQueue()
	if d.limits, err = deviceLimits(dev); err != nil {
		d.queue.Release()
		dev.Release()
		p.close()
		return err
	}
	return nil
}

// shaderChecks is LOMO_SHADER_CHECKS: "full" keeps naga's loop bounding
// (the binding's default), "none" drops its bounds checks too, for
// measuring what they cost on a card (bench/gpu.sh), never for a run, since
// an access past an array's end is then undefined; anything else keeps the
// bounds checks only (see createShaderModule). lomo's kernels give the
// same results each way (TestKernelsWithoutLoopBounding).
var shaderChecks = os.Getenv("LOMO_SHADER_CHECKS")

// createModule compiles a kernel's WGSL with the checks shaderChecks says.
func (d *Device) createModule(label, code string) (*wgpu.ShaderModule, error) {
	if shaderChecks == "full" {
		return d.dev.TryCreateShaderModule(&wgpu.ShaderModuleDescriptor{Label: label, WGSLSource: &wgpu.ShaderSourceWGSL{Code: code}})
	}
	checks := checksBounds
	if shaderChecks == "none" {
		checks = 0
	}
	m := createShaderModule(d.dev, label, code, checks)
	if m == nil {
		return nil, fmt.Errorf("wgpu-native returned no shader module")
	}
	return m, nil
}

// moduleError is the shader compiler's error for code, nil if it compiles.
// wgpu-native 29's wgpuDeviceCreateShaderModuleTrusted reports no error for
// WGSL it cannot compile: the module is invalid, and the pipeline made from
// it fails with "ShaderModule ... is invalid" without saying why. Compiling
// the code again through the checked entry point, whose front end is the
// same, recovers the compiler's message (the parse or validation error).
func (d *Device) moduleError(label, code string) error {
	if shaderChecks == "full" {
		return nil // the module was compiled there: its error was reported
	}
	return d.CheckSource(label, code)
}

// mapRead maps a staging buffer whose copy was submitted and returns its
// bytes. wgpu-native runs the map callback inside Poll.
func (d *Device) mapRead(b *wgpu.Buffer, size uint64) ([]byte, error) {
	status := wgpu.MapAsyncStatus(0)
	err := d.guard("map the staging buffer", func() error {
		return b.TryMapAsync(wgpu.MapModeRead, 0, size, func(s wgpu.MapAsyncStatus) { status = s })
	})
	if err != nil {
		return nil, err
	}
	for i := 0; status == 0 && i < 1000; i++ {
		d.dev.Poll(true, nil)
	}
	if status != wgpu.MapAsyncStatusSuccess {
		if err := d.plat.popScope("map the staging buffer", nil); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("map the staging buffer: status %v", status)
	}
	out := append([]byte(nil), b.GetMappedRange(0, uint(size))...)
	return out, d.guard("unmap the staging buffer", b.TryUnmap)
}

// waitIdle blocks until the queue has finished all submitted work.
func (d *Device) waitIdle() { d.dev.Poll(true, nil) }

func pipelineDescriptor(label string, layout *wgpu.PipelineLayout, module *wgpu.ShaderModule, entry string) *wgpu.ComputePipelineDescriptor {
	return &wgpu.ComputePipelineDescriptor{Label: label, Layout: layout, Compute: wgpu.ProgrammableStageDescriptor{Module: module, EntryPoint: entry}}
}
