// dropout: y = scale * keep(i) * x + beta * y over n elements, both f32 or
// both f16 ({{X_T}}; arithmetic in f32). keep(i) is 1 when
// hash32(i + hash32(seed)) >= threshold (threshold = p * 2^32) and 0 otherwise,
// a pure function of (seed, i): the forward (scale = 1/(1-p)) and the
// backward (the same kernel on the gradient, beta = 1 to accumulate) drop
// the same elements without storing a mask, and so does every recompute of
// a checkpointed block. hash32 is a 32-bit integer finalizer (xor-shift and
// odd multiplies; hashLib in wgsl.go), DropoutKeep in dropout.go. beta = 0 never reads y.
// Bindings: 0 y (rw), 1 x, 2 Params. Workgroup 256; dispatch dev.Grid(n, 256).

struct Params { n: u32, seed: u32, threshold: u32, scale: f32, beta: f32, _p0: u32, _p1: u32, _p2: u32 }

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
	var v = 0.0;
	if (hash32(i + hash32(p.seed)) >= p.threshold) {
		v = p.scale * x_at(i);
	}
	if (p.beta != 0.0) { v += p.beta * y_at(i); }
	y_st(i, v);
}
