// Transposed convolution, kernel 2x2, stride 2 (each input pixel becomes a
// 2x2 output block), NCHW f32, bias and optional ReLU.
// Dispatch: (ceil(2w / 8), ceil(2h / 8), n * cout).

struct Params {
    n: u32, cin: u32, h: u32, w: u32,
    cout: u32, relu: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// [cin, cout, 2, 2], PyTorch's layout for ConvTranspose2d.
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    let ox = g.x;
    let oy = g.y;
    let wo = p.w * 2u;
    let ho = p.h * 2u;
    if (ox >= wo || oy >= ho) {
        return;
    }
    let img = g.z / p.cout;
    let co = g.z % p.cout;
    let tap = (oy % 2u) * 2u + (ox % 2u);
    let plane = p.h * p.w;
    let xi = (oy / 2u) * p.w + ox / 2u;
    var acc = bias[co];
    for (var ci = 0u; ci < p.cin; ci++) {
        acc += x[(img * p.cin + ci) * plane + xi] * wt[(ci * p.cout + co) * 4u + tap];
    }
    if (p.relu != 0u) {
        acc = max(acc, 0.0);
    }
    y[(g.z * ho + oy) * wo + ox] = acc;
}
