package wgsl

import (
	"fmt"
	"math"
	"testing"
	"unsafe"
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

func TestElementwise(t *testing.T) {
	for ci, n := range []int{1, 255, 256, 257, 5000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := rng(uint64(100 + ci))
			a, b := randn(r, n, 3), randn(r, n, 1)
			ab, bb := upload(t, a, 0), upload(t, b, 0)
			sum, h := output(t, n), output(t, n)
			if err := Add(dev, sum, ab, bb, n); err != nil {
				t.Fatal(err)
			}
			if err := SwiGLU(dev, h, ab, bb, n); err != nil {
				t.Fatal(err)
			}
			wantSum, wantH := make([]float64, n), make([]float64, n)
			for i := range a {
				wantSum[i] = a[i] + b[i]
				wantH[i] = silu64(a[i]) * b[i]
			}
			// One f32 rounding of the result, and exp's few-ulp error in silu.
			assertClose(t, "add", download(t, sum, n, 0), wantSum, tol{Atol: 1e-6, Rtol: 1e-6})
			assertClose(t, "swiglu", download(t, h, n, 0), wantH, tol{Atol: 1e-6, Rtol: 1e-5})

			y0 := randn(r, n, 1)
			yb := outputWith(t, y0)
			if err := Axpy(dev, yb, ab, n, 0.5, 2); err != nil {
				t.Fatal(err)
			}
			wantY := make([]float64, n)
			for i := range y0 {
				wantY[i] = 0.5*a[i] + 2*y0[i]
			}
			assertClose(t, "axpy", download(t, yb, n, 0), wantY, tol{Atol: 1e-6, Rtol: 1e-6})
		})
	}
}

func TestSwiGLUBackward(t *testing.T) {
	const n = 37
	r := rng(7)
	g, u, w := randn(r, n, 2), randn(r, n, 1), randn(r, n, 1)
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
		dg0, du0 := randn(r, n, 1), randn(r, n, 1)
		var dgb, dub = output(t, n), output(t, n)
		if acc {
			dgb, dub = outputWith(t, dg0), outputWith(t, du0)
		}
		if err := SwiGLUBackward(dev, dgb, dub, upload(t, w, 0), upload(t, g, 0), upload(t, u, 0), n, acc, acc); err != nil {
			t.Fatal(err)
		}
		wg, wu := append([]float64(nil), wantDg...), append([]float64(nil), wantDu...)
		if acc {
			for i := range wg {
				wg[i] += dg0[i]
				wu[i] += du0[i]
			}
		}
		// Central differences in float64 with h=1e-5 are good to ~1e-9; the
		// kernel's f32 arithmetic dominates: a few ulp of values of order 1.
		tl := tol{Atol: 1e-5, Rtol: 1e-5}
		assertClose(t, fmt.Sprintf("dg(acc=%v)", acc), download(t, dgb, n, 0), wg, tl)
		assertClose(t, fmt.Sprintf("du(acc=%v)", acc), download(t, dub, n, 0), wu, tl)
	}
}
