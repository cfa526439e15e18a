// Channel concatenation of a centre crop of `a` and all of `b`, NCHW f32:
//   y[n, 0..ca]     = a[n, :, crop..crop + h, crop..crop + w]
//   y[n, ca..ca+cb] = b[n, :, :, :]                       (b is h x w)
// One invocation per output value over a 2-D grid of 256-wide workgroups.

struct Params {
    n: u32, ca: u32, cb: u32, ha: u32,
    wa: u32, h: u32, w: u32, crop: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.y * nw.x * 256u + g.x;
    let c = p.ca + p.cb;
    let plane = p.h * p.w;
    if (i >= p.n * c * plane) {
        return;
    }
    let img = i / (c * plane);
    let ch = (i / plane) % c;
    let yy = (i % plane) / p.w;
    let xx = i % p.w;
    if (ch < p.ca) {
        y[i] = a[((img * p.ca + ch) * p.ha + yy + p.crop) * p.wa + xx + p.crop];
    } else {
        y[i] = b[((img * p.cb + ch - p.ca) * p.h + yy) * p.w + xx];
    }
}
