// probe: the adapter's ceilings, against which every kernel figure of
// `lomo bench` is a fraction.
//
//   fma   each thread runs ITERS rounds of 8 independent fma chains
//         acc_j = fma(acc_j, a, b) in {{T}} (f32, or f16 as vec2 pairs
//         under `enable f16;`), then writes sum(acc) as f32 to out[thread]:
//         16 * ITERS flops per thread (f32), 32 * ITERS (f16: 2 lanes).
//         Bindings: 0 out (rw, f32 per thread), 1 Params. Workgroup 256;
//         dispatch Grid(threads, 256).
//   copy  dst[i] = src[i] over n vec4<f32>: 32 bytes moved per thread.
//         Bindings: 0 dst (rw), 1 src, 2 Params (the fma entry's Params).
// The constants a, b come from Params so that no compiler folds the loop.

struct Params {
	threads: u32, iters: u32, a: f32, b: f32,
}

// fma
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;

// copy
@group(0) @binding(0) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> pc: Params;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn fma_loop(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let t = gid.x + gid.y * nwg.x * WG;
	if (t >= p.threads) { return; }
	let a = {{T}}({{S}}(p.a));
	let b = {{T}}({{S}}(p.b));
	// Distinct starts per chain and thread: nothing to share or fold.
	let s = {{T}}({{S}}(f32(t % 7u) * 0.125));
	var c0 = s; var c1 = s + {{T}}(0.5); var c2 = s + {{T}}(1.0); var c3 = s + {{T}}(1.5);
	var c4 = s + {{T}}(2.0); var c5 = s + {{T}}(2.5); var c6 = s + {{T}}(3.0); var c7 = s + {{T}}(3.5);
	for (var i = 0u; i < p.iters; i++) {
		c0 = fma(c0, a, b); c1 = fma(c1, a, b); c2 = fma(c2, a, b); c3 = fma(c3, a, b);
		c4 = fma(c4, a, b); c5 = fma(c5, a, b); c6 = fma(c6, a, b); c7 = fma(c7, a, b);
	}
	out[t] = {{SUM}}(((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)));
}

@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let i = gid.x + gid.y * nwg.x * WG;
	if (i < pc.threads) { dst[i] = src[i]; }
}
