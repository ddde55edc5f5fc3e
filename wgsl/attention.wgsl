// attention: causal self-attention with grouped KV heads (GQA, LLaMA style),
// forward and backward: f32 or f16 storage, f32 arithmetic.
//
// Shapes (row-major), f32 or f16 ({{X_T}}, arithmetic in f32 and lse,
// stats f32): q, out, dq, dout (B,T,H,D): element (b,t,h,d) at
// ((b*T + t)*H + h)*D + d. k, v, dk, dv (B,T,KV,D). Query head h reads KV
// head h / G with G = H/KV. lse (B,H,T): log-sum-exp over keys of the scaled
// scores of each query row (saved by forward for backward). stats (B,H,T,2):
// (lse, delta = rowsum(dout*out)) per query row, a backward scratch.
// start (B) u32, left padding: query t of batch b attends keys s with
// start[b] <= s <= t; a padding query (t < start[b]) attends only s = t, so
// its output is finite (the loss ignores it).
//
// The row kernels (entry point "main") use workgroups of WG = 64 threads. A
// row of D <= 256 values is spread over the threads, thread i owning d = i +
// WG*r for r < NR = 4; keys (or queries) are taken WG at a time, one per
// thread for the dot products. The file has one section per binding set
// (the launcher compiles the shared part with one section: the sections
// bind different buffers); the forward, dq and dkdv sections also hold the
// tiled kernels (entry point "tiled", up to D = 128, WG rows per workgroup
// with the arithmetic in registers), and dq and dkdv the older block
// kernels (entry point "blocked", a row per thread), which take the same
// buffers and give the same bits.
//
// Forward: one workgroup per query row, dispatch (T, H, B); online softmax
// (flash attention, Dao et al. 2022) over blocks of WG keys: per block the
// maximum (a tree), one exp per score and their sum in increasing order.
// Backward, three passes, no atomics (deterministic):
//   delta: one workgroup per query row, dispatch (T, H, B): stats.
//   dq:    one workgroup per query row (T, H, B):
//          dq = scale * sum_s dS[t,s] k_s, dS = P*(dout·v_s - delta),
//          P = exp(scale*q·k_s - lse).
//   dkdv:  one workgroup per key row (T, KV, B), looping over the G heads
//          of the group and the queries that attend the key:
//          dv = sum P[t,s] dout_t, dk = scale * sum dS[t,s] q_t.

// T: query rows per batch; TK: key rows per batch (the stride of k and v;
// = T in training, the cache capacity in decoding); Q0: position of query
// row 0 (0 in training; the cached length when decoding), so query t sits
// at position Q0 + t and attends keys up to there. Backward needs TK = T, Q0 = 0.
struct Params {
	B: u32, T: u32, H: u32, KV: u32,
	D: u32, G: u32, scale: f32, TK: u32,
	Q0: u32, _p0: u32, _p1: u32, _p2: u32,
}

const WG: u32 = 64u;
const NR: u32 = 4u;       // D <= WG*NR
const MAXD: u32 = 256u;   // WG*NR
const NEG: f32 = -1e30;   // "minus infinity" that keeps exp(NEG - m) = 0 and NEG - NEG = 0 finite

// Row offsets (in elements) of (b,t,h) in q-like and (b,t,kvh) in k-like arrays.
fn qrow(b: u32, t: u32, h: u32) -> u32 { return ((b * p.T + t) * p.H + h) * p.D; }
fn krow(b: u32, t: u32, kh: u32) -> u32 { return ((b * p.TK + t) * p.KV + kh) * p.D; }

// ==== section forward ====
// Bindings: 0 out (rw), 1 lse (rw), 2 q, 3 k, 4 v, 5 start, 6 Params.

@group(0) @binding(0) var<storage, read_write> out: array<{{OUT_T}}>;
@group(0) @binding(1) var<storage, read_write> lse: array<f32>;
@group(0) @binding(2) var<storage, read> q: array<{{X_T}}>;
@group(0) @binding(3) var<storage, read> k: array<{{X_T}}>;
@group(0) @binding(4) var<storage, read> v: array<{{X_T}}>;
@group(0) @binding(5) var<storage, read> start: array<u32>;
@group(0) @binding(6) var<uniform> p: Params;
{{OUT_ST}}
{{Q_AT}}
{{K_AT}}
{{V_AT}}

var<workgroup> qs: array<f32, MAXD>; // the query row
var<workgroup> ps: array<f32, WG>;   // probabilities of the key block
var<workgroup> rm: array<f32, WG>;   // reduction: the block's max score

