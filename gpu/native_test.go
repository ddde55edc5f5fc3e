//go:build !js

package gpu

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
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

// loopWGSL sums x[0..n) in a loop whose trip count is a parameter, and
// reads one element past x's end (which bounds checks keep in the array).
const loopWGSL = scaleDecls + `
@compute @workgroup_size(1)
fn main() {
	var s = 0.0;
	for (var i = 0u; i < p.n; i++) { s += x[i] * p.scale; }
	y[0] = s;
	y[1] = x[p.n + 1000u];
}`

// TestKernelsWithoutLoopBounding: kernels compile without naga's loop
// bounding (the default, createShaderModule) and with it
// (LOMO_SHADER_CHECKS=full) to the same results, and keep their bounds
// checks: a read past the array's end gives a value of the array or 0,
// never memory beyond it (on lavapipe the driver's robust buffer access
// would give that too; drivers without it depend on naga's checks).
// Without the bounds checks too (LOMO_SHADER_CHECKS=none, for measuring
// them) the sum is the same; that kernel reads nothing past the end.
func TestKernelsWithoutLoopBounding(t *testing.T) {
	d := openTest(t)
	x, _ := d.NewBuffer(TagScratch, 4*8)
	y, _ := d.NewBuffer(TagScratch, 4*2)
	if err := d.Write(x, 0, f32bytes([]float32{1, 2, 3, 4, 5, 6, 7, 8})); err != nil {
		t.Fatal(err)
	}
	was := shaderChecks
	t.Cleanup(func() { shaderChecks = was })
	for _, mode := range []string{"default", "full", "none"} {
		shaderChecks = mode
		src := loopWGSL
		if mode == "none" {
			src = strings.Replace(src, "y[1] = x[p.n + 1000u];", "y[1] = 0.0;", 1)
		}
		k, err := d.Kernel(KernelSpec{Name: "test/loop/" + mode, Source: src, Bindings: []Access{ReadOnly, ReadWrite}, ParamsSize: 16})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Dispatch(k, Params(scaleParams{N: 8, Scale: 0.5}), []*Buffer{x, y}, 1, 1, 1); err != nil {
			t.Fatal(err)
		}
		out, err := d.Read(y, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		sum, past := math.Float32frombits(binary.LittleEndian.Uint32(out)), math.Float32frombits(binary.LittleEndian.Uint32(out[4:]))
		if sum != 18 {
			t.Errorf("checks %s: sum %v, want 18", mode, sum)
		}
		if past != 0 && (past < 1 || past > 8 || past != float32(int(past))) {
			t.Errorf("checks %s: a read past the array gave %v, not one of its values or 0", mode, past)
		}
	}
}

// TestTuningCache (native: the browser has no files): a tuning device keeps
// its choices in a file per adapter, driver and kernel sources, loads them
// on the next open, replaces a file it cannot read (and says so), and keeps
// none when it does not tune or the cache is off.
func TestTuningCache(t *testing.T) {
	dir := t.TempDir()
	open := func(tune Tuning, cache string) *Device {
		t.Helper()
		d, err := Open(Options{Tune: tune, TuneCache: cache})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	choice := Choice{Key: "matmul/f32/nt/64x64x64/1", Chosen: "b", Timed: []Timing{{"a", 2e-3, 3}, {"b", 1e-3, 3}}}

	d := open(TuneOn, dir)
	path, loaded, err := d.TuningCache()
	if filepath.Dir(path) != dir || loaded != 0 || err != nil {
		t.Fatalf("empty cache: %q, %d loaded, %v", path, loaded, err)
	}
	d.Close() // no choices made: nothing written
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a device that chose nothing wrote %s (%v)", path, err)
	}
	d = open(TuneOn, dir)
	d.Choose(choice)
	d.Close()

	d = open(TuneOn, dir)
	if _, loaded, err := d.TuningCache(); loaded != 1 || err != nil {
		t.Errorf("reopened: %d loaded, %v; want 1", loaded, err)
	}
	if c, ok := d.Choice(choice.Key); !ok || c.Chosen != "b" || len(c.Timed) != 2 {
		t.Errorf("reopened: Choice = %+v, %v; want %+v", c, ok, choice)
	}
	d.Close()

	// Other kernels: another file.
	was := KernelSources
	t.Cleanup(func() { KernelSources = was })
	KernelSources = was + "changed"
	d = open(TuneOn, dir)
	if p, loaded, _ := d.TuningCache(); loaded != 0 || p == path {
		t.Errorf("changed kernels: %s, %d loaded; want another file, empty", p, loaded)
	}
	d.Close()
	KernelSources = was

	// A damaged file: ignored with the reason, replaced by the next choices.
	if err := os.WriteFile(path, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	d = open(TuneOn, dir)
	if _, loaded, err := d.TuningCache(); loaded != 0 || err == nil || !strings.Contains(err.Error(), "tuning again") {
		t.Errorf("damaged cache: %d loaded, %v; want 0 and the reason", loaded, err)
	}
	d.Choose(choice)
	d.Close()
	d = open(TuneOn, dir)
	if _, loaded, err := d.TuningCache(); loaded != 1 || err != nil {
		t.Errorf("after replacing the damaged cache: %d loaded, %v", loaded, err)
	}
	d.Close()

	// Two devices on the adapter (a split model) each choose: the file keeps
	// both.
	d1, d2 := open(TuneOn, dir), open(TuneOn, dir)
	d1.Choose(Choice{Key: "one", Chosen: "a"})
	d2.Choose(Choice{Key: "two", Chosen: "b"})
	d1.Close()
	d2.Close()
	d = open(TuneOn, dir)
	for _, key := range []string{choice.Key, "one", "two"} {
		if _, ok := d.Choice(key); !ok {
			t.Errorf("after two devices closed: no choice for %s", key)
		}
	}
	d.Close()

	for _, tc := range []struct {
		tune  Tuning
		cache string
	}{{TuneOff, dir}, {TuneOn, "off"}} {
		d = open(tc.tune, tc.cache)
		if p, loaded, _ := d.TuningCache(); p != "" || loaded != 0 {
			t.Errorf("tune %s, cache %q: file %q, %d loaded; want none", tc.tune, tc.cache, p, loaded)
		}
		d.Close()
	}
}
