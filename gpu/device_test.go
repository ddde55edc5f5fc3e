package gpu

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
)

func openTest(t *testing.T) *Device {
	t.Helper()
	d, err := Open(Options{})
	if err != nil {
		t.Fatalf("open device: %v", err)
	}
	t.Cleanup(d.Close)
	t.Logf("adapter: %s (%s, %s)", d.Info.Name, d.Info.Type, d.Info.Backend)
	return d
}

func TestStatsExact(t *testing.T) {
	d := openTest(t)
	base := d.Stats() // the uniform arena may already exist
	alloc := func(tag Tag, n int64) *Buffer {
		b, err := d.NewBuffer(tag, n)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	p1 := alloc(TagParam, 1000)
	p2 := alloc(TagParam, 6) // rounds to 8
	g1 := alloc(TagGrad, 400)
	a1 := alloc(TagActivation, 4096)
	g1.Release()
	g2 := alloc(TagGrad, 800) // grad peak is 800, not 1200
	a1.Release()
	a1.Release() // second release is a no-op
	s := d.Stats()
	want := map[Tag]MemStat{
		TagParam:      {Live: 1008, Peak: 1008},
		TagGrad:       {Live: 800, Peak: 800},
		TagActivation: {Live: 0, Peak: 4096},
	}
	for tag, w := range want {
		got := s.Tag(tag)
		got.Live -= base.Tag(tag).Live
		got.Peak -= base.Tag(tag).Peak
		if got != w {
			t.Errorf("%s: got %+v, want %+v", tag, got, w)
		}
	}
	// Total peak: params 1008 + grad 400 + act 4096 = 5504 before g1 was
	// released; later 1008+800+4096 = 5904 while a1 and g2 were both live.
	if got := s.Total.Live - base.Total.Live; got != 1808 {
		t.Errorf("total live %d, want 1808", got)
	}
	if got := s.Total.Peak - base.Total.Live; got != 5904 {
		t.Errorf("total peak %d, want 5904", got)
	}
	// The released 4096-byte buffer is reused without a new reservation.
	r0 := d.Stats().Reserved.Live
	a2 := alloc(TagScratch, 4096)
	if r1 := d.Stats().Reserved.Live; r1 != r0 {
		t.Errorf("reserved grew from %d to %d although a cached buffer fit", r0, r1)
	}
	for _, b := range []*Buffer{p1, p2, g2, a2} {
		b.Release()
	}
	if got := d.Stats().Total.Live; got != base.Total.Live {
		t.Errorf("after releasing all: live %d, want %d", got, base.Total.Live)
	}
	d.ResetPeak()
	if s := d.Stats(); s.Total.Peak != s.Total.Live {
		t.Errorf("after ResetPeak: peak %d != live %d", s.Total.Peak, s.Total.Live)
	}
}

// scaleDecls are the bindings of the test kernels: x in, y out, and
// scaleParams.
const scaleDecls = `
struct Params { n: u32, scale: f32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
`

const scaleWGSL = scaleDecls + `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let i = gid.x + gid.y * nwg.x * 64u;
	if (i < p.n) { y[i] = x[i] * p.scale; }
}`

type scaleParams struct {
	N      uint32
	Scale  float32
	P0, P1 uint32
}

func f32bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func TestDispatchManyInOneBatch(t *testing.T) {
	d := openTest(t)
	k, err := d.Kernel(KernelSpec{Name: "test/scale", Source: scaleWGSL, Bindings: []Access{ReadOnly, ReadWrite}, ParamsSize: ParamsSize(scaleParams{})})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(i)
	}
	a, _ := d.NewBuffer(TagScratch, 4*n)
	b, _ := d.NewBuffer(TagScratch, 4*n)
	defer a.Release()
	defer b.Release()
	if err := d.Write(a, 0, f32bytes(x)); err != nil {
		t.Fatal(err)
	}
	// 600 dispatches ping-pong between a and b, crossing the batch limit:
	// each multiplies by 1.01 and the uniforms of all must be kept apart.
	gx, gy, gz := d.Grid(n, 64)
	for i := 0; i < 600; i++ {
		src, dst := a, b
		if i%2 == 1 {
			src, dst = b, a
		}
		s := float32(1)
		if i%3 == 0 {
			s = 1.01
		}
		if err := d.Dispatch(k, Params(scaleParams{N: n, Scale: s}), []*Buffer{src, dst}, gx, gy, gz); err != nil {
			t.Fatal(err)
		}
	}
	out, err := d.Read(a, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := math.Pow(1.01, 200)
	for i := 0; i < n; i++ {
		got := math.Float32frombits(binary.LittleEndian.Uint32(out[4*i:]))
		want := float64(i) * f
		if math.Abs(float64(got)-want) > 1e-4*want+1e-6 {
			t.Fatalf("element %d: got %v want %v", i, got, want)
		}
	}
}

func TestErrorsNameTheOperation(t *testing.T) {
	d := openTest(t)
	_, err := d.Kernel(KernelSpec{Name: "test/broken", Source: "fn main( {", Bindings: nil, ParamsSize: 16})
	if err == nil || !strings.Contains(err.Error(), `compile kernel "test/broken"`) {
		t.Errorf("broken WGSL: got %v", err)
	}
	k, err := d.Kernel(KernelSpec{Name: "test/scale", Source: scaleWGSL, Bindings: []Access{ReadOnly, ReadWrite}, ParamsSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := d.NewBuffer(TagScratch, 16)
	if err := d.Dispatch(k, Params(scaleParams{}), []*Buffer{a}, 1, 1, 1); err == nil {
		t.Error("dispatch with too few buffers succeeded")
	}
	a.Release()
	if err := d.Dispatch(k, Params(scaleParams{}), []*Buffer{a, a}, 1, 1, 1); !errors.Is(err, ErrReleased) {
		t.Errorf("dispatch with released buffer: got %v", err)
	}
	if _, err := d.Read(a, 0, 0); !errors.Is(err, ErrReleased) {
		t.Errorf("read of released buffer: got %v", err)
	}
}

func TestAdapterSelection(t *testing.T) {
	if _, err := Open(Options{Adapter: "no-such-adapter-xyz"}); !errors.Is(err, ErrAdapterNotFound) {
		t.Errorf("unknown adapter name: got %v", err)
	}
	if _, err := Open(Options{Adapter: "99"}); !errors.Is(err, ErrAdapterNotFound) {
		t.Errorf("adapter index out of range: got %v", err)
	}
	infos, err := Adapters()
	if err != nil || len(infos) == 0 {
		t.Fatalf("Adapters: %v %v", infos, err)
	}
	for i := 1; i < len(infos); i++ {
		if rankOf(infos[i].Type) < rankOf(infos[i-1].Type) {
			t.Errorf("adapters not in preference order: %v", infos)
		}
	}
	d, err := Open(Options{Adapter: "0"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Info.Name != infos[0].Name {
		t.Errorf("adapter 0 is %q, opened %q", infos[0].Name, d.Info.Name)
	}
}

func TestGridFolds(t *testing.T) {
	d := &Device{limits: Limits{MaxWorkgroupsPerDimension: 65535}}
	for _, n := range []int{1, 64, 65, 65535 * 64, 65535*64 + 1, 300_000_000} {
		x, y, _ := d.Grid(n, 64)
		if int(x)*int(y)*64 < n || x > 65535 || y > 65535 {
			t.Errorf("Grid(%d): %d x %d", n, x, y)
		}
	}
}

// The device gets the adapter's buffer limits, not WebGPU's defaults (256
// MiB buffers, 128 MiB storage bindings): the browser binding drops
// requiredLimits and the native one cannot read limits back, so lomo
// requests and reads them itself.
func TestDeviceGetsAdapterLimits(t *testing.T) {
	d := openTest(t)
	t.Logf("adapter limits %+v", d.Info.Limits)
	t.Logf("device limits  %+v", d.Limits())
	got, want := d.Limits(), d.Info.Limits
	if got.MaxBufferSize != want.MaxBufferSize || got.MaxStorageBufferBindingSize != want.MaxStorageBufferBindingSize ||
		got.MaxComputeWorkgroupStorageSize != want.MaxComputeWorkgroupStorageSize || got.MaxStorageBuffersPerStage != want.MaxStorageBuffersPerStage {
		t.Errorf("device limits %+v, adapter offers %+v", got, want)
	}
	if got.MaxBufferSize > 300<<20 {
		b, err := d.NewBuffer(TagScratch, 300<<20)
		if err != nil {
			t.Fatalf("a 300 MiB buffer under a %d-byte limit: %v", got.MaxBufferSize, err)
		}
		b.Release()
		d.TrimCache()
	}
}