// Per block of WG keys (from start[b], WG at a time), with the scores x
// (NEG where masked) and the running (m, l, acc) of the row:
//   bm = max_j x_j; mn = max(m, bm); p_j = exp(x_j - mn) (0 where masked);
//   corr = exp(m - mn); bl = sum_j p_j in increasing j;
//   l = fma(l, corr, bl); acc = acc*corr, then acc = fma(p_j, v_j, acc) in
//   increasing j over the block's first nj keys.
// nj covers the keys up to lim: the last row of the query's tile of WG rows
// in training (the tiled kernel's block of keys, whose p_j past the row are
// 0), the query itself when decoding or for a padding row. The tiled kernel
// below does the same operations in the same order: the same bits.
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
	let t = wg.x;      // query row
	let h = wg.y;
	let b = wg.z;
	let i = lid.x;
	let kh = h / p.G;
	let qo = qrow(b, t, h);
	let pos = p.Q0 + t; // its position: keys s <= pos
	for (var d = i; d < p.D; d += WG) { qs[d] = q_at(qo + d); }
	var lo = start[b];
	var lim = pos;
	if (pos < lo) {
		lo = pos;
	} else if (p.Q0 == 0u) {
		lim = min(t | (WG - 1u), p.T - 1u);
	}

	var m = NEG;   // running max of the scores
	var l = 0.0;   // running sum of exp(score - m)
	var acc: array<f32, NR>;
	for (var r = 0u; r < NR; r++) { acc[r] = 0.0; }
	workgroupBarrier();

	for (var s0 = lo; s0 <= pos; s0 += WG) {
		let s = s0 + i;
		var sc = NEG;
		if (s <= pos) {
			let ko = krow(b, s, kh);
			var qk = 0.0;
			for (var d = 0u; d < p.D; d++) { qk = fma(qs[d], k_at(ko + d), qk); }
			sc = p.scale * qk;
		}
		rm[i] = sc;
		workgroupBarrier();
		for (var w = WG / 2u; w > 0u; w >>= 1u) {
			if (i < w) { rm[i] = max(rm[i], rm[i + w]); }
			workgroupBarrier();
		}
		let mn = max(m, rm[0]);
		ps[i] = select(0.0, exp(sc - mn), s <= pos);
		let corr = exp(m - mn);
		m = mn;
		workgroupBarrier();
		let nj = min(WG, lim + 1u - s0);
		var bl = 0.0;
		for (var j = 0u; j < nj; j++) { bl = bl + ps[j]; }
		l = fma(l, corr, bl);
		for (var r = 0u; r < NR; r++) {
			let d = i + r * WG;
			if (d < p.D) {
				var a = acc[r] * corr;
				for (var j = 0u; j < nj; j++) {
					a = fma(ps[j], v_at(krow(b, s0 + j, kh) + d), a);
				}
				acc[r] = a;
			}
		}
		workgroupBarrier(); // ps and rm are rewritten by the next block
	}

	let inv = 1.0 / l;
	for (var r = 0u; r < NR; r++) {
		let d = i + r * WG;
		if (d < p.D) { out_st(qo + d, acc[r] * inv); }
	}
	if (i == 0u) { lse[(b * p.H + h) * p.T + t] = m + log(l); }
}

// The forward for training and evaluation (Q0 = 0, TK = T), tiled: a
// workgroup takes WG query rows of one (b, h) and walks the keys in the row
// kernel's blocks of WG, with the row kernel's operations in its order (the
// same bits). Its NT = 8*WG/RQ threads form a grid of WG/RQ by 8: thread
// (tq, tk) computes the scores of rows tq*RQ.. tq*RQ+RQ-1 against keys
// tk*8.. tk*8+7 (RQ x 8 fma chains over d, from chunks of CH columns of q
// and k in workgroup memory), and the same rows' outputs at columns
// tk*DV.. tk*DV+DV-1 (DV = ceil(DH/8)) from the block's probabilities and CH
// rows of v at a time. The launcher (attention_tiled.go) writes the
// per-thread arithmetic out, row by row and column by column, so that it
// stays in registers: s{a}_{c} the scores (then NEG where masked) of row a
// and key c, o{a}_{e} the outputs, m{a}, l{a}, cr{a} (corr), bl{a}, act{a}
// (the row takes part in the block); at the end each row's outputs, and a
// padding row's (t < start[b]: it attends only itself, the row kernel's
// one-key block with the same operations). DH: the head size; RQ, DV, CH:
// fixed when the kernel is built. Dispatch (ceil(T/WG), H, B).
// Entry point "tiled", the bindings above.

const DH: u32 = {{DH}}u;
const RQ: u32 = {{RQ}}u;  // query rows per thread
const DV: u32 = {{DV}}u;  // output columns per thread
const NT: u32 = {{NT}}u;  // threads: 8 * WG / RQ
const DP: u32 = 8u * DV;  // a row of the value chunk, padded
const CH: u32 = {{CH}}u;  // columns of q and k, or rows of v, per chunk
var<workgroup> tq_s: array<f32, {{CW}}>;  // [CH][WG]: q's columns d0.. of the tile's rows
var<workgroup> tkv_s: array<f32, {{CDW}}>; // [CH][WG]: k's columns d0.. of the block's keys; or [CH][DP]: v's rows
var<workgroup> tp_s: array<f32, 4096>;         // [WG][WG]: the block's probabilities
var<workgroup> tmax_s: array<f32, 512>;        // [WG][8]: partial maxima of the rows' scores

