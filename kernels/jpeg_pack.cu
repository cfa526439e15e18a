// Baseline JPEG, step 3 of 3: pack the intervals' slots into one segment,
// one thread per output word; `offsets` has intervals + 1 entries, the last
// the total. Same layout as the WGSL twin.
struct JpegPackParams {
    unsigned intervals, total, cap, pad0;
};

extern "C" __global__ void jpeg_pack(const JpegPackParams p, const unsigned* slots,
                                     const unsigned* offsets, unsigned* dst) {
    unsigned o = blockIdx.y * gridDim.x * 256 + blockIdx.x * 256 + threadIdx.x;
    unsigned first = o * 4;
    if (first >= p.total) return;
    unsigned lo = 0, hi = p.intervals - 1;
    while (lo < hi) {
        unsigned mid = (lo + hi + 1) / 2;
        if (offsets[mid] <= first)
            lo = mid;
        else
            hi = mid - 1;
    }
    unsigned iv = lo, w = 0;
    for (unsigned j = 0; j < 4; j++) {
        unsigned pos = first + j;
        if (pos >= p.total) break;
        while (offsets[iv + 1] <= pos) iv++;
        unsigned local = pos - offsets[iv];
        unsigned b = (slots[(size_t)iv * p.cap + local / 4] >> ((local % 4) * 8)) & 0xffu;
        w |= b << (j * 8);
    }
    dst[o] = w;
}
