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
// With a second tensor y (R, H2*D) of x's dtype (RoPE2: a layer's queries
// and keys in one dispatch): bindings 0 x, 1 y (rw), 2 pos, 3 Params, and
// R*(H+H2)*D/2 threads, y's after x's, each rotated as alone.

struct Params {
	rows: u32, heads: u32, head_dim: u32, inverse: u32,
	log2_freq_step: f32, heads2: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<{{XX_T}}>;
{{Y_DECL}}
@group(0) @binding({{POS_B}}) var<storage, read> pos: array<u32>;
@group(0) @binding({{P_B}}) var<uniform> p: Params;

{{XX_AT}}
{{XX_ST}}

const WG: u32 = 256u;

const TWO_PI_HI: f32 = 6.28125;
const TWO_PI_LO: f32 = 0.0019353071795864769;
const INV_TWO_PI: f32 = 0.15915494309189535;

// Pair is rotated pair t of a tensor of `heads` heads: its first element
// j (the second is j + D/2) and (cos a, sin a), sin negated for the inverse
// rotation.
struct Pair { j: u32, cs: vec2<f32> }

fn pair_at(t: u32, heads: u32) -> Pair {
	let hd = p.head_dim / 2u;
	let i = t % hd;
	let rh = t / hd; // row * heads + head
	let a = f32(pos[rh / heads]) * exp2(f32(i) * p.log2_freq_step);
	// Vulkan bounds sin/cos error only on [-pi, pi]: reduce first, so the
	// error is that of the f32 angle itself (as in the f32 reference code
	// of HF), not that of the driver's own reduction.
	let k = round(a * INV_TWO_PI);
	let ar = (a - k * TWO_PI_HI) - k * TWO_PI_LO;
	var s = sin(ar);
	if (p.inverse != 0u) { s = -s; }
	return Pair(rh * p.head_dim + i, vec2<f32>(cos(ar), s));
}

// rotate returns (a, b) rotated by the angle of cs.
fn rotate(a: f32, b: f32, cs: vec2<f32>) -> vec2<f32> {
	return vec2<f32>(a * cs.x - b * cs.y, b * cs.x + a * cs.y);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let t = gid.x + gid.y * nwg.x * WG;
	let hd = p.head_dim / 2u;
	let nx = p.rows * p.heads * hd;
	if (t < nx) {
		let q = pair_at(t, p.heads);
		let v = rotate(x_at(q.j), x_at(q.j + hd), q.cs);
		x_st(q.j, v.x);
		x_st(q.j + hd, v.y);
	} else if (t < nx + p.rows * p.heads2 * hd) {
		{{Y_ROTATE}}
	}
}
