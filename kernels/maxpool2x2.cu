// 2x2 max-pool, stride 2, NCHW f32; odd trailing rows/columns dropped.
// Block (8, 8, 1); grid (ceil(wo / 8), ceil(ho / 8), n * c).
struct MaxPoolParams {
    unsigned h, w, ho, wo;
};

extern "C" __global__ void maxpool2x2(const MaxPoolParams p, const float* x, float* y) {
    unsigned gx = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned gy = blockIdx.y * blockDim.y + threadIdx.y;
    if (gx >= p.wo || gy >= p.ho) return;
    unsigned b = blockIdx.z * p.h * p.w + (gy * 2) * p.w + gx * 2;
    y[(blockIdx.z * p.ho + gy) * p.wo + gx] =
        fmaxf(fmaxf(x[b], x[b + 1]), fmaxf(x[b + p.w], x[b + p.w + 1]));
}
