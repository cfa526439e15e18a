// Write a region buffer (rh x rw x 3, f32) into the RGB8 frame, rounded half
// away from zero and clamped; with `ellipse` only inside the inscribed
// ellipse. Each thread owns four consecutive bytes, as in the WGSL twin.
struct MaskPutParams {
    unsigned w, total, x0, y0, rw, rh, ellipse, pad0;
};

extern "C" __global__ void mask_put(const MaskPutParams p, const float* src, unsigned char* img) {
    unsigned word = (p.y0 * p.w * 3) / 4 + blockIdx.y * gridDim.x * 256 + blockIdx.x * 256 +
                    threadIdx.x;
    if (word * 4 >= min(p.total, (p.y0 + p.rh) * p.w * 3)) return;
    float cx = p.rw / 2.0f, cy = p.rh / 2.0f;
    for (unsigned k = 0; k < 4; k++) {
        unsigned b = word * 4 + k, pix = b / 3, x = pix % p.w, y = pix / p.w;
        if (b >= p.total || x < p.x0 || x >= p.x0 + p.rw || y < p.y0 || y >= p.y0 + p.rh) continue;
        unsigned rx = x - p.x0, ry = y - p.y0;
        if (p.ellipse) {
            float dx = (rx + 0.5f - cx) / cx, dy = (ry + 0.5f - cy) / cy;
            if (dx * dx + dy * dy > 1.0f) continue;
        }
        float s = src[(ry * p.rw + rx) * 3 + b % 3];
        img[b] = (unsigned char)fminf(fmaxf(floorf(s + 0.5f), 0.0f), 255.0f);
    }
}
