//! Depthwise 3x3 convolution (padding 1, stride 1 or 2) with bias and ReLU
//! over NHWC rows.
//!
//! In NHWC a pixel's channels are contiguous, so one output pixel of a
//! 16-channel group is nine vector multiply-adds against nine weight vectors
//! that stay in registers while the group sweeps the row. candle's grouped
//! conv2d instead runs one convolution per channel.

/// Weights `[9 × c]` (tap-major, so a tap's channel group is one vector).
#[derive(Debug, Clone)]
pub struct Depthwise {
    c: usize,
    stride: usize,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Depthwise {
    /// `w` as stored for a grouped conv: `[c, 1, 3, 3]`.
    pub fn new(w: &[f32], b: &[f32], c: usize, stride: usize) -> Self {
        assert_eq!(w.len(), c * 9, "depthwise weight is not [c, 1, 3, 3]");
        assert_eq!(b.len(), c, "depthwise bias is not c");
        assert!(stride == 1 || stride == 2, "depthwise stride {stride}");
        let mut t = vec![0f32; 9 * c];
        for ch in 0..c {
            for tap in 0..9 {
                t[tap * c + ch] = w[ch * 9 + tap];
            }
        }
        Self {
            c,
            stride,
            w: t,
            b: b.to_vec(),
        }
    }

    pub fn channels(&self) -> usize {
        self.c
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Output length along a dimension of input length `d`.
    pub fn out_dim(&self, d: usize) -> usize {
        (d - 1) / self.stride + 1
    }

    /// One output row, ReLU applied, from the three input rows it reads
    /// (`rows[0]` above, `rows[2]` below; padding rows are zeros), each
    /// `win × c`. `out` is `out_dim(win) × c`.
    pub fn row(&self, rows: [&[f32]; 3], win: usize, out: &mut [f32]) {
        let wout = self.out_dim(win);
        for r in rows {
            assert_eq!(
                r.len(),
                win * self.c,
                "depthwise input row has the wrong size"
            );
        }
        assert_eq!(
            out.len(),
            wout * self.c,
            "depthwise output row has the wrong size"
        );
        #[cfg(target_arch = "x86_64")]
        if crate::model::avx512::available() {
            // SAFETY: AVX-512F detected; sizes checked above.
            unsafe { self.row_avx512(rows, win, wout, out) };
            return;
        }
        self.row_portable(rows, win, wout, out);
    }

    fn row_portable(&self, rows: [&[f32]; 3], win: usize, wout: usize, out: &mut [f32]) {
        let c = self.c;
        for (ox, o) in out.chunks_exact_mut(c).enumerate() {
            o.copy_from_slice(&self.b);
            for (dy, r) in rows.iter().enumerate() {
                for dx in 0..3 {
                    let Some(ix) = (ox * self.stride + dx).checked_sub(1) else {
                        continue;
                    };
                    if ix >= win {
                        continue;
                    }
                    let w = &self.w[(dy * 3 + dx) * c..][..c];
                    let x = &r[ix * c..][..c];
                    for ((o, w), x) in o.iter_mut().zip(w).zip(x) {
                        *o += w * x;
                    }
                }
            }
            for v in o.iter_mut() {
                *v = v.max(0.0);
            }
        }
        debug_assert_eq!(out.len(), wout * c);
    }

    /// # Safety
    /// AVX-512F must be available; rows are `win × c`, `out` is `wout × c`.
    ///
    /// Pixels outer, channel groups inner: a pixel's channels are contiguous,
    /// so the loads stream through memory in order; the nine weight vectors
    /// of a group are re-read from L1 each time. (Holding the weights in
    /// registers and sweeping the row per group measured 2x slower: every
    /// load then lands on a different cache line.)
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn row_avx512(&self, rows: [&[f32]; 3], win: usize, wout: usize, out: &mut [f32]) {
        use std::arch::x86_64::*;
        let (c, s) = (self.c, self.stride);
        let r = rows.map(|r| r.as_ptr());
        let (w, b) = (self.w.as_ptr(), self.b.as_ptr());
        let zero = _mm512_setzero_ps();
        let full = c / 16 * 16;
        let tail = ((1u32 << (c - full)) - 1) as u16;
        // Runs of interior pixels share their loads: each input column is
        // loaded once and feeds every output that reads it, and the nine
        // weight vectors are loaded once per run (8 pixels at stride 1, 4 at
        // stride 2: past that the columns no longer fit the registers).
        let px = if s == 1 { 8 } else { 4 };
        let interior = |ox: usize| ox * s >= 1 && ox * s + 1 < win;
        let mut ox = 0;
        while ox < wout {
            if ox + px <= wout && interior(ox) && interior(ox + px - 1) {
                // SAFETY: all px pixels are interior.
                unsafe {
                    if s == 1 {
                        self.run_avx512::<8, 1>(r, ox, out.as_mut_ptr());
                    } else {
                        self.run_avx512::<4, 2>(r, ox, out.as_mut_ptr());
                    }
                }
                ox += px;
                continue;
            }
            let first = ox * s;
            // Input columns this pixel reads, None where padding.
            let cols: [Option<usize>; 3] =
                std::array::from_fn(|dx| (first + dx).checked_sub(1).filter(|&ix| ix < win));
            let o = unsafe { out.as_mut_ptr().add(ox * c) };
            if cols.iter().all(Option::is_some) {
                let base = (first - 1) * c;
                let mut c0 = 0;
                while c0 < full {
                    // SAFETY: interior pixel, channel group inside c.
                    unsafe {
                        let mut acc = _mm512_loadu_ps(b.add(c0));
                        for (dy, row) in r.iter().enumerate() {
                            for dx in 0..3 {
                                let x = _mm512_loadu_ps(row.add(base + dx * c + c0));
                                let wv = _mm512_loadu_ps(w.add((dy * 3 + dx) * c + c0));
                                acc = _mm512_fmadd_ps(x, wv, acc);
                            }
                        }
                        _mm512_storeu_ps(o.add(c0), _mm512_max_ps(acc, zero));
                    }
                    c0 += 16;
                }
                if tail != 0 {
                    // SAFETY: as above, masked to the last channels.
                    unsafe {
                        let mut acc = _mm512_maskz_loadu_ps(tail, b.add(c0));
                        for (dy, row) in r.iter().enumerate() {
                            for dx in 0..3 {
                                let x = _mm512_maskz_loadu_ps(tail, row.add(base + dx * c + c0));
                                let wv = _mm512_maskz_loadu_ps(tail, w.add((dy * 3 + dx) * c + c0));
                                acc = _mm512_fmadd_ps(x, wv, acc);
                            }
                        }
                        _mm512_mask_storeu_ps(o.add(c0), tail, _mm512_max_ps(acc, zero));
                    }
                }
            } else {
                let mut c0 = 0;
                while c0 < c {
                    let m = if c - c0 >= 16 { 0xFFFF } else { tail };
                    // SAFETY: only in-range columns are read; masked past c.
                    unsafe {
                        let mut acc = _mm512_maskz_loadu_ps(m, b.add(c0));
                        for (dy, row) in r.iter().enumerate() {
                            for (dx, col) in cols.iter().enumerate() {
                                if let Some(ix) = col {
                                    let x = _mm512_maskz_loadu_ps(m, row.add(ix * c + c0));
                                    let wv =
                                        _mm512_maskz_loadu_ps(m, w.add((dy * 3 + dx) * c + c0));
                                    acc = _mm512_fmadd_ps(x, wv, acc);
                                }
                            }
                        }
                        _mm512_mask_storeu_ps(o.add(c0), m, _mm512_max_ps(acc, zero));
                    }
                    c0 += 16;
                }
            }
            ox += 1;
        }
    }

    /// `PX` consecutive interior output pixels from `ox`, stride `S`.
    ///
    /// # Safety
    /// AVX-512F; every input column the run reads is inside the rows.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512<const PX: usize, const S: usize>(
        &self,
        r: [*const f32; 3],
        ox: usize,
        out: *mut f32,
    ) {
        use std::arch::x86_64::*;
        let c = self.c;
        let (w, b) = (self.w.as_ptr(), self.b.as_ptr());
        let zero = _mm512_setzero_ps();
        let base = (ox * S - 1) * c;
        let cols = (PX - 1) * S + 3;
        let mut c0 = 0;
        while c0 < c {
            let m: u16 = if c - c0 >= 16 {
                0xFFFF
            } else {
                ((1u32 << (c - c0)) - 1) as u16
            };
            // SAFETY: tap rows of w hold c floats; masked past c.
            let wv: [__m512; 9] =
                std::array::from_fn(|t| unsafe { _mm512_maskz_loadu_ps(m, w.add(t * c + c0)) });
            let bias = unsafe { _mm512_maskz_loadu_ps(m, b.add(c0)) };
            let mut acc = [bias; PX];
            for (dy, row) in r.iter().enumerate() {
                for j in 0..cols {
                    // SAFETY: column ox·S - 1 + j is inside the row.
                    let x = unsafe { _mm512_maskz_loadu_ps(m, row.add(base + j * c + c0)) };
                    for (p, a) in acc.iter_mut().enumerate() {
                        if j >= p * S && j - p * S < 3 {
                            *a = _mm512_fmadd_ps(x, wv[dy * 3 + j - p * S], *a);
                        }
                    }
                }
            }
            for (p, a) in acc.iter().enumerate() {
                // SAFETY: output pixel ox + p < wout.
                unsafe {
                    _mm512_mask_storeu_ps(out.add((ox + p) * c + c0), m, _mm512_max_ps(*a, zero))
                };
            }
            c0 += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the definition, both strides, an odd width (edge pixels,
    /// runs of interior pixels and a remainder), a channel count that is not
    /// a multiple of 16, and a zero padding row above.
    #[test]
    fn matches_the_definition() {
        let (c, win) = (40, 37);
        let w: Vec<f32> = (0..c * 9)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let b: Vec<f32> = (0..c).map(|i| (i as f32 - 20.0) / 10.0).collect();
        let row = |k: usize| -> Vec<f32> {
            (0..win * c)
                .map(|i| (((i + 7 * k) * 13 % 23) as f32 - 11.0) / 5.0)
                .collect()
        };
        let zeros = vec![0f32; win * c];
        let (r1, r2) = (row(1), row(2));
        for stride in [1, 2] {
            let dw = Depthwise::new(&w, &b, c, stride);
            let wout = dw.out_dim(win);
            let mut got = vec![f32::NAN; wout * c];
            dw.row([&zeros, &r1, &r2], win, &mut got);
            let mut port = vec![f32::NAN; wout * c];
            dw.row_portable([&zeros, &r1, &r2], win, wout, &mut port);
            for ox in 0..wout {
                for ch in 0..c {
                    let mut s = b[ch];
                    for (dy, r) in [&zeros, &r1, &r2].iter().enumerate() {
                        for dx in 0..3 {
                            let ix = (ox * stride + dx) as isize - 1;
                            if ix >= 0 && (ix as usize) < win {
                                s += w[ch * 9 + dy * 3 + dx] * r[ix as usize * c + ch];
                            }
                        }
                    }
                    let want = s.max(0.0);
                    for v in [got[ox * c + ch], port[ox * c + ch]] {
                        assert!(
                            (v - want).abs() < 1e-4,
                            "s{stride} ({ox},{ch}): {v} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
