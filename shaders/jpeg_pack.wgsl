// Baseline JPEG, step 3 of 3: pack the restart intervals' slots into one
// contiguous entropy-coded segment. `offsets` holds each interval's first
// byte in the output (intervals + 1 entries; the last is the total). One
// invocation per output word.

struct Params {
    intervals: u32, total: u32, cap: u32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> slots: array<u32>;
@group(0) @binding(2) var<storage, read> offsets: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let o = g.y * nw.x * 256u + g.x;
    let first = o * 4u;
    if (first >= p.total) {
        return;
    }
    // The last interval that starts at or before the word's first byte.
    var lo = 0u;
    var hi = p.intervals - 1u;
    while (lo < hi) {
        let mid = (lo + hi + 1u) / 2u;
        if (offsets[mid] <= first) {
            lo = mid;
        } else {
            hi = mid - 1u;
        }
    }
    var iv = lo;
    var w = 0u;
    for (var j = 0u; j < 4u; j++) {
        let pos = first + j;
        if (pos >= p.total) {
            break;
        }
        while (offsets[iv + 1u] <= pos) {
            iv += 1u;
        }
        let off = pos - offsets[iv];
        let b = (slots[iv * p.cap + off / 4u] >> ((off % 4u) * 8u)) & 0xffu;
        w |= b << (j * 8u);
    }
    dst[o] = w;
}
