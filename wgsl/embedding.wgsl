// embedding: token embedding lookup and its backward (the scatter-add of
// the gradient into the table rows).
//
// Shapes: table, dtable (V,C) row-major, V the vocabulary and C the hidden
// size; table f32 or f16 pairs ({{T_T}}), dtable f32; ids (N) u32 with N the
// tokens (B*T); out, dout (N,C) f32 or f16 ({{X_T}}; sums in f32).
// An id >= V cannot raise an error on the GPU: forward writes a row of
// zeros for it and backward skips it. The host validates ids beforehand.
//
// Entry points share this module with two binding sets (a binding number
// is reused only between entry points that never touch each other's
// variables, which WGSL allows); Params and ids are common.
//   forward   0 out (rw), 1 table, 2 ids, 3 Params. One thread per output
//             element, workgroup 256; dispatch Grid(N*C, 256).
//   zero      0 dtable (rw), 1 dout, 2 ids, 3 Params: dtable = 0, one thread
//             per element, workgroup 256; dispatch Grid(V*C, 256). Recorded
//             before backward when not accumulating.
//   backward  same bindings: dtable[ids[i]] += dout[i] for i = 0..N-1 in
//             order. One thread per column (workgroup 64 columns), so no two
//             threads touch one element: repeated ids sum, deterministically
//             and without atomics (WGSL has no float atomics). The ids pass
//             through workgroup memory in tiles of 64. Dispatch Grid(C, 64).

struct Params {
	n: u32, c: u32, vocab: u32, _pad: u32,
}

@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;

// forward
@group(0) @binding(0) var<storage, read_write> out: array<{{OUT_T}}>;
@group(0) @binding(1) var<storage, read> table: array<{{T_T}}>;

// zero, backward
@group(0) @binding(0) var<storage, read_write> dtable: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<{{X_T}}>;

{{T_AT}}
{{OUT_ST}}
{{DOUT_AT}}

const WG: u32 = 256u;
const BW_WG: u32 = 64u;

@compute @workgroup_size(256)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let t = gid.x + gid.y * nwg.x * WG;
	if (t >= p.n * p.c) { return; }
	let id = ids[t / p.c];
	var v = 0.0;
	if (id < p.vocab) { v = table_at(id * p.c + t % p.c); }
	out_st(t, v);
}

@compute @workgroup_size(256)
fn zero(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let t = gid.x + gid.y * nwg.x * WG;
	if (t < p.vocab * p.c) { dtable[t] = 0.0; }
}

var<workgroup> tile: array<u32, 64>;

@compute @workgroup_size(64)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
		@builtin(local_invocation_index) lid: u32) {
	let col = (wg.x + wg.y * nwg.x) * BW_WG + lid;
	for (var i0 = 0u; i0 < p.n; i0 += BW_WG) {
		let cnt = min(BW_WG, p.n - i0);
		if (lid < cnt) { tile[lid] = ids[i0 + lid]; }
		workgroupBarrier();
		if (col < p.c) {
			for (var k = 0u; k < cnt; k++) {
				let id = tile[k];
				if (id < p.vocab) {
					dtable[id * p.c + col] += dout_at((i0 + k) * p.c + col);
				}
			}
		}
		workgroupBarrier(); // the tile is overwritten next
	}
}
