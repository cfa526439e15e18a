// One full-size uint8 interleaved RGB frame (sh x sw x 3) letterboxed into
// image `slot` of the f32 NCHW input (n x 3 x dh x dw): resampled to rh x rw
// in the top-left corner, zero elsewhere, then channel order and
// v * scale + offset. Triangle filter widened by the reduction factor (the
// CPU letterbox's anti-aliased convolution) as one 2-D sum; an exact copy
// at equal sizes. 256-thread blocks over a 2-D grid.
struct LetterboxParams {
    unsigned sh, sw, rh, rw, dh, dw, slot, bgr;
    float scale, offset;
};

struct Span {
    unsigned lo, hi;
    float centre, inv_width;
};

__device__ Span span(unsigned o, unsigned s, unsigned d) {
    float ratio = (float)s / (float)d;
    float fw = fmaxf(ratio, 1.0f);
    float c = ((float)o + 0.5f) * ratio;
    Span r;
    r.lo = (unsigned)fmaxf(floorf(c - fw), 0.0f);
    r.hi = (unsigned)fminf(ceilf(c + fw), (float)s);
    r.centre = c - 0.5f;
    r.inv_width = 1.0f / fw;
    return r;
}

__device__ float tri(float x) { return fmaxf(1.0f - fabsf(x), 0.0f); }

extern "C" __global__ void letterbox(const LetterboxParams p, const unsigned char* src,
                                     float* y) {
    unsigned i = blockIdx.y * gridDim.x * 256 + blockIdx.x * 256 + threadIdx.x;
    unsigned plane = p.dh * p.dw;
    if (i >= 3 * plane) return;
    unsigned ch = i / plane;
    unsigned oy = (i % plane) / p.dw, ox = i % p.dw;
    unsigned c = p.bgr ? 2 - ch : ch;
    float v = 0.0f;
    if (oy < p.rh && ox < p.rw) {
        Span sy = span(oy, p.sh, p.rh), sx = span(ox, p.sw, p.rw);
        float acc = 0.0f, wsum_y = 0.0f, wsum_x = 0.0f;
        for (unsigned x = sx.lo; x < sx.hi; x++) wsum_x += tri(((float)x - sx.centre) * sx.inv_width);
        for (unsigned yy = sy.lo; yy < sy.hi; yy++) {
            float wy = tri(((float)yy - sy.centre) * sy.inv_width);
            wsum_y += wy;
            if (wy == 0.0f) continue;
            float row = 0.0f;
            const unsigned char* line = src + ((size_t)yy * p.sw) * 3 + c;
            for (unsigned x = sx.lo; x < sx.hi; x++)
                row += tri(((float)x - sx.centre) * sx.inv_width) * (float)line[(size_t)x * 3];
            acc += wy * row;
        }
        v = acc / (wsum_y * wsum_x);
    }
    y[(size_t)p.slot * 3 * plane + i] = v * p.scale + p.offset;
}
