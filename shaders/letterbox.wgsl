// One full-size uint8 interleaved RGB frame (sh x sw x 3, four bytes to a
// u32) letterboxed into image `slot` of the f32 NCHW input (n x 3 x dh x dw):
// the frame is resampled to rh x rw in the top-left corner and the rest of
// the canvas is zero, then channel order (bgr != 0 swaps R and B) and
// v * scale + offset.
//
// The resampling is a triangle (bilinear) filter whose support widens by
// the reduction factor, the anti-aliased convolution the CPU letterbox
// (imaging::resize) uses, evaluated as one 2-D sum in f32 instead of two
// rounded 8-bit passes. At equal sizes it is an exact copy. One invocation
// per value of the slot over a 2-D grid of 256-wide workgroups.

struct Params {
    sh: u32, sw: u32, rh: u32, rw: u32,
    dh: u32, dw: u32, slot: u32, bgr: u32,
    scale: f32, offset: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn byte_at(i: u32) -> f32 {
    return f32((src[i / 4u] >> ((i % 4u) * 8u)) & 0xffu);
}

// Input span and filter of output coordinate `o` on an axis resampled from
// `s` to `d` values: first, one past the last, centre, 1 / filter width.
fn span(o: u32, s: u32, d: u32) -> vec4<f32> {
    let ratio = f32(s) / f32(d);
    let fw = max(ratio, 1.0);
    let c = (f32(o) + 0.5) * ratio;
    let lo = max(floor(c - fw), 0.0);
    let hi = min(ceil(c + fw), f32(s));
    return vec4<f32>(lo, hi, c - 0.5, 1.0 / fw);
}

fn tri(x: f32) -> f32 {
    return max(1.0 - abs(x), 0.0);
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.y * nw.x * 256u + g.x;
    let plane = p.dh * p.dw;
    if (i >= 3u * plane) {
        return;
    }
    let ch = i / plane;
    let oy = (i % plane) / p.dw;
    let ox = i % p.dw;
    var c = ch;
    if (p.bgr != 0u) {
        c = 2u - ch;
    }
    var v = 0.0;
    if (oy < p.rh && ox < p.rw) {
        let sy = span(oy, p.sh, p.rh);
        let sx = span(ox, p.sw, p.rw);
        var acc = 0.0;
        var wsum_y = 0.0;
        var wsum_x = 0.0;
        for (var x = u32(sx.x); x < u32(sx.y); x++) {
            wsum_x += tri((f32(x) - sx.z) * sx.w);
        }
        for (var yy = u32(sy.x); yy < u32(sy.y); yy++) {
            let wy = tri((f32(yy) - sy.z) * sy.w);
            wsum_y += wy;
            if (wy == 0.0) {
                continue;
            }
            var row = 0.0;
            for (var x = u32(sx.x); x < u32(sx.y); x++) {
                let wx = tri((f32(x) - sx.z) * sx.w);
                row += wx * byte_at((yy * p.sw + x) * 3u + c);
            }
            acc += wy * row;
        }
        v = acc / (wsum_y * wsum_x);
    }
    y[p.slot * 3u * plane + i] = v * p.scale + p.offset;
}
