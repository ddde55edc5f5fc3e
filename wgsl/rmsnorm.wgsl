// rmsnorm: y = x / sqrt(mean(x²) + eps) * w per row (LLaMA's RMSNorm, Zhang
// & Sennrich 2019, "Root Mean Square Layer Normalization"), and its backward.
//
// Shapes (row-major): x, y, dy, dx (R,C) f32 or f16 ({{X_T}}, arithmetic in
// f32) with R rows (the tokens, B*T) and C the hidden size; w (C) f32 or f16
// pairs ({{W_T}}); dw (C) f32;
// rstd (R) f32 = 1/sqrt(mean(x²) + eps), saved by forward for backward.
//
// Three entry points share this module with two binding sets. A binding
// number is reused only between entry points that never touch each other's
// variables, which WGSL allows (the rule is per entry point's resource
// interface). Params is the same struct for both sets.
//   forward      0 y (rw), 1 rstd (rw), 2 x, 3 w, 4 Params.
//                One workgroup of 256 per row: a strided sum of squares, a
//                tree reduction in workgroup memory, then y. Dispatch
//                Grid(R*256, 256): R workgroups, folded into y past 65535.
//   backward_dx  0 dx (rw), 1 dw (rw, untouched), 2 x, 3 w, 4 dy, 5 rstd, 6 Params.
//                dx = rstd * (w*dy - x * rstd² * sum(dy*w*x) / C); one
//                workgroup of 256 per row as forward. Dispatch as forward.
//   forward_rows, backward_dx_rows: forward and backward_dx with one
//                thread per row (workgroup 64 rows), for CPU adapters, where
//                a workgroup's barriers cost more than its arithmetic. The
//                thread forms the 256 strided partial sums and adds them in
//                workgroup_sum's tree order, so the results are the same
//                bits. Dispatch Grid(R, 64).
//   backward_dw  same bindings; dw = [dw +] sum over rows of dy*x*rstd.
//                Workgroup 256 = 32 columns x 8 row lanes; lane l sums rows
//                l, l+8, ...; then the 8 lanes are added in order. Fixed
//                order, no atomics: deterministic. Dispatch
//                Grid(ceil(C/32)*256, 256).

struct Params {
	rows: u32, cols: u32, eps: f32, accumulate: u32,
}

// forward
@group(0) @binding(0) var<storage, read_write> y: array<{{Y_T}}>;
@group(0) @binding(1) var<storage, read_write> rstd_out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<{{X_T}}>;
@group(0) @binding(3) var<storage, read> w: array<{{W_T}}>;
@group(0) @binding(4) var<uniform> pf: Params;

// backward (x and w as above)
@group(0) @binding(0) var<storage, read_write> dx: array<{{DX_T}}>;
@group(0) @binding(1) var<storage, read_write> dw: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<{{X_T}}>;
@group(0) @binding(5) var<storage, read> rstd: array<f32>;
@group(0) @binding(6) var<uniform> pb: Params;

{{W_AT}}
{{Y_ST}}
{{XX_AT}}
{{DX_ST}}
{{DX_AT}}

// put_dx stores dx[i] = v, or with accumulate's bit 1 dx[i] += v.
fn put_dx(i: u32, v: f32) {
	if ((pb.accumulate & 2u) != 0u) {
		dx_st(i, dx_at(i) + v);
	} else {
		dx_st(i, v);
	}
}
{{DY_AT}}

const WG: u32 = 256u;
const DW_COLS: u32 = 32u;
const DW_LANES: u32 = 8u; // DW_COLS * DW_LANES == WG

var<workgroup> red: array<f32, 256>;

