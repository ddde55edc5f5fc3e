package wgsl

import (
	"fmt"
	"math"
	"testing"
	"unsafe"

	"github.com/lomo-dev/lomo/gpu"
)

// refRoPE: the HF rotate_half rotary embedding of x (rows, heads*d) in
// float64; inverse rotates by -a.
func refRoPE(x []float64, pos []uint32, rows, heads, d int, theta float64, inverse bool) []float64 {
	out := make([]float64, len(x))
	half := d / 2
	for r := 0; r < rows; r++ {
		for h := 0; h < heads; h++ {
			base := (r*heads + h) * d
			for i := 0; i < half; i++ {
				a := float64(pos[r]) * math.Pow(theta, -2*float64(i)/float64(d))
				c, s := math.Cos(a), math.Sin(a)
				if inverse {
					s = -s
				}
				x0, x1 := x[base+i], x[base+i+half]
				out[base+i] = x0*c - x1*s
				out[base+i+half] = x1*c + x0*s
			}
		}
	}
	return out
}

// ropeBound is the error bound of each output element of the f32 kernel
// against the float64 reference. The angle a = pos*freq_i is f32: freq_i
// from exp2 carries up to 3+2|e| ulp (Vulkan's exp2 precision, e <= 0 the
// exponent), times 2^e that is at most 3 ulp of 1 relative to pos; the
// exponent i*step and the product pos*freq add one rounding each; so the
// angle is off by at most ~pos*12*2^-24 (+2^-22 for the reduction to
// [-pi, pi]). Rotation by an angle off by da moves the pair by at most
// da*(|x0|+|x1|); sin/cos themselves add 2^-20 (lavapipe is ~1 ulp, NVIDIA's
// hardware sin/cos ~2^-21.4 on [-pi, pi]), and the products and sum a few
// ulp of |x0|+|x1|.
func ropeBound(x []float64, pos []uint32, rows, heads, d int) []float64 {
	b := make([]float64, len(x))
	half := d / 2
	for r := 0; r < rows; r++ {
		da := float64(pos[r])*12*0x1p-24 + 0x1p-22
		for h := 0; h < heads; h++ {
			base := (r*heads + h) * d
			for i := 0; i < half; i++ {
				mag := math.Abs(x[base+i]) + math.Abs(x[base+i+half])
				e := mag * (da + 0x1p-20 + 4*0x1p-24)
				b[base+i], b[base+i+half] = e, e
			}
		}
	}
	return b
}

// ropePositions returns rows positions in [0, maxPos], including both ends.
func ropePositions(seed uint64, rows int, maxPos uint32) []uint32 {
	r := rng(seed)
	pos := make([]uint32, rows)
	for i := range pos {
		pos[i] = uint32(r.IntN(int(maxPos) + 1))
	}
	pos[0] = 0
	if rows > 1 {
		pos[rows-1] = maxPos
	}
	return pos
}

func TestRoPEParamsLayout(t *testing.T) {
	// Params in rope.wgsl: 8 fields of 4 bytes (3 padding).
	if got := unsafe.Sizeof(RoPEParams{}); got != 32 {
		t.Errorf("RoPEParams is %d bytes, WGSL Params is 32", got)
	}
	if got := unsafe.Offsetof(RoPEParams{}.Inverse); got != 12 {
		t.Errorf("Inverse at %d, WGSL at 12", got)
	}
	if got := unsafe.Offsetof(RoPEParams{}.Log2FreqStep); got != 16 {
		t.Errorf("Log2FreqStep at %d, WGSL at 16", got)
	}
}

