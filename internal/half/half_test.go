package half

import (
	"math"
	"math/rand"
	"sort"
	"testing"
)

func TestF16Known(t *testing.T) {
	cases := []struct {
		h uint16
		f float32
	}{
		{0x0000, 0},
		{0x3c00, 1},
		{0xbc00, -1},
		{0x4000, 2},
		{0x3800, 0.5},
		{0x3555, 0.333251953125},
		{0x7bff, 65504},
		{0xfbff, -65504},
		{0x0400, 6.103515625e-05},        // smallest normal
		{0x0001, 5.960464477539063e-08},  // smallest subnormal
		{0x03ff, 6.097555160522461e-05},  // largest subnormal
		{0x3bff, 0.99951171875},          // largest below 1
		{0x3c01, 1.0009765625},           // smallest above 1
		{0x4248, 3.140625},               // pi
		{0x7c00, float32(math.Inf(1))},   // +inf
		{0xfc00, float32(math.Inf(-1))},  // -inf
		{0x5640, 100},                    //
		{0xc8b4, -9.40625},               //
		{0x1400, 0.0009765625},           // 2^-10
		{0x8001, -5.960464477539063e-08}, // -smallest subnormal
		{0x0200, 3.0517578125e-05},       // 2^-15 (subnormal)
		{0x6800, 2048},                   //
		{0x6801, 2050},                   // spacing 2 above 2048
		{0x7800, 32768},                  //
		{0x3e00, 1.5},                    //
		{0xc000, -2},                     //
		{0x4900, 10},                     //
		{0x57d0, 125},                    //
		{0x2e66, 0.0999755859375},        // nearest f16 to 0.1
		{0x0000 | 0x8000, float32(math.Copysign(0, -1))}, // -0
	}
	for _, c := range cases {
		got := F16ToF32(c.h)
		if math.Float32bits(got) != math.Float32bits(c.f) {
			t.Errorf("F16ToF32(%#04x) = %v (%#08x), want %v", c.h, got, math.Float32bits(got), c.f)
		}
		if back := F32ToF16(c.f); back != c.h {
			t.Errorf("F32ToF16(%v) = %#04x, want %#04x", c.f, back, c.h)
		}
	}
	// Rounding from float32 to the nearest f16.
	rounding := []struct {
		f float32
		h uint16
	}{
		{0.1, 0x2e66},
		{65519, 0x7bff},                  // just below the midpoint to 65536: stays finite
		{65520, 0x7c00},                  // midpoint, ties to even: the "even" neighbour is inf
		{1e6, 0x7c00},                    // overflow
		{-1e6, 0xfc00},                   // overflow
		{1e-8, 0x0000},                   // below half the smallest subnormal
		{2.9802322387695312e-08, 0x0000}, // exactly half the smallest subnormal: ties to even (0)
		{2.9802326e-08, 0x0001},          // just above half
		{8.940696716308594e-08, 0x0002},  // 1.5 * 2^-24: ties to even (2)
		{1 + 1.0/2048, 0x3c00},           // tie between 0x3c00 and 0x3c01: even is 0x3c00
		{1 + 3.0/2048, 0x3c02},           // tie between 0x3c01 and 0x3c02: even is 0x3c02
		{2049, 0x6800},                   // tie 2048/2050 -> 2048
		{2051, 0x6802},                   // tie 2050/2052 -> 2052
		{6.1005353927612305e-05, 0x0400}, // rounds up from the largest subnormal region into the smallest normal
		{float32(math.SmallestNonzeroFloat32), 0},
	}
	for _, c := range rounding {
		if got := F32ToF16(c.f); got != c.h {
			t.Errorf("F32ToF16(%g) = %#04x, want %#04x", c.f, got, c.h)
		}
	}
	if h := F32ToF16(float32(math.NaN())); h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
		t.Errorf("F32ToF16(NaN) = %#04x, not a NaN", h)
	}
	// A NaN whose payload is only in low bits must not become an infinity.
	if h := F32ToF16(math.Float32frombits(0x7f800001)); h&0x3ff == 0 {
		t.Errorf("F32ToF16(low-payload NaN) = %#04x, became inf", h)
	}
	if h := F32ToF16(math.Float32frombits(0xff800001)); h&0x8000 == 0 || h&0x3ff == 0 {
		t.Errorf("F32ToF16(-NaN) = %#04x", h)
	}
}

