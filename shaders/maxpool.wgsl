// k x k max-pool at any stride, NCHW f32, `pad` cells before (top and left)
// counting as -inf (taps outside the plane are skipped), the output size
// given, and the residual `res` (the output's shape) added when `residual`
// is set: Xception's pooled branch plus its 1x1 shortcut in one pass.
// Dispatch: (ceil(wo / 8), ceil(ho / 8), n * c).

struct Params {
    h: u32, w: u32, ho: u32, wo: u32,
    k: u32, stride: u32, pad: u32, residual: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> res: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x >= p.wo || g.y >= p.ho) {
        return;
    }
    let xb = g.z * p.h * p.w;
    // Every window holds at least one cell of the plane (SAME padding is
    // under half a window a side), so this is always overwritten.
    var m = -3.402823e38;
    for (var ky = 0u; ky < p.k; ky++) {
        let iy = i32(g.y * p.stride + ky) - i32(p.pad);
        if (iy < 0 || iy >= i32(p.h)) {
            continue;
        }
        for (var kx = 0u; kx < p.k; kx++) {
            let ix = i32(g.x * p.stride + kx) - i32(p.pad);
            if (ix < 0 || ix >= i32(p.w)) {
                continue;
            }
            m = max(m, x[xb + u32(iy) * p.w + u32(ix)]);
        }
    }
    let o = (g.z * p.ho + g.y) * p.wo + g.x;
    if (p.residual != 0u) {
        m += res[o];
    }
    y[o] = m;
}
