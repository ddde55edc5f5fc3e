package wgsl

import (
	"fmt"
	"math"
	"testing"
	"unsafe"

	"github.com/lomo-dev/lomo/gpu"
)

func TestDropoutParamsLayout(t *testing.T) {
	if size := unsafe.Sizeof(DropoutParams{}); size != 32 {
		t.Errorf("DropoutParams is %d bytes, its WGSL Params is 32", size)
	}
}

// TestDropout: the kernel keeps exactly the elements DropoutKeep names
// (the host's copy of the mask), scales them, accumulates with beta, and
// keeps about 1-p of them; another seed drops other elements.
func TestDropout(t *testing.T) {
	const n = 5000
	for _, dt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
		for _, p := range []float64{0, 0.05, 0.5} {
			t.Run(fmt.Sprintf("%v_p%g", dt, p), func(t *testing.T) {
				needF16(t, dt)
				r := rng(77)
				x := roundTo(randn(r, n, 1), dt)
				y0 := roundTo(randn(r, n, 1), dt)
				const seed = 12345
				scale := 1 / (1 - p)
				for _, beta := range []float32{0, 1} {
					xb, yb := upload(t, x, dt), upload(t, y0, dt)
					if err := Dropout(dev, yb, xb, n, dt, p, seed, float32(scale), beta); err != nil {
						t.Fatal(err)
					}
					want := make([]float64, n)
					kept := 0
					th := DropoutThreshold(p)
					for i := range want {
						if DropoutKeep(seed, th, i) {
							want[i] = float64(float32(scale)) * x[i]
							kept++
						}
						want[i] += float64(beta) * y0[i]
					}
					assertClose(t, fmt.Sprintf("dropout beta %v", beta), download(t, yb, n, dt), want, tol{Atol: 1e-6, Rtol: 1e-6 + rounding(dt)})
					// Binomial(n, 1-p): within 5 standard deviations.
					if sd := math.Sqrt(n * p * (1 - p)); math.Abs(float64(kept)-n*(1-p)) > 5*sd {
						t.Errorf("kept %d of %d at p=%g, expected about %.0f", kept, n, p, n*(1-p))
					}
				}
				if p > 0 {
					same := 0
					th := DropoutThreshold(p)
					for i := 0; i < n; i++ {
						if DropoutKeep(1, th, i) == DropoutKeep(2, th, i) {
							same++
						}
					}
					if same == n {
						t.Errorf("seeds 1 and 2 give the same mask")
					}
				}
			})
		}
	}
	if err := Dropout(dev, output(t, 4), output(t, 4), 4, gpu.F32, 1, 0, 1, 0); err == nil {
		t.Error("dropout with p = 1 was accepted")
	}
}
