package wgsl

import (
	"fmt"
	"math"
	"testing"
	"unsafe"

	"github.com/lomo-dev/lomo/gpu"
)

func TestAdamWParamsLayout(t *testing.T) {
	if got := unsafe.Sizeof(AdamWParams{}); got != 48 {
		t.Errorf("AdamWParams is %d bytes, WGSL Params is 48", got)
	}
}

// refAdamW applies two AdamW steps in float64 (t = 1, 2).
func refAdamW(p, g1, g2 []float64, s AdamWStep) (out, m, v []float64) {
	out = append([]float64(nil), p...)
	m, v = make([]float64, len(p)), make([]float64, len(p))
	b1, b2 := float64(s.Beta1), float64(s.Beta2)
	for t, g := range [][]float64{g1, g2} {
		bc1, bc2 := 1-math.Pow(b1, float64(t+1)), 1-math.Pow(b2, float64(t+1))
		for i := range out {
			gi := g[i] * float64(s.GradScale)
			m[i] = b1*m[i] + (1-b1)*gi
			v[i] = b2*v[i] + (1-b2)*gi*gi
			out[i] = out[i]*(1-float64(s.LR)*float64(s.WeightDecay)) - float64(s.LR)*(m[i]/bc1)/(math.Sqrt(v[i]/bc2)+float64(s.Eps))
		}
	}
	return
}

func TestAdamW(t *testing.T) {
	// gt: the gradient's dtype; f16 gradients are read exactly, so the
	// reference takes their f16 values and the tolerances stay.
	for _, c := range []struct{ pt, gt gpu.DType }{{gpu.F32, gpu.F32}, {gpu.F16, gpu.F32}, {gpu.F32, gpu.F16}, {gpu.F16, gpu.F16}, {gpu.BF16, gpu.BF16}, {gpu.BF16, gpu.F32}} {
		pt, gt := c.pt, c.gt
		for _, n := range []int{1, 2, 511, 1000} {
			name := fmt.Sprintf("%v_%d", pt, n)
			if gt != gpu.F32 {
				name += "_g" + gt.String()
			}
			t.Run(name, func(t *testing.T) {
				r := rng(uint64(n) + 77)
				p0 := roundTo(randn(r, n, 1), pt)
				g1, g2 := roundTo(randn(r, n, 1), gt), roundTo(randn(r, n, 1), gt)
				s := AdamWStep{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1, GradScale: 0.5}
				pb := upload(t, p0, pt)
				var master *gpu.Buffer
				if pt.Half() {
					master = upload(t, p0, gpu.F32)
				}
				mb, vb := outputWith(t, make([]float64, n)), outputWith(t, make([]float64, n))
				for step, g := range [][]float64{g1, g2} {
					st := s
					st.BC1 = float32(1 - math.Pow(0.9, float64(step+1)))
					st.BC2 = float32(1 - math.Pow(0.999, float64(step+1)))
					if err := AdamWUpdate(dev, pb, master, mb, vb, upload(t, g, gt), pt, gt, n, st); err != nil {
						t.Fatal(err)
					}
				}
				want, wm, wv := refAdamW(p0, g1, g2, s)
				// f32: a few roundings of values of order 1 per step. f16: the
				// weights are the master rounded to f16 (rel 2^-11).
				switch pt {
				case gpu.F16:
					assertClose(t, "master", download(t, master, n, gpu.F32), want, tol{Atol: 1e-6, Rtol: 1e-5})
					assertClose(t, "p", download(t, pb, n, gpu.F16), roundTo(want, gpu.F16), tol{Atol: 1e-6, Rtol: 1e-3})
				case gpu.BF16:
					// The weights are the master rounded to nearest bf16.
					m := download(t, master, n, gpu.F32)
					assertClose(t, "master", m, want, tol{Atol: 1e-6, Rtol: 1e-5})
					assertSameBits(t, "p", download(t, pb, n, gpu.BF16), roundTo(m, gpu.BF16))
				default:
					assertClose(t, "p", download(t, pb, n, gpu.F32), want, tol{Atol: 1e-6, Rtol: 1e-5})
				}
				assertClose(t, "m", download(t, mb, n, gpu.F32), wm, tol{Atol: 1e-7, Rtol: 1e-5})
				assertClose(t, "v", download(t, vb, n, gpu.F32), wv, tol{Atol: 1e-9, Rtol: 1e-5})
			})
		}
	}
}
