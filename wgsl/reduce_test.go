package wgsl

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"testing"
	"unsafe"

	"github.com/lomo-dev/lomo/gpu"
)

// refSumSquares is sum_i (x[i]*scale)^2 in float64.
func refSumSquares(x []float64, scale float64) float64 {
	s := 0.0
	for _, v := range x {
		s += (v * scale) * (v * scale)
	}
	return s
}

// refCheckFinite is "some |x*scale| is not <= limit", with x*scale rounded
// to f32 as the kernel computes it.
func refCheckFinite(x []float64, scale, limit float32) bool {
	for _, v := range x {
		a := math.Abs(float64(float32(v) * scale))
		if !(a <= float64(limit)) || math.IsInf(a, 0) {
			return true
		}
	}
	return false
}

func TestReduceParamsLayout(t *testing.T) {
	// Params in reduce.wgsl: n, index, groups, bits, off, _p0, _p1, scale.
	if got := unsafe.Sizeof(ReduceParams{}); got != 32 {
		t.Errorf("ReduceParams is %d bytes, WGSL Params is 32", got)
	}
	if got := unsafe.Offsetof(ReduceParams{}.Off); got != 16 {
		t.Errorf("Off at %d, WGSL at 16", got)
	}
	if got := unsafe.Offsetof(ReduceParams{}.Scale); got != 28 {
		t.Errorf("Scale at %d, WGSL at 28", got)
	}
}

func TestSumSquares(t *testing.T) {
	ns := []int{1, 2, 3, 255, 256, 257, 1000, 4097, 65536, 100003, 300001}
	for _, dt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
		for ni, n := range ns {
			t.Run(fmt.Sprintf("%v_n%d", dt, n), func(t *testing.T) {
				r := rng(uint64(200 + ni))
				x := roundTo(randn(r, n, 3), dt)
				if dt.Half() && n%2 == 1 {
					// A NaN in the padding half of the last pair must not leak in.
					x = append(x, math.NaN())
				}
				xb := upload(t, x, dt)
				x = x[:n]
				scale := float32(0.37)
				const idx = 2
				out0 := []float64{math.NaN(), 5, 1.25, math.NaN()} // NaN neighbours: untouched
				out := outputWith(t, out0)
				if err := SumSquares(dev, out, idx, xb, dt, n, scale); err != nil {
					t.Fatal(err)
				}
				want := append([]float64(nil), out0...)
				want[idx] += refSumSquares(x, float64(scale))
				// f32 sums of positive terms: each thread adds up to
				// n/(1024*256)+1 terms, then two trees of 8 levels, so the
				// relative error is below (n/262144 + 20) * 2^-24 < 2e-6.
				assertClose(t, "out", download(t, out, 4, gpu.F32), want, tol{Rtol: 2e-6})
			})
		}
	}
}

func TestSumSquaresDeterministic(t *testing.T) {
	const n = 300001
	x := randn(rng(3), n, 1)
	xb := upload(t, x, gpu.F32)
	var first []byte
	for i := 0; i < 3; i++ {
		out := outputWith(t, []float64{0})
		if err := SumSquares(dev, out, 0, xb, gpu.F32, n, 1); err != nil {
			t.Fatal(err)
		}
		got, err := dev.Read(out, 0, 4)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = got
		} else if !bytes.Equal(first, got) {
			t.Fatalf("run %d gave %x, run 0 gave %x", i, got, first)
		}
	}
}

func reduceReadFlags(t testing.TB, b *gpu.Buffer, n int) []uint32 {
	t.Helper()
	raw, err := dev.Read(b, 0, int64(4*n))
	if err != nil {
		t.Fatal(err)
	}
	v := make([]uint32, n)
	for i := range v {
		v[i] = binary.LittleEndian.Uint32(raw[4*i:])
	}
	return v
}

func TestCheckFinite(t *testing.T) {
	inf := float32(math.Inf(1))
	cases := []struct {
		name         string
		n, at        int     // length; position of the special value (-1: none)
		val          float64 // the special value
		scale, limit float32
		pre          uint32 // the flag before the call
	}{
		{"clean", 1000, -1, 0, 1, inf, 0},
		{"clean_fp16_limit", 1000, -1, 0, 1, 65504, 0},
		{"clean_odd", 257, -1, 0, 1, inf, 0}, // f16: a NaN in the padding half
		{"nan_first", 1000, 0, math.NaN(), 1, inf, 0},
		{"nan_last", 70001, 70000, math.NaN(), 1, inf, 0},
		{"pos_inf", 257, 100, math.Inf(1), 1, inf, 0},
		{"neg_inf", 257, 256, math.Inf(-1), 0.5, inf, 0},
		{"inf_small_scale", 10, 3, math.Inf(1), 0.001, 65504, 0},
		{"above_fp16", 513, 512, 70000, 1, 65504, 0},
		{"below_fp16", 513, 512, 65504, 1, 65504, 0},
		{"negative_above_fp16", 33, 5, -65520, 1, 65504, 0},
		{"scaled_over", 100, 50, 40000, 2, 65504, 0},
		{"scaled_under", 100, 50, 100000, 0.5, 65504, 0},
		{"f32_overflow_by_scale", 100, 7, 3e38, 4, inf, 0},
		{"never_cleared", 300, -1, 0, 1, inf, 1},
	}
	for _, dt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
		for ci, tc := range cases {
			t.Run(fmt.Sprintf("%v_%s", dt, tc.name), func(t *testing.T) {
				x := randn(rng(uint64(300+ci)), tc.n, 100)
				if tc.at >= 0 {
					x[tc.at] = tc.val
				}
				// In f16, 70000 and 3e38 round to inf.
				x = roundTo(x, dt)
				if dt.Half() && tc.n%2 == 1 {
					// A NaN in the padding half of the last pair must not count.
					x = append(x, math.NaN())
				}
				xb := upload(t, x, dt)
				x = x[:tc.n]
				const idx = 1
				flags := uploadU32(t, []uint32{7, tc.pre, 9})
				if err := CheckFinite(dev, flags, idx, xb, dt, tc.n, tc.scale, tc.limit); err != nil {
					t.Fatal(err)
				}
				want := []uint32{7, tc.pre, 9}
				if refCheckFinite(x, tc.scale, tc.limit) {
					want[idx] = 1
				}
				got := reduceReadFlags(t, flags, 3)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("flags %v, want %v", got, want)
				}
			})
		}
	}
}

