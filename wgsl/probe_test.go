package wgsl

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"unsafe"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/internal/half"
)

func TestProbeParamsLayout(t *testing.T) {
	if got := unsafe.Sizeof(ProbeParams{}); got != 16 {
		t.Errorf("ProbeParams is %d bytes, WGSL Params is 16", got)
	}
}

// refProbeFMA is thread t's result: 8 chains c_j = fma(c_j, a, b) from
// s + j/2, s = (t mod 7)/8, rounded to dt after each step, summed as the
// kernel pairs them.
func refProbeFMA(t, iters int, a, b float64, dt gpu.DType) float64 {
	round := func(x float64) float64 {
		if dt == gpu.F16 {
			return float64(half.F16ToF32(half.F32ToF16(float32(x))))
		}
		return float64(float32(x))
	}
	s := round(float64(t%7) * 0.125)
	var c [8]float64
	for j := range c {
		c[j] = round(s + float64(j)*0.5)
	}
	for i := 0; i < iters; i++ {
		for j := range c {
			c[j] = round(math.FMA(c[j], a, b)) // one rounding, as fma
		}
	}
	sum := ((c[0] + c[1]) + (c[2] + c[3])) + ((c[4] + c[5]) + (c[6] + c[7]))
	if dt == gpu.F16 {
		return 2 * sum // two lanes of the same chain
	}
	return sum
}

// TestProbe: the probes compute what they claim (so that their timings
// count real work): the fma chains against a float64 recurrence with dt's
// rounding, the copy exactly.
func TestProbe(t *testing.T) {
	for _, dt := range []gpu.DType{gpu.F32, gpu.F16} {
		t.Run(fmt.Sprint(dt), func(t *testing.T) {
			needF16(t, dt)
			const threads, iters = 300, 50
			a, b := float32(0.75), float32(0.25) // chains converge to b/(1-a) = 1
			out := output(t, threads)
			if err := ProbeFMA(dev, out, dt, threads, iters, a, b); err != nil {
				t.Fatal(err)
			}
			want := make([]float64, threads)
			for i := range want {
				want[i] = refProbeFMA(i, iters, float64(a), float64(b), dt)
			}
			// The chains sit at 1 after 50 rounds; the f32 sum of 8 (16)
			// values of 1 adds a few roundings; f16 chains may differ from
			// the reference by the last rounding of each step near 1.
			tl := tol{Atol: 0, Rtol: 1e-6}
			if dt == gpu.F16 {
				tl.Rtol = 0x1p-10
			}
			assertClose(t, "fma", download(t, out, threads, gpu.F32), want, tl)
		})
	}
	const n = 1000 // vec4
	r := rng(1)
	src := randn(r, 4*n, 1)
	sb, db := upload(t, src, gpu.F32), output(t, 4*n)
	if err := ProbeCopy(dev, db, sb, n); err != nil {
		t.Fatal(err)
	}
	if got := download(t, db, 4*n, gpu.F32); !slices.Equal(got, roundTo(src, gpu.F32)) {
		t.Error("copy: dst differs from src")
	}
}
