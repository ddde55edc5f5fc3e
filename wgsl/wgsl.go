// Package wgsl holds lomo's compute kernels (one <family>.wgsl file per
// family, embedded) and their Go launchers: for each kernel a Params struct
// that mirrors the WGSL one field for field (4-byte fields only; the tests
// check sizes), and a function that records its dispatch on a gpu.Device.
//
// Conventions (DESIGN.md, contract 3, and STYLE.md):
//   - storage buffers at bindings 0..n-1, outputs first, then inputs; the
//     Params uniform last;
//   - offsets and strides in elements; shapes in comments with the letters
//     B batch, T time, C channels, H heads, D head size, V vocab, F FFN size;
//   - f16 storage as u32 pairs read with unpack2x16float (variant "h"),
//     arithmetic in f32; a kernel that writes f16 writes whole pairs;
//   - 1-D grids fold into y beyond 65535 workgroups (gpu.Device.Grid); kernels
//     compute i = gid.x + gid.y * num_workgroups.x * WG.
//
// Every kernel has a float64 reference in the tests and every backward a
// central-difference check (ref_test.go, *_test.go).
package wgsl

import (
	"embed"
	"fmt"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
)

//go:embed *.wgsl
var files embed.FS

// Source returns the WGSL of a family with each {{KEY}} replaced, preceded
// by `enable f16;` when a binding is WGSL f16, by the bf16 conversions
// when one is bf16 (see dtypeSubst), by hash32 when useHash or bf16
// asks for it and by swigluLib when useSwiGLU does.
func Source(family string, subst map[string]string) string {
	b, err := files.ReadFile(family + ".wgsl")
	if err != nil {
		panic(fmt.Sprintf("wgsl: no kernel family %q", family)) // programmer error
	}
	s := string(b)
	for k, v := range subst {
		s = strings.ReplaceAll(s, "{{"+k+"}}", v)
	}
	if i := strings.Index(s, "{{"); i >= 0 {
		panic(fmt.Sprintf("wgsl: %s.wgsl: unreplaced placeholder near %q", family, s[i:min(len(s), i+30)]))
	}
	if subst[useSwiGLU] != "" {
		s = swigluLib + s
	}
	if subst[useRoundF16] != "" {
		s = roundF16Lib + s
	}
	if subst[useBF16] != "" {
		s = bf16Lib + s
	}
	if subst[useHash] != "" || subst[useBF16] != "" {
		s = hashLib + s
	}
	if subst[enableF16] != "" {
		s = "enable f16;\n" + s
	}
	return s
}

// enableF16 and useBF16 are the keys dtypeSubst sets when a binding is WGSL
// f16 or bf16; useHash asks for hashLib, useSwiGLU for swigluLib,
// useRoundF16 for roundF16Lib.
const (
	enableF16   = "\x00enable f16"
	useBF16     = "\x00bf16"
	useHash     = "\x00hash"
	useSwiGLU   = "\x00swiglu"
	useRoundF16 = "\x00round f16"
)

// roundF16Lib is round_f16(x): x rounded to the nearest f16 value (ties to
// even, subnormals kept, overflow to ±Inf), as an f32, for a value a kernel
// uses as if it had been stored as f16 and read back (roundAs). It is
// integer and exact float arithmetic because a conversion to f16 and back
// is not: Mesa 26's lavapipe drops the pair f32(f16(x)) as if it were the
// identity.
const roundF16Lib = `fn round_f16(x: f32) -> f32 {
	let u = bitcast<u32>(x);
	let a = u & 0x7fffffffu;
	if (a >= 0x7f800000u) { return x; } // NaN, ±Inf
	if (a < 0x38800000u) { // below 2^-14: f16 subnormals, multiples of 2^-24
		return round(x * 16777216.0) / 16777216.0;
	}
	let r = (a + 0xfffu + ((a >> 13u) & 1u)) & 0xffffe000u; // 10 of 23 mantissa bits, ties to even
	if (r > 0x477fe000u) { return bitcast<f32>((u & 0x80000000u) | 0x7f800000u); } // past 65504
	return bitcast<f32>((u & 0x80000000u) | r);
}
`

