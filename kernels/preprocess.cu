// uint8 interleaved images (n x sh x sw x 3, four bytes to a word) to the f32
// NCHW input (n x 3 x dh x dw): bilinear resize with half-pixel centres (an
// identity when sizes match), channel order, v * scale + offset.
// 256-thread blocks over a 2-D grid.
struct PreprocessParams {
    unsigned n, sh, sw, dh, dw, bgr;
    float scale, offset;
};

__device__ float px(const PreprocessParams& p, const unsigned char* src, unsigned img,
                    unsigned yy, unsigned xx, unsigned c) {
    return (float)src[((size_t)(img * p.sh + yy) * p.sw + xx) * 3 + c];
}

extern "C" __global__ void preprocess(const PreprocessParams p, const unsigned char* src,
                                      float* y) {
    unsigned i = blockIdx.y * gridDim.x * 256 + blockIdx.x * 256 + threadIdx.x;
    unsigned plane = p.dh * p.dw;
    if (i >= p.n * 3 * plane) return;
    unsigned img = i / (3 * plane), ch = (i / plane) % 3;
    unsigned oy = (i % plane) / p.dw, ox = i % p.dw;
    unsigned c = p.bgr ? 2 - ch : ch;
    float v;
    if (p.sh == p.dh && p.sw == p.dw) {
        v = px(p, src, img, oy, ox, c);
    } else {
        float fy = fminf(fmaxf((oy + 0.5f) * p.sh / p.dh - 0.5f, 0.0f), (float)(p.sh - 1));
        float fx = fminf(fmaxf((ox + 0.5f) * p.sw / p.dw - 0.5f, 0.0f), (float)(p.sw - 1));
        unsigned y0 = (unsigned)floorf(fy), x0 = (unsigned)floorf(fx);
        unsigned y1 = min(y0 + 1, p.sh - 1), x1 = min(x0 + 1, p.sw - 1);
        float ty = fy - y0, tx = fx - x0;
        float top = px(p, src, img, y0, x0, c) * (1 - tx) + px(p, src, img, y0, x1, c) * tx;
        float bot = px(p, src, img, y1, x0, c) * (1 - tx) + px(p, src, img, y1, x1, c) * tx;
        v = top * (1 - ty) + bot * ty;
    }
    y[i] = v * p.scale + p.offset;
}
