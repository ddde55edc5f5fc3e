// swiglu backward: given h = silu(g) * u and dh, over n elements all f32 or
// all f16 ({{X_T}}; arithmetic in f32):
//   du = dh * silu(g)
//   dg = dh * u * silu'(g),  silu'(x) = s(x) * (1 + x * (1 - s(x))), s = sigmoid
// Written with accumulation flags so the gradients can add into existing
// ones: acc = 1 adds, 0 overwrites.
// Bindings: 0 dg (rw), 1 du (rw), 2 dh, 3 g, 4 u, 5 Params. Workgroup 256.

struct Params { n: u32, acc_g: u32, acc_u: u32, _p0: u32 }

@group(0) @binding(0) var<storage, read_write> dg: array<{{X_T}}>;
@group(0) @binding(1) var<storage, read_write> du: array<{{X_T}}>;
@group(0) @binding(2) var<storage, read> dh: array<{{X_T}}>;
@group(0) @binding(3) var<storage, read> g: array<{{X_T}}>;
@group(0) @binding(4) var<storage, read> u: array<{{X_T}}>;
@group(0) @binding(5) var<uniform> p: Params;

{{DG_AT}}
{{DG_ST}}
{{DU_AT}}
{{DU_ST}}
{{DH_AT}}
{{G_AT}}
{{U_AT}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let i = gid.x + gid.y * nwg.x * 256u;
	if (i >= p.n) { return; }
	let x = g_at(i);
	let s = 1.0 / (1.0 + exp(-x));
	let d = dh_at(i);
	var vg = d * u_at(i) * s * (1.0 + x * (1.0 - s));
	var vu = d * x * s;
	if (p.acc_g != 0u) { vg += dg_at(i); }
	if (p.acc_u != 0u) { vu += du_at(i); }
	dg_st(i, vg);
	du_st(i, vu);
}