// TestF16Exhaustive round-trips every one of the 65536 binary16 encodings,
// NaNs included (their payload survives), and checks the values are ordered.
func TestF16Exhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := F16ToF32(h)
		isNaN := h&0x7c00 == 0x7c00 && h&0x3ff != 0
		if isNaN != (f != f) {
			t.Fatalf("%#04x: NaN-ness lost: %v", h, f)
		}
		if back := F32ToF16(f); back != h {
			t.Fatalf("%#04x -> %v -> %#04x", h, f, back)
		}
		// Check against an independent float64 decoding.
		if !isNaN {
			var want float64
			exp := int(h>>10) & 0x1f
			man := float64(h & 0x3ff)
			switch exp {
			case 0x1f:
				want = math.Inf(1)
			case 0:
				want = man * math.Ldexp(1, -24)
			default:
				want = (1 + man/1024) * math.Ldexp(1, exp-15)
			}
			if h&0x8000 != 0 {
				want = -want
			}
			if float64(f) != want || math.Signbit(float64(f)) != (h&0x8000 != 0) {
				t.Fatalf("F16ToF32(%#04x) = %v, want %v", h, f, want)
			}
		}
	}
}

// refF32ToF16 rounds x to the nearest binary16 by searching the sorted list
// of all finite non-negative binary16 values (ties to even), independently of
// the bit manipulation in F32ToF16.
func refF32ToF16(vals []float64, x float32) uint16 {
	v := math.Abs(float64(x))
	var sign uint16
	if math.Signbit(float64(x)) {
		sign = 0x8000
	}
	// Values at or beyond 65520 (the midpoint between 65504 and 65536)
	// round to infinity.
	if v >= 65520 {
		return sign | 0x7c00
	}
	i := sort.SearchFloat64s(vals, v) // vals[i] >= v
	if i == len(vals) {
		return sign | uint16(len(vals)-1) // between 65504 and the midpoint
	}
	if i < len(vals) && vals[i] == v {
		return sign | uint16(i)
	}
	lo, hi := i-1, i
	dl, dh := v-vals[lo], vals[hi]-v
	switch {
	case dl < dh:
		return sign | uint16(lo)
	case dh < dl:
		return sign | uint16(hi)
	case lo%2 == 0:
		return sign | uint16(lo)
	default:
		return sign | uint16(hi)
	}
}

func TestF32ToF16AgainstReference(t *testing.T) {
	vals := make([]float64, 0x7c00) // encodings 0..0x7bff are increasing
	for i := range vals {
		vals[i] = float64(F16ToF32(uint16(i)))
	}
	check := func(x float32) {
		t.Helper()
		if got, want := F32ToF16(x), refF32ToF16(vals, x); got != want {
			t.Fatalf("F32ToF16(%g [%#08x]) = %#04x, want %#04x", x, math.Float32bits(x), got, want)
		}
	}
	// Every midpoint between neighbours, and one float32 ulp either side.
	for i := 0; i+1 < len(vals); i++ {
		mid := float32((vals[i] + vals[i+1]) / 2) // exact in float32
		for _, x := range []float32{mid, math.Nextafter32(mid, 0), math.Nextafter32(mid, 1e9)} {
			check(x)
			check(-x)
		}
	}
	check(65504)
	check(65519.996)
	check(65520)
	rng := rand.New(rand.NewSource(1))
	for n := 0; n < 200000; n++ {
		x := math.Float32frombits(rng.Uint32())
		if x != x || math.IsInf(float64(x), 0) {
			continue
		}
		check(x)
	}
	// Random values in the f16 range (the bit-pattern sample is mostly huge or tiny).
	for n := 0; n < 200000; n++ {
		x := float32(rng.NormFloat64() * math.Ldexp(1, rng.Intn(40)-25))
		check(x)
	}
}

