// Direct k x k convolution (groups = 1), NCHW f32, bias and optional ReLU;
// one thread per output pixel and 8 consecutive output channels.
// Block (8, 8, 1); grid (ceil(wo / 8), ceil(ho / 8), n * ceil(cout / 8)).
struct Conv2dParams {
    unsigned n, cin, h, w, cout, ho, wo, k, stride, pad, relu, pad0;
};

#define COB 8u

extern "C" __global__ void conv2d(const Conv2dParams p, const float* x, const float* wt,
                                  const float* bias, float* y) {
    unsigned ox = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= p.wo || oy >= p.ho) return;
    unsigned blocks = (p.cout + COB - 1u) / COB;
    unsigned img = blockIdx.z / blocks;
    unsigned co0 = (blockIdx.z % blocks) * COB;
    unsigned ncb = min(COB, p.cout - co0);
    float acc[COB];
    for (unsigned j = 0; j < COB; j++) acc[j] = 0.0f;
    unsigned plane = p.h * p.w, kk = p.k * p.k, wstride = p.cin * kk;
    for (unsigned ci = 0; ci < p.cin; ci++) {
        unsigned xb = (img * p.cin + ci) * plane;
        for (unsigned ky = 0; ky < p.k; ky++) {
            int iy = (int)(oy * p.stride + ky) - (int)p.pad;
            if (iy < 0 || iy >= (int)p.h) continue;
            for (unsigned kx = 0; kx < p.k; kx++) {
                int ix = (int)(ox * p.stride + kx) - (int)p.pad;
                if (ix < 0 || ix >= (int)p.w) continue;
                float v = x[xb + (unsigned)iy * p.w + (unsigned)ix];
                unsigned wi = (co0 * p.cin + ci) * kk + ky * p.k + kx;
#pragma unroll
                for (unsigned j = 0; j < COB; j++)
                    if (j < ncb) acc[j] += v * wt[wi + j * wstride];
            }
        }
    }
    for (unsigned j = 0; j < ncb; j++) {
        float v = acc[j] + bias[co0 + j];
        if (p.relu) v = fmaxf(v, 0.0f);
        y[((img * p.cout + co0 + j) * p.ho + oy) * p.wo + ox] = v;
    }
}