@compute @workgroup_size({{NT}})
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
	let i = lid.x;
	let tk = i % 8u;
	let tq = i / 8u;
	let h = wg.y;
	let b = wg.z;
	let kh = h / p.G;
	let t0 = wg.x * WG;
	let r0 = tq * RQ;                 // this thread's first row in the tile
	let last = min(t0 + WG - 1u, p.T - 1u); // the tile's last row
	let st = start[b];
{{T_DECL}}
	for (var s0 = st; s0 <= last; s0 += WG) {
		// Scores: RQ x 8 fma chains over d in increasing d.
{{T_ZERO}}
		for (var d0 = 0u; d0 < DH; d0 += CH) {
			for (var n = i; n < CH * WG; n += NT) {
				let r = n / CH;
				let d = d0 + n % CH;
				var qv = 0.0;
				var kv = 0.0;
				if (d < DH) {
					qv = q_at(qrow(b, min(t0 + r, p.T - 1u), h) + d);
					if (s0 + r < p.T) { kv = k_at(krow(b, s0 + r, kh) + d); }
				}
				tq_s[(n % CH) * WG + r] = qv;
				tkv_s[(n % CH) * WG + r] = kv;
			}
			workgroupBarrier();
			let nd = min(CH, DH - d0);
			for (var dd = 0u; dd < nd; dd++) {
				let qb = dd * WG + r0;
				let kb = dd * WG + tk * 8u;
{{T_SCORE}}
			}
			workgroupBarrier();
		}
		// Masks (rows before s0, padding or past, skip the block), scaled
		// scores and the rows' maxima over the thread's 8 keys.
{{T_MASK}}
		workgroupBarrier();
		// The rows' maxima over the block; probabilities.
{{T_PROB}}
		// Outputs: acc*corr, then fma(p_j, v_j, acc) over the block's keys
		// up to the tile's last row, in increasing j; bl sums the p_j.
		let nj = min(WG, last + 1u - s0);
{{T_RESCALE}}
		for (var j0 = 0u; j0 < nj; j0 += CH) {
			workgroupBarrier(); // tp_s is complete; tkv_s is read
			for (var n = i; n < CH * DP; n += NT) {
				let jj = n / DP;
				let d = n % DP;
				var vv = 0.0;
				if (d < DH && j0 + jj < nj) { vv = v_at(krow(b, s0 + j0 + jj, kh) + d); }
				tkv_s[n] = vv;
			}
			workgroupBarrier();
			let nc = min(CH, nj - j0);
			for (var jj = 0u; jj < nc; jj++) {
				let vb = jj * DP + tk * DV;
				let pb = r0 * WG + j0 + jj;
{{T_PV}}
			}
		}
{{T_SUM}}
		workgroupBarrier(); // tq_s, tkv_s, tmax_s and tp_s are rewritten by the next block
	}
{{T_END}}
}

// dot_qk is the fma chain q·k over d in increasing d of the rows at qo
// and ko (a padding row's score against its own key).
fn dot_qk(qo: u32, ko: u32) -> f32 {
	var qk = 0.0;
	for (var d = 0u; d < DH; d++) { qk = fma(q_at(qo + d), k_at(ko + d), qk); }
	return qk;
}

// ==== section delta ====
// stats[row] = (lse[row], rowsum(dout*out)) for row = (b*H + h)*T + t.
// Bindings: 0 stats (rw), 1 dout, 2 out, 3 lse, 4 Params.

@group(0) @binding(0) var<storage, read_write> stats: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<{{X_T}}>;
@group(0) @binding(2) var<storage, read> out: array<{{X_T}}>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
{{DOUT_AT}}
{{OUT_AT}}

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
	let t = wg.x;
	let h = wg.y;
	let b = wg.z;
	let i = lid.x;
	let qo = qrow(b, t, h);
	var s = 0.0;
	for (var d = i; d < p.D; d += WG) { s = fma(dout_at(qo + d), out_at(qo + d), s); }
	red[i] = s;
	workgroupBarrier();
	for (var w = WG / 2u; w > 0u; w >>= 1u) {
		if (i < w) { red[i] += red[i + w]; }
		workgroupBarrier();
	}
	if (i == 0u) {
		let row = (b * p.H + h) * p.T + t;
		stats[2u * row] = lse[row];
		stats[2u * row + 1u] = red[0];
	}
}

