package wgsl

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/internal/half"
	"github.com/lomo-dev/lomo/internal/testgpu"
)

// dev is the one device the kernel tests share (opening one costs ~50 ms).
var dev *gpu.Device

func TestMain(m *testing.M) {
	testgpu.Main(m, func() (func(), error) {
		d, err := gpu.Open(gpu.Options{})
		if err != nil {
			return nil, fmt.Errorf("wgsl tests need a WebGPU adapter: %w", err)
		}
		fmt.Fprintf(os.Stderr, "wgsl tests on adapter %q (%s, %s)\n", d.Info.Name, d.Info.Type, d.Info.Backend)
		dev = d
		return d.Close, nil
	})
}

func rng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x10f0)) }

// randn returns n normal samples scaled by s.
func randn(r *rand.Rand, n int, s float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = r.NormFloat64() * s
	}
	return v
}

// upload makes a buffer of dtype t holding v (rounded to t).
func upload(t testing.TB, v []float64, dt gpu.DType) *gpu.Buffer {
	t.Helper()
	b, err := dev.NewBuffer(gpu.TagScratch, dt.Bytes(len(v)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Release)
	if err := dev.Write(b, 0, encode(v, dt)); err != nil {
		t.Fatal(err)
	}
	return b
}

// output makes an f32 buffer of n elements poisoned with NaN, so that an
// element the kernel fails to write fails the comparison.
func output(t testing.TB, n int) *gpu.Buffer {
	t.Helper()
	nan := make([]float64, n)
	for i := range nan {
		nan[i] = math.NaN()
	}
	return upload(t, nan, gpu.F32)
}

// uploadU32 makes a buffer holding v as u32 (ids, positions, flags).
func uploadU32(t testing.TB, v []uint32) *gpu.Buffer {
	t.Helper()
	b, err := dev.NewBuffer(gpu.TagScratch, int64(4*len(v)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Release)
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], x)
	}
	if err := dev.Write(b, 0, raw); err != nil {
		t.Fatal(err)
	}
	return b
}

// assertSameBits fails unless got and want hold the same values bit for
// bit (-0 is not +0): two implementations of one computation that are
// meant to do the same arithmetic in the same order.
func assertSameBits(t testing.TB, what string, got, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
			t.Fatalf("%s[%d] = %v, want %v bit for bit", what, i, got[i], want[i])
		}
	}
}

// outputWith makes an f32 buffer holding v (for kernels that accumulate).
func outputWith(t testing.TB, v []float64) *gpu.Buffer { return upload(t, v, gpu.F32) }

// needF16 skips a case with 16-bit activations on an adapter without
// shader-f16 (the browser's SwiftShader): lomo keeps activations in f32
// there, and the kernels refuse f16 outputs.
func needF16(t *testing.T, dts ...gpu.DType) {
	t.Helper()
	for _, dt := range dts {
		if dt == gpu.F16 && !dev.Caps.F16 {
			t.Skipf("adapter %q has no shader-f16: activations stay f32 there", dev.Info.Name)
		}
	}
}

// outputOf is output for dtype dt: f16 NaN is 0x7e00, bf16 NaN 0x7fc0.
func outputOf(t testing.TB, n int, dt gpu.DType) *gpu.Buffer {
	t.Helper()
	nan := make([]float64, n)
	for i := range nan {
		nan[i] = math.NaN()
	}
	return upload(t, nan, dt)
}

func encode(v []float64, dt gpu.DType) []byte {
	b := make([]byte, dt.Bytes(len(v)))
	for i, x := range v {
		switch dt {
		case gpu.F16:
			binary.LittleEndian.PutUint16(b[2*i:], half.F32ToF16(float32(x)))
		case gpu.BF16:
			binary.LittleEndian.PutUint16(b[2*i:], half.F32ToBF16(float32(x)))
		default:
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(x)))
		}
	}
	return b
}

// download reads n elements of dtype dt as float64.
func download(t testing.TB, b *gpu.Buffer, n int, dt gpu.DType) []float64 {
	t.Helper()
	raw, err := dev.Read(b, 0, dt.Bytes(n))
	if err != nil {
		t.Fatal(err)
	}
	v := make([]float64, n)
	for i := range v {
		switch dt {
		case gpu.F16:
			v[i] = float64(half.F16ToF32(binary.LittleEndian.Uint16(raw[2*i:])))
		case gpu.BF16:
			v[i] = float64(half.BF16ToF32(binary.LittleEndian.Uint16(raw[2*i:])))
		default:
			v[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
		}
	}
	return v
}

// roundTo rounds v to what dtype dt can store (the reference sees what the
// kernel sees).
func roundTo(v []float64, dt gpu.DType) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		switch dt {
		case gpu.F16:
			out[i] = float64(half.F16ToF32(half.F32ToF16(float32(x))))
		case gpu.BF16:
			out[i] = float64(half.BF16ToF32(half.F32ToBF16(float32(x))))
		default:
			out[i] = float64(float32(x))
		}
	}
	return out
}

// tol is |got-want| <= Atol + Rtol*|want|, NaN-aware: NaN matches only NaN.
type tol struct{ Atol, Rtol float64 }

func (tl tol) String() string { return fmt.Sprintf("atol %.1e rtol %.1e", tl.Atol, tl.Rtol) }

// assertClose fails with the first mismatches.
func assertClose(t testing.TB, what string, got, want []float64, tl tol) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	bad := 0
	worst := 0.0
	for i := range want {
		g, w := got[i], want[i]
		ok := math.Abs(g-w) <= tl.Atol+tl.Rtol*math.Abs(w)
		if math.IsNaN(w) || math.IsNaN(g) {
			ok = math.IsNaN(w) && math.IsNaN(g)
		}
		if math.IsInf(w, 0) {
			ok = g == w
		}
		if !ok {
			if bad < 5 {
				t.Errorf("%s[%d]: got %.8g, want %.8g (%v)", what, i, g, w, tl)
			}
			bad++
		} else if d := math.Abs(g - w); d > worst {
			worst = d
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values out of tolerance", what, bad, len(want))
	}
}

// centralDiff returns d f / d x[i] for every i by central differences in
// float64 (the function is the float64 reference, so the check is of the
// analytic backward formula that the kernel implements).
func centralDiff(f func(x []float64) float64, x []float64, h float64) []float64 {
	g := make([]float64, len(x))
	xx := append([]float64(nil), x...)
	for i := range x {
		xx[i] = x[i] + h
		fp := f(xx)
		xx[i] = x[i] - h
		fm := f(xx)
		xx[i] = x[i]
		g[i] = (fp - fm) / (2 * h)
	}
	return g
}

// dot is sum(a*b), for turning a vector output into a scalar loss
// L = sum(out * w) with random weights w, whose gradient dout = w.
func dot(a, b []float64) float64 {
	s := 0.0
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func sync(t testing.TB) {
	t.Helper()
	if err := dev.Sync(); err != nil {
		t.Fatal(err)
	}
}
