// PReLU in place on an NCHW f32 tensor: x where x >= 0, else alpha[ch] * x,
// one slope per channel. One invocation per value over a 2-D grid of
// 256-wide workgroups.

struct Params {
    n: u32, c: u32, plane: u32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> alpha: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.y * nw.x * 256u + g.x;
    if (i >= p.n * p.c * p.plane) {
        return;
    }
    let v = y[i];
    if (v < 0.0) {
        y[i] = v * alpha[(i / p.plane) % p.c];
    }
}