// rows is main with one thread per row (CPU adapters): the WG partial sums
// of main's threads in turn, added in main's tree order, so main's bits.
// Workgroups of 64 rows, row = (b*H + h)*T + t; dispatch gpu.Grid(B*H*T, 64).
@compute @workgroup_size(64)
fn rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let row = gid.x + gid.y * nwg.x * 64u;
	if (row >= p.B * p.H * p.T) { return; }
	let t = row % p.T;
	let h = (row / p.T) % p.H;
	let b = row / (p.T * p.H);
	let qo = qrow(b, t, h);
	var part: array<f32, WG>;
	for (var i = 0u; i < WG; i++) {
		var s = 0.0;
		for (var d = i; d < p.D; d += WG) { s = fma(dout_at(qo + d), out_at(qo + d), s); }
		part[i] = s;
	}
	for (var w = WG / 2u; w > 0u; w >>= 1u) {
		for (var i = 0u; i < w; i++) { part[i] += part[i + w]; }
	}
	stats[2u * row] = lse[row];
	stats[2u * row + 1u] = part[0];
}

// ==== section dq ====
// Bindings: 0 dq (rw), 1 dout, 2 q, 3 k, 4 v, 5 stats, 6 start, 7 Params.

@group(0) @binding(0) var<storage, read_write> dq: array<{{DQ_T}}>;
@group(0) @binding(1) var<storage, read> dout: array<{{X_T}}>;
@group(0) @binding(2) var<storage, read> q: array<{{X_T}}>;
@group(0) @binding(3) var<storage, read> k: array<{{X_T}}>;
@group(0) @binding(4) var<storage, read> v: array<{{X_T}}>;
@group(0) @binding(5) var<storage, read> stats: array<f32>;
@group(0) @binding(6) var<storage, read> start: array<u32>;
@group(0) @binding(7) var<uniform> p: Params;
{{DQ_ST}}
{{DOUT_AT}}
{{Q_AT}}
{{K_AT}}
{{V_AT}}

var<workgroup> qs: array<f32, MAXD>;  // q row
var<workgroup> gs: array<f32, MAXD>;  // dout row
var<workgroup> dss: array<f32, WG>;   // dS of the key block

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
	let t = wg.x;
	let h = wg.y;
	let b = wg.z;
	let i = lid.x;
	let kh = h / p.G;
	let qo = qrow(b, t, h);
	for (var d = i; d < p.D; d += WG) {
		qs[d] = q_at(qo + d);
		gs[d] = dout_at(qo + d);
	}
	let row = (b * p.H + h) * p.T + t;
	let lse = stats[2u * row];
	let delta = stats[2u * row + 1u];
	var lo = start[b];
	if (t < lo) { lo = t; }
	var acc: array<f32, NR>;
	for (var r = 0u; r < NR; r++) { acc[r] = 0.0; }
	workgroupBarrier();

	for (var s0 = lo; s0 <= t; s0 += WG) {
		let s = s0 + i;
		var ds = 0.0;
		if (s <= t) {
			let ko = krow(b, s, kh);
			var sc = 0.0;
			var dp = 0.0;
			for (var d = 0u; d < p.D; d++) {
				sc = fma(qs[d], k_at(ko + d), sc);
				dp = fma(gs[d], v_at(ko + d), dp);
			}
			let pr = exp(p.scale * sc - lse);
			ds = pr * (dp - delta);
		}
		dss[i] = ds;
		workgroupBarrier();
		let nk = min(WG, t + 1u - s0);
		for (var r = 0u; r < NR; r++) {
			let d = i + r * WG;
			if (d < p.D) {
				var a = acc[r];
				for (var j = 0u; j < nk; j++) {
					a = fma(dss[j], k_at(krow(b, s0 + j, kh) + d), a);
				}
				acc[r] = a;
			}
		}
		workgroupBarrier();
	}

	for (var r = 0u; r < NR; r++) {
		let d = i + r * WG;
		if (d < p.D) { dq_st(qo + d, p.scale * acc[r]); }
	}
}

// dq for WG query rows of one (b, h) per workgroup, one per thread, with the
// dq kernel's arithmetic in the same order (its bits): the keys are walked
// in its blocks of WG from start[b], each block's keys, then values, then
// keys again loaded once into workgroup memory for all WG rows. DH: the
// head size, fixed when the kernel is built. Dispatch (ceil(T/WG), H, B).
// Entry point "blocked", the bindings above.

const DH: u32 = {{DH}}u;
var<workgroup> tile: array<{{TILE_T}}, {{TILE_LEN}}>; // WG rows of keys or values: [j][d]

