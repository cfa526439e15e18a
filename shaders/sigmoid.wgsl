// Logistic sigmoid in place on channels [c0, c0 + k) of an NCHW f32 tensor.
// One invocation per value over a 2-D grid of 256-wide workgroups.

struct Params {
    n: u32, c: u32, plane: u32, c0: u32,
    k: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.y * nw.x * 256u + g.x;
    if (i >= p.n * p.k * p.plane) {
        return;
    }
    let img = i / (p.k * p.plane);
    let ch = p.c0 + (i / p.plane) % p.k;
    let o = (img * p.c + ch) * p.plane + i % p.plane;
    y[o] = 1.0 / (1.0 + exp(-y[o]));
}
