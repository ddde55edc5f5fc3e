// swiglu backward in place: the backward of swiglu.wgsl written over its
// inputs, for a tape that holds g and u for nothing else. Over n elements
// of {{X_T}} (arithmetic in f32), each thread reads g[i], u[i] and dh[i]
// and then writes
//   g[i] <- dg = dh * u * silu'(g)
//   u[i] <- du = dh * silu(g)
// so dg and du need no memory of their own (two N x F buffers at a LLaMA
// block's MLP). The values equal swiglu.wgsl's bit for bit.
// Bindings: 0 g (rw), 1 u (rw), 2 dh, 3 Params. Workgroup 256.

struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<storage, read_write> g: array<{{X_T}}>;
@group(0) @binding(1) var<storage, read_write> u: array<{{X_T}}>;
@group(0) @binding(2) var<storage, read> dh: array<{{X_T}}>;
@group(0) @binding(3) var<uniform> p: Params;

{{G_AT}}
{{G_ST}}
{{U_AT}}
{{U_ST}}
{{DH_AT}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let i = gid.x + gid.y * nwg.x * 256u;
	if (i >= p.n) { return; }
	let x = g_at(i);
	let s = 1.0 / (1.0 + exp(-x));
	let d = dh_at(i);
	let vg = d * u_at(i) * s * (1.0 + x * (1.0 - s));
	let vu = d * x * s;
	g_st(i, vg);
	u_st(i, vu);
}
