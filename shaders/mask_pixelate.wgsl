// Pixelation of one region: every value of the region (rh x rw x 3, f32)
// becomes the integer mean of its channel over the block it falls in.
// Blocks start at the region's corner and are clipped at its far edges.
// Reads the packed RGB8 frame; writes the region buffer `mask_put` copies
// back. One invocation per region value.

struct Params {
    w: u32, x0: u32, y0: u32, rw: u32,
    rh: u32, block: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> img: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn byte_at(i: u32) -> u32 {
    return (img[i / 4u] >> ((i % 4u) * 8u)) & 0xffu;
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
    let bx = (x / p.block) * p.block;
    let by = (y / p.block) * p.block;
    let ex = min(bx + p.block, p.rw);
    let ey = min(by + p.block, p.rh);
    var sum = 0u;
    for (var yy = by; yy < ey; yy++) {
        for (var xx = bx; xx < ex; xx++) {
            sum += byte_at(((p.y0 + yy) * p.w + p.x0 + xx) * 3u + c);
        }
    }
    dst[i] = f32(sum / ((ey - by) * (ex - bx)));
}
