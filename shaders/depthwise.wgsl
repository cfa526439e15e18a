// Depthwise 3x3 convolution (one filter per channel), NCHW f32, any stride,
// zero padding `pad`, bias and optional ReLU of the output (`relu`) or of the
// input as it is read (`relu_in`: Xception's ReLU before a separable conv,
// whose un-activated input another branch still needs). One invocation per
// output value.
// Dispatch: (ceil(wo / 8), ceil(ho / 8), n * c).

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    ho: u32, wo: u32, stride: u32, pad: u32,
    relu: u32, relu_in: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// [c, 1, 3, 3]
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
    let ch = g.z % p.c;
    let xb = g.z * p.h * p.w;
    var acc = bias[ch];
    for (var ky = 0u; ky < 3u; ky++) {
        let iy = i32(oy * p.stride + ky) - i32(p.pad);
        if (iy < 0 || iy >= i32(p.h)) {
            continue;
        }
        for (var kx = 0u; kx < 3u; kx++) {
            let ix = i32(ox * p.stride + kx) - i32(p.pad);
            if (ix < 0 || ix >= i32(p.w)) {
                continue;
            }
            var v = x[xb + u32(iy) * p.w + u32(ix)];
            if (p.relu_in != 0u) {
                v = max(v, 0.0);
            }
            acc += v * wt[ch * 9u + ky * 3u + kx];
        }
    }
    if (p.relu != 0u) {
        acc = max(acc, 0.0);
    }
    y[(g.z * p.ho + oy) * p.wo + ox] = acc;
}
