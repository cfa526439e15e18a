// Baseline JPEG, step 2 of 3: Huffman coding. One invocation per restart
// interval (`interval` MCUs; DC predictions start from 0 in each), so the
// intervals code in parallel. Each writes its entropy-coded bytes (0xFF
// stuffed, the last byte padded with 1-bits, then the RSTn marker unless it
// is the last interval) into its own slot of `cap` words, four bytes to a
// word, low byte first, and its byte count to `lens`; a slot too small for
// its bytes gets 0xffffffff there.
//
// codes: four tables of 256 words, (length << 16) | code per symbol: luma DC,
// luma AC, chroma DC, chroma AC.

struct Params {
    mcus: u32, bpm: u32, interval: u32, intervals: u32,
    cap: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> coef: array<u32>;
@group(0) @binding(2) var<storage, read> codes: array<u32>;
@group(0) @binding(3) var<storage, read_write> slots: array<u32>;
@group(0) @binding(4) var<storage, read_write> lens: array<u32>;

// The bit writer of this invocation.
var<private> acc: u32;
var<private> nbits: u32;
var<private> word: u32;
var<private> nbytes: u32;
var<private> base: u32;

fn put_byte(b: u32) {
    word |= b << ((nbytes % 4u) * 8u);
    nbytes += 1u;
    if (nbytes % 4u == 0u) {
        if (nbytes / 4u <= p.cap) {
            slots[base + nbytes / 4u - 1u] = word;
        }
        word = 0u;
    }
}

fn put_bits(bits: u32, len: u32) {
    acc = (acc << len) | bits;
    nbits += len;
    while (nbits >= 8u) {
        nbits -= 8u;
        let b = (acc >> nbits) & 0xffu;
        put_byte(b);
        if (b == 0xffu) {
            put_byte(0u);
        }
    }
    acc &= (1u << nbits) - 1u;
}

fn put_symbol(table: u32, sym: u32) {
    let e = codes[table * 256u + sym];
    put_bits(e & 0xffffu, e >> 16u);
}

// The magnitude category of v and its extra bits (ones' complement when
// negative), as (bits << 8) | category.
fn magnitude(v: i32) -> u32 {
    let a = u32(abs(v));
    let s = 32u - countLeadingZeros(a);
    var bits = u32(v);
    if (v < 0) {
        bits = u32(v - 1);
    }
    return ((bits & ((1u << s) - 1u)) << 8u) | s;
}

fn coefficient(block: u32, z: u32) -> i32 {
    let w = coef[block * 32u + z / 2u];
    return bitcast<i32>(w << (16u - (z % 2u) * 16u)) >> 16u;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.y * nw.x * 256u + g.x;
    if (i >= p.intervals) {
        return;
    }
    acc = 0u;
    nbits = 0u;
    word = 0u;
    nbytes = 0u;
    base = i * p.cap;
    var pred = array<i32, 3>(0, 0, 0);
    let m1 = min((i + 1u) * p.interval, p.mcus);
    for (var mcu = i * p.interval; mcu < m1; mcu++) {
        for (var k = 0u; k < p.bpm; k++) {
            var c = k;
            if (p.bpm == 6u) {
                c = select(0u, k - 3u, k >= 4u);
            }
            let dc_table = select(2u, 0u, c == 0u);
            let block = mcu * p.bpm + k;
            let dc = coefficient(block, 0u);
            let m = magnitude(dc - pred[c]);
            pred[c] = dc;
            put_symbol(dc_table, m & 0xffu);
            put_bits(m >> 8u, m & 0xffu);
            var run = 0u;
            for (var z = 1u; z < 64u; z++) {
                let v = coefficient(block, z);
                if (v == 0) {
                    run += 1u;
                    continue;
                }
                while (run >= 16u) {
                    put_symbol(dc_table + 1u, 0xf0u);
                    run -= 16u;
                }
                let a = magnitude(v);
                put_symbol(dc_table + 1u, (run << 4u) | (a & 0xffu));
                put_bits(a >> 8u, a & 0xffu);
                run = 0u;
            }
            if (run > 0u) {
                put_symbol(dc_table + 1u, 0u);
            }
        }
    }
    if (nbits > 0u) {
        put_bits((1u << (8u - nbits)) - 1u, 8u - nbits);
    }
    if (i + 1u < p.intervals) {
        put_byte(0xffu);
        put_byte(0xd0u + i % 8u);
    }
    if (nbytes % 4u != 0u && nbytes / 4u < p.cap) {
        slots[base + nbytes / 4u] = word;
    }
    lens[i] = select(nbytes, 0xffffffffu, nbytes > p.cap * 4u);
}
