// axpy: y = alpha * x + beta * y over n elements, both f32 or both f16
// ({{X_T}}; arithmetic in f32) (gradient accumulation;
// beta = 0 is a scaled copy and never reads y, so y may hold garbage).
// Bindings: 0 y (rw), 1 x, 2 Params. Workgroup 256; dispatch dev.Grid(n, 256).

struct Params { n: u32, alpha: f32, beta: f32, _p0: u32 }

@group(0) @binding(0) var<storage, read_write> y: array<{{Y_T}}>;
@group(0) @binding(1) var<storage, read> x: array<{{X_T}}>;
@group(0) @binding(2) var<uniform> p: Params;

{{Y_AT}}
{{Y_ST}}
{{XX_AT}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let i = gid.x + gid.y * nwg.x * 256u;
	if (i >= p.n) { return; }
	var v = p.alpha * x_at(i);
	if (p.beta != 0.0) { v += p.beta * y_at(i); }
	y_st(i, v);
}
