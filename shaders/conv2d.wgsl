// Direct k x k convolution (groups = 1), NCHW f32, bias and optional ReLU.
// One invocation computes one output pixel for COB consecutive output
// channels, so each input value it loads feeds COB multiply-adds.
// Dispatch: (ceil(wo / 8), ceil(ho / 8), n * ceil(cout / COB)).

struct Params {
    n: u32, cin: u32, h: u32, w: u32,
    cout: u32, ho: u32, wo: u32, k: u32,
    stride: u32, pad: u32, relu: u32, _pad0: u32,
}

const COB: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// [cout, cin, k, k]
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    let ox = g.x;
    let oy = g.y;
    if (ox >= p.wo || oy >= p.ho) {
        return;
    }
    let blocks = (p.cout + COB - 1u) / COB;
    let img = g.z / blocks;
    let co0 = (g.z % blocks) * COB;
    let ncb = min(COB, p.cout - co0);
    var acc: array<f32, 8>;
    for (var j = 0u; j < COB; j++) {
        acc[j] = 0.0;
    }
    let plane = p.h * p.w;
    let kk = p.k * p.k;
    let wstride = p.cin * kk;
    for (var ci = 0u; ci < p.cin; ci++) {
        let xb = (img * p.cin + ci) * plane;
        for (var ky = 0u; ky < p.k; ky++) {
            let iy = i32(oy * p.stride + ky) - i32(p.pad);
            if (iy < 0 || iy >= i32(p.h)) {
                continue;
            }
            for (var kx = 0u; kx < p.k; kx++) {
                let ix = i32(ox * p.stride + kx) - i32(p.pad);
                if (ix < 0 || ix >= i32(p.w)) {
                    continue;
                }
                let v = x[xb + u32(iy) * p.w + u32(ix)];
                let wi = (co0 * p.cin + ci) * kk + ky * p.k + kx;
                for (var j = 0u; j < ncb; j++) {
                    acc[j] += v * wt[wi + j * wstride];
                }
            }
        }
    }
    for (var j = 0u; j < ncb; j++) {
        var v = acc[j] + bias[co0 + j];
        if (p.relu != 0u) {
            v = max(v, 0.0);
        }
        y[((img * p.cout + co0 + j) * p.ho + oy) * p.wo + ox] = v;
    }
}
