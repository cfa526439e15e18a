// 2x2 max-pool, stride 2, NCHW f32; odd trailing rows/columns are dropped.
// Dispatch: (ceil(wo / 8), ceil(ho / 8), n * c).

struct Params {
    h: u32, w: u32, ho: u32, wo: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x >= p.wo || g.y >= p.ho) {
        return;
    }
    let b = g.z * p.h * p.w + (g.y * 2u) * p.w + g.x * 2u;
    let m = max(max(x[b], x[b + 1u]), max(x[b + p.w], x[b + p.w + 1u]));
    y[(g.z * p.ho + g.y) * p.wo + g.x] = m;
}
