// Transposed convolution 2x2, stride 2, NCHW f32, bias and optional ReLU.
// Block (8, 8, 1); grid (ceil(2w / 8), ceil(2h / 8), n * cout).
struct ConvT2Params {
    unsigned n, cin, h, w, cout, relu, pad0, pad1;
};

extern "C" __global__ void conv_transpose2x2(const ConvT2Params p, const float* x,
                                             const float* wt, const float* bias, float* y) {
    unsigned ox = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned oy = blockIdx.y * blockDim.y + threadIdx.y;
    unsigned wo = p.w * 2, ho = p.h * 2;
    if (ox >= wo || oy >= ho) return;
    unsigned img = blockIdx.z / p.cout, co = blockIdx.z % p.cout;
    unsigned tap = (oy % 2) * 2 + (ox % 2);
    unsigned plane = p.h * p.w, xi = (oy / 2) * p.w + ox / 2;
    float acc = bias[co];
    for (unsigned ci = 0; ci < p.cin; ci++)
        acc += x[(img * p.cin + ci) * plane + xi] * wt[(ci * p.cout + co) * 4 + tap];
    if (p.relu) acc = fmaxf(acc, 0.0f);
    y[(blockIdx.z * ho + oy) * wo + ox] = acc;
}
