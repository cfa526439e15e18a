// 1x1 convolution as a tiled matrix product, per image:
//   y[n, co, i] = relu?(bias[co] + sum_ci w[co, ci] * x[n, ci, i]) (+ res[n, co, i])
// The residual has `residual` channels (0: none), at most cout: fewer is a
// shortcut padded with zero channels.
// A 16x16 block computes a 64 (channels) x 64 (pixels) tile, 4x4 values per
// thread, staging 16-deep slices of both operands in shared memory.
// Block (16, 16, 1); grid (ceil(hw / 64), ceil(cout / 64), n).
struct Conv1x1Params {
    unsigned n, cin, cout, hw, relu, residual, pad0, pad1;
};

extern "C" __global__ void conv1x1(const Conv1x1Params p, const float* x, const float* wt,
                                   const float* bias, const float* res, float* y) {
    __shared__ float tw[16][64];
    __shared__ float tx[16][64];
    unsigned img = blockIdx.z, p0 = blockIdx.x * 64, c0 = blockIdx.y * 64;
    unsigned lx = threadIdx.x, ly = threadIdx.y, tid = ly * 16 + lx;
    float acc[4][4] = {};
    for (unsigned k0 = 0; k0 < p.cin; k0 += 16) {
        for (unsigned e = 0; e < 4; e++) {
            unsigned idx = tid + e * 256;
            unsigned kk = idx % 16, cc = idx / 16;
            unsigned ci = k0 + kk, co = c0 + cc;
            tw[kk][cc] = (ci < p.cin && co < p.cout) ? wt[co * p.cin + ci] : 0.0f;
            unsigned pp = idx % 64, xk = idx / 64;
            unsigned xci = k0 + xk, px = p0 + pp;
            tx[xk][pp] = (xci < p.cin && px < p.hw) ? x[(img * p.cin + xci) * p.hw + px] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (unsigned kk = 0; kk < 16; kk++) {
            float a[4], b[4];
#pragma unroll
            for (unsigned i = 0; i < 4; i++) {
                a[i] = tw[kk][ly + 16 * i];
                b[i] = tx[kk][lx + 16 * i];
            }
#pragma unroll
            for (unsigned i = 0; i < 4; i++)
#pragma unroll
                for (unsigned j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    for (unsigned i = 0; i < 4; i++) {
        unsigned co = c0 + ly + 16 * i;
        if (co >= p.cout) continue;
        for (unsigned j = 0; j < 4; j++) {
            unsigned px = p0 + lx + 16 * j;
            if (px >= p.hw) continue;
            float v = acc[i][j] + bias[co];
            if (p.relu) v = fmaxf(v, 0.0f);
            unsigned o = (img * p.cout + co) * p.hw + px;
            if (co < p.residual) v += res[(img * p.residual + co) * p.hw + px];
            y[o] = v;
        }
    }
}
