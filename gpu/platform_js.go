//go:build js

package gpu

import (
	"fmt"

	"github.com/cogentcore/webgpu/wgpu"
)

func instanceDescriptor() *wgpu.InstanceDescriptor { return nil }

// enumerate: the browser offers one adapter through navigator.gpu, and the
// binding reports no adapter info or features there.
func enumerate(inst *wgpu.Instance) []candidate {
	a, err := inst.RequestAdapter(&wgpu.RequestAdapterOptions{PowerPreference: wgpu.PowerPreferenceHighPerformance})
	if err != nil || a == nil {
		return nil
	}
	info := AdapterInfo{Name: "browser WebGPU", Type: "unknown", Backend: "webgpu", Limits: limitsOf(a.GetLimits().Limits)}
	return []candidate{{adapter: a, info: info, rank: 2}}
}

func endPass(p *wgpu.ComputePassEncoder) error { p.End(); return nil }

// mapRead blocks on a promise: call it from a goroutine, never from inside a
// JS callback.
func mapRead(d *Device, b *wgpu.Buffer, size uint64) ([]byte, error) {
	ok := false
	if err := b.MapAsync(wgpu.MapModeRead, 0, size, func(s wgpu.BufferMapAsyncStatus) { ok = s == wgpu.BufferMapAsyncStatusSuccess }); err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("map staging buffer failed")
	}
	out := b.GetMappedRange(0, uint(size)) // a copy in the browser build
	if err := b.Unmap(); err != nil {
		return nil, err
	}
	return out, nil
}

func waitIdle(d *Device) { d.queue.OnSubmittedWorkDone(func(wgpu.QueueWorkDoneStatus) {}) }