@compute @workgroup_size(64)
fn blocked(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
	let i = lid.x;
	let h = wg.y;
	let b = wg.z;
	let kh = h / p.G;
	let t = wg.x * WG + i;
	let live = t < p.T;
	let pos = min(t, p.T - 1u);
	let last = min(wg.x * WG + WG - 1u, p.T - 1u);
	let st = start[b];
	let qo = qrow(b, pos, h);
	var qv: array<f32, DH>;
	var gv: array<f32, DH>;
	for (var d = 0u; d < DH; d++) {
		qv[d] = q_at(qo + d);
		gv[d] = dout_at(qo + d);
	}
	let row = (b * p.H + h) * p.T + pos;
	let lse = stats[2u * row];
	let delta = stats[2u * row + 1u];
	var acc: array<f32, DH>;
	for (var d = 0u; d < DH; d++) { acc[d] = 0.0; }
	var sc: array<f32, WG>; // scores, then dS

	for (var s0 = st; s0 <= last; s0 += WG) {
		let act = live && st <= pos && s0 <= pos;
		let nk = min(WG, pos + 1u - s0);
		for (var phase = 0u; phase < 3u; phase++) {
			// keys, values, keys again
			if (s0 + i <= last) {
				let ko = krow(b, s0 + i, kh);
				if (phase == 1u) {
					for (var d = 0u; d < DH; d++) { tile[i * DH + d] = {{TILE_T}}(v_at(ko + d)); }
				} else {
					for (var d = 0u; d < DH; d++) { tile[i * DH + d] = {{TILE_T}}(k_at(ko + d)); }
				}
			}
			workgroupBarrier();
			if (act) {
				if (phase == 0u) {
					for (var j = 0u; j < nk; j++) {
						var x = 0.0;
						for (var d = 0u; d < DH; d++) { x = fma(qv[d], f32(tile[j * DH + d]), x); }
						sc[j] = x;
					}
				} else if (phase == 1u) {
					for (var j = 0u; j < nk; j++) {
						var dp = 0.0;
						for (var d = 0u; d < DH; d++) { dp = fma(gv[d], f32(tile[j * DH + d]), dp); }
						let pr = exp(p.scale * sc[j] - lse);
						sc[j] = pr * (dp - delta);
					}
				} else {
					for (var d = 0u; d < DH; d++) {
						var a = acc[d];
						for (var j = 0u; j < nk; j++) {
							a = fma(sc[j], f32(tile[j * DH + d]), a);
						}
						acc[d] = a;
					}
				}
			}
			workgroupBarrier();
		}
	}

	if (!live) { return; }
	if (pos < st) {
		// A padding row attends only itself (the dq kernel's one-key block).
		let ko = krow(b, pos, kh);
		var x = 0.0;
		var dp = 0.0;
		for (var d = 0u; d < DH; d++) {
			x = fma(qv[d], k_at(ko + d), x);
			dp = fma(gv[d], v_at(ko + d), dp);
		}
		let ds = exp(p.scale * x - lse) * (dp - delta);
		// onto acc (zeros), as the dq kernel does: a literal 0.0 here could
		// be folded away and turn its +0 results into -0
		for (var d = 0u; d < DH; d++) { dq_st(qo + d, p.scale * fma(ds, k_at(ko + d), acc[d])); }
		return;
	}
	for (var d = 0u; d < DH; d++) { dq_st(qo + d, p.scale * acc[d]); }
}

// dq, tiled as the forward: a workgroup takes WG query rows of one (b, h);
// thread (tq, tk) computes the scores and the products dout·v of rows
// tq*RQ.. against keys tk*8.. (fma chains over d from chunks of q, dout, k,
// v in workgroup memory), their dS into workgroup memory, and the rows'
// gradients at columns tk*DV.. as fma chains over the keys in increasing
// order from CH rows of k at a time: the dq kernel's chain for each element
// (the terms of keys a row does not attend are 0 and leave it as it is, as
// does 0 added to a sum that started at +0). Keys from min(start[b], the
// tile's first row), so that a padding row meets its own key. The launcher
// writes the per-thread arithmetic out (attention_tiled.go). Dispatch
// (ceil(T/WG), H, B). Entry point "tiled", the bindings above.

const RQ: u32 = {{RQ}}u;  // query rows per thread
const NT: u32 = {{NT}}u;  // threads: 8 * WG / RQ
const DV: u32 = {{DV}}u;  // output columns per thread
const DP: u32 = 8u * DV;  // a row of the k chunk, padded
const CH: u32 = {{CH}}u;  // columns (or rows of k) per chunk
var<workgroup> tq_s: array<f32, {{CW}}>;  // [CH][WG]: q's columns of the tile's rows
var<workgroup> tg_s: array<f32, {{CW}}>;  // [CH][WG]: dout's columns
var<workgroup> tv_s: array<f32, {{CW}}>;  // [CH][WG]: v's columns of the block's keys
var<workgroup> tk_s: array<f32, {{CDW}}>; // [CH][WG]: k's columns; or [CH][DP]: k's rows
var<workgroup> tds_s: array<f32, 4096>;   // [WG][WG]: dS of the block

