// Softmax over the last dimension of a [rows, len] f32 tensor, in place,
// max-subtracted for range. One invocation per row, over 64-wide workgroups.

struct Params {
    rows: u32, len: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x >= p.rows) {
        return;
    }
    let b = g.x * p.len;
    var m = y[b];
    for (var i = 1u; i < p.len; i++) {
        m = max(m, y[b + i]);
    }
    var s = 0.0;
    for (var i = 0u; i < p.len; i++) {
        let e = exp(y[b + i] - m);
        y[b + i] = e;
        s += e;
    }
    for (var i = 0u; i < p.len; i++) {
        y[b + i] = y[b + i] / s;
    }
}
