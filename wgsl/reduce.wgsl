// reduce: whole-buffer reductions and fills used by the optimizers.
//
// One file, several kernels: each is compiled from the shared part below and
// one section (marked "==== section NAME ===="), since the sections bind different
// buffers under the same numbers. All share one Params struct.
//
// sumsq_f32 / sumsq_pairs (stage 1 of SumSquares): x (N) f32, or f16 or
//   bf16 pairs in u32 words (X_UNPACK). Bindings 0 part (rw, `groups` f32), 1 x, 2 Params. Dispatch
//   (groups,1,1) workgroups of 256; workgroup w sums (x*scale)^2 over the
//   words w*256 + t + k*groups*256 into part[w]. The partition depends only
//   on N, so the result is deterministic.
//   With GradStats' check (FLAGS_DECL), binding 2 is flags (rw, u32) and
//   Params 3: flags[off] = 1 if some |x| is not <= limit (check_finite's
//   test, on x unscaled).
// sumsq_fold (stage 2): bindings 0 out (rw, f32), 1 part, 2 Params. One
//   workgroup of 256: out[index] += sum(part[0..groups)).
// check_finite_f32 / check_finite_pairs: x (N) f32, or f16 or bf16 pairs
//   in u32 words. Bindings 0 flags (rw, u32), 1 x, 2 Params. flags[index] = 1 if
//   some |x*scale| is not <= limit (NaN, ±inf, or above limit: over and
//   bad_half below). Never writes 0. Dispatch gpu.Grid(N, 256) for f32,
//   gpu.Grid((N+1)/2, 256) words for pairs.
// fill: bindings 0 x (rw, u32 words), 1 Params. x[off + i] = bits for
//   i < N. Dispatch gpu.Grid(N, 256).

struct Params {
	n: u32,      // elements
	index: u32,  // out / flags element
	groups: u32, // stage-1 workgroups (sumsq)
	bits: u32,   // fill pattern; limit's bits for check_finite and GradStats
	off: u32,    // fill offset; GradStats' flags element
	_p0: u32, _p1: u32,
	scale: f32,
}

const WG: u32 = 256u;

var<workgroup> red: array<f32, 256>;

// wg_sum returns the sum of v over the workgroup to every thread (a fixed
// tree, so the order of additions is fixed). Call from uniform control flow.
fn wg_sum(t: u32, v: f32) -> f32 {
	red[t] = v;
	for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
		workgroupBarrier();
		if (t < stride) { red[t] += red[t + stride]; }
	}
	workgroupBarrier();
	let s = red[0];
	workgroupBarrier(); // red may be reused right after
	return s;
}

// over reports whether v is NaN, ±inf or |v| is not <= limit (p.bits), on
// its bits, not on float compares: WGSL lets compilers assume that no NaN
// or inf occurs, so `v != v` or `abs(v) > limit` may be folded away.
// Non-negative floats order like their bit patterns; exponent all ones is
// inf or NaN, flagged even when limit is +inf.
fn over(v: f32) -> bool {
	let a = bitcast<u32>(v) & 0x7fffffffu;
	return a >= 0x7f800000u || a > p.bits;
}

// bad_half is over(v) for v the half h (its 16 bits) unpacked, and scaled:
// h is tested on its own bits first (exponent all ones, X_EXP), since
// unpacking a non-finite f16 gives an indeterminate value.
fn bad_half(h: u32, v: f32) -> bool {
	return (h & {{X_EXP}}) == {{X_EXP}} || over(v);
}

// ==== section sumsq_f32 ====
@group(0) @binding(0) var<storage, read_write> part: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
{{FLAGS_DECL}}
@group(0) @binding({{PB}}) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
	var s = 0.0;
	var flag = false;
	for (var i = wid.x * WG + t; i < p.n; i += p.groups * WG) {
		let v = x[i] * p.scale;
		s = fma(v, v, s);
		flag = flag || over(x[i]);
	}
	{{FLAG_STORE}}
	let total = wg_sum(t, s);
	if (t == 0u) { part[wid.x] = total; }
}

// ==== section sumsq_pairs ====
@group(0) @binding(0) var<storage, read_write> part: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<u32>;
{{FLAGS_DECL}}
@group(0) @binding({{PB}}) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
	let words = (p.n + 1u) / 2u;
	var s = 0.0;
	var flag = false;
	for (var w = wid.x * WG + t; w < words; w += p.groups * WG) {
		let bits = x[w];
		let u = {{X_UNPACK}}(bits);
		var v = u * p.scale;
		flag = flag || bad_half(bits & 0xffffu, u.x);
		if (2u * w + 1u >= p.n) {
			v.y = 0.0; // padding half of an odd N
		} else {
			flag = flag || bad_half(bits >> 16u, u.y);
		}
		s += dot(v, v);
	}
	{{FLAG_STORE}}
	let total = wg_sum(t, s);
	if (t == 0u) { part[wid.x] = total; }
}

// ==== section sumsq_fold ====
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
	var s = 0.0;
	for (var i = t; i < p.groups; i += WG) { s += part[i]; }
	let total = wg_sum(t, s);
	if (t == 0u) { out[p.index] += total; }
}

// ==== section check_finite_f32 ====
@group(0) @binding(0) var<storage, read_write> flags: array<atomic<u32>>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let i = gid.x + gid.y * nwg.x * WG;
	if (i >= p.n) { return; }
	if (over(x[i] * p.scale)) {
		atomicStore(&flags[p.index], 1u);
	}
}

// ==== section check_finite_pairs ====
@group(0) @binding(0) var<storage, read_write> flags: array<atomic<u32>>;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let w = gid.x + gid.y * nwg.x * WG;
	if (w >= (p.n + 1u) / 2u) { return; }
	let bits = x[w];
	let v = {{X_UNPACK}}(bits);
	var flag = bad_half(bits & 0xffffu, v.x * p.scale);
	if (2u * w + 1u < p.n) { // not the padding half of an odd N
		flag = flag || bad_half(bits >> 16u, v.y * p.scale);
	}
	if (flag) {
		atomicStore(&flags[p.index], 1u);
	}
}

// ==== section fill ====
@group(0) @binding(0) var<storage, read_write> x: array<u32>;
@group(0) @binding(1) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let i = gid.x + gid.y * nwg.x * WG;
	if (i < p.n) { x[p.off + i] = p.bits; }
}
