package wgsl

import (
	"fmt"
	"math"
	"testing"
	"unsafe"

	"github.com/lomo-dev/lomo/gpu"
)

func silu64(x float64) float64 { return x / (1 + math.Exp(-x)) }

func TestElementwiseParamsLayout(t *testing.T) {
	for name, size := range map[string]uintptr{
		"ElementwiseParams":    unsafe.Sizeof(ElementwiseParams{}),
		"AxpyParams":           unsafe.Sizeof(AxpyParams{}),
		"SwiGLUBackwardParams": unsafe.Sizeof(SwiGLUBackwardParams{}),
	} {
		if size != 16 {
			t.Errorf("%s is %d bytes, its WGSL Params is 16", name, size)
		}
	}
}

// rounding is the relative error one rounding to dt adds: f32 2^-24, f16
// 2^-11, bf16 2^-8.
func rounding(dt gpu.DType) float64 {
	switch dt {
	case gpu.F16:
		return 0x1p-11
	case gpu.BF16:
		return 0x1p-8
	}
	return 0x1p-24
}

func TestElementwise(t *testing.T) {
	for _, dt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
		for ci, n := range []int{1, 255, 256, 257, 5000} {
			t.Run(fmt.Sprintf("%d_%v", n, dt), func(t *testing.T) {
				needF16(t, dt)
				r := rng(uint64(100 + ci))
				a, b := roundTo(randn(r, n, 3), dt), roundTo(randn(r, n, 1), dt)
				ab, bb := upload(t, a, dt), upload(t, b, dt)
				sum, h := outputOf(t, n, dt), outputOf(t, n, dt)
				if err := Add(dev, sum, ab, bb, n, dt); err != nil {
					t.Fatal(err)
				}
				if err := SwiGLU(dev, h, ab, bb, n, dt); err != nil {
					t.Fatal(err)
				}
				wantSum, wantH := make([]float64, n), make([]float64, n)
				for i := range a {
					wantSum[i] = a[i] + b[i]
					wantH[i] = silu64(a[i]) * b[i]
				}
				// One rounding of the result to dt, and exp's few-ulp (f32)
				// error in silu.
				e := rounding(dt)
				assertClose(t, "add", download(t, sum, n, dt), wantSum, tol{Atol: 1e-6, Rtol: 1e-6 + e})
				assertClose(t, "swiglu", download(t, h, n, dt), wantH, tol{Atol: 1e-6, Rtol: 1e-5 + e})

				y0 := roundTo(randn(r, n, 1), dt)
				yb := upload(t, y0, dt)
				if err := Axpy(dev, yb, ab, n, dt, 0.5, 2); err != nil {
					t.Fatal(err)
				}
				wantY := make([]float64, n)
				for i := range y0 {
					wantY[i] = 0.5*a[i] + 2*y0[i]
				}
				assertClose(t, "axpy", download(t, yb, n, dt), wantY, tol{Atol: 1e-6, Rtol: 1e-6 + e})
			})
		}
	}
}

func TestSwiGLUBackward(t *testing.T) {
	const n = 37
	for _, dt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
		if dt == gpu.F16 && !dev.Caps.F16 {
			t.Logf("adapter %q has no shader-f16: f16 case skipped (activations stay f32 there)", dev.Info.Name)
			continue
		}
		r := rng(7)
		g, u, w := roundTo(randn(r, n, 2), dt), roundTo(randn(r, n, 1), dt), roundTo(randn(r, n, 1), dt)
		// L = sum(silu(g)*u * w): dh = w.
		loss := func(g, u []float64) float64 {
			s := 0.0
			for i := range g {
				s += silu64(g[i]) * u[i] * w[i]
			}
			return s
		}
		wantDg := centralDiff(func(x []float64) float64 { return loss(x, u) }, g, 1e-5)
		wantDu := centralDiff(func(x []float64) float64 { return loss(g, x) }, u, 1e-5)
		for _, acc := range []bool{false, true} {
			dg0, du0 := roundTo(randn(r, n, 1), dt), roundTo(randn(r, n, 1), dt)
			var dgb, dub = outputOf(t, n, dt), outputOf(t, n, dt)
			if acc {
				dgb, dub = upload(t, dg0, dt), upload(t, du0, dt)
			}
			if err := SwiGLUBackward(dev, dgb, dub, upload(t, w, dt), upload(t, g, dt), upload(t, u, dt), n, dt, acc, acc); err != nil {
				t.Fatal(err)
			}
			wg, wu := append([]float64(nil), wantDg...), append([]float64(nil), wantDu...)
			if acc {
				for i := range wg {
					wg[i] += dg0[i]
					wu[i] += du0[i]
				}
			}
			// Central differences in float64 with h=1e-5 are good to ~1e-9;
			// the kernel's f32 arithmetic is a few ulp of values of order 1,
			// and an f16 result adds its rounding.
			tl := tol{Atol: 1e-5, Rtol: 1e-5 + rounding(dt)}
			assertClose(t, fmt.Sprintf("dg(acc=%v,%v)", acc, dt), download(t, dgb, n, dt), wg, tl)
			assertClose(t, fmt.Sprintf("du(acc=%v,%v)", acc, dt), download(t, dub, n, dt), wu, tl)
			if acc {
				continue
			}
			// In place: the same values, bit for bit, written over g and u.
			gb, ub := upload(t, g, dt), upload(t, u, dt)
			if err := SwiGLUBackwardInPlace(dev, gb, ub, upload(t, w, dt), n, dt); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name      string
				got, want *gpu.Buffer
			}{{"dg", gb, dgb}, {"du", ub, dub}} {
				assertSameBits(t, fmt.Sprintf("%s in place (%v) against SwiGLUBackward", c.name, dt), download(t, c.got, n, dt), download(t, c.want, n, dt))
			}
		}
	}
}
