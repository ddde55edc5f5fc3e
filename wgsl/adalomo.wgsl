// adalomo: the AdaLomo update (REFERENCE §3) of one parameter, in place,
// from its complete gradient. It equals Adafactor (HF transformers) with
// beta1 off, relative_step off and scale_parameter on:
//   g = grad * inv_scale * clip_coef;  G = g^2 + eps1
//   matrix (R,C): r = beta*r + (1-beta)*mean_cols(G)   (R)
//                 c = beta*c + (1-beta)*mean_rows(G)   (C)
//                 u = g * rsqrt(r_i / mean(r)) * rsqrt(c_j)
//   vector (N):   v = beta*v + (1-beta)*G;  u = g * rsqrt(v)
//   u /= max(1, RMS(u) / clip_threshold)
//   lr_t = lr * max(eps2, RMS(param))       (param before this update)
//   param = param * (1 - lr_t*weight_decay) - lr_t * u
// beta = 1 - t^-0.8 comes from the caller. Shapes: grad (R,C) row-major,
// f32 or f16 pairs in u32 words (read by grad_at, arithmetic in f32),
// param (R,C) f32 or f16 pairs in u32 words, r (R), c (C), v (N) f32.
//
// One file, several kernels: each is compiled from the shared part below and
// the sections it needs (marked "==== section NAME ===="), since sections
// bind different buffers under the same numbers. All share one Params.
// Workgroups of 256 threads. The launcher records, for a matrix:
//   row_state    r from row sums of G; one workgroup per row, gpu.Grid(R, 1)
//   col_partial  partial column sums of G over chunks of chunk_rows rows into
//                part (chunks, C); workgroup 64 columns x 4 row lanes,
//                dispatch (ceil(C/64), chunks)
//   col_state    c from part; one thread per column, gpu.Grid(C, 256)
//   r_sum        stats[0] = sum(r); one workgroup
//   mat_partial  part[2w], part[2w+1] = sums of u^2 and param^2 over a
//                strided share of the elements; dispatch (groups, 1, 1)
//   sq_fold      stats[1], stats[2] = totals of those; one workgroup
//   update_*     + u_mat: the update, one thread per element (f32) or per
//                u32 pair (f16 or bf16, written whole by store_pair:
//                bf16 rounds stochastically with seed);
//                gpu.Grid(N or ceil(N/2), 256)
// and for a vector: vec_partial (v and the two partial sums in one pass),
// sq_fold, update_* + u_vec. With a weight check (AdaLomoStep.Check) the
// update binds flags (rw, u32) after u_mat's or u_vec's buffers and sets
// flags[p.flag] = 1 where a weight it wrote is NaN or infinite (as
// lomo.wgsl does). Partitions depend only on the shape, so every
// reduction is deterministic. Nothing is read back.
//
// Rows mode (AdaLomoStep.Rows, a matrix only): grad holds only some rows
// of the gradient (an embedding's, the batch's rows; every other row's
// gradient is zero), and the kernels read it through slot (rowslots.wgsl,
// the map from table rows to gradient rows, bound after their own
// buffers, before the flags): grad_at gives a zero where a row has none,
// so the update is the one the whole gradient gives, bit for bit. Each
// kernel's extra bindings come in at EXTRA_DECL and move Params to
// binding PB.

struct Params {
	rows: u32, cols: u32, n: u32, chunk_rows: u32,
	chunks: u32, groups: u32, seed: u32, flag: u32,
	lr: f32, beta: f32, eps1: f32, eps2: f32,
	clip_threshold: f32, weight_decay: f32, inv_scale: f32, clip_coef: f32,
}

const WG: u32 = 256u;

var<workgroup> red: array<f32, 256>;

// wg_sum returns the sum of v over the workgroup to every thread, by a fixed
// tree. Call from uniform control flow.
fn wg_sum(t: u32, v: f32) -> f32 {
	red[t] = v;
	for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
		workgroupBarrier();
		if (t < stride) { red[t] += red[t + stride]; }
	}
	workgroupBarrier();
	let s = red[0];
	workgroupBarrier();
	return s;
}

// gval is the unscaled, norm-clipped gradient; gsq its second moment term G.
fn gval(raw: f32) -> f32 { return raw * p.inv_scale * p.clip_coef; }
fn gsq(g: f32) -> f32 { return fma(g, g, p.eps1); }

