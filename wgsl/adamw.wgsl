// adamw: one AdamW step (decoupled weight decay), the baseline that keeps
// gradients and two f32 moments per parameter. All f32, n elements:
//   g = grad * inv_scale * clip_coef
//   m = b1*m + (1-b1)*g ; v = b2*v + (1-b2)*g^2
//   p = p * (1 - lr*wd) - lr * (m/bc1) / (sqrt(v/bc2) + eps)
// With 16-bit parameters the update runs on an f32 master copy
// and the f16 or bf16 weights are rewritten from it, one thread per pair.
// Bindings: 0 p (rw, f32 or 16-bit pairs), 1 master (rw, f32; unused for f32
// params), 2 m (rw), 3 v (rw), 4 grad (f32 or 16-bit pairs, read by grad_at),
// 5 Params. Workgroup 256, one thread
// per element pair; dispatch dev.Grid(ceil(n/2), 256).

struct Params {
	n: u32, _p0: u32, _p1: u32, _p2: u32,
	lr: f32, b1: f32, b2: f32, eps: f32,
	wd: f32, bc1: f32, bc2: f32, gscale: f32,
}

@group(0) @binding(0) var<storage, read_write> p: array<{{P_T}}>;
@group(0) @binding(1) var<storage, read_write> master: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<{{G_T}}>;
@group(0) @binding(5) var<uniform> u: Params;

{{G_AT}}

fn step(i: u32, w: f32) -> f32 {
	let g = grad_at(i) * u.gscale;
	let mi = u.b1 * m[i] + (1.0 - u.b1) * g;
	let vi = u.b2 * v[i] + (1.0 - u.b2) * g * g;
	m[i] = mi;
	v[i] = vi;
	return w * (1.0 - u.lr * u.wd) - u.lr * (mi / u.bc1) / (sqrt(vi / u.bc2) + u.eps);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
	let j = gid.x + gid.y * nwg.x * 256u; // pair index
	let i = 2u * j;
	if (i >= u.n) { return; }
	{{BODY}}
}