@compute @workgroup_size({{NT}})
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
	let i = lid.x;
	let tk = i % 8u;
	let tq = i / 8u;
	let h = wg.y;
	let b = wg.z;
	let kh = h / p.G;
	let t0 = wg.x * WG;
	let r0 = tq * RQ;
	let last = min(t0 + WG - 1u, p.T - 1u);
	let st = start[b];
{{D_DECL}}
	for (var s0 = min(st, t0); s0 <= last; s0 += WG) {
{{D_ZERO}}
		for (var d0 = 0u; d0 < DH; d0 += CH) {
			for (var n = i; n < CH * WG; n += NT) {
				let r = n / CH;
				let d = d0 + n % CH;
				var qv = 0.0;
				var gv = 0.0;
				var kv = 0.0;
				var vv = 0.0;
				if (d < DH) {
					let qo = qrow(b, min(t0 + r, p.T - 1u), h) + d;
					qv = q_at(qo);
					gv = dout_at(qo);
					if (s0 + r < p.T) {
						let ko = krow(b, s0 + r, kh) + d;
						kv = k_at(ko);
						vv = v_at(ko);
					}
				}
				let x = (n % CH) * WG + r;
				tq_s[x] = qv;
				tg_s[x] = gv;
				tk_s[x] = kv;
				tv_s[x] = vv;
			}
			workgroupBarrier();
			let nd = min(CH, DH - d0);
			for (var dd = 0u; dd < nd; dd++) {
				let qb = dd * WG + r0;
				let kb = dd * WG + tk * 8u;
{{D_SCORE}}
			}
			workgroupBarrier();
		}
{{D_DS}}
		let nj = min(WG, last + 1u - s0);
		for (var j0 = 0u; j0 < nj; j0 += CH) {
			for (var n = i; n < CH * DP; n += NT) {
				let jj = n / DP;
				let d = n % DP;
				var kv = 0.0;
				if (d < DH && j0 + jj < nj) { kv = k_at(krow(b, s0 + j0 + jj, kh) + d); }
				tk_s[n] = kv;
			}
			workgroupBarrier(); // also: tds_s is complete
			let nc = min(CH, nj - j0);
			for (var jj = 0u; jj < nc; jj++) {
				let kb = jj * DP + tk * DV;
				let db = r0 * WG + j0 + jj;
{{D_ACC}}
			}
			workgroupBarrier(); // tk_s and tds_s are rewritten next
		}
	}
{{D_END}}
}

// ==== section dkdv ====
// Bindings: 0 dk (rw), 1 dv (rw), 2 dout, 3 q, 4 k, 5 v, 6 stats, 7 start,
// 8 Params.

@group(0) @binding(0) var<storage, read_write> dk: array<{{DK_T}}>;
@group(0) @binding(1) var<storage, read_write> dv: array<{{DV_T}}>;
@group(0) @binding(2) var<storage, read> dout: array<{{X_T}}>;
@group(0) @binding(3) var<storage, read> q: array<{{X_T}}>;
@group(0) @binding(4) var<storage, read> k: array<{{X_T}}>;
@group(0) @binding(5) var<storage, read> v: array<{{X_T}}>;
@group(0) @binding(6) var<storage, read> stats: array<f32>;
@group(0) @binding(7) var<storage, read> start: array<u32>;
@group(0) @binding(8) var<uniform> p: Params;
{{DK_ST}}
{{DV_ST}}
{{DOUT_AT}}
{{Q_AT}}
{{K_AT}}
{{V_AT}}

var<workgroup> ks: array<f32, MAXD>;  // k row of the key
var<workgroup> vs: array<f32, MAXD>;  // v row of the key
var<workgroup> pss: array<f32, WG>;   // P of the query block
var<workgroup> dss: array<f32, WG>;   // dS of the query block

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
	let s = wg.x;
	let kh = wg.y;
	let b = wg.z;
	let i = lid.x;
	let ko = krow(b, s, kh);
	for (var d = i; d < p.D; d += WG) {
		ks[d] = k_at(ko + d);
		vs[d] = v_at(ko + d);
	}
	// Queries that attend key s: all t >= s when s is not padding, else
	// only the padding query t = s.
	var hi = p.T - 1u;
	if (s < start[b]) { hi = s; }
	var ak: array<f32, NR>;
	var av: array<f32, NR>;
	for (var r = 0u; r < NR; r++) {
		ak[r] = 0.0;
		av[r] = 0.0;
	}
	workgroupBarrier();

	for (var hh = 0u; hh < p.G; hh++) {
		let h = kh * p.G + hh;
		for (var t0 = s; t0 <= hi; t0 += WG) {
			let t = t0 + i;
			var pr = 0.0;
			var ds = 0.0;
			if (t <= hi) {
				let qo = qrow(b, t, h);
				var sc = 0.0;
				var dp = 0.0;
				for (var d = 0u; d < p.D; d++) {
					sc = fma(q_at(qo + d), ks[d], sc);
					dp = fma(dout_at(qo + d), vs[d], dp);
				}
				let row = (b * p.H + h) * p.T + t;
				pr = exp(p.scale * sc - stats[2u * row]);
				ds = pr * (dp - stats[2u * row + 1u]);
			}
			pss[i] = pr;
			dss[i] = ds;
			workgroupBarrier();
			let nq = min(WG, hi + 1u - t0);
			for (var r = 0u; r < NR; r++) {
				let d = i + r * WG;
				if (d < p.D) {
					var a = ak[r];
					var c = av[r];
					for (var j = 0u; j < nq; j++) {
						let qo = qrow(b, t0 + j, h) + d;
						a = fma(dss[j], q_at(qo), a);
						c = fma(pss[j], dout_at(qo), c);
					}
					ak[r] = a;
					av[r] = c;
				}
			}
			workgroupBarrier();
		}
	}

	for (var r = 0u; r < NR; r++) {
		let d = i + r * WG;
		if (d < p.D) {
			dk_st(ko + d, p.scale * ak[r]);
			dv_st(ko + d, av[r]);
		}
	}
}

