// matmul: C = alpha * op(A) · op(B) + beta * C, batched over z.
//
// Shapes (row-major, per batch): op(A) is (M,K), op(B) is (K,N), C is (M,N).
//   ta = 0: A stored (M,K); ta = 1: A stored (K,M) and read transposed.
//   tb = 0: B stored (K,N); tb = 1: B stored (N,K) and read transposed
//           (a linear layer's weight W (out,in): y = x · Wᵀ).
// A, B and C are each f32 or f16 (a_at/b_at read f32, c_st rounds once);
// accumulation is f32.
// Bindings: 0 C (rw), 1 A, 2 B, 3 Params.
// Workgroup 16x16 threads; each computes a 4x4 block of a 64x64 tile of C,
// stepping K by 16 through workgroup memory. Dispatch (ceil(N/64),
// ceil(M/64), batches). Saves nothing for backward (the caller keeps A, B).

struct Params {
	M: u32, N: u32, K: u32, ta: u32,
	tb: u32, a_off: u32, b_off: u32, c_off: u32,
	a_batch: u32, b_batch: u32, c_batch: u32, _pad: u32,
	alpha: f32, beta: f32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> c: array<{{C_T}}>;
@group(0) @binding(1) var<storage, read> a: array<{{A_T}}>;
@group(0) @binding(2) var<storage, read> b: array<{{B_T}}>;
@group(0) @binding(3) var<uniform> p: Params;

{{A_AT}}
{{B_AT}}
{{C_AT}}
{{C_ST}}

const TS: u32 = 64u;  // tile size in M and N
const TK: u32 = 16u;  // tile size in K

var<workgroup> as_: array<f32, 1024>; // [TK][TS]: as_[k*TS + m]
var<workgroup> bs_: array<f32, 1024>; // [TK][TS]: bs_[k*TS + n]

fn load_a(z: u32, m: u32, k: u32) -> f32 {
	if (m >= p.M || k >= p.K) { return 0.0; }
	let base = p.a_off + z * p.a_batch;
	if (p.ta == 0u) { return a_at(base + m * p.K + k); }
	return a_at(base + k * p.M + m);
}

fn load_b(z: u32, k: u32, n: u32) -> f32 {
	if (k >= p.K || n >= p.N) { return 0.0; }
	let base = p.b_off + z * p.b_batch;
	if (p.tb == 0u) { return b_at(base + k * p.N + n); }
	return b_at(base + n * p.K + k);
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
	let z = wg.z;
	let m0 = wg.y * TS;
	let n0 = wg.x * TS;
	let tid = lid.y * 16u + lid.x;
	var acc: array<f32, 16>;
	for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }

	for (var k0 = 0u; k0 < p.K; k0 += TK) {
		// 256 threads load 1024 elements of each tile, 4 each.
		for (var r = 0u; r < 4u; r++) {
			let e = tid + r * 256u;
			let kk = e / TS;
			let mm = e % TS;
			as_[e] = load_a(z, m0 + mm, k0 + kk);
			bs_[e] = load_b(z, k0 + kk, n0 + mm);
		}
		workgroupBarrier();
		for (var kk = 0u; kk < TK; kk++) {
			var av: array<f32, 4>;
			var bv: array<f32, 4>;
			for (var i = 0u; i < 4u; i++) {
				av[i] = as_[kk * TS + lid.y * 4u + i];
				bv[i] = bs_[kk * TS + lid.x * 4u + i];
			}
			for (var i = 0u; i < 4u; i++) {
				for (var j = 0u; j < 4u; j++) {
					acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
				}
			}
		}
		workgroupBarrier();
	}

	let cbase = p.c_off + z * p.c_batch;
	for (var i = 0u; i < 4u; i++) {
		let m = m0 + lid.y * 4u + i;
		if (m >= p.M) { continue; }
		for (var j = 0u; j < 4u; j++) {
			let n = n0 + lid.x * 4u + j;
			if (n >= p.N) { continue; }
			let idx = cbase + m * p.N + n;
			var v = p.alpha * acc[i * 4u + j];
			if (p.beta != 0.0) { v += p.beta * c_at(idx); }
			c_st(idx, v);
		}
	}
}
