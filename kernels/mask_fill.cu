// Fill a rectangle of an interleaved RGB8 frame with one colour. Each
// thread owns four consecutive bytes (one word), as in the WGSL twin.
// 256-thread blocks over a 2-D grid covering the words of rows y0..y1.
struct MaskFillParams {
    unsigned w, total, x0, y0, x1, y1, rgb, pad0;
};

extern "C" __global__ void mask_fill(const MaskFillParams p, unsigned char* img) {
    unsigned word = (p.y0 * p.w * 3) / 4 + blockIdx.y * gridDim.x * 256 + blockIdx.x * 256 +
                    threadIdx.x;
    if (word * 4 >= min(p.total, p.y1 * p.w * 3)) return;
    for (unsigned k = 0; k < 4; k++) {
        unsigned b = word * 4 + k, pix = b / 3, x = pix % p.w, y = pix / p.w;
        if (b < p.total && x >= p.x0 && x < p.x1 && y >= p.y0 && y < p.y1)
            img[b] = (p.rgb >> ((b % 3) * 8)) & 0xff;
    }
}
