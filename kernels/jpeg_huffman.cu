// Baseline JPEG, step 2 of 3: Huffman coding, one thread per restart
// interval, each into its own slot of `cap` words (bytes low first), with
// its byte count in `lens` (0xffffffff: the slot was too small). Same
// layout and bytes as the WGSL twin.
struct JpegHuffmanParams {
    unsigned mcus, bpm, interval, intervals, cap, pad0, pad1, pad2;
};

struct JpegBits {
    unsigned* slots;
    size_t base;
    unsigned cap, acc, nbits, word, nbytes;
};

__device__ void jpeg_put_byte(JpegBits& o, unsigned b) {
    o.word |= b << ((o.nbytes % 4) * 8);
    o.nbytes++;
    if (o.nbytes % 4 == 0) {
        if (o.nbytes / 4 <= o.cap) o.slots[o.base + o.nbytes / 4 - 1] = o.word;
        o.word = 0;
    }
}

__device__ void jpeg_put_bits(JpegBits& o, unsigned bits, unsigned len) {
    o.acc = (o.acc << len) | bits;
    o.nbits += len;
    while (o.nbits >= 8) {
        o.nbits -= 8;
        unsigned b = (o.acc >> o.nbits) & 0xffu;
        jpeg_put_byte(o, b);
        if (b == 0xffu) jpeg_put_byte(o, 0);
    }
    o.acc &= (1u << o.nbits) - 1u;
}

__device__ void jpeg_put_symbol(JpegBits& o, const unsigned* codes, unsigned table,
                                unsigned sym) {
    unsigned e = codes[table * 256 + sym];
    jpeg_put_bits(o, e & 0xffffu, e >> 16);
}

// (extra bits << 8) | magnitude category of v.
__device__ unsigned jpeg_magnitude(int v) {
    unsigned a = (unsigned)(v < 0 ? -v : v);
    unsigned s = 32 - __clz((int)a);
    unsigned bits = (unsigned)(v < 0 ? v - 1 : v);
    return ((bits & ((1u << s) - 1u)) << 8) | s;
}

__device__ int jpeg_coefficient(const unsigned* coef, unsigned block, unsigned z) {
    unsigned w = coef[(size_t)block * 32 + z / 2];
    return (int)(w << (16 - (z % 2) * 16)) >> 16;
}

extern "C" __global__ void jpeg_huffman(const JpegHuffmanParams p, const unsigned* coef,
                                        const unsigned* codes, unsigned* slots, unsigned* lens) {
    unsigned i = blockIdx.y * gridDim.x * 256 + blockIdx.x * 256 + threadIdx.x;
    if (i >= p.intervals) return;
    JpegBits o = {slots, (size_t)i * p.cap, p.cap, 0, 0, 0, 0};
    int pred[3] = {0, 0, 0};
    unsigned m1 = min((i + 1) * p.interval, p.mcus);
    for (unsigned mcu = i * p.interval; mcu < m1; mcu++) {
        for (unsigned k = 0; k < p.bpm; k++) {
            unsigned c = p.bpm == 6 ? (k >= 4 ? k - 3 : 0) : k;
            unsigned dc_table = c == 0 ? 0 : 2, block = mcu * p.bpm + k;
            int dc = jpeg_coefficient(coef, block, 0);
            unsigned m = jpeg_magnitude(dc - pred[c]);
            pred[c] = dc;
            jpeg_put_symbol(o, codes, dc_table, m & 0xffu);
            jpeg_put_bits(o, m >> 8, m & 0xffu);
            unsigned run = 0;
            for (unsigned z = 1; z < 64; z++) {
                int v = jpeg_coefficient(coef, block, z);
                if (v == 0) {
                    run++;
                    continue;
                }
                while (run >= 16) {
                    jpeg_put_symbol(o, codes, dc_table + 1, 0xf0);
                    run -= 16;
                }
                unsigned a = jpeg_magnitude(v);
                jpeg_put_symbol(o, codes, dc_table + 1, (run << 4) | (a & 0xffu));
                jpeg_put_bits(o, a >> 8, a & 0xffu);
                run = 0;
            }
            if (run > 0) {
                jpeg_put_symbol(o, codes, dc_table + 1, 0);
            }
        }
    }
    if (o.nbits > 0) jpeg_put_bits(o, (1u << (8 - o.nbits)) - 1, 8 - o.nbits);
    if (i + 1 < p.intervals) {
        jpeg_put_byte(o, 0xffu);
        jpeg_put_byte(o, 0xd0u + i % 8);
    }
    if (o.nbytes % 4 != 0 && o.nbytes / 4 < p.cap) slots[o.base + o.nbytes / 4] = o.word;
    lens[i] = o.nbytes > p.cap * 4 ? 0xffffffffu : o.nbytes;
}
