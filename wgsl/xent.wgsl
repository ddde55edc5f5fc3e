// xent: fused log-softmax cross-entropy, forward and backward in one pass
// over the logits, in place.
//
// Shapes: logits (N,V) f32 row-major; labels and loss are read and written
// from row row0 on (labels[row0 + r], loss[row0 + r] for logits row r), so
// that a chunk of rows can be run on logits of the chunk alone.
// For row r with label l = labels[r]:
//   lse       = log(sum_j exp(logits[r,j]))          (max-subtracted)
//   loss[r]   = min(lse - logits[r,l], clip_loss)    (clip only if clip_loss > 0)
//   logits[r,j] <- grad_scale * (softmax[r,j] - [j == l])   (if compute_grad)
// A negative label (-100, the ignore index) gives loss 0 and a zero gradient
// row. A clamped token (loss > clip_loss > 0) has a zero gradient row: the
// derivative of min(x, c) in x is 0 where the clamp is active (REFERENCE §1.1).
// A label >= V is a caller bug: loss and gradient row become NaN so that it
// cannot pass unnoticed.
// Bindings: 0 loss (rw), 1 logits (rw, read only when compute_grad == 0),
// 2 labels, 3 Params.
//
// An LM head whose gradient is computed a block of vocabulary rows at a
// time (nn.Tape.HeadLoss) needs each row's softmax before any block's
// logits exist again, so the forward keeps two numbers per row and the
// backward turns each block's logits into gradients alone:
//   row_stats   main's loss, logits untouched, and stats[2r] = lse,
//               stats[2r+1] = the row's gradient scale (grad_scale; 0 for
//               an ignored or clamped row; NaN for a label >= V).
//               Bindings 0 loss (rw), 1 logits, 2 labels, 3 stats (rw),
//               4 Params. (The launcher compiles the module with Params
//               at P_BINDING and stats at STATS_BINDING, 3 and 4 for the
//               other entry points, 4 and 3 for this one: every entry
//               point of a module must validate, and a binding is shared
//               only by variables no entry point uses together.) main's
//               bits.
//   block_grad  logits (N,VB) of columns v0.. (Params.v = VB) <- the
//               gradient, from stats and labels: main's bits for those
//               columns. Bindings 0 dl (rw), 1 st (stats), 2 labels,
//               3 Params; one thread per element, dispatch gpu.Grid(N*VB,
//               256).
// Workgroup 256 threads, one workgroup per row; dispatch gpu.Grid(N, 1)
// (row = wg.x + wg.y * num_workgroups.x). Each thread keeps an online
// (max, sum of exp) over its strided slice of the row, the pairs are merged
// by a tree in workgroup memory, then each thread overwrites its slice with
// the gradient. Two passes over the row; no probability buffer is stored.
// main_rows (CPU adapters) computes a row in one thread, with main's bits.

struct Params {
	n: u32, v: u32, compute_grad: u32, row0: u32,
	grad_scale: f32, clip_loss: f32, v0: u32, _p2: u32,
}

@group(0) @binding(0) var<storage, read_write> loss: array<f32>;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding({{P_BINDING}}) var<uniform> p: Params;
@group(0) @binding({{STATS_BINDING}}) var<storage, read_write> stats: array<f32>; // row_stats
@group(0) @binding(0) var<storage, read_write> dl: array<f32>;   // block_grad
@group(0) @binding(1) var<storage, read> st: array<f32>;         // block_grad

const WG: u32 = 256u;
const LOWEST: f32 = -3.4028234663852886e38; // -FLT_MAX, exactly (WGSL rejects literals beyond it); stands for -inf as an empty max

var<workgroup> wmax: array<f32, 256>;
var<workgroup> wsum: array<f32, 256>;
var<workgroup> wlabel: i32;

// online folds logit x into a running (max m, sum of exp(· - m) s).
fn online(m: ptr<function, f32>, s: ptr<function, f32>, x: f32) {
	if (x > *m) {
		*s = *s * exp(*m - x) + 1.0;
		*m = x;
	} else {
		*s += exp(x - *m);
	}
}

// merged is the sum of two (max, sum) pairs rescaled to mm = max(m, m2).
fn merged(m: f32, s: f32, m2: f32, s2: f32, mm: f32) -> f32 {
	return s * exp(m - mm) + s2 * exp(m2 - mm);
}

// ignore writes an ignored row's loss (thread t == 0) and zero gradient
// (columns t, t + step, ...).
fn ignore(out: u32, base: u32, t: u32, step: u32) {
	if (t == 0u) { loss[out] = 0.0; }
	if (p.compute_grad != 0u) {
		for (var j = t; j < p.v; j += step) { logits[base + j] = 0.0; }
	}
}

// row_loss is a row's (loss, gradient scale) from its log-sum-exp and its
// label's logit xl.
fn row_loss(label: i32, xl: f32, lse: f32) -> vec2<f32> {
	var l = lse - xl;
	var scale = p.grad_scale;
	if (p.clip_loss > 0.0 && l > p.clip_loss) {
		l = p.clip_loss;
		scale = 0.0;
	}
	if (u32(label) >= p.v) { // out of range: poison loudly
		// A NaN built at run time: a constant NaN is a shader-creation
		// error in WGSL (Tint enforces it). Exponent bits all set, quiet bit
		// set: NaN whatever the label's bits.
		l = bitcast<f32>(0x7fc00000u | u32(label));
		scale = l;
	}
	return vec2<f32>(l, scale);
}

