// Logistic sigmoid in place on channels [c0, c0 + k), NCHW f32.
// 256-thread blocks over a 2-D grid.
struct SigmoidParams {
    unsigned n, c, plane, c0, k, pad0, pad1, pad2;
};

extern "C" __global__ void sigmoid(const SigmoidParams p, float* y) {
    unsigned i = blockIdx.y * gridDim.x * 256 + blockIdx.x * 256 + threadIdx.x;
    if (i >= p.n * p.k * p.plane) return;
    unsigned img = i / (p.k * p.plane), ch = p.c0 + (i / p.plane) % p.k;
    unsigned o = (img * p.c + ch) * p.plane + i % p.plane;
    y[o] = 1.0f / (1.0f + expf(-y[o]));
}
