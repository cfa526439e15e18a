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
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn row_avx512(&self, rows: [&[f32]; 3], win: usize, wout: usize, out: &mut [f32]) {
        use std::arch::x86_64::*;
        let (c, s) = (self.c, self.stride);
        let r = rows.map(|r| r.as_ptr());
        let zero = _mm512_setzero_ps();
        let mut c0 = 0;
        while c0 < c {
            let lanes = (c - c0).min(16);
            let m = if lanes == 16 {
                0xFFFF
            } else {
                ((1u32 << lanes) - 1) as u16
            };
            // SAFETY: tap rows of w hold c floats; masked past c.
            let w: [__m512; 9] = std::array::from_fn(|tap| unsafe {
                _mm512_maskz_loadu_ps(m, self.w.as_ptr().add(tap * c + c0))
            });
            let b = unsafe { _mm512_maskz_loadu_ps(m, self.b.as_ptr().add(c0)) };
            for ox in 0..wout {
                let mut acc = b;
                let first = ox * s;
                if first >= 1 && first + 1 < win {
                    // Interior: all nine taps in range.
                    let base = (first - 1) * c + c0;
                    for (dy, row) in r.iter().enumerate() {
                        for dx in 0..3 {
                            // SAFETY: column first - 1 + dx < win, masked lanes.
                            let x = unsafe { _mm512_maskz_loadu_ps(m, row.add(base + dx * c)) };
                            acc = _mm512_fmadd_ps(x, w[dy * 3 + dx], acc);
                        }
                    }
                } else {
                    for (dy, row) in r.iter().enumerate() {
                        for dx in 0..3 {
                            let Some(ix) = (first + dx).checked_sub(1) else {
                                continue;
                            };
                            if ix >= win {
                                continue;
                            }
                            // SAFETY: ix < win.
                            let x = unsafe { _mm512_maskz_loadu_ps(m, row.add(ix * c + c0)) };
                            acc = _mm512_fmadd_ps(x, w[dy * 3 + dx], acc);
                        }
                    }
                }
                // SAFETY: ox < wout, masked past c.
                unsafe {
                    _mm512_mask_storeu_ps(
                        out.as_mut_ptr().add(ox * c + c0),
                        m,
                        _mm512_max_ps(acc, zero),
                    )
                };
            }
            c0 += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the definition, both strides, odd widths, a channel count
    /// that is not a multiple of 16, and a zero padding row above.
    #[test]
    fn matches_the_definition() {
        let (c, win) = (40, 9);
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