// workgroup_sum returns the sum of v over the workgroup: a tree in workgroup
// memory, the same order on every run. Call from uniform control flow.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
	red[lid] = v;
	workgroupBarrier();
	for (var s = WG / 2u; s > 0u; s >>= 1u) {
		if (lid < s) { red[lid] += red[lid + s]; }
		workgroupBarrier();
	}
	let total = red[0];
	workgroupBarrier(); // red may be reused right after
	return total;
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
		@builtin(local_invocation_index) lid: u32) {
	let row = wg.x + wg.y * nwg.x;
	if (row >= pf.rows) { return; } // uniform: the whole workgroup leaves
	let C = pf.cols;
	let base = row * C;
	var ss = 0.0;
	for (var j = lid; j < C; j += WG) {
		let v = x_at(base + j);
		ss = fma(v, v, ss);
	}
	let r = inverseSqrt(workgroup_sum(lid, ss) / f32(C) + pf.eps);
	for (var j = lid; j < C; j += WG) {
		y_st(base + j, x_at(base + j) * r * w_at(j));
	}
	if (lid == 0u) { rstd_out[row] = r; }
}

@compute @workgroup_size(256)
fn backward_dx(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
		@builtin(local_invocation_index) lid: u32) {
	let row = wg.x + wg.y * nwg.x;
	if (row >= pb.rows) { return; }
	let C = pb.cols;
	let base = row * C;
	var s = 0.0;
	for (var j = lid; j < C; j += WG) {
		s = fma(dy_at(base + j) * w_at(j), x_at(base + j), s);
	}
	let r = rstd[row];
	// d rstd / d x_j = -rstd³ x_j / C, hence the second term.
	let k = r * r * workgroup_sum(lid, s) / f32(C);
	for (var j = lid; j < C; j += WG) {
		put_dx(base + j, r * (dy_at(base + j) * w_at(j) - x_at(base + j) * k));
	}
}

@compute @workgroup_size(256)
fn backward_dw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
		@builtin(local_invocation_index) lid: u32) {
	let group = wg.x + wg.y * nwg.x;
	let c = lid % DW_COLS;
	let lane = lid / DW_COLS;
	let col = group * DW_COLS + c;
	var s = 0.0;
	if (col < pb.cols) {
		for (var r = lane; r < pb.rows; r += DW_LANES) {
			let i = r * pb.cols + col;
			s = fma(dy_at(i) * x_at(i), rstd[r], s);
		}
	}
	red[lid] = s;
	workgroupBarrier();
	if (lane == 0u && col < pb.cols) {
		var t = 0.0;
		for (var l = 0u; l < DW_LANES; l++) { t += red[l * DW_COLS + c]; }
		if ((pb.accumulate & 1u) != 0u) { t += dw[col]; }
		dw[col] = t;
	}
}

const ROWS_WG: u32 = 64u;

// tree_sum adds the 256 partial sums in workgroup_sum's order.
fn tree_sum(part: ptr<function, array<f32, 256>>) -> f32 {
	for (var s = WG / 2u; s > 0u; s >>= 1u) {
		for (var l = 0u; l < s; l++) { (*part)[l] += (*part)[l + s]; }
	}
	return (*part)[0];
}

@compute @workgroup_size(64)
fn forward_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let row = gid.x + gid.y * nwg.x * ROWS_WG;
	if (row >= pf.rows) { return; }
	let C = pf.cols;
	let base = row * C;
	var part: array<f32, 256>;
	for (var l = 0u; l < WG; l++) {
		var ss = 0.0;
		for (var j = l; j < C; j += WG) {
			let v = x_at(base + j);
			ss = fma(v, v, ss);
		}
		part[l] = ss;
	}
	let r = inverseSqrt(tree_sum(&part) / f32(C) + pf.eps);
	for (var j = 0u; j < C; j++) {
		y_st(base + j, x_at(base + j) * r * w_at(j));
	}
	rstd_out[row] = r;
}

@compute @workgroup_size(64)
fn backward_dx_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let row = gid.x + gid.y * nwg.x * ROWS_WG;
	if (row >= pb.rows) { return; }
	let C = pb.cols;
	let base = row * C;
	var part: array<f32, 256>;
	for (var l = 0u; l < WG; l++) {
		var s = 0.0;
		for (var j = l; j < C; j += WG) {
			s = fma(dy_at(base + j) * w_at(j), x_at(base + j), s);
		}
		part[l] = s;
	}
	let r = rstd[row];
	let k = r * r * tree_sum(&part) / f32(C);
	for (var j = 0u; j < C; j++) {
		put_dx(base + j, r * (dy_at(base + j) * w_at(j) - x_at(base + j) * k));
	}
}