// TestGradStats: GradStats' sum of squares and flag are SumSquares' and
// CheckFinite's (scale 1), bit for bit, on clean and on bad gradients.
func TestGradStats(t *testing.T) {
	inf := float32(math.Inf(1))
	for _, dt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
		for ci, tc := range []struct {
			name  string
			n, at int
			val   float64
			limit float32
		}{
			{"clean", 4097, -1, 0, inf},
			{"clean_odd_fp16_limit", 257, -1, 0, 65504},
			{"nan", 70001, 70000, math.NaN(), inf},
			{"inf", 300001, 5, math.Inf(-1), inf},
			{"above_fp16", 513, 512, 70000, 65504},
		} {
			t.Run(fmt.Sprintf("%v_%s", dt, tc.name), func(t *testing.T) {
				x := randn(rng(uint64(600+ci)), tc.n, 3)
				if tc.at >= 0 {
					x[tc.at] = tc.val
				}
				x = roundTo(x, dt)
				if dt.Half() && tc.n%2 == 1 {
					x = append(x, math.NaN()) // the padding half must not count
				}
				xb := upload(t, x, dt)
				const scale = 0.37
				sep := outputWith(t, []float64{1.5, 0})
				if err := SumSquares(dev, sep, 0, xb, dt, tc.n, scale); err != nil {
					t.Fatal(err)
				}
				if err := CheckFinite(dev, sep, 1, xb, dt, tc.n, 1, tc.limit); err != nil {
					t.Fatal(err)
				}
				got := outputWith(t, []float64{1.5, 0})
				if err := GradStats(dev, got, xb, dt, tc.n, scale, tc.limit); err != nil {
					t.Fatal(err)
				}
				want, err := dev.Read(sep, 0, 8)
				if err != nil {
					t.Fatal(err)
				}
				have, err := dev.Read(got, 0, 8)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(have, want) {
					t.Errorf("GradStats wrote %x, SumSquares and CheckFinite %x", have, want)
				}
				if flagged := binary.LittleEndian.Uint32(want[4:]) != 0; flagged != (tc.at >= 0) {
					t.Errorf("flag %v, want %v", flagged, tc.at >= 0)
				}
			})
		}
	}
}

func TestFill(t *testing.T) {
	for _, tc := range []struct{ off, n int }{{0, 1}, {3, 257}, {1, 1000}} {
		t.Run(fmt.Sprintf("off%d_n%d", tc.off, tc.n), func(t *testing.T) {
			total := tc.off + tc.n + 2
			b := output(t, total)
			if err := Fill(dev, b, tc.off, tc.n, math.Float32bits(1.5)); err != nil {
				t.Fatal(err)
			}
			want := make([]float64, total)
			for i := range want {
				want[i] = math.NaN()
				if i >= tc.off && i < tc.off+tc.n {
					want[i] = 1.5
				}
			}
			assertClose(t, "x", download(t, b, total, gpu.F32), want, tol{})
			if err := Fill(dev, b, tc.off, tc.n, 0); err != nil {
				t.Fatal(err)
			}
			for i := tc.off; i < tc.off+tc.n; i++ {
				want[i] = 0
			}
			assertClose(t, "x after zeroing", download(t, b, total, gpu.F32), want, tol{})
		})
	}
}

func TestReduceRejectsBadSizes(t *testing.T) {
	x := upload(t, make([]float64, 10), gpu.F32)
	out := output(t, 2)
	if err := SumSquares(dev, out, 2, x, gpu.F32, 10, 1); err == nil {
		t.Error("SumSquares into out[2] of a 2-element buffer accepted")
	}
	if err := SumSquares(dev, out, 0, x, gpu.F32, 11, 1); err == nil {
		t.Error("SumSquares over 11 elements of a 10-element buffer accepted")
	}
	if err := CheckFinite(dev, out, 0, x, gpu.F32, 10, 1, float32(math.NaN())); err == nil {
		t.Error("CheckFinite with a NaN limit accepted")
	}
	if err := Fill(dev, out, 1, 2, 0); err == nil {
		t.Error("Fill past the end accepted")
	}
}
