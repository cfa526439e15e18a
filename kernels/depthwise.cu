// Depthwise 3x3 convolution, NCHW f32, any stride, zero padding `pad`, bias
// and optional ReLU of the output (`relu`) or of the input as it is read
// (`relu_in`); one thread per output value.
// Block (8, 8, 1); grid (ceil(wo / 8), ceil(ho / 8), n * c).
struct DepthwiseParams {
    unsigned n, c, h, w, ho, wo, stride, pad, relu, relu_in, pad1, pad2;
};

extern "C" __global__ void depthwise(const DepthwiseParams p, const float* x, const float* wt,
                                     const float* bias, float* y) {
    unsigned ox = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= p.wo || oy >= p.ho) return;
    unsigned ch = blockIdx.z % p.c;
    unsigned xb = blockIdx.z * p.h * p.w;
    float acc = bias[ch];
    for (unsigned ky = 0; ky < 3; ky++) {
        int iy = (int)(oy * p.stride + ky) - (int)p.pad;
        if (iy < 0 || iy >= (int)p.h) continue;
        for (unsigned kx = 0; kx < 3; kx++) {
            int ix = (int)(ox * p.stride + kx) - (int)p.pad;
            if (ix < 0 || ix >= (int)p.w) continue;
            float v = x[xb + (unsigned)iy * p.w + (unsigned)ix];
            if (p.relu_in) v = fmaxf(v, 0.0f);
            acc += v * wt[ch * 9 + ky * 3 + kx];
        }
    }
    if (p.relu) acc = fmaxf(acc, 0.0f);
    y[(blockIdx.z * p.ho + oy) * p.wo + ox] = acc;
}
