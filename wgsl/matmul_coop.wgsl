enable wgpu_cooperative_matrix;

// matmul_coop: matmul.wgsl's product on cooperative matrices (tensor cores
// on NVIDIA, simdgroup matrices on Apple): C = alpha * op(A)·op(B) + beta*C
// (+ R), with A and B f16 and the products summed in f32.
//
// Shapes, layouts, Params and bindings are matmul.wgsl's. A workgroup is one
// subgroup (WG threads, measured by coop.go) and computes a BM x BN tile of
// C as FM x FN fragments of S x S, stepping K by S: each step loads FM
// fragments of op(A) and FN of op(B) straight from memory, row-major or
// column-major as the operand is stored (LOAD_A, LOAD_B), and adds their
// products into f32 accumulators. The accumulators then go through
// workgroup memory (CS), from where each thread applies the epilogue
// (alpha, beta, R; C rounded once) to its elements of the tile.
//
// The launcher (coop.go) uses it only where the shape is a multiple of the
// tile (no bounds checks: a cooperative load reads whole fragments) and the
// offsets and row strides of A and B are multiples of 8 elements (16 bytes).
// The hardware sums each fragment's products in its own order, so results
// differ from matmul.wgsl's in the last bits; every tiling of this kernel
// gives the same bits (each result is the same sequence of multiply-adds).
// Dispatch (N/BN, M/BM, batches).

struct Params {
	M: u32, N: u32, K: u32, lda: u32,
	ldb: u32, a_off: u32, b_off: u32, c_off: u32,
	a_batch: u32, b_batch: u32, c_batch: u32, r_off: u32,
	alpha: f32, beta: f32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> c: array<{{C_T}}>;
@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read> b: array<f16>;
{{R_DECL}}
@group(0) @binding({{PARAMS_BINDING}}) var<uniform> p: Params;

{{C_AT}}
{{C_ST}}

const S: u32 = {{S}}u;
const BM: u32 = {{BM}}u;
const BN: u32 = {{BN}}u;
const WG: u32 = {{WG}}u;

var<workgroup> cs: array<f32, {{CS_LEN}}>; // [BM][BN]

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
	let z = wg.z;
	let m0 = wg.y * BM;
	let n0 = wg.x * BN;
	let abase = p.a_off + z * p.a_batch;
	let bbase = p.b_off + z * p.b_batch;
{{ACC_DECL}}
	for (var k = 0u; k < p.K; k += S) {
{{STEP}}
	}
{{SPILL}}
	workgroupBarrier();
	let cbase = p.c_off + z * p.c_batch;
	for (var e = li; e < BM * BN; e += WG) {
		let idx = cbase + (m0 + e / BN) * p.N + n0 + e % BN;
		var x = p.alpha * cs[e];
		if (p.beta != 0.0) { x += p.beta * c_at(idx); }
		{{R_ADD}}
		c_st(idx, x);
	}
}
