// Fill a rectangle of an interleaved RGB8 frame with one colour. The frame
// is packed four bytes to a u32, so each invocation owns one word and
// writes all of its bytes: no two invocations touch the same word.
// Dispatch: grid over the words of rows y0..y1.

struct Params {
    w: u32, total: u32, x0: u32, y0: u32,
    x1: u32, y1: u32, rgb: u32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> img: array<u32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let word = (p.y0 * p.w * 3u) / 4u + g.y * nw.x * 256u + g.x;
    if (word * 4u >= min(p.total, p.y1 * p.w * 3u)) {
        return;
    }
    var v = img[word];
    for (var k = 0u; k < 4u; k++) {
        let b = word * 4u + k;
        let pix = b / 3u;
        let x = pix % p.w;
        let y = pix / p.w;
        if (b < p.total && x >= p.x0 && x < p.x1 && y >= p.y0 && y < p.y1) {
            let c = (p.rgb >> ((b % 3u) * 8u)) & 0xffu;
            v = (v & ~(0xffu << (k * 8u))) | (c << (k * 8u));
        }
    }
    img[word] = v;
}
