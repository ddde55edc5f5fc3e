package nn

import (
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
)

// A parameter larger than one storage binding (or one buffer) of the device
// is refused when the model is made, naming the tensor and the limit, not
// later as a failed dispatch of some kernel.
func TestParamAboveDeviceLimitIsNamed(t *testing.T) {
	cfg := toyConfig(true)
	cfg.VocabSize = 8192 // embedding (8192,16) f32: 512 KiB
	for _, c := range []struct {
		limit string
		set   func(*gpu.Limits)
	}{
		{"max storage buffer binding size of 262144 bytes", func(l *gpu.Limits) { l.MaxStorageBufferBindingSize = 256 << 10 }},
		{"max buffer size of 262144 bytes", func(l *gpu.Limits) { l.MaxBufferSize = 256 << 10 }},
	} {
		lim := gpu.UnlimitedLimits()
		c.set(&lim)
		d := gpu.OpenDry("small", lim)
		before := d.Stats().Total.Live
		m, err := NewLlama(d, cfg, gpu.F32)
		if err == nil {
			m.Release()
			t.Fatalf("%s: a 512 KiB embedding was accepted", c.limit)
		}
		want := "nn: tensor model.embed_tokens.weight [8192 16] (f32) is 524288 bytes, larger than this device's " + c.limit
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\nwant it to contain %q", err, want)
		}
		if live := d.Stats().Total.Live; live != before {
			t.Errorf("%s: %d bytes left allocated after the refusal", c.limit, live-before)
		}
	}
}
