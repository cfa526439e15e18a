// One box-blur pass over a region (rh x rw x 3, f32) along rows or columns,
// edges clamped to the region; the first pass reads the RGB8 frame.
// 256-thread blocks, 2-D grid.
struct MaskBoxBlurParams {
    unsigned w, x0, y0, rw, rh, radius, horizontal, from_image;
};

__device__ float blur_value(const MaskBoxBlurParams& p, const unsigned char* img,
                            const float* src, unsigned x, unsigned y, unsigned c) {
    if (p.from_image) return (float)img[((size_t)(p.y0 + y) * p.w + p.x0 + x) * 3 + c];
    return src[(y * p.rw + x) * 3 + c];
}

extern "C" __global__ void mask_box_blur(const MaskBoxBlurParams p, const unsigned char* img,
                                         const float* src, float* dst) {
    unsigned i = blockIdx.y * gridDim.x * 256 + blockIdx.x * 256 + threadIdx.x;
    if (i >= p.rw * p.rh * 3) return;
    unsigned c = i % 3, x = (i / 3) % p.rw, y = (i / 3) / p.rw;
    int r = (int)p.radius;
    float acc = 0.0f;
    for (int t = -r; t <= r; t++) {
        if (p.horizontal)
            acc += blur_value(p, img, src, (unsigned)min(max((int)x + t, 0), (int)p.rw - 1), y, c);
        else
            acc += blur_value(p, img, src, x, (unsigned)min(max((int)y + t, 0), (int)p.rh - 1), c);
    }
    dst[i] = acc * (1.0f / (float)(2 * p.radius + 1));
}