// new_param applies the clipped step to one parameter value, given the
// totals sum(u^2) and sum(param^2) over the whole parameter.
fn new_param(q: f32, u: f32, sum_u2: f32, sum_p2: f32) -> f32 {
	let n = f32(p.n);
	let div = max(1.0, sqrt(sum_u2 / n) / p.clip_threshold);
	let lr_t = p.lr * max(p.eps2, sqrt(sum_p2 / n));
	return q * (1.0 - lr_t * p.weight_decay) - lr_t * (u / div);
}

// ==== section row_state ====
@group(0) @binding(0) var<storage, read_write> r: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<{{G_T}}>;
{{EXTRA_DECL}}
@group(0) @binding({{PB}}) var<uniform> p: Params;

{{G_AT}}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
		@builtin(local_invocation_index) t: u32) {
	let row = wid.x + wid.y * nwg.x;
	if (row >= p.rows) { return; } // uniform: the whole workgroup leaves
	let base = row * p.cols;
	var s = 0.0;
	for (var j = t; j < p.cols; j += WG) { s += gsq(gval(grad_at(base + j))); }
	let total = wg_sum(t, s);
	if (t == 0u) { r[row] = p.beta * r[row] + (1.0 - p.beta) * (total / f32(p.cols)); }
}

// ==== section col_partial ====
@group(0) @binding(0) var<storage, read_write> part: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<{{G_T}}>;
{{EXTRA_DECL}}
@group(0) @binding({{PB}}) var<uniform> p: Params;

{{G_AT}}

@compute @workgroup_size(64, 4)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
	let col = wid.x * 64u + lid.x;
	let r0 = wid.y * p.chunk_rows;
	let r1 = min(p.rows, r0 + p.chunk_rows);
	var s = 0.0;
	if (col < p.cols) {
		for (var i = r0 + lid.y; i < r1; i += 4u) { s += gsq(gval(grad_at(i * p.cols + col))); }
	}
	red[lid.y * 64u + lid.x] = s;
	workgroupBarrier();
	if (lid.y == 0u && col < p.cols) {
		part[wid.y * p.cols + col] = (red[lid.x] + red[64u + lid.x]) + (red[128u + lid.x] + red[192u + lid.x]);
	}
}

// ==== section col_state ====
@group(0) @binding(0) var<storage, read_write> c: array<f32>;
@group(0) @binding(1) var<storage, read> part: array<f32>;
{{EXTRA_DECL}}
@group(0) @binding({{PB}}) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let j = gid.x + gid.y * nwg.x * WG;
	if (j >= p.cols) { return; }
	var s = 0.0;
	for (var k = 0u; k < p.chunks; k++) { s += part[k * p.cols + j]; }
	c[j] = p.beta * c[j] + (1.0 - p.beta) * (s / f32(p.rows));
}

// ==== section r_sum ====
@group(0) @binding(0) var<storage, read_write> stats: array<f32>;
@group(0) @binding(1) var<storage, read> r: array<f32>;
{{EXTRA_DECL}}
@group(0) @binding({{PB}}) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
	var s = 0.0;
	for (var i = t; i < p.rows; i += WG) { s += r[i]; }
	let total = wg_sum(t, s);
	if (t == 0u) { stats[0] = total; }
}

// ==== section mat_partial ====
@group(0) @binding(0) var<storage, read_write> part: array<f32>;
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<{{G_T}}>;
@group(0) @binding(3) var<storage, read> r: array<f32>;
@group(0) @binding(4) var<storage, read> c: array<f32>;
@group(0) @binding(5) var<storage, read> param: array<{{P_T}}>;
{{EXTRA_DECL}}
@group(0) @binding({{PB}}) var<uniform> p: Params;

{{G_AT}}

{{P_AT}}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
	let mean_r = stats[0] / f32(p.rows);
	var su = 0.0;
	var sp = 0.0;
	for (var i = wid.x * WG + t; i < p.n; i += p.groups * WG) {
		let row = i / p.cols;
		let u = gval(grad_at(i)) * inverseSqrt(r[row] / mean_r) * inverseSqrt(c[i - row * p.cols]);
		let q = param_at(i);
		su = fma(u, u, su);
		sp = fma(q, q, sp);
	}
	let tu = wg_sum(t, su);
	let tp = wg_sum(t, sp);
	if (t == 0u) {
		part[2u * wid.x] = tu;
		part[2u * wid.x + 1u] = tp;
	}
}