// swigluLib is SwiGLU's arithmetic, h = silu(g)·u and its backward
// (silu'(x) = s(x)·(1 + x·(1 - s(x))), s the sigmoid), in one text for
// every kernel that computes it: elementwise.wgsl's forward, swiglu.wgsl's
// backward, and the matmul's SwiGLU operand and epilogue (matmul.go), so
// that the fused kernels give the separate ones' bits.
const swigluLib = `fn silu(x: f32) -> f32 { return x / (1.0 + exp(-x)); }
fn swiglu(g: f32, u: f32) -> f32 { return silu(g) * u; }
fn swiglu_grads(x: f32, uu: f32, d: f32) -> vec2<f32> {
	let s = 1.0 / (1.0 + exp(-x));
	return vec2<f32>(d * uu * s * (1.0 + x * (1.0 - s)), d * x * s);
}
`

// hashLib is hash32, a 32-bit integer finalizer (xor-shift and odd
// multiplies): dropout's mask and bf16's stochastic rounding bits.
const hashLib = `fn hash32(v: u32) -> u32 {
	var h = v;
	h ^= h >> 16u;
	h *= 0x7feb352du;
	h ^= h >> 15u;
	h *= 0x846ca68bu;
	h ^= h >> 16u;
	return h;
}
`

// bf16Lib converts bfloat16, the upper half of an f32, stored as pairs in
// u32 (element 2k in the low half): reading shifts exactly; f32_to_bf16
// rounds to nearest even, keeps a NaN a NaN and, like half.F32ToBF16,
// rounds finite values past the largest bf16 to ±Inf.
//
// pack2xbf16_sr rounds stochastically, for the optimizers' updates of bf16
// weights (pairSubst's KEY_STORE): up (in magnitude) with probability equal
// to the distance from the lower neighbour over the gap, from 16 bits of
// hash32 (hashLib) of the element index i and a seed the caller changes
// every step and parameter. The result is unbiased, so an update far below half a bf16
// ulp (lr·g against a weight: 2^-9 of it) moves the weight in expectation
// instead of rounding away every step, which is why bf16 weights updated
// in place with no f32 master copy otherwise stop learning. Deterministic
// for a seed (resuming reproduces a run).
const bf16Lib = `fn f32_to_bf16(x: f32) -> u32 {
	let u = bitcast<u32>(x);
	if ((u & 0x7fffffffu) > 0x7f800000u) { return (u >> 16u) | 0x40u; }
	return (u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u;
}
fn bf16_half(w: u32, i: u32) -> f32 { return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (i & 1u) == 1u)); }
fn unpack2xbf16(w: u32) -> vec2<f32> { return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u)); }
fn pack2xbf16(v: vec2<f32>) -> u32 { return f32_to_bf16(v.x) | (f32_to_bf16(v.y) << 16u); }
fn f32_to_bf16_sr(x: f32, r: u32) -> u32 {
	let u = bitcast<u32>(x);
	if ((u & 0x7fffffffu) >= 0x7f800000u) { return f32_to_bf16(x); }
	return (u + (r & 0xffffu)) >> 16u;
}
fn pack2xbf16_sr(v: vec2<f32>, seed: u32, i: u32) -> u32 {
	let s = hash32(seed);
	return f32_to_bf16_sr(v.x, hash32(i ^ s)) | (f32_to_bf16_sr(v.y, hash32((i + 1u) ^ s)) << 16u);
}
`

