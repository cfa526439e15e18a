// Softmax over each row of a [rows, len] f32 tensor, in place. 64-thread blocks.
struct SoftmaxParams {
    unsigned rows, len, pad0, pad1;
};

extern "C" __global__ void softmax(const SoftmaxParams p, float* y) {
    unsigned g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= p.rows) return;
    float* r = y + (size_t)g * p.len;
    float m = r[0];
    for (unsigned i = 1; i < p.len; i++) m = fmaxf(m, r[i]);
    float s = 0.0f;
    for (unsigned i = 0; i < p.len; i++) {
        r[i] = expf(r[i] - m);
        s += r[i];
    }
    for (unsigned i = 0; i < p.len; i++) r[i] = r[i] / s;
}