// grad is the gradient of a logit x in column j of a row with label
// `label`, log-sum-exp lse and gradient scale `scale`.
fn grad(x: f32, j: u32, label: i32, lse: f32, scale: f32) -> f32 {
	var g = exp(x - lse);
	if (j == u32(label)) { g -= 1.0; }
	return scale * g;
}

// finish writes a row's loss (thread t == 0) and, with compute_grad, the
// gradient of its columns t, t + step, ... from the row's log-sum-exp and
// its label's logit xl.
fn finish(out: u32, base: u32, label: i32, xl: f32, lse: f32, t: u32, step: u32) {
	let ls = row_loss(label, xl, lse);
	if (t == 0u) { loss[out] = ls.x; }
	if (p.compute_grad == 0u) { return; }
	for (var j = t; j < p.v; j += step) {
		logits[base + j] = grad(logits[base + j], j, label, lse, ls.y);
	}
}

// row_lse is the log-sum-exp of logits[base..base+v), the workgroup's
// threads t each folding the columns t, t + WG, ... and their (max, sum)
// pairs merged by a tree; every thread gets it.
fn row_lse(base: u32, t: u32) -> f32 {
	var m = LOWEST;
	var s = 0.0;
	for (var j = t; j < p.v; j += WG) {
		online(&m, &s, logits[base + j]);
	}
	wmax[t] = m;
	wsum[t] = s;
	for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
		workgroupBarrier();
		if (t < stride) {
			let m2 = wmax[t + stride];
			let s2 = wsum[t + stride];
			let mm = max(m, m2);
			s = merged(m, s, m2, s2, mm);
			m = mm;
			wmax[t] = m;
			wsum[t] = s;
		}
	}
	workgroupBarrier();
	return wmax[0] + log(wsum[0]);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
		@builtin(local_invocation_index) t: u32) {
	let row = wid.x + wid.y * nwg.x;
	if (row >= p.n) { return; } // uniform: the whole workgroup leaves
	let base = row * p.v;
	let out = p.row0 + row; // index in labels and loss
	if (t == 0u) { wlabel = labels[out]; }
	let label = workgroupUniformLoad(&wlabel);

	if (label < 0) { // ignored token
		ignore(out, base, t, WG);
		return;
	}

	// The label's logit is read before any thread can overwrite it: the
	// barriers of the reduction below separate this read from the writes.
	var xl = 0.0;
	if (u32(label) < p.v) { xl = logits[base + u32(label)]; }

	let lse = row_lse(base, t);
	storageBarrier();
	finish(out, base, label, xl, lse, t, WG);
}

@compute @workgroup_size(256)
fn row_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
		@builtin(local_invocation_index) t: u32) {
	let row = wid.x + wid.y * nwg.x;
	if (row >= p.n) { return; } // uniform: the whole workgroup leaves
	let base = row * p.v;
	let out = p.row0 + row;
	if (t == 0u) { wlabel = labels[out]; }
	let label = workgroupUniformLoad(&wlabel);
	if (label < 0) {
		if (t == 0u) {
			loss[out] = 0.0;
			stats[2u * out] = 0.0;
			stats[2u * out + 1u] = 0.0;
		}
		return;
	}
	var xl = 0.0;
	if (u32(label) < p.v) { xl = logits[base + u32(label)]; }
	let lse = row_lse(base, t);
	if (t == 0u) {
		let ls = row_loss(label, xl, lse);
		loss[out] = ls.x;
		stats[2u * out] = lse;
		stats[2u * out + 1u] = ls.y;
	}
}

@compute @workgroup_size(256)
fn block_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let i = gid.x + gid.y * nwg.x * 256u;
	if (i >= p.n * p.v) { return; }
	let out = p.row0 + i / p.v;
	let label = labels[out];
	if (label < 0) { // main's ignore
		dl[i] = 0.0;
		return;
	}
	dl[i] = grad(dl[i], p.v0 + i % p.v, label, st[2u * out], st[2u * out + 1u]);
}

const ROWS_WG: u32 = 64u;

// main_rows is main with one thread per row (CPU adapters, where a
// workgroup's barriers cost more than a row's arithmetic): the thread
// computes the WG partial (max, sum) pairs of main's threads in turn and
// merges them in main's tree order, the same operations on the same
// values, so it gives main's bits. Workgroups of 64 rows; dispatch
// gpu.Grid(N, 64).
@compute @workgroup_size(64)
fn main_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let row = gid.x + gid.y * nwg.x * ROWS_WG;
	if (row >= p.n) { return; }
	let base = row * p.v;
	let out = p.row0 + row;
	let label = labels[out];
	if (label < 0) {
		ignore(out, base, 0u, 1u);
		return;
	}
	var xl = 0.0;
	if (u32(label) < p.v) { xl = logits[base + u32(label)]; }
	var pm: array<f32, WG>;
	var ps: array<f32, WG>;
	for (var t = 0u; t < WG; t++) {
		var m = LOWEST;
		var s = 0.0;
		for (var j = t; j < p.v; j += WG) {
			online(&m, &s, logits[base + j]);
		}
		pm[t] = m;
		ps[t] = s;
	}
	for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
		for (var t = 0u; t < stride; t++) {
			let mm = max(pm[t], pm[t + stride]);
			ps[t] = merged(pm[t], ps[t], pm[t + stride], ps[t + stride], mm);
			pm[t] = mm;
		}
	}
	finish(out, base, label, xl, pm[0] + log(ps[0]), 0u, 1u);
}
