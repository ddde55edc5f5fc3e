// rope: rotary position embedding in place (Su et al. 2021, "RoFormer"), in
// the Hugging Face rotate_half layout used by LLaMA: within each head of
// size D the pairs are (i, i + D/2), not (2i, 2i+1).
//
// Shapes: x (R, H*D) f32 or f16 ({{X_T}}, arithmetic in f32) row-major, R
// rows (tokens), H heads of D; row r is
// at position pos[r] (pos (R) u32). For i < D/2:
//   freq_i = theta^(-2i/D) = exp2(i * log2_freq_step), log2_freq_step =
//            -2*log2(theta)/D computed in float64 by the host;
//   a      = pos * freq_i (f32), reduced to [-pi, pi] before sin/cos;
//   out[i]       = x[i]*cos a - x[i+D/2]*sin a
//   out[i+D/2]   = x[i+D/2]*cos a + x[i]*sin a.
// inverse = 1 rotates by -a (the transpose): the backward, dx from dout.
// Bindings: 0 x (rw), 1 pos, 2 Params. Workgroup 256, one thread per pair
// (R*H*D/2 threads); dispatch Grid(R*H*D/2, 256). Saves nothing (the
// backward recomputes the angles from pos).

struct Params {
	rows: u32, heads: u32, head_dim: u32, inverse: u32,
	log2_freq_step: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<{{XX_T}}>;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

{{XX_AT}}
{{XX_ST}}

const WG: u32 = 256u;

// 2*pi split for a Cody-Waite reduction: TWO_PI_HI = 6.28125 has 8
// significant bits, so k * TWO_PI_HI is exact for |k| < 2^16 and
// a - k*TWO_PI_HI is exact (Sterbenz); TWO_PI_LO = 2*pi - TWO_PI_HI.
const TWO_PI_HI: f32 = 6.28125;
const TWO_PI_LO: f32 = 0.0019353071795864769;
const INV_TWO_PI: f32 = 0.15915494309189535;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let t = gid.x + gid.y * nwg.x * WG;
	let hd = p.head_dim / 2u;
	if (t >= p.rows * p.heads * hd) { return; }
	let i = t % hd;
	let rh = t / hd; // row * heads + head
	let row = rh / p.heads;
	let a = f32(pos[row]) * exp2(f32(i) * p.log2_freq_step);
	// Vulkan bounds sin/cos error only on [-pi, pi]: reduce first, so the
	// error is that of the f32 angle itself (as in the f32 reference code
	// of HF), not that of the driver's own reduction.
	let k = round(a * INV_TWO_PI);
	let ar = (a - k * TWO_PI_HI) - k * TWO_PI_LO;
	let c = cos(ar);
	var s = sin(ar);
	if (p.inverse != 0u) { s = -s; }
	let j = rh * p.head_dim + i;
	let x0 = x_at(j);
	let x1 = x_at(j + hd);
	x_st(j, x0 * c - x1 * s);
	x_st(j + hd, x1 * c + x0 * s);
}
