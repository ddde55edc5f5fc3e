//go:build !js

package gpu

import (
	"fmt"
	"os"
	"strings"

	"github.com/cogentcore/webgpu/wgpu"
)

func init() {
	// wgpu-native logs warnings (missing windowing, surfaceless) to stderr
	// on every start; lomo reports errors itself. LOMO_WGPU_LOG=warn|info|debug
	// brings them back.
	level := wgpu.LogLevelError
	switch os.Getenv("LOMO_WGPU_LOG") {
	case "warn":
		level = wgpu.LogLevelWarn
	case "info":
		level = wgpu.LogLevelInfo
	case "debug":
		level = wgpu.LogLevelDebug
	}
	wgpu.SetLogLevel(level)
	// Mesa's EGL, probed while adapters are enumerated, complains on stderr
	// when XDG_RUNTIME_DIR is unset (headless servers, CI).
	if os.Getenv("XDG_RUNTIME_DIR") == "" {
		os.Setenv("XDG_RUNTIME_DIR", os.TempDir())
	}
}

// instanceDescriptor is nil: the native binding leaves fields of its C
// descriptor uninitialised when given one (seen: a garbage GLES version that
// aborts wgpu-native). The GL backend is filtered out in enumerate instead.
func instanceDescriptor() *wgpu.InstanceDescriptor { return nil }

func enumerate(inst *wgpu.Instance) []candidate {
	var cs []candidate
	for _, a := range inst.EnumerateAdapters(nil) {
		ai := a.GetInfo()
		if ai.BackendType == wgpu.BackendTypeOpenGL || ai.BackendType == wgpu.BackendTypeOpenGLES {
			// Only Vulkan, Metal and D3D12: GL's compute support is partial.
			a.Release()
			continue
		}
		info := AdapterInfo{
			Name:    adapterName(ai),
			Type:    adapterType(ai.AdapterType),
			Backend: strings.ToLower(ai.BackendType.String()),
			Limits:  limitsOf(a.GetLimits().Limits),
		}
		info.Software = info.Type == "cpu"
		for _, f := range a.EnumerateFeatures() {
			info.Features = append(info.Features, f.String())
		}
		cs = append(cs, candidate{adapter: a, info: info, rank: rankOf(info.Type)})
	}
	sortCandidates(cs)
	return cs
}

// adapterName prefers the device name; the binding reports some fields of
// software adapters as numbers, so fall back to the driver description.
func adapterName(ai wgpu.AdapterInfo) string {
	name := ai.Name
	if name == "" || strings.HasPrefix(name, "0x") {
		name = ai.DriverDescription
	} else if ai.DriverDescription != "" && !strings.HasPrefix(ai.DriverDescription, "0x") {
		name = fmt.Sprintf("%s (%s)", name, ai.DriverDescription)
	}
	return name
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

func endPass(p *wgpu.ComputePassEncoder) error { return p.End() }

func mapRead(d *Device, b *wgpu.Buffer, size uint64) ([]byte, error) {
	status := wgpu.BufferMapAsyncStatus(0xffffffff)
	if err := b.MapAsync(wgpu.MapModeRead, 0, size, func(s wgpu.BufferMapAsyncStatus) { status = s }); err != nil {
		return nil, err
	}
	d.dev.Poll(true, nil)
	if status == wgpu.BufferMapAsyncStatusDeviceLost {
		d.markLost("mapping a buffer reported device lost")
		return nil, ErrDeviceLost
	}
	if status != wgpu.BufferMapAsyncStatusSuccess {
		return nil, fmt.Errorf("map staging buffer: status %v", status)
	}
	out := append([]byte(nil), b.GetMappedRange(0, uint(size))...)
	if err := b.Unmap(); err != nil {
		return nil, err
	}
	return out, nil
}

func waitIdle(d *Device) { d.dev.Poll(true, nil) }
