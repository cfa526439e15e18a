// 1x1 convolution as a tiled matrix product, per image:
//   y[n, co, i] = relu?(bias[co] + sum_ci w[co, ci] * x[n, ci, i]) (+ res[n, co, i])
// NCHW f32. The residual has `residual` channels (0: none), at most cout:
// fewer is a shortcut padded with zero channels, as MobileNet-style nets
// widen theirs. A 16x16 workgroup computes a 64 (channels) x 64 (pixels) tile,
// 4x4 values per invocation, staging 16-deep slices of both operands in
// workgroup memory. ReLU comes before the residual: the appliance's models
// add a shortcut either to a linear projection or to two ReLU'd branches.
// Dispatch: (ceil(hw / 64), ceil(cout / 64), n).

struct Params {
    n: u32, cin: u32, cout: u32, hw: u32,
    relu: u32, residual: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// [cout, cin]
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
// [n, residual, h, w]; a placeholder when p.residual == 0.
@group(0) @binding(4) var<storage, read> res: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

var<workgroup> tw: array<array<f32, 64>, 16>;
var<workgroup> tx: array<array<f32, 64>, 16>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let img = wg.z;
    let p0 = wg.x * 64u;
    let c0 = wg.y * 64u;
    let tid = l.y * 16u + l.x;
    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            acc[i][j] = 0.0;
        }
    }
    for (var k0 = 0u; k0 < p.cin; k0 += 16u) {
        for (var e = 0u; e < 4u; e++) {
            let idx = tid + e * 256u;
            // Weights: consecutive invocations read consecutive ci.
            let kk = idx % 16u;
            let cc = idx / 16u;
            let ci = k0 + kk;
            let co = c0 + cc;
            var wv = 0.0;
            if (ci < p.cin && co < p.cout) {
                wv = wt[co * p.cin + ci];
            }
            tw[kk][cc] = wv;
            // Inputs: consecutive invocations read consecutive pixels.
            let pp = idx % 64u;
            let xk = idx / 64u;
            let xci = k0 + xk;
            let px = p0 + pp;
            var xv = 0.0;
            if (xci < p.cin && px < p.hw) {
                xv = x[(img * p.cin + xci) * p.hw + px];
            }
            tx[xk][pp] = xv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = tw[kk][l.y + 16u * i];
                b[i] = tx[kk][l.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] += a[i] * b[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let co = c0 + l.y + 16u * i;
        if (co >= p.cout) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let px = p0 + l.x + 16u * j;
            if (px >= p.hw) {
                continue;
            }
            var v = acc[i][j] + bias[co];
            if (p.relu != 0u) {
                v = max(v, 0.0);
            }
            let o = (img * p.cout + co) * p.hw + px;
            if (co < p.residual) {
                v += res[(img * p.residual + co) * p.hw + px];
            }
            y[o] = v;
        }
    }
}
