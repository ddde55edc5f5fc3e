// rowslots: the map from a table's rows to the rows of a gradient
// delivered by rows (an embedding's: the batch's rows), for updates that
// run over the whole table and read the gradient through it (grad_at by
// rowSlotsGradAt): slot[i] = k where ids[off + k] = i, k < n, and NO_SLOT
// (0xffffffff) for a row without a gradient row. The launcher first fills
// slot with NO_SLOT (Fill), then records this kernel: slot[ids[off + k]] = k,
// gpu.Grid(n, 256). ids are distinct, so no two threads write one slot;
// an id past the table is ignored.
// Bindings: 0 slot (rw, u32, rows), 1 ids (u32), 2 Params.

struct Params {
	rows: u32, off: u32, n: u32, _p0: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read_write> slot: array<u32>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let k = gid.x + gid.y * nwg.x * WG;
	if (k >= p.n) { return; }
	let row = ids[p.off + k];
	if (row < p.rows) { slot[row] = k; }
}
