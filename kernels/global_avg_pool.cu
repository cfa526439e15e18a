// Global average pool: y[n, c] = mean of the plane x[n, c]. 64-thread blocks.
struct GapParams {
    unsigned nc, plane, pad0, pad1;
};

extern "C" __global__ void global_avg_pool(const GapParams p, const float* x, float* y) {
    unsigned g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= p.nc) return;
    float s = 0.0f;
    for (unsigned i = 0; i < p.plane; i++) s += x[g * p.plane + i];
    y[g] = s / (float)p.plane;
}
