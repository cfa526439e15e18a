// Global average pool: y[n, c] = mean over the plane of x[n, c], NCHW f32.
// One invocation per (n, c), over 64-wide workgroups.

struct Params {
    nc: u32, plane: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x >= p.nc) {
        return;
    }
    var s = 0.0;
    for (var i = 0u; i < p.plane; i++) {
        s += x[g.x * p.plane + i];
    }
    y[g.x] = s / f32(p.plane);
}