// dk, dv for WG key rows of one (b, kv head) per workgroup, one per thread,
// with the dkdv kernel's arithmetic in the same order (its bits): for each
// query head of the group, the queries are walked in tiles of WG rows, each
// tile's q, then dout, then q again loaded once into workgroup memory for
// all WG keys. Key s takes queries s..T-1 (a padding key only s). DH: the
// head size, fixed when the kernel is built. Dispatch (ceil(T/WG), KV, B).
// Entry point "blocked", the bindings above.

const DH: u32 = {{DH}}u;
var<workgroup> tile: array<{{TILE_T}}, {{TILE_LEN}}>; // WG rows of q or dout: [j][d]

@compute @workgroup_size(64)
fn blocked(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
	let i = lid.x;
	let kh = wg.y;
	let b = wg.z;
	let s = wg.x * WG + i;          // this thread's key row
	let live = s < p.T;
	let sp = min(s, p.T - 1u);
	let ko = krow(b, sp, kh);
	var kr: array<f32, DH>;
	var vr: array<f32, DH>;
	var ak: array<f32, DH>;
	var av: array<f32, DH>;
	for (var d = 0u; d < DH; d++) {
		kr[d] = k_at(ko + d);
		vr[d] = v_at(ko + d);
		ak[d] = 0.0;
		av[d] = 0.0;
	}
	var hi = p.T - 1u;
	if (sp < start[b]) { hi = sp; }
	var ds: array<f32, WG>;

	for (var hh = 0u; hh < p.G; hh++) {
		let h = kh * p.G + hh;
		for (var t0 = wg.x * WG; t0 < p.T; t0 += WG) {
			// this key's queries in the tile: lo..up (none when lo > up)
			let lo = max(sp, t0);
			let up = min(hi, t0 + WG - 1u);
			let act = live && lo <= up;
			let nt = min(WG, p.T - t0);
			for (var phase = 0u; phase < 3u; phase++) {
				// q, dout, q again
				if (i < nt) {
					let qo = qrow(b, t0 + i, h);
					if (phase == 1u) {
						for (var d = 0u; d < DH; d++) { tile[i * DH + d] = {{TILE_T}}(dout_at(qo + d)); }
					} else {
						for (var d = 0u; d < DH; d++) { tile[i * DH + d] = {{TILE_T}}(q_at(qo + d)); }
					}
				}
				workgroupBarrier();
				if (act) {
					if (phase == 0u) {
						for (var t = lo; t <= up; t++) {
							let j = t - t0;
							var x = 0.0;
							for (var d = 0u; d < DH; d++) { x = fma(f32(tile[j * DH + d]), kr[d], x); }
							ds[j] = x;
						}
					} else if (phase == 1u) {
						for (var t = lo; t <= up; t++) {
							let j = t - t0;
							var dp = 0.0;
							for (var d = 0u; d < DH; d++) { dp = fma(f32(tile[j * DH + d]), vr[d], dp); }
							let row = (b * p.H + h) * p.T + t;
							let pr = exp(p.scale * ds[j] - stats[2u * row]);
							ds[j] = pr * (dp - stats[2u * row + 1u]);
							for (var d = 0u; d < DH; d++) { av[d] = fma(pr, f32(tile[j * DH + d]), av[d]); }
						}
					} else {
						for (var t = lo; t <= up; t++) {
							let j = t - t0;
							for (var d = 0u; d < DH; d++) { ak[d] = fma(ds[j], f32(tile[j * DH + d]), ak[d]); }
						}
					}
				}
				workgroupBarrier();
			}
		}
	}

	if (!live) { return; }
	for (var d = 0u; d < DH; d++) {
		dk_st(ko + d, p.scale * ak[d]);
		dv_st(ko + d, av[d]);
	}
}

