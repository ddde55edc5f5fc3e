// Package half converts between float32 and the 16-bit floats of model
// files and GPU buffers: IEEE 754 binary16 (f16) and bfloat16.
package half

import "math"

// F16ToF32 converts an IEEE 754 binary16 value to float32. The conversion is
// exact for every input: subnormals become normal float32 values, infinities
// stay infinite, and a NaN keeps its sign and payload (shifted into the high
// mantissa bits).
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0:
		if man == 0 {
			return math.Float32frombits(sign)
		}
		// Subnormal: value = man * 2^-24. Normalise it.
		e := uint32(127 - 15 + 1)
		for man&0x400 == 0 {
			man <<= 1
			e--
		}
		man &= 0x3ff
		return math.Float32frombits(sign | e<<23 | man<<13)
	default:
		return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
	}
}

// F32ToF16 converts a float32 to IEEE 754 binary16, rounding to nearest with
// ties to even. Values too large become ±Inf, values too small become
// (signed) subnormals or zero, and a NaN stays a NaN (its payload truncated
// to 10 bits, or made non-zero when the truncation would leave an infinity).
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	man := b & 0x7fffff
	if exp == 0xff {
		if man == 0 {
			return sign | 0x7c00
		}
		m := uint16(man >> 13)
		if m == 0 {
			m = 0x200
		}
		return sign | 0x7c00 | m
	}
	e := exp - 127 + 15 // binary16 biased exponent
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Result is subnormal (or zero). The value is full * 2^(exp-150)
		// with full the 24-bit significand; a binary16 subnormal counts units
		// of 2^-24, so m = full * 2^(exp-126) = full >> (14-e).
		if e < -10 {
			return sign // below half the smallest subnormal: rounds to zero
		}
		full := man | 0x800000
		shift := uint(14 - e)
		m := full >> shift
		rem := full & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && m&1 == 1) {
			m++ // may carry into the smallest normal, which is the right encoding
		}
		return sign | uint16(m)
	}
	m := man >> 13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && m&1 == 1) {
		m++
	}
	// A mantissa carry increments the exponent; from the largest finite
	// value it yields exactly the infinity encoding.
	return sign | uint16(uint32(e)<<10+m)
}

// BF16ToF32 converts a bfloat16 value to float32 (exact).
func BF16ToF32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// F32ToBF16 converts a float32 to bfloat16, rounding to nearest with ties to
// even. A NaN stays a NaN (quietened so that truncation cannot turn it into an
// infinity); large finite values that round past the largest bfloat16 become
// ±Inf.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}
