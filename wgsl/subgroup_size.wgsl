{{ENABLE}}
// subgroup_size: each thread of one 64-thread workgroup writes the size of
// its subgroup (the probe behind the cooperative-matrix matmul, coop.go).
struct Params { n: u32, _pad1: u32, _pad2: u32, _pad3: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32, @builtin(subgroup_size) s: u32) {
	if (i < p.n) { out[i] = s; }
}
