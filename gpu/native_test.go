//go:build !js

package gpu

import (
	"testing"

	"github.com/oliverbestmann/webgpu/wgpu"
)

// TestRawHandles checks what wgpu_native.go relies on: the binding keeps
// each object's C handle as its first field, so a device lomo requested
// itself works through the binding, with the features asked for.
func TestRawHandles(t *testing.T) {
	d := openTest(t)
	if got := d.dev.HasFeature(wgpu.FeatureNameShaderF16); got != d.Caps.F16 {
		t.Errorf("binding's HasFeature(shader-f16) = %v on lomo's device, caps say %v", got, d.Caps.F16)
	}
	if got := d.dev.HasFeature(wgpu.FeatureNameTimestampQuery); got != d.Caps.Timestamps {
		t.Errorf("binding's HasFeature(timestamp-query) = %v on lomo's device, caps say %v", got, d.Caps.Timestamps)
	}
}

// An error outside any error scope (out of memory, internal errors: the
// binding scopes only validation) reaches lomo's uncaptured-error callback
// and is reported by the next operation, instead of wgpu-native aborting the
// process. Provoked here with an invalid buffer created outside any scope.
func TestUncapturedErrorIsReported(t *testing.T) {
	d := openTest(t)
	d.unscopedError()
	err := d.Sync()
	wantError(t, err, "validation", "wait for the queue", "usage")
	stillWorks(t, d)
}
