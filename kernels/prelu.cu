// PReLU in place, NCHW f32: x where x >= 0, else alpha[ch] * x, one slope
// per channel. 256-thread blocks over a 2-D grid.
struct PreluParams {
    unsigned n, c, plane, pad0;
};

extern "C" __global__ void prelu(const PreluParams p, float* y, const float* alpha) {
    unsigned i = blockIdx.y * gridDim.x * 256 + blockIdx.x * 256 + threadIdx.x;
    if (i >= p.n * p.c * p.plane) return;
    float v = y[i];
    if (v < 0.0f) y[i] = v * alpha[(i / p.plane) % p.c];
}
