// k x k max-pool at any stride, NCHW f32, `pad` cells before (top and left)
// counting as -inf, the output size given, and the residual `res` (the
// output's shape) added when `residual` is set.
// Block (8, 8, 1); grid (ceil(wo / 8), ceil(ho / 8), n * c).
struct MaxPoolKParams {
    unsigned h, w, ho, wo, k, stride, pad, residual;
};

extern "C" __global__ void maxpool(const MaxPoolKParams p, const float* x, const float* res,
                                   float* y) {
    unsigned ox = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= p.wo || oy >= p.ho) return;
    unsigned xb = blockIdx.z * p.h * p.w;
    // Every window holds a cell of the plane (SAME padding is under half a
    // window a side), so this is always overwritten.
    float m = -3.402823e38f;
    for (unsigned ky = 0; ky < p.k; ky++) {
        int iy = (int)(oy * p.stride + ky) - (int)p.pad;
        if (iy < 0 || iy >= (int)p.h) continue;
        for (unsigned kx = 0; kx < p.k; kx++) {
            int ix = (int)(ox * p.stride + kx) - (int)p.pad;
            if (ix < 0 || ix >= (int)p.w) continue;
            m = fmaxf(m, x[xb + (unsigned)iy * p.w + (unsigned)ix]);
        }
    }
    unsigned o = (blockIdx.z * p.ho + oy) * p.wo + ox;
    if (p.residual) m += res[o];
    y[o] = m;
}
