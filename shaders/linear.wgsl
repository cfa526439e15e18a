// Fully connected layer: y[n, o] = bias[o] + sum_i w[o, i] * x[n, i].
// One invocation per output value, over 64-wide workgroups.

struct Params {
    n: u32, inputs: u32, outputs: u32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// [outputs, inputs]
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x >= p.n * p.outputs) {
        return;
    }
    let img = g.x / p.outputs;
    let o = g.x % p.outputs;
    var s = bias[o];
    for (var i = 0u; i < p.inputs; i++) {
        s += wt[o * p.inputs + i] * x[img * p.inputs + i];
    }
    y[g.x] = s;
}
