// uint8 interleaved images (n x sh x sw x 3, packed four bytes to a u32)
// to the f32 NCHW input tensor (n x 3 x dh x dw) in one pass: bilinear
// resize (half-pixel centres, edges clamped; an identity when the sizes
// match), channel order (bgr != 0 swaps R and B) and scaling
// v * scale + offset. One invocation per output value over a 2-D grid of
// 256-wide workgroups.

struct Params {
    n: u32, sh: u32, sw: u32, dh: u32,
    dw: u32, bgr: u32, scale: f32, offset: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn byte_at(i: u32) -> f32 {
    return f32((src[i / 4u] >> ((i % 4u) * 8u)) & 0xffu);
}

fn px(img: u32, yy: u32, xx: u32, c: u32) -> f32 {
    return byte_at(((img * p.sh + yy) * p.sw + xx) * 3u + c);
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.y * nw.x * 256u + g.x;
    let plane = p.dh * p.dw;
    if (i >= p.n * 3u * plane) {
        return;
    }
    let img = i / (3u * plane);
    let ch = (i / plane) % 3u;
    let oy = (i % plane) / p.dw;
    let ox = i % p.dw;
    var c = ch;
    if (p.bgr != 0u) {
        c = 2u - ch;
    }
    var v: f32;
    if (p.sh == p.dh && p.sw == p.dw) {
        v = px(img, oy, ox, c);
    } else {
        let fy = clamp((f32(oy) + 0.5) * f32(p.sh) / f32(p.dh) - 0.5, 0.0, f32(p.sh - 1u));
        let fx = clamp((f32(ox) + 0.5) * f32(p.sw) / f32(p.dw) - 0.5, 0.0, f32(p.sw - 1u));
        let y0 = u32(floor(fy));
        let x0 = u32(floor(fx));
        let y1 = min(y0 + 1u, p.sh - 1u);
        let x1 = min(x0 + 1u, p.sw - 1u);
        let ty = fy - f32(y0);
        let tx = fx - f32(x0);
        let top = mix(px(img, y0, x0, c), px(img, y0, x1, c), tx);
        let bot = mix(px(img, y1, x0, c), px(img, y1, x1, c), tx);
        v = mix(top, bot, ty);
    }
    y[i] = v * p.scale + p.offset;
}
