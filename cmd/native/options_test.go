package main

import (
	"io"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
)

// TestTuningDefaults: --tune is auto unless given, but off by default for
// the commands that run each shape once (generate, merge); LOMO_TUNE or
// the flag still turn it on there.
func TestTuningDefaults(t *testing.T) {
	for _, tc := range []struct {
		oneShot bool
		env     string
		args    []string
		want    gpu.Tuning
	}{
		{false, "", nil, gpu.TuneAuto},
		{false, "", []string{"--tune", "off"}, gpu.TuneOff},
		{false, "on", nil, gpu.TuneOn},
		{true, "", nil, gpu.TuneOff},
		{true, "", []string{"--tune", "auto"}, gpu.TuneAuto},
		{true, "on", nil, gpu.TuneOn},
	} {
		t.Setenv("LOMO_TUNE", tc.env)
		o := newOptions("test", io.Discard).withAdapter()
		if tc.oneShot {
			o.withOneShot()
		}
		if err := o.parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if got := o.tuning(); got != tc.want {
			t.Errorf("one shot %v, LOMO_TUNE %q, %v: tuning %q, want %q", tc.oneShot, tc.env, tc.args, got, tc.want)
		}
	}
}
