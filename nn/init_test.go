package nn

import (
	"math"
	"runtime"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
)

// InitRandomBlocks gives the same weights on one CPU and on several, norm
// weights of 1 and N(0, std) elsewhere, each block from a stream of its own.
func TestInitRandomBlocks(t *testing.T) {
	defer func(b int) { initBlock = b }(initBlock)
	initBlock = 64 // the toy's matrices span 3 to 10 blocks
	const std = 0.3
	norms := map[string]bool{}
	weights := func(procs int, dt gpu.DType) map[string][]float32 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		m, err := NewLlama(dev, toyConfig(false), dt)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Release()
		if err := m.InitRandomBlocks(9, std); err != nil {
			t.Fatal(err)
		}
		w := map[string][]float32{}
		for _, p := range m.Params() {
			if w[p.Name], err = ReadF32(dev, p.Tensor); err != nil {
				t.Fatal(err)
			}
			if len(p.Shape) == 1 {
				norms[p.Name] = true
			}
		}
		return w
	}
	for _, dt := range []gpu.DType{gpu.F32, gpu.BF16} {
		one, four := weights(1, dt), weights(4, dt)
		var sum, sq float64
		n := 0
		for name, v := range one {
			for i, x := range v {
				if math.Float32bits(x) != math.Float32bits(four[name][i]) {
					t.Fatalf("%v %s[%d]: %v on one CPU, %v on four", dt, name, i, x, four[name][i])
				}
			}
			if norms[name] {
				for i, x := range v {
					if x != 1 {
						t.Fatalf("%v norm weight %s[%d] = %v, want 1", dt, name, i, x)
					}
				}
				continue
			}
			for _, x := range v {
				sum, sq, n = sum+float64(x), sq+float64(x)*float64(x), n+1
			}
			// Each block draws its own values: no block repeats the first.
			for lo := initBlock; lo+initBlock <= len(v); lo += initBlock {
				same := true
				for i := range initBlock {
					same = same && v[lo+i] == v[i]
				}
				if same {
					t.Fatalf("%v %s: the block at %d repeats the first", dt, name, lo)
				}
			}
		}
		mean := sum / float64(n)
		sd := math.Sqrt(sq/float64(n) - mean*mean)
		// Four standard errors: std/√n for the mean, about std/√(2n) for
		// the deviation (n = 5024).
		if math.Abs(mean) > 4*std/math.Sqrt(float64(n)) || math.Abs(sd-std) > 4*std/math.Sqrt(2*float64(n)) {
			t.Fatalf("%v: %d weights with mean %.4f and deviation %.4f, want N(0, %v)", dt, n, mean, sd, std)
		}
	}
}
