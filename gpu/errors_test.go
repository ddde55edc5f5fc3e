package gpu

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// These tests run natively and, compiled to WASM, in headless Chromium
// (e2e/gpu.test.mjs): every failure is a Go error that names what lomo was
// doing, and the device stays usable after it.

// wantError checks that err is a *Error of the kind whose operation and
// message contain the given parts.
func wantError(t *testing.T, err error, kind, op string, msgParts ...string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want a *gpu.Error (%s, %q), got %T: %v", kind, op, err, err)
	}
	if e.Kind != kind || !strings.Contains(e.Op, op) {
		t.Errorf("got kind %q op %q, want kind %q op containing %q (error: %v)", e.Kind, e.Op, kind, op, err)
	}
	for _, p := range msgParts {
		if !strings.Contains(strings.ToLower(e.Msg), strings.ToLower(p)) {
			t.Errorf("message does not mention %q: %s", p, e.Msg)
		}
	}
	t.Logf("error as reported: %v", err)
}

// stillWorks runs a dispatch and reads its result back.
func stillWorks(t *testing.T, d *Device) {
	t.Helper()
	k, err := d.Kernel(KernelSpec{Name: "test/scale", Source: scaleWGSL, Bindings: []Access{ReadOnly, ReadWrite}, ParamsSize: ParamsSize(scaleParams{})})
	if err != nil {
		t.Fatal(err)
	}
	x, _ := d.NewBuffer(TagScratch, 16)
	y, _ := d.NewBuffer(TagScratch, 16)
	defer x.Release()
	defer y.Release()
	if err := d.Write(x, 0, f32bytes([]float32{1, 2, 3, 4})); err != nil {
		t.Fatal(err)
	}
	if err := d.Dispatch(k, Params(scaleParams{N: 4, Scale: 2}), []*Buffer{x, y}, 1, 1, 1); err != nil {
		t.Fatal(err)
	}
	out, err := d.Read(y, 0, 0)
	if err != nil {
		t.Fatalf("the device does not work after the error: %v", err)
	}
	for i, w := range []float32{2, 4, 6, 8} {
		if got := f32at(out, i); got != w {
			t.Fatalf("after the error, element %d = %v, want %v", i, got, w)
		}
	}
}

func f32at(b []byte, i int) float32 {
	return math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
}

func TestInvalidKernelIsNamed(t *testing.T) {
	d := openTest(t)
	_, err := d.Kernel(KernelSpec{Name: "test/broken", Source: "fn main( {", ParamsSize: 16})
	wantError(t, err, "validation", `compile kernel "test/broken"`)
	// The compiler's own message, which names what is wrong and where.
	_, err = d.Kernel(KernelSpec{Name: "test/undefined", Source: "@compute @workgroup_size(1) fn main() { let x = nowhere; }", ParamsSize: 16})
	wantError(t, err, "validation", `compile kernel "test/undefined"`)
	if err == nil || !strings.Contains(err.Error(), "nowhere") {
		t.Errorf("an undefined identifier: got %v, want the compiler's message naming it", err)
	}
	// CheckSource compiles without a pipeline: the same message; nil for
	// valid WGSL; nothing cached.
	err = d.CheckSource("test/undefined", "@compute @workgroup_size(1) fn main() { let x = nowhere; }")
	wantError(t, err, "validation", `compile kernel "test/undefined"`)
	if err == nil || !strings.Contains(err.Error(), "nowhere") {
		t.Errorf("CheckSource of an undefined identifier: got %v, want the compiler's message naming it", err)
	}
	if err := d.CheckSource("test/scale", scaleWGSL); err != nil {
		t.Errorf("CheckSource of a valid kernel: %v", err)
	}
	if _, ok := d.CachedKernel("test/scale"); ok {
		t.Error("CheckSource cached a kernel")
	}
	// Valid WGSL whose binding 0 is read_write where the layout says
	// read-only: the pipeline, not the parser, rejects it.
	_, err = d.Kernel(KernelSpec{Name: "test/mislaid", Source: scaleWGSL, Bindings: []Access{ReadWrite, ReadOnly}, ParamsSize: 16})
	wantError(t, err, "validation", `compile kernel "test/mislaid"`)
	if _, ok := d.CachedKernel("test/mislaid"); ok {
		t.Error("a kernel that failed to compile was cached")
	}
	stillWorks(t, d)
}

func TestFailingSubmitIsNamed(t *testing.T) {
	d := openTest(t)
	k, err := d.Kernel(KernelSpec{Name: "test/scale", Source: scaleWGSL, Bindings: []Access{ReadOnly, ReadWrite}, ParamsSize: ParamsSize(scaleParams{})})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := d.NewBuffer(TagScratch, 64)
	defer a.Release()
	// One buffer bound read-only and writable in the same dispatch: a usage
	// conflict that only WebGPU's validation of the batch sees.
	err = d.Dispatch(k, Params(scaleParams{N: 16, Scale: 2}), []*Buffer{a, a}, 1, 1, 1)
	if err == nil {
		err = d.Flush()
	}
	wantError(t, err, "validation", "submit a batch of 1 dispatches (kernels test/scale)")
	stillWorks(t, d)

	// A buffer destroyed between recording and submitting (a lifetime bug
	// in lomo): the submit is refused with an error instead of reaching
	// wgpu-native, which would abort the process.
	b, _ := d.NewBuffer(TagScratch, 64)
	c, _ := d.NewBuffer(TagScratch, 64)
	if err := d.Dispatch(k, Params(scaleParams{N: 16, Scale: 2}), []*Buffer{b, c}, 1, 1, 1); err != nil {
		t.Fatal(err)
	}
	b.buf.destroy()
	_, err = d.Read(c, 0, 0)
	wantError(t, err, "validation", "submit a batch of 1 dispatches (kernels test/scale) and 1 copies", "destroyed")
	b.Release()
	c.Release()
	stillWorks(t, d)
}

func TestUseAfterCloseIsAnError(t *testing.T) {
	d, err := Open(Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := d.NewBuffer(TagScratch, 16)
	d.Close()
	if _, err := d.NewBuffer(TagScratch, 16); !errors.Is(err, ErrClosed) {
		t.Errorf("NewBuffer after Close: %v", err)
	}
	if _, err := d.Read(b, 0, 0); err == nil {
		t.Error("Read after Close succeeded")
	}
	b.Release() // accounting only
	d.Close()   // twice is a no-op
}
