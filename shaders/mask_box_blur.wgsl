// One box-blur pass over a region (rh x rw x 3, f32), along rows
// (horizontal != 0) or columns, edges clamped to the region so nothing
// outside it contributes. Three such pairs of passes approximate a
// gaussian. The first pass reads the packed RGB8 frame (from_image != 0),
// later ones the previous pass's buffer. One invocation per region value.

struct Params {
    w: u32, x0: u32, y0: u32, rw: u32,
    rh: u32, radius: u32, horizontal: u32, from_image: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> img: array<u32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn value(x: u32, y: u32, c: u32) -> f32 {
    if (p.from_image != 0u) {
        let b = ((p.y0 + y) * p.w + p.x0 + x) * 3u + c;
        return f32((img[b / 4u] >> ((b % 4u) * 8u)) & 0xffu);
    }
    return src[(y * p.rw + x) * 3u + c];
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.y * nw.x * 256u + g.x;
    if (i >= p.rw * p.rh * 3u) {
        return;
    }
    let c = i % 3u;
    let x = (i / 3u) % p.rw;
    let y = (i / 3u) / p.rw;
    let r = i32(p.radius);
    var acc = 0.0;
    for (var t = -r; t <= r; t++) {
        if (p.horizontal != 0u) {
            acc += value(u32(clamp(i32(x) + t, 0, i32(p.rw) - 1)), y, c);
        } else {
            acc += value(x, u32(clamp(i32(y) + t, 0, i32(p.rh) - 1)), c);
        }
    }
    dst[i] = acc * (1.0 / f32(2u * p.radius + 1u));
}
