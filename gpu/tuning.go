package gpu

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
	d.tuneNew = true
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

// Tuning choices are kept between runs in a file per adapter, driver and
// kernel sources (TuningCache), so that only a device's first run on them
// pays for the timing. A choice only says which of a call's variants is
// fastest, and all give the same bits: a stale or lost file costs speed,
// never results.

// KernelSources names the kernels' version in the tuning file's name; the
// package that holds the kernels (wgsl) sets it from their sources, so that
// changed kernels are tuned again.
var KernelSources = ""

// tuningFile is what a tuning cache file holds.
type tuningFile struct {
	Adapter string   `json:"adapter"`
	Driver  string   `json:"driver,omitempty"`
	Backend string   `json:"backend"`
	Kernels string   `json:"kernels"`
	Choices []Choice `json:"choices"`
}

// tuningCacheDir resolves Options.TuneCache: a folder, "off", or "" for
// LOMO_TUNE_CACHE, else lomo/tuning in the user's cache folder.
func tuningCacheDir(opt string) string {
	if opt == "" {
		opt = os.Getenv("LOMO_TUNE_CACHE")
	}
	if opt != "" {
		return opt
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "off"
	}
	return filepath.Join(dir, "lomo", "tuning")
}

// openTuningCache loads the choices of the device's cache file, on a device
// that tunes. A missing file is an empty cache; an unreadable one is
// reported by TuningCache and replaced when the device closes.
func (d *Device) openTuningCache(dir string) {
	if !d.tune || dir == "off" {
		return
	}
	h := sha256.Sum256([]byte(strings.Join([]string{d.Info.Name, d.Info.Driver, d.Info.Backend, d.Info.Type, KernelSources}, "\x00")))
	d.tuneFile = filepath.Join(dir, fmt.Sprintf("%x.json", h[:8]))
	b, err := os.ReadFile(d.tuneFile)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var f tuningFile
	if err == nil {
		err = json.Unmarshal(b, &f)
	}
	if err != nil {
		d.tuneErr = fmt.Errorf("gpu: tuning cache %s: %w (tuning again)", d.tuneFile, err)
		return
	}
	d.choices = map[string]Choice{}
	for _, c := range f.Choices {
		d.choices[c.Key] = c
	}
	d.tuneLoaded = len(f.Choices)
}

// TuningCache returns the device's tuning cache file ("" where it keeps
// none: a device that does not tune, or --tune-cache off), how many choices
// were loaded from it, and the error that made lomo ignore it, if any.
func (d *Device) TuningCache() (path string, loaded int, err error) {
	return d.tuneFile, d.tuneLoaded, d.tuneErr
}

// saveTuningCache writes the device's choices to its cache file if it made
// new ones, through a temporary file renamed over it. Choices the file got
// since the device opened it (from another device of a split model, or
// another run) are kept beside this device's.
func (d *Device) saveTuningCache() error {
	if d.tuneFile == "" || !d.tuneNew {
		return nil
	}
	f := tuningFile{Adapter: d.Info.Name, Driver: d.Info.Driver, Backend: d.Info.Backend, Kernels: KernelSources, Choices: d.Choices()}
	var old tuningFile
	if b, err := os.ReadFile(d.tuneFile); err == nil && json.Unmarshal(b, &old) == nil {
		have := map[string]bool{}
		for _, c := range f.Choices {
			have[c.Key] = true
		}
		for _, c := range old.Choices {
			if !have[c.Key] {
				f.Choices = append(f.Choices, c)
			}
		}
		sort.Slice(f.Choices, func(i, j int) bool { return f.Choices[i].Key < f.Choices[j].Key })
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(d.tuneFile), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(d.tuneFile), ".tuning-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), d.tuneFile)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
