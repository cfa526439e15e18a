// Baseline JPEG, step 1 of 3: colour conversion, chroma subsampling,
// forward DCT and quantisation. One invocation per 8x8 block, blocks in
// scan order (MCU by MCU; in an MCU the luma blocks row by row, then Cb,
// Cr). Samples past the frame's right and bottom edges repeat the last
// column and row. Writes the block's 64 quantised coefficients in zigzag
// order as 32 words of two i16 each (low half first).
//
// tab: the orthonormal DCT basis (64, [u][x]), the luma and chroma
// quantisers (64 each, natural order) and the zigzag order (64, as f32).

struct Params {
    w: u32, h: u32, mcus_x: u32, blocks: u32,
    // 1: 4:2:0 (MCU 16x16, six blocks); 0: 4:4:4 (8x8, three blocks).
    sub: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> img: array<u32>;
@group(0) @binding(2) var<storage, read> tab: array<f32>;
@group(0) @binding(3) var<storage, read_write> coef: array<u32>;

fn byte_at(i: u32) -> u32 {
    return (img[i / 4u] >> ((i % 4u) * 8u)) & 0xffu;
}

// Component `c` (0 Y, 1 Cb, 2 Cr) of the pixel at (x, y), level-shifted.
fn sample(x: u32, y: u32, c: u32) -> f32 {
    let i = (min(y, p.h - 1u) * p.w + min(x, p.w - 1u)) * 3u;
    let r = f32(byte_at(i));
    let g = f32(byte_at(i + 1u));
    let b = f32(byte_at(i + 2u));
    if (c == 0u) {
        return 0.299 * r + 0.587 * g + 0.114 * b - 128.0;
    }
    if (c == 1u) {
        return -0.168736 * r - 0.331264 * g + 0.5 * b;
    }
    return 0.5 * r - 0.418688 * g - 0.081312 * b;
}

fn quantise(f: f32, q: f32, lim: f32) -> i32 {
    let v = f / q;
    return i32(clamp(sign(v) * floor(abs(v) + 0.5), -lim, lim));
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let b = g.y * nw.x * 256u + g.x;
    if (b >= p.blocks) {
        return;
    }
    let bpm = select(3u, 6u, p.sub == 1u);
    let mcu = b / bpm;
    let k = b % bpm;
    let mx = mcu % p.mcus_x;
    let my = mcu / p.mcus_x;
    var s: array<f32, 64>;
    var c = k;
    if (p.sub == 1u && k < 4u) {
        c = 0u;
        let x0 = mx * 16u + (k % 2u) * 8u;
        let y0 = my * 16u + (k / 2u) * 8u;
        for (var i = 0u; i < 64u; i++) {
            s[i] = sample(x0 + i % 8u, y0 + i / 8u, 0u);
        }
    } else if (p.sub == 1u) {
        c = k - 3u;
        for (var i = 0u; i < 64u; i++) {
            let x = mx * 16u + (i % 8u) * 2u;
            let y = my * 16u + (i / 8u) * 2u;
            s[i] = 0.25 * (sample(x, y, c) + sample(x + 1u, y, c) + sample(x, y + 1u, c)
                + sample(x + 1u, y + 1u, c));
        }
    } else {
        for (var i = 0u; i < 64u; i++) {
            s[i] = sample(mx * 8u + i % 8u, my * 8u + i / 8u, c);
        }
    }
    // Rows: t[y][u] = sum over x of s[y][x] * basis[u][x].
    var t: array<f32, 64>;
    for (var y = 0u; y < 8u; y++) {
        for (var u = 0u; u < 8u; u++) {
            var acc = 0.0;
            for (var x = 0u; x < 8u; x++) {
                acc += s[y * 8u + x] * tab[u * 8u + x];
            }
            t[y * 8u + u] = acc;
        }
    }
    // Columns, one coefficient at a time in zigzag order, quantised.
    let qoff = select(128u, 64u, c == 0u);
    for (var z = 0u; z < 64u; z += 2u) {
        var pair = 0u;
        for (var h = 0u; h < 2u; h++) {
            let n = u32(tab[192u + z + h]);
            let v = n / 8u;
            let u = n % 8u;
            var f = 0.0;
            for (var y = 0u; y < 8u; y++) {
                f += tab[v * 8u + y] * t[y * 8u + u];
            }
            // Baseline Huffman tables code at most 11 bits of DC and 10 of AC.
            let q = quantise(f, tab[qoff + n], select(1023.0, 1024.0, n == 0u));
            pair |= (bitcast<u32>(q) & 0xffffu) << (h * 16u);
        }
        coef[b * 32u + z / 2u] = pair;
    }
}