var ropeCases = []struct {
	rows, heads, d int
	theta          float64
	maxPos         uint32
	xt             gpu.DType
}{
	{1, 1, 2, 10000, 0, gpu.F32},
	{3, 2, 8, 10000, 2048, gpu.F32},
	{5, 3, 64, 10000, 2048, gpu.F32},
	{7, 4, 128, 500000, 2048, gpu.F32}, // LLaMA 3 base
	{300, 1, 6, 10000, 2048, gpu.F32},  // 900 pairs: not a multiple of 256
	{2, 5, 130, 10000, 100, gpu.F32},
	{4, 2, 16, 10000, 8, gpu.F32}, // small positions: the bound is near 1e-6
	{5, 3, 64, 10000, 2048, gpu.F16},
	{300, 1, 6, 10000, 2048, gpu.F16},
	{5, 3, 64, 10000, 2048, gpu.BF16},
	{300, 1, 6, 10000, 2048, gpu.BF16}, // D/2 = 3: a thread's two elements in different pairs
}

func TestRoPE(t *testing.T) {
	for ci, tc := range ropeCases {
		for _, inv := range []bool{false, true} {
			t.Run(fmt.Sprintf("R%d_H%d_D%d_theta%g_pos%d_inv%v_%v", tc.rows, tc.heads, tc.d, tc.theta, tc.maxPos, inv, tc.xt), func(t *testing.T) {
				needF16(t, tc.xt)
				r := rng(uint64(500 + ci))
				n := tc.rows * tc.heads * tc.d
				x := roundTo(randn(r, n, 1), tc.xt)
				pos := ropePositions(uint64(ci), tc.rows, tc.maxPos)
				xb := upload(t, x, tc.xt)
				pb := uploadU32(t, pos)
				if err := RoPE(dev, xb, pb, tc.xt, tc.rows, tc.heads, tc.d, float32(tc.theta), inv); err != nil {
					t.Fatal(err)
				}
				want := refRoPE(x, pos, tc.rows, tc.heads, tc.d, tc.theta, inv)
				bound := ropeBound(x, pos, tc.rows, tc.heads, tc.d)
				if tc.xt.Half() { // the output's rounding to 16 bits
					for i := range bound {
						bound[i] += rounding(tc.xt)*math.Abs(want[i]) + 0x1p-25
					}
				}
				rmsnormWithin(t, "out", download(t, xb, n, tc.xt), want, bound)
			})
		}
	}
}

// TestRoPE2: x and y rotated in one dispatch get RoPE's bits for each, the
// rotation and its inverse.
func TestRoPE2(t *testing.T) {
	for _, xt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
		for _, inv := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v_inv%v", xt, inv), func(t *testing.T) {
				needF16(t, xt)
				const rows, hx, hy, d = 7, 4, 2, 6
				r := rng(700)
				x := roundTo(randn(r, rows*hx*d, 1), xt)
				y := roundTo(randn(r, rows*hy*d, 1), xt)
				pb := uploadU32(t, ropePositions(7, rows, 300))
				x1, y1, x2, y2 := upload(t, x, xt), upload(t, y, xt), upload(t, x, xt), upload(t, y, xt)
				if err := RoPE(dev, x1, pb, xt, rows, hx, d, 10000, inv); err != nil {
					t.Fatal(err)
				}
				if err := RoPE(dev, y1, pb, xt, rows, hy, d, 10000, inv); err != nil {
					t.Fatal(err)
				}
				d0 := dev.Dispatches()
				if err := RoPE2(dev, x2, y2, pb, xt, rows, hx, hy, d, 10000, inv); err != nil {
					t.Fatal(err)
				}
				if got := dev.Dispatches() - d0; got != 1 {
					t.Errorf("RoPE2 took %d dispatches", got)
				}
				assertSameBits(t, "x", download(t, x2, len(x), xt), download(t, x1, len(x), xt))
				assertSameBits(t, "y", download(t, y2, len(y), xt), download(t, y1, len(y), xt))
			})
		}
	}
	xb := upload(t, make([]float64, 16), gpu.F32)
	if err := RoPE2(dev, xb, xb, uploadU32(t, []uint32{0, 1}), gpu.F32, 2, 2, 2, 4, 10000, false); err == nil {
		t.Error("RoPE2 with x = y succeeded")
	}
}

