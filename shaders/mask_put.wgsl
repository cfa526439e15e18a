// Write a region buffer (rh x rw x 3, f32) into the packed RGB8 frame,
// rounded (half away from zero) and clamped to 0..=255; with ellipse != 0
// only inside the ellipse inscribed in the region. Each invocation owns
// one u32 word of the frame, as in mask_fill.

struct Params {
    w: u32, total: u32, x0: u32, y0: u32,
    rw: u32, rh: u32, ellipse: u32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> img: array<u32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let word = (p.y0 * p.w * 3u) / 4u + g.y * nw.x * 256u + g.x;
    if (word * 4u >= min(p.total, (p.y0 + p.rh) * p.w * 3u)) {
        return;
    }
    let cx = f32(p.rw) / 2.0;
    let cy = f32(p.rh) / 2.0;
    var v = img[word];
    for (var k = 0u; k < 4u; k++) {
        let b = word * 4u + k;
        let pix = b / 3u;
        let x = pix % p.w;
        let y = pix / p.w;
        if (b >= p.total || x < p.x0 || x >= p.x0 + p.rw || y < p.y0 || y >= p.y0 + p.rh) {
            continue;
        }
        let rx = x - p.x0;
        let ry = y - p.y0;
        if (p.ellipse != 0u) {
            let dx = (f32(rx) + 0.5 - cx) / cx;
            let dy = (f32(ry) + 0.5 - cy) / cy;
            if (dx * dx + dy * dy > 1.0) {
                continue;
            }
        }
        let s = src[(ry * p.rw + rx) * 3u + b % 3u];
        let c = u32(clamp(floor(s + 0.5), 0.0, 255.0));
        v = (v & ~(0xffu << (k * 8u))) | (c << (k * 8u));
    }
    img[word] = v;
}
