// Pixelation of one region: each value (rh x rw x 3, f32) becomes the
// integer mean of its channel over its block. 256-thread blocks, 2-D grid.
struct MaskPixelateParams {
    unsigned w, x0, y0, rw, rh, block, pad0, pad1;
};

extern "C" __global__ void mask_pixelate(const MaskPixelateParams p, const unsigned char* img,
                                         float* dst) {
    unsigned i = blockIdx.y * gridDim.x * 256 + blockIdx.x * 256 + threadIdx.x;
    if (i >= p.rw * p.rh * 3) return;
    unsigned c = i % 3, x = (i / 3) % p.rw, y = (i / 3) / p.rw;
    unsigned bx = (x / p.block) * p.block, by = (y / p.block) * p.block;
    unsigned ex = min(bx + p.block, p.rw), ey = min(by + p.block, p.rh);
    unsigned sum = 0;
    for (unsigned yy = by; yy < ey; yy++)
        for (unsigned xx = bx; xx < ex; xx++)
            sum += img[((size_t)(p.y0 + yy) * p.w + p.x0 + xx) * 3 + c];
    dst[i] = (float)(sum / ((ey - by) * (ex - bx)));
}