func TestBF16(t *testing.T) {
	cases := []struct {
		f float32
		h uint16
	}{
		{0, 0x0000},
		{1, 0x3f80},
		{-2, 0xc000},
		{3.140625, 0x4049},
		{float32(math.Inf(1)), 0x7f80},
		{float32(math.Inf(-1)), 0xff80},
		{math.Float32frombits(0x3f808000), 0x3f80}, // tie, ties to even (down)
		{math.Float32frombits(0x3f818000), 0x3f82}, // tie, ties to even (up)
		{math.Float32frombits(0x3f808001), 0x3f81}, // just above tie
		{math.Float32frombits(0x3f807fff), 0x3f80}, // just below tie
		{math.MaxFloat32, 0x7f80},                  // rounds to inf
		{math.Float32frombits(0x7f7f7fff), 0x7f7f}, // largest finite stays finite
		{math.Float32frombits(0x00000001), 0x0000}, // tiny subnormal
		{math.Float32frombits(0x80018000), 0x8002}, // negative subnormal tie to even
	}
	for _, c := range cases {
		if got := F32ToBF16(c.f); got != c.h {
			t.Errorf("F32ToBF16(%g [%#08x]) = %#04x, want %#04x", c.f, math.Float32bits(c.f), got, c.h)
		}
	}
	for _, nan := range []uint32{0x7fc00000, 0x7f800001, 0xff800001, 0x7f810000, 0x7fffffff} {
		h := F32ToBF16(math.Float32frombits(nan))
		if f := BF16ToF32(h); f == f {
			t.Errorf("F32ToBF16(NaN %#08x) = %#04x, not a NaN", nan, h)
		}
		if h&0x8000 != uint16(nan>>16)&0x8000 {
			t.Errorf("F32ToBF16(NaN %#08x) = %#04x lost the sign", nan, h)
		}
	}
	// Every bf16 round-trips (NaNs stay NaN; non-NaNs exactly).
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := BF16ToF32(h)
		back := F32ToBF16(f)
		if f != f {
			if g := BF16ToF32(back); g == g {
				t.Fatalf("bf16 NaN %#04x -> %#04x not NaN", h, back)
			}
			continue
		}
		if back != h {
			t.Fatalf("bf16 %#04x -> %v -> %#04x", h, f, back)
		}
	}
	// Random values: the result is one of the two neighbours, the nearer one.
	rng := rand.New(rand.NewSource(2))
	for n := 0; n < 200000; n++ {
		b := rng.Uint32()
		x := math.Float32frombits(b)
		if x != x {
			continue
		}
		got := F32ToBF16(x)
		lo := uint16(b >> 16)
		hi := lo + 1
		dl := math.Abs(float64(x) - float64(BF16ToF32(lo)))
		var want uint16
		if lo&0x7fff == 0x7f7f || lo&0x7f80 == 0x7f80 {
			// Next encoding is inf (or x is inf): handled by the overflow rule.
			if lo&0x7f80 == 0x7f80 {
				want = lo
			} else if b&0xffff >= 0x8000 && !(b&0xffff == 0x8000 && lo&1 == 0) {
				want = hi
			} else {
				want = lo
			}
		} else {
			dh := math.Abs(float64(BF16ToF32(hi)) - float64(x))
			switch {
			case dl < dh:
				want = lo
			case dh < dl:
				want = hi
			case lo&1 == 0:
				want = lo
			default:
				want = hi
			}
		}
		if got != want {
			t.Fatalf("F32ToBF16(%g [%#08x]) = %#04x, want %#04x", x, b, got, want)
		}
	}
}
