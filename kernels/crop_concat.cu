// [centre crop of a, b] along channels, NCHW f32. 256-thread blocks over a
// 2-D grid; index = blockIdx.y * gridDim.x * 256 + global x.
struct CropConcatParams {
    unsigned n, ca, cb, ha, wa, h, w, crop;
};

extern "C" __global__ void crop_concat(const CropConcatParams p, const float* a, const float* b,
                                       float* y) {
    unsigned i = blockIdx.y * gridDim.x * 256 + blockIdx.x * 256 + threadIdx.x;
    unsigned c = p.ca + p.cb, plane = p.h * p.w;
    if (i >= p.n * c * plane) return;
    unsigned img = i / (c * plane), ch = (i / plane) % c;
    unsigned yy = (i % plane) / p.w, xx = i % p.w;
    if (ch < p.ca)
        y[i] = a[((img * p.ca + ch) * p.ha + yy + p.crop) * p.wa + xx + p.crop];
    else
        y[i] = b[((img * p.cb + ch - p.ca) * p.h + yy) * p.w + xx];
}
