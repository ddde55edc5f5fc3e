package gpu

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// Tuning says whether a device times kernel variants that compute the same
// bits (the kernels' tuned choices, see package wgsl) on first use and
// keeps the fastest.
type Tuning string

const (
	// TuneAuto tunes on GPUs and not on software (CPU) adapters, where the
	// timing runs would cost more than they save, or on dry devices.
	TuneAuto Tuning = "auto"
	TuneOn   Tuning = "on"
	TuneOff  Tuning = "off"
)

// TuningNames are the values of --tune.
var TuningNames = []string{string(TuneAuto), string(TuneOn), string(TuneOff)}

// ParseTuning parses auto, on or off; empty is LOMO_TUNE, else auto.
func ParseTuning(s string) (Tuning, error) {
	if s == "" {
		s = os.Getenv("LOMO_TUNE")
	}
	switch t := Tuning(strings.ToLower(s)); t {
	case "", TuneAuto:
		return TuneAuto, nil
	case TuneOn, TuneOff:
		return t, nil
	}
	return "", fmt.Errorf("gpu: tuning %q: want one of %s", s, strings.Join(TuningNames, ", "))
}

// tunes resolves t for an adapter.
func (t Tuning) tunes(info AdapterInfo) bool {
	switch t {
	case TuneOn:
		return true
	case TuneOff:
		return false
	}
	return !info.Software
}

// A Choice is a kernel variant chosen by timing: the call it is for (the
// kernel, its operands' dtypes and layouts, its shape), each variant's
// best time, and the fastest, which later calls with the same key run.
type Choice struct {
	Key    string   `json:"key"`
	Chosen string   `json:"chosen"`
	Timed  []Timing `json:"timed"`
}

// Timing is one variant's best time of a few timed runs, each waited for
// alone (after an untimed one).
type Timing struct {
	Variant string  `json:"variant"`
	Seconds float64 `json:"seconds"`
	Runs    int     `json:"runs"`
}

// Tunes reports whether kernels time their variants on this device.
func (d *Device) Tunes() bool { return d.tune }

// SetTuning turns tuning on or off for later calls; choices already made
// stay.
func (d *Device) SetTuning(on bool) { d.tune = on && !d.dry }

// Choice returns the variant chosen for key, if any.
func (d *Device) Choice(key string) (Choice, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.choices[key]
	return c, ok
}

// Choose records a choice; calls with its key run its variant from now on.
func (d *Device) Choose(c Choice) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.choices == nil {
		d.choices = map[string]Choice{}
	}
	d.choices[c.Key] = c
}

// Choices returns every choice made on the device, by key.
func (d *Device) Choices() []Choice {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Choice, 0, len(d.choices))
	for _, c := range d.choices {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}