// dtypeSubst sets, for the storage binding `v` of dtype t, the placeholders
// {{KEY_T}} (its WGSL element type), {{KEY_AT}} (a reader fn
// v_at(i: u32) -> f32) and {{KEY_ST}} (a writer fn v_st(i: u32, value: f32)).
//
// F16 is WGSL f16 (`enable f16;`) on devices with shader-f16: read and
// written element by element, converted to f32 for arithmetic (the
// conversion f16 -> f32 is exact; f32 -> f16 rounds). Elsewhere it is u32
// pairs read with unpack2x16float, which works on every adapter, and
// cannot be written element by element: KEY_ST is then empty, so a kernel
// that writes it does not compile (launchers refuse it first, f16Writable).
// Both layouts are the same bytes.
//
// BF16 is u32 pairs read with shifts (exact) on every adapter. A read-only
// binding has no writer; a binding a kernel writes takes outSubst instead.
func dtypeSubst(d *gpu.Device, m map[string]string, key, v string, t gpu.DType) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	switch {
	case t == gpu.F16 && d.Caps.F16:
		m[enableF16] = "1"
		m[key+"_T"] = "f16"
		m[key+"_AT"] = fmt.Sprintf("fn %s_at(i: u32) -> f32 { return f32(%s[i]); }", v, v)
		m[key+"_ST"] = fmt.Sprintf("fn %s_st(i: u32, value: f32) { %s[i] = f16(value); }", v, v)
	case t == gpu.F16:
		m[key+"_T"] = "u32"
		m[key+"_AT"] = fmt.Sprintf("fn %s_at(i: u32) -> f32 { return unpack2x16float(%s[i >> 1u])[i & 1u]; }", v, v)
		m[key+"_ST"] = ""
	case t == gpu.BF16:
		m[useBF16] = "1"
		m[key+"_T"] = "u32"
		m[key+"_AT"] = fmt.Sprintf("fn %s_at(i: u32) -> f32 { return bf16_half(%s[i >> 1u], i); }", v, v)
		m[key+"_ST"] = ""
	default:
		m[key+"_T"] = "f32"
		m[key+"_AT"] = fmt.Sprintf("fn %s_at(i: u32) -> f32 { return %s[i]; }", v, v)
		m[key+"_ST"] = fmt.Sprintf("fn %s_st(i: u32, value: f32) { %s[i] = value; }", v, v)
	}
	return m
}

// outSubst is dtypeSubst for a read_write binding, the only kind a kernel
// writes element by element. A bf16 one is atomic<u32> pairs: a thread
// clears its half with atomicAnd and sets it with atomicOr, two atomic
// operations that leave the other half, which another thread may be
// writing at the same time, as it is (WGSL has no 16-bit stores). Its
// reader is an atomicLoad (all accesses to an atomic must be atomic).
// Other dtypes are as dtypeSubst.
func outSubst(d *gpu.Device, m map[string]string, key, v string, t gpu.DType) map[string]string {
	m = dtypeSubst(d, m, key, v, t)
	if t == gpu.BF16 {
		m[key+"_T"] = "atomic<u32>"
		m[key+"_AT"] = fmt.Sprintf("fn %s_at(i: u32) -> f32 { return bf16_half(atomicLoad(&%s[i >> 1u]), i); }", v, v)
		m[key+"_ST"] = fmt.Sprintf(`fn %[1]s_st(i: u32, value: f32) {
	let s = (i & 1u) * 16u;
	atomicAnd(&%[1]s[i >> 1u], ~(0xffffu << s));
	atomicOr(&%[1]s[i >> 1u], f32_to_bf16(value) << s);
}`, v)
	}
	return m
}

