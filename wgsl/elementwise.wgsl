// elementwise: out = OP(a, b) over n elements, all f32 or all f16 ({{X_T}};
// arithmetic in f32).
//   add:    out = a + b                     (residual connections)
//   swiglu: out = silu(a) * b, silu(x) = x * sigmoid(x)   (a = gate, b = up)
// Bindings: 0 out (rw), 1 a, 2 b, 3 Params. Workgroup 256; dispatch
// dev.Grid(n, 256). Saves nothing (swiglu's backward re-reads a and b).
// silu is swigluLib's (wgsl.go).

struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<{{OUT_T}}>;
@group(0) @binding(1) var<storage, read> a: array<{{X_T}}>;
@group(0) @binding(2) var<storage, read> b: array<{{X_T}}>;
@group(0) @binding(3) var<uniform> p: Params;

{{OUT_ST}}
{{A_AT}}
{{B_AT}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let i = gid.x + gid.y * nwg.x * 256u;
	if (i >= p.n) { return; }
	let x = a_at(i);
	let y = b_at(i);
	out_st(i, {{OP}});
}
