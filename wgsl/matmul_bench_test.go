package wgsl

import (
	"fmt"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
)

// BenchmarkMatmul reports GFLOP/s of C = A·Bᵀ (a linear layer) over square
// sizes, f32 and f16 weights, with the adapter in the sub-benchmark name.
// Floor: 2·M·N·K FLOPs over the adapter's peak (lavapipe on 2 cores does
// about 1-2 GFLOP/s; an H100's f32 peak is ~60 TFLOP/s), and the bytes of A,
// B and C over memory bandwidth for the small sizes.
func BenchmarkMatmul(b *testing.B) {
	sizes := []int{64, 128, 256, 512, 1024, 2048, 4096}
	for _, bt := range []gpu.DType{gpu.F32, gpu.F16} {
		for _, n := range sizes {
			flops := 2 * float64(n) * float64(n) * float64(n)
			name := fmt.Sprintf("%s/%v/n=%d", adapterTag(), bt, n)
			b.Run(name, func(b *testing.B) {
				if dev.Info.Software && n > 512 {
					b.Skipf("n=%d takes minutes on the software adapter %q", n, dev.Info.Name)
				}
				a, _ := dev.NewBuffer(gpu.TagScratch, 4*int64(n*n))
				w, _ := dev.NewBuffer(gpu.TagScratch, bt.Bytes(n*n))
				c, _ := dev.NewBuffer(gpu.TagScratch, 4*int64(n*n))
				defer a.Release()
				defer w.Release()
				defer c.Release()
				run := func() {
					if err := Matmul(dev, Mat{Buf: c}, Mat{Buf: a}, Mat{Buf: w, DType: bt, T: true}, n, n, n, 1, 1, 0); err != nil {
						b.Fatal(err)
					}
				}
				run()
				if err := dev.Sync(); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					run()
				}
				if err := dev.Sync(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// adapterTag is the adapter's name as a benchmark name element.
func adapterTag() string {
	s := []rune(dev.Info.Name)
	for i, r := range s {
		if r == ' ' || r == '/' || r == '(' || r == ')' || r == ',' {
			s[i] = '_'
		}
	}
	return string(s)
}
