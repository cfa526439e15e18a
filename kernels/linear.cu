// Fully connected: y[n, o] = bias[o] + sum_i w[o, i] * x[n, i]. 64-thread blocks.
struct LinearParams {
    unsigned n, inputs, outputs, pad0;
};

extern "C" __global__ void linear(const LinearParams p, const float* x, const float* wt,
                                  const float* bias, float* y) {
    unsigned g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= p.n * p.outputs) return;
    unsigned img = g / p.outputs, o = g % p.outputs;
    float s = bias[o];
    for (unsigned i = 0; i < p.inputs; i++) s += wt[o * p.inputs + i] * x[img * p.inputs + i];
    y[g] = s;
}