// dk, dv, tiled as the forward with keys for rows: a workgroup takes WG
// keys of one (b, kv head); for each query head of the group and each
// block of WG queries from the tile's first key, thread (tq, tk) computes
// the scores and dout·v of keys tq*RQ.. against queries tk*8.., their P and
// dS, which go to workgroup memory half a block (WG/2 queries) at a time,
// and the keys' gradients at columns tk*DV.. as fma chains over the queries
// in increasing order from CH rows of q and dout at a time: the dkdv
// kernel's chain for each element (the terms of queries that do not attend
// a key are 0 and leave it as it is). The launcher writes the per-thread
// arithmetic out (attention_tiled.go). Dispatch (ceil(T/WG), KV, B). Entry
// point "tiled", the bindings above.

const RQ: u32 = {{RQ}}u;  // key rows per thread
const NT: u32 = {{NT}}u;  // threads: 8 * WG / RQ
const DV: u32 = {{DV}}u;  // output columns per thread
const DP: u32 = 8u * DV;  // a row of the q and dout chunks, padded
const CH: u32 = {{CH}}u;  // columns (or rows of q and dout) per chunk
const HW: u32 = 32u;      // WG / 2: queries of a half block
var<workgroup> tq_s: array<f32, {{CDW}}>; // [CH][WG]: q's columns of the query block; or [CH][DP]: q's rows
var<workgroup> tg_s: array<f32, {{CDW}}>; // [CH][WG]: dout's columns; or [CH][DP]: dout's rows
var<workgroup> tk_s: array<f32, {{CW}}>;  // [CH][WG]: k's columns of the tile's keys
var<workgroup> tv_s: array<f32, {{CW}}>;  // [CH][WG]: v's columns
var<workgroup> tp_s: array<f32, 2048>;    // [WG][HW]: P of half the query block
var<workgroup> tds_s: array<f32, 2048>;   // [WG][HW]: dS

@compute @workgroup_size({{NT}})
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
	let i = lid.x;
	let tk = i % 8u;
	let tq = i / 8u;
	let kh = wg.y;
	let b = wg.z;
	let s_0 = wg.x * WG;
	let r0 = tq * RQ;
	let st = start[b];
{{E_DECL}}
	for (var hh = 0u; hh < p.G; hh++) {
		let h = kh * p.G + hh;
		for (var t0 = s_0; t0 < p.T; t0 += WG) {
{{E_ZERO}}
			for (var d0 = 0u; d0 < DH; d0 += CH) {
				for (var n = i; n < CH * WG; n += NT) {
					let r = n / CH;
					let d = d0 + n % CH;
					var qv = 0.0;
					var gv = 0.0;
					var kv = 0.0;
					var vv = 0.0;
					if (d < DH) {
						if (t0 + r < p.T) {
							let qo = qrow(b, t0 + r, h) + d;
							qv = q_at(qo);
							gv = dout_at(qo);
						}
						let ko = krow(b, min(s_0 + r, p.T - 1u), kh) + d;
						kv = k_at(ko);
						vv = v_at(ko);
					}
					let x = (n % CH) * WG + r;
					tq_s[x] = qv;
					tg_s[x] = gv;
					tk_s[x] = kv;
					tv_s[x] = vv;
				}
				workgroupBarrier();
				let nd = min(CH, DH - d0);
				for (var dd = 0u; dd < nd; dd++) {
					let kb = dd * WG + r0;
					let qb = dd * WG + tk * 8u;
{{E_SCORE}}
				}
				workgroupBarrier();
			}
{{E_P}}
			let nq = min(WG, p.T - t0);
			for (var half = 0u; half < 2u; half++) {
				let j1 = half * HW;
				if (tk / 4u == half) {
{{E_WRITE}}
				}
				let jend = min(j1 + HW, nq);
				for (var j0 = j1; j0 < jend; j0 += CH) {
					workgroupBarrier(); // tp_s and tds_s are written; tq_s and tg_s are read
					for (var n = i; n < CH * DP; n += NT) {
						let jj = n / DP;
						let d = n % DP;
						var qv = 0.0;
						var gv = 0.0;
						if (d < DH && j0 + jj < jend) {
							let qo = qrow(b, t0 + j0 + jj, h) + d;
							qv = q_at(qo);
							gv = dout_at(qo);
						}
						tq_s[n] = qv;
						tg_s[n] = gv;
					}
					workgroupBarrier();
					let nc = min(CH, jend - j0);
					for (var jj = 0u; jj < nc; jj++) {
						let qb = jj * DP + tk * DV;
						let pb = r0 * HW + j0 - j1 + jj;
{{E_ACC}}
					}
				}
				workgroupBarrier(); // tp_s, tds_s, tq_s and tg_s are rewritten next
			}
		}
	}
{{E_END}}
}
