// matmul: C = alpha * op(A) · op(B) + beta * C, batched over z.
//
// Shapes (row-major, per batch): op(A) is (M,K), op(B) is (K,N), C is (M,N).
//   A stored (M,K), or (K,M) and read transposed (Mat.T);
//   B stored (K,N), or (N,K) and read transposed (a linear layer's weight
//   W (out,in): y = x · Wᵀ);
//   lda, ldb: elements between stored rows (the stored width, or more for
//   a block of a wider matrix).
// A, B and C are each f32 or f16 (a_at/b_at read f32, c_st rounds once);
// accumulation is f32, one fma per k in increasing k, so every tiling gives
// the same bits.
// Bindings: 0 C (rw), 1 A, 2 B, then those of the fusions the launcher
// compiles in (EXTRA_DECL), then Params:
//   - a residual R laid out as C, added to each result (MatmulAdd);
//   - SwiGLU's output as an operand (Mat.Up): A or B is silu(g)·u, read
//     from g (A's or B's binding) and u (au or bu), rounded to their dtype
//     as a stored product is, so that the MLP's down projection never
//     stores it;
//   - SwiGLU's backward as the epilogue (MatmulSwiGLUGrad): C is g, the
//     results are dh of h = silu(g)·u, rounded to g's dtype as a stored
//     gradient is; dg is written over g and du over u (cu, laid out as C,
//     at r_off). probe != 0 (tuning's timed runs) writes nothing.
//
// The launcher (matmul.go) specializes this template when it builds the
// pipeline, so the inner loop has no branches:
//   - the tile: a workgroup of WX x WY threads computes a BM x BN tile of C,
//     each thread a TM x TN block held in TM*TN/4 vec4 registers (rows
//     (ty + WY*ig)*4 + r, columns (tx + WX*jg)*4 + c: neighbouring threads
//     read neighbouring vec4s of workgroup memory), stepping K by BK
//     through workgroup memory ([BK][BM] for A, [BK][BN] for B);
//   - the layouts of A and B: the tile loads (tileLoad in matmul.go) put
//     neighbouring threads on neighbouring addresses of each layout, and
//     a_slot / b_slot place a row kk's column of four in workgroup memory
//     (swizzled by kk for wide tilings of operands stored along K);
//   - bounds: the checks on M, N and K are compiled only where a dimension
//     is not a multiple of its tile (GUARD);
//   - prefetch (tilings marked "p"): each thread reads its share of the
//     next K step's tiles into registers while the workgroup multiplies the
//     current ones, so the global loads' latency overlaps the arithmetic
//     (the same fmas in the same order: the same bits);
//   - wide loads (tilings marked "w"): each thread loads runs of four
//     neighbouring elements, and workgroup memory is swizzled as above.
// Dispatch (ceil(N/BN), ceil(M/BM), batches). Saves nothing for backward
// (the caller keeps A, B).

struct Params {
	M: u32, N: u32, K: u32, lda: u32,
	ldb: u32, a_off: u32, b_off: u32, c_off: u32,
	a_batch: u32, b_batch: u32, c_batch: u32, r_off: u32,
	alpha: f32, beta: f32, probe: u32, _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> c: array<{{C_T}}>;
@group(0) @binding(1) var<storage, read> a: array<{{A_T}}>;
@group(0) @binding(2) var<storage, read> b: array<{{B_T}}>;
{{EXTRA_DECL}}
@group(0) @binding({{PARAMS_BINDING}}) var<uniform> p: Params;

{{A_AT}}
{{B_AT}}
{{C_AT}}
{{C_ST}}

const BM: u32 = {{BM}}u;
const BN: u32 = {{BN}}u;
const BK: u32 = {{BK}}u;
const WX: u32 = {{WX}}u;
const WY: u32 = {{WY}}u;
const NT: u32 = WX * WY;

var<workgroup> as_: array<vec4<f32>, {{AS_LEN}}>; // [BK][BM/4]
var<workgroup> bs_: array<vec4<f32>, {{BS_LEN}}>; // [BK][BN/4]

{{SLOTS}}
// A's element (m, k) of batch base, 0 outside op(A).
fn load_a(base: u32, m: u32, k: u32) -> f32 {
	{{GUARD_A}}
	return a_at(base + {{A_INDEX}});
}

// B's element (k, n) of batch base, 0 outside op(B).
fn load_b(base: u32, k: u32, n: u32) -> f32 {
	{{GUARD_B}}
	return b_at(base + {{B_INDEX}});
}

@compute @workgroup_size(WX, WY)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
	let z = wg.z;
	let m0 = wg.y * BM;
	let n0 = wg.x * BN;
	let tx = lid.x;
	let ty = lid.y;
	let tid = ty * WX + tx;
	let abase = p.a_off + z * p.a_batch;
	let bbase = p.b_off + z * p.b_batch;
{{ACC_DECL}}
{{MAIN_LOOP}}

	let cbase = p.c_off + z * p.c_batch;
{{STORE}}
}

// Writes one row of 4 results at (m, n..n+3).
fn store4(cbase: u32, m: u32, n: u32, v: vec4<f32>) {
	if (m >= p.M) { return; }
	for (var j = 0u; j < 4u; j++) {
		if (n + j < p.N) {
			let idx = cbase + m * p.N + n + j;
			{{STORE_ELEM}}
		}
	}
}