// pairSubst is dtypeSubst with the 16-bit types always as u32 pairs, for
// kernels that read and write the pairs themselves (the optimizers' thread
// per pair); it also sets {{KEY_UNPACK}} and {{KEY_PACK}}, the functions
// converting a pair from and to vec2<f32> (for f32, the f16 ones: unused),
// and {{KEY_STORE}}, a fn store_pair(v: vec2<f32>, i: u32) -> u32 that
// packs elements i, i+1 of an updated weight: pack2x16float for f16,
// stochastic rounding for bf16 (bf16Lib; it reads the seed from p.seed).
func pairSubst(m map[string]string, key, v string, t gpu.DType) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[key+"_UNPACK"], m[key+"_PACK"] = "unpack2x16float", "pack2x16float"
	m[key+"_STORE"] = "fn store_pair(v: vec2<f32>, i: u32) -> u32 { return pack2x16float(v); }"
	switch t {
	case gpu.F16:
		m[key+"_T"] = "u32"
		m[key+"_AT"] = fmt.Sprintf("fn %s_at(i: u32) -> f32 { return unpack2x16float(%s[i >> 1u])[i & 1u]; }", v, v)
	case gpu.BF16:
		m[useBF16] = "1"
		m[key+"_T"] = "u32"
		m[key+"_AT"] = fmt.Sprintf("fn %s_at(i: u32) -> f32 { return bf16_half(%s[i >> 1u], i); }", v, v)
		m[key+"_UNPACK"], m[key+"_PACK"] = "unpack2xbf16", "pack2xbf16"
		m[key+"_STORE"] = "fn store_pair(v: vec2<f32>, i: u32) -> u32 { return pack2xbf16_sr(v, p.seed, i); }"
	default:
		m[key+"_T"] = "f32"
		m[key+"_AT"] = fmt.Sprintf("fn %s_at(i: u32) -> f32 { return %s[i]; }", v, v)
	}
	return m
}

// f16Writable refuses an F16 output on a device without shader-f16 (see
// dtypeSubst): lomo then keeps activations in f32. bf16 is writable
// everywhere (outSubst).
func f16Writable(d *gpu.Device, op, what string, t gpu.DType) error {
	if t == gpu.F16 && !d.Caps.F16 && !d.Dry() {
		return fmt.Errorf("wgsl: %s: %s is f16, which this adapter cannot write element by element (no shader-f16)", op, what)
	}
	return nil
}

// dtypeName is a short name of a set of dtypes for kernel variants:
// "f32", "f16", or e.g. "a16b32c32" ("b16" for bf16: "ab16").
func dtypeName(parts ...any) string {
	var b strings.Builder
	for i := 0; i+1 < len(parts); i += 2 {
		b.WriteString(parts[i].(string))
		switch parts[i+1].(gpu.DType) {
		case gpu.F16:
			b.WriteString("16")
		case gpu.BF16:
			b.WriteString("b16")
		default:
			b.WriteString("32")
		}
	}
	return b.String()
}

// kernel compiles (once) and returns a family's kernel.
func kernel(d *gpu.Device, family, variant string, subst map[string]string, bindings []gpu.Access, params any) (*gpu.Kernel, error) {
	return entryKernel(d, family, "", variant, subst, bindings, params)
}

// entryKernel is kernel for an entry point other than main (named in the
// kernel's name).
func entryKernel(d *gpu.Device, family, entry, variant string, subst map[string]string, bindings []gpu.Access, params any) (*gpu.Kernel, error) {
	name := family
	for _, part := range []string{entry, variant} {
		if part != "" {
			name += "/" + part
		}
	}
	if k, ok := d.CachedKernel(name); ok {
		return k, nil
	}
	return d.Kernel(gpu.KernelSpec{
		Name:       name,
		Source:     Source(family, subst),
		Entry:      entry,
		Bindings:   bindings,
		ParamsSize: gpu.ParamsSize(params),
	})
}

// rowPerThread reports whether the per-row reductions (RMSNorm, the
// cross-entropy, attention's delta) run one thread per row instead of one
// workgroup: on CPU adapters, where a workgroup's barriers cost more than
// a row's arithmetic. Both give the same bits.
func rowPerThread(d *gpu.Device) bool { return d.Info.Software }

// b2u converts a bool to a WGSL u32 flag.
func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

var (
	ro = gpu.ReadOnly
	rw = gpu.ReadWrite
)