// TestRoPERoundTrip: the inverse undoes the forward (both in place), so the
// backward of the backward is the forward.
func TestRoPERoundTrip(t *testing.T) {
	rows, heads, d := 6, 3, 32
	r := rng(600)
	x := roundTo(randn(r, rows*heads*d, 1), gpu.F32)
	pos := ropePositions(600, rows, 2048)
	xb, pb := upload(t, x, gpu.F32), uploadU32(t, pos)
	for _, inv := range []bool{false, true} {
		if err := RoPE(dev, xb, pb, gpu.F32, rows, heads, d, 10000, inv); err != nil {
			t.Fatal(err)
		}
	}
	// The same f32 angles both ways, so the angle error cancels: what
	// remains is cos²+sin² - 1 (2^-20 from each) and the roundings of two
	// rotations, a few ulp of |x0|+|x1|; twice that.
	bound := make([]float64, len(x))
	got := download(t, xb, len(x), gpu.F32)
	half := d / 2
	for rh := 0; rh < rows*heads; rh++ {
		for i := 0; i < half; i++ {
			j := rh*d + i
			mag := math.Abs(x[j]) + math.Abs(x[j+half])
			bound[j] = mag * 2 * (2*0x1p-20 + 8*0x1p-24)
			bound[j+half] = bound[j]
		}
	}
	rmsnormWithin(t, "inverse(forward(x))", got, x, bound)
}

// TestRoPEBackwardCentralDiff: with L = sum(rope(x) * g), dL/dx by central
// differences of the float64 reference equals the inverse rotation of g,
// and so does the kernel's inverse applied to g.
func TestRoPEBackwardCentralDiff(t *testing.T) {
	rows, heads, d := 3, 2, 6
	const theta = 10000
	r := rng(700)
	x := randn(r, rows*heads*d, 1)
	g := roundTo(randn(r, rows*heads*d, 1), gpu.F32)
	pos := []uint32{0, 5, 1000}
	num := centralDiff(func(xx []float64) float64 {
		return dot(refRoPE(xx, pos, rows, heads, d, theta, false), g)
	}, x, 1e-4)
	// L is linear in x: the difference quotient is exact up to float64
	// cancellation, ~1e-16 * |L| / h ~ 1e-11.
	assertClose(t, "ref backward vs central diff", refRoPE(g, pos, rows, heads, d, theta, true), num, tol{Atol: 1e-9, Rtol: 1e-9})
	gb, pb := upload(t, g, gpu.F32), uploadU32(t, pos)
	if err := RoPE(dev, gb, pb, gpu.F32, rows, heads, d, theta, true); err != nil {
		t.Fatal(err)
	}
	rmsnormWithin(t, "kernel backward vs central diff", download(t, gb, len(g), gpu.F32), num, ropeBound(g, pos, rows, heads, d))
}

func TestRoPERejects(t *testing.T) {
	x := output(t, 24)
	pos := uploadU32(t, []uint32{0, 1})
	if err := RoPE(dev, x, pos, gpu.F32, 2, 2, 5, 10000, false); err == nil {
		t.Error("odd headDim succeeded")
	}
	if err := RoPE(dev, x, pos, gpu.F32, 3, 2, 4, 10000, false); err == nil {
		t.Error("pos too short for 3 rows succeeded")
	}
	if err := RoPE(dev, x, pos, gpu.F32, 2, 2, 8, 10000, false); err == nil {
		t.Error("x too small for (2, 2*8) succeeded")
	}
	if err := RoPE(dev, x, x, gpu.F32, 2, 2, 4, 10000, false); err == nil {
		t.Error("x == pos succeeded")
	}
	if err := RoPE(dev, x, pos, gpu.F32, 2, 2, 4, 1, false); err == nil {
		t.Error("theta 1 succeeded")
	}
	sync(t)
}
