// Baseline JPEG, step 1 of 3: colour conversion, chroma subsampling, forward
// DCT and quantisation, one thread per 8x8 block in scan order; 32 words of
// two i16 zigzag coefficients per block. Same layout as the WGSL twin.
struct JpegDctParams {
    unsigned w, h, mcus_x, blocks, sub, pad0, pad1, pad2;
};

__device__ float jpeg_sample(const JpegDctParams& p, const unsigned char* img, unsigned x,
                             unsigned y, unsigned c) {
    size_t i = ((size_t)min(y, p.h - 1) * p.w + min(x, p.w - 1)) * 3;
    float r = img[i], g = img[i + 1], b = img[i + 2];
    if (c == 0) return 0.299f * r + 0.587f * g + 0.114f * b - 128.0f;
    if (c == 1) return -0.168736f * r - 0.331264f * g + 0.5f * b;
    return 0.5f * r - 0.418688f * g - 0.081312f * b;
}

__device__ int jpeg_quantise(float f, float q, float lim) {
    float v = f / q;
    float r = floorf(fabsf(v) + 0.5f);
    r = v < 0.0f ? -r : (v > 0.0f ? r : 0.0f);
    return (int)fminf(fmaxf(r, -lim), lim);
}

extern "C" __global__ void jpeg_dct(const JpegDctParams p, const unsigned char* img,
                                    const float* tab, unsigned* coef) {
    unsigned b = blockIdx.y * gridDim.x * 256 + blockIdx.x * 256 + threadIdx.x;
    if (b >= p.blocks) return;
    unsigned bpm = p.sub == 1 ? 6 : 3;
    unsigned mcu = b / bpm, k = b % bpm, mx = mcu % p.mcus_x, my = mcu / p.mcus_x;
    float s[64];
    unsigned c = k;
    if (p.sub == 1 && k < 4) {
        c = 0;
        unsigned x0 = mx * 16 + (k % 2) * 8, y0 = my * 16 + (k / 2) * 8;
        for (unsigned i = 0; i < 64; i++) s[i] = jpeg_sample(p, img, x0 + i % 8, y0 + i / 8, 0);
    } else if (p.sub == 1) {
        c = k - 3;
        for (unsigned i = 0; i < 64; i++) {
            unsigned x = mx * 16 + (i % 8) * 2, y = my * 16 + (i / 8) * 2;
            s[i] = 0.25f * (jpeg_sample(p, img, x, y, c) + jpeg_sample(p, img, x + 1, y, c) +
                            jpeg_sample(p, img, x, y + 1, c) + jpeg_sample(p, img, x + 1, y + 1, c));
        }
    } else {
        for (unsigned i = 0; i < 64; i++)
            s[i] = jpeg_sample(p, img, mx * 8 + i % 8, my * 8 + i / 8, c);
    }
    float t[64];
    for (unsigned y = 0; y < 8; y++)
        for (unsigned u = 0; u < 8; u++) {
            float acc = 0.0f;
            for (unsigned x = 0; x < 8; x++) acc += s[y * 8 + x] * tab[u * 8 + x];
            t[y * 8 + u] = acc;
        }
    unsigned qoff = c == 0 ? 64 : 128;
    for (unsigned z = 0; z < 64; z += 2) {
        unsigned pair = 0;
        for (unsigned h = 0; h < 2; h++) {
            unsigned n = (unsigned)tab[192 + z + h], v = n / 8, u = n % 8;
            float f = 0.0f;
            for (unsigned y = 0; y < 8; y++) f += tab[v * 8 + y] * t[y * 8 + u];
            int q = jpeg_quantise(f, tab[qoff + n], n == 0 ? 1024.0f : 1023.0f);
            pair |= ((unsigned)q & 0xffffu) << (h * 16);
        }
        coef[(size_t)b * 32 + z / 2] = pair;
    }
}