// ==== section vec_partial ====
@group(0) @binding(0) var<storage, read_write> part: array<f32>;
@group(0) @binding(1) var<storage, read_write> v: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<{{G_T}}>;
@group(0) @binding(3) var<storage, read> param: array<{{P_T}}>;
{{EXTRA_DECL}}
@group(0) @binding({{PB}}) var<uniform> p: Params;

{{G_AT}}

{{P_AT}}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
	var su = 0.0;
	var sp = 0.0;
	for (var i = wid.x * WG + t; i < p.n; i += p.groups * WG) {
		let g = gval(grad_at(i));
		let vi = p.beta * v[i] + (1.0 - p.beta) * gsq(g);
		v[i] = vi;
		let u = g * inverseSqrt(vi);
		let q = param_at(i);
		su = fma(u, u, su);
		sp = fma(q, q, sp);
	}
	let tu = wg_sum(t, su);
	let tp = wg_sum(t, sp);
	if (t == 0u) {
		part[2u * wid.x] = tu;
		part[2u * wid.x + 1u] = tp;
	}
}

// ==== section sq_fold ====
@group(0) @binding(0) var<storage, read_write> stats: array<f32>;
@group(0) @binding(1) var<storage, read> part: array<f32>;
{{EXTRA_DECL}}
@group(0) @binding({{PB}}) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
	var su = 0.0;
	var sp = 0.0;
	for (var k = t; k < p.groups; k += WG) {
		su += part[2u * k];
		sp += part[2u * k + 1u];
	}
	let tu = wg_sum(t, su);
	let tp = wg_sum(t, sp);
	if (t == 0u) {
		stats[1] = tu;
		stats[2] = tp;
	}
}

// ==== section u_mat ====
@group(0) @binding(2) var<storage, read> grad: array<{{G_T}}>;
@group(0) @binding(3) var<storage, read> r: array<f32>;
@group(0) @binding(4) var<storage, read> c: array<f32>;
{{EXTRA_DECL}}
@group(0) @binding({{PB}}) var<uniform> p: Params;

{{G_AT}}
{{CHECK_FNS}}

fn u_at(i: u32) -> f32 {
	let row = i / p.cols;
	let mean_r = stats[0] / f32(p.rows);
	return gval(grad_at(i)) * inverseSqrt(r[row] / mean_r) * inverseSqrt(c[i - row * p.cols]);
}

// ==== section u_vec ====
@group(0) @binding(2) var<storage, read> grad: array<{{G_T}}>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
{{EXTRA_DECL}}
@group(0) @binding({{PB}}) var<uniform> p: Params;

{{G_AT}}
{{CHECK_FNS}}

fn u_at(i: u32) -> f32 { return gval(grad_at(i)) * inverseSqrt(v[i]); }

// ==== section update_f32 ====
@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> stats: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let i = gid.x + gid.y * nwg.x * WG;
	if (i >= p.n) { return; }
	let v = new_param(param[i], u_at(i), stats[1], stats[2]);
	param[i] = v;
	{{CHECK_F32}}
}

// ==== section update_pairs ====
@group(0) @binding(0) var<storage, read_write> param: array<u32>;
@group(0) @binding(1) var<storage, read> stats: array<f32>;

{{P_STORE}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let w = gid.x + gid.y * nwg.x * WG;
	let i = 2u * w;
	if (i >= p.n) { return; }
	let old = param[w];
	let q = {{P_UNPACK}}(old);
	let lo = new_param(q.x, u_at(i), stats[1], stats[2]);
	if (i + 1u < p.n) {
		let nw = store_pair(vec2<f32>(lo, new_param(q.y, u_at(i + 1u), stats[1], stats[2])), i);
		param[w] = nw;
		{{CHECK_PAIR}}
	} else {
		let nw = (store_pair(vec2<f32>(lo, 0.0), i) & 0xffffu) | (old & 0xffff0000u);
		param[w] = nw;
		{{CHECK_LOW}}
	}
}
