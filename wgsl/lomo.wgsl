// lomo: the LOMO parameter update (REFERENCE §1.4), in place, one parameter
// at a time from its complete gradient:
//   g = grad * inv_scale;  if clip_value > 0: g = clamp(g, ±clip_value);
//   g *= clip_coef;  p = f32(param);  if weight_decay > 0: p *= 1 - lr*wd;
//   p -= lr * g;  param = p stored in param's dtype (no f32 master copy).
//
// Shapes: param (N) f32, or f16 or bf16 pairs in u32 words; grad (N) f32,
// or f16 or bf16 pairs in u32 words (grad_at).
// Bindings: 0 param (rw), 1 grad, 2 Params. Workgroup 256.
// Sections (marked "==== section NAME ===="): f32, one thread per element,
// dispatch gpu.Grid(N, 256); pairs (f16 or bf16: {{P_UNPACK}} reads a pair,
// store_pair packs it, rounding bf16 stochastically with seed), one thread
// per u32 pair, written whole (the padding half of an odd N keeps its
// bits), dispatch gpu.Grid(ceil(N/2), 256).
// rows_f32, rows_pairs: a row-sparse gradient of a (V, cols) table: grad
// (N = R*cols) holds the rows listed in rows[rows_off..] (R u32, distinct), which are
// updated as above and no others (a zero gradient would leave them as they
// are, weight decay aside). Bindings: 0 param (rw), 1 grad, 2 rows, 3
// Params. rows_pairs needs an even cols (pairs within a row).
// With weight decay, which moves every row, a row-sparse gradient is read
// by f32 and pairs over the whole table instead, through the map from
// table rows to gradient rows (rowslots.wgsl) bound as slot at binding 2:
// grad_at gives a zero where a row has no gradient row.
// With a weight check (LomoStep.Check), every section binds flags (rw,
// u32) before Params and sets flags[p.flag] = 1 where a weight it wrote is
// NaN or infinite (exponent bits all ones: CheckFinite's test, on the
// stored bits, without a pass that reads the weights again).

struct Params {
	n: u32, lr: f32, weight_decay: f32, inv_scale: f32,
	clip_value: f32, clip_coef: f32, cols: u32, rows_off: u32,
	seed: u32, flag: u32, _p1: u32, _p2: u32,
}

{{CHECK_FNS}}

const WG: u32 = 256u;

fn lomo_step(param: f32, grad: f32) -> f32 {
	var g = grad * p.inv_scale;
	if (p.clip_value > 0.0) { g = clamp(g, -p.clip_value, p.clip_value); }
	g *= p.clip_coef;
	var q = param;
	if (p.weight_decay > 0.0) { q *= 1.0 - p.lr * p.weight_decay; }
	return q - p.lr * g;
}

// ==== section f32 ====
@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<{{G_T}}>;
{{SLOT_DECL}}
{{CHECK_DECL}}
@group(0) @binding({{PB}}) var<uniform> p: Params;

{{G_AT}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let i = gid.x + gid.y * nwg.x * WG;
	if (i >= p.n) { return; }
	let v = lomo_step(param[i], grad_at(i));
	param[i] = v;
	{{CHECK_F32}}
}

// ==== section pairs ====
@group(0) @binding(0) var<storage, read_write> param: array<u32>;
@group(0) @binding(1) var<storage, read> grad: array<{{G_T}}>;
{{SLOT_DECL}}
{{CHECK_DECL}}
@group(0) @binding({{PB}}) var<uniform> p: Params;

{{G_AT}}
{{P_STORE}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let w = gid.x + gid.y * nwg.x * WG;
	let i = 2u * w;
	if (i >= p.n) { return; }
	let old = param[w];
	let v = {{P_UNPACK}}(old);
	let lo = lomo_step(v.x, grad_at(i));
	if (i + 1u < p.n) {
		let nw = store_pair(vec2<f32>(lo, lomo_step(v.y, grad_at(i + 1u))), i);
		param[w] = nw;
		{{CHECK_PAIR}}
	} else {
		let nw = (store_pair(vec2<f32>(lo, 0.0), i) & 0xffffu) | (old & 0xffff0000u);
		param[w] = nw;
		{{CHECK_LOW}}
	}
}

// ==== section rows_f32 ====
@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<{{G_T}}>;
@group(0) @binding(2) var<storage, read> rows: array<u32>;
{{CHECK_DECL}}
@group(0) @binding({{PB}}) var<uniform> p: Params;

{{G_AT}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let i = gid.x + gid.y * nwg.x * WG;
	if (i >= p.n) { return; }
	let j = rows[p.rows_off + i / p.cols] * p.cols + i % p.cols;
	let v = lomo_step(param[j], grad_at(i));
	param[j] = v;
	{{CHECK_F32}}
}

// ==== section rows_pairs ====
@group(0) @binding(0) var<storage, read_write> param: array<u32>;
@group(0) @binding(1) var<storage, read> grad: array<{{G_T}}>;
@group(0) @binding(2) var<storage, read> rows: array<u32>;
{{CHECK_DECL}}
@group(0) @binding({{PB}}) var<uniform> p: Params;

{{G_AT}}
{{P_STORE}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let i = 2u * (gid.x + gid.y * nwg.x * WG);
	if (i >= p.n) { return; }
	let j = rows[p.rows_off + i / p.cols] * p.cols + i % p.cols;
	let w = j / 2u;
	let v = {{P_UNPACK}}(param[w]);
	let nw = store_pair(vec2<f32>(lomo_step(v.x, grad_at(i)), lomo_step(v.y, grad_at(i + 1u))), j);
	param[w] = nw;
	{{CHECK_PAIR}}
}
