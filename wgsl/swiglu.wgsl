// swiglu backward: given h = silu(g) * u and dh, over n elements all f32 or
// all f16 ({{X_T}}; arithmetic in f32):
//   du = dh * silu(g)
//   dg = dh * u * silu'(g),  silu'(x) = s(x) * (1 + x * (1 - s(x))), s = sigmoid
// Two entry points with two binding sets (a binding number is reused only
// between entry points that never touch each other's variables, which
// WGSL allows), one formula (grads):
//   main      0 dg (rw), 1 du (rw), 2 dh, 3 g, 4 u, 5 Params. With
//             accumulation flags so the gradients can add into existing
//             ones: acc = 1 adds, 0 overwrites.
//   in_place  0 g (rw), 1 u (rw), 2 dh, 3 Params: dg written over g and du
//             over u, for a caller that holds g and u for nothing else (two
//             N x F buffers fewer at a LLaMA block's MLP); main's bits.
// The formula is swigluLib's swiglu_grads (wgsl.go), which the matmul's
// SwiGLU epilogue shares.
// Workgroup 256.

struct Params { n: u32, acc_g: u32, acc_u: u32, _p0: u32 }

@group(0) @binding(2) var<storage, read> dh: array<{{X_T}}>;

// main
@group(0) @binding(0) var<storage, read_write> dg: array<{{DG_T}}>;
@group(0) @binding(1) var<storage, read_write> du: array<{{DU_T}}>;
@group(0) @binding(3) var<storage, read> g: array<{{X_T}}>;
@group(0) @binding(4) var<storage, read> u: array<{{X_T}}>;
@group(0) @binding(5) var<uniform> p: Params;

// in_place
@group(0) @binding(0) var<storage, read_write> gw: array<{{GW_T}}>;
@group(0) @binding(1) var<storage, read_write> uw: array<{{UW_T}}>;
@group(0) @binding(3) var<uniform> pi: Params;

{{DG_AT}}
{{DG_ST}}
{{DU_AT}}
{{DU_ST}}
{{DH_AT}}
{{G_AT}}
{{U_AT}}
{{GW_AT}}
{{GW_ST}}
{{UW_AT}}
{{UW_ST}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let i = gid.x + gid.y * nwg.x * 256u;
	if (i >= p.n) { return; }
	var v = swiglu_grads(g_at(i), u_at(i), dh_at(i));
	if (p.acc_g != 0u) { v.x += dg_at(i); }
	if (p.acc_u != 0u) { v.y += du_at(i); }
	dg_st(i, v.x);
	du_st(i, v.y);
}

@compute @workgroup_size(256)
fn in_place(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let i = gid.x + gid.y * nwg.x * 256u;
	if (i >= pi.n) { return; }
	let v = swiglu_grads(gw_at(i), uw_at(i), dh_at(i));
	gw_st(i, v.x);
	uw_st(i, v.y);
}
