//! Depthwise 3x3 convolution (padding 1, stride 1 or 2) with bias and ReLU
//! (or none) over NHWC rows.
//!
//! In NHWC a pixel's channels are contiguous, so one output pixel of a
//! channel group is nine vector multiply-adds against nine weight vectors.
//! candle's grouped conv2d instead runs one convolution per channel.
//!
//! One kernel per instruction set (`avx512.rs`, `avx2.rs`, `neon.rs`), chosen
//! at load; the portable loop serves other CPUs and, in the AVX2 and NEON
//! kernels, the image's edge pixels and any channels past the last whole
//! vector.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

use std::ops::Range;

use crate::simd::{self, Isa};

/// Weights `[9 × c]` (tap-major, so a tap's channel group is one vector).
#[derive(Debug, Clone)]
pub struct Depthwise {
    c: usize,
    stride: usize,
    w: Vec<f32>,
    b: Vec<f32>,
    /// Outputs are `max(sum, floor)`: 0 is ReLU, -inf no activation.
    floor: f32,
    isa: Isa,
}

impl Depthwise {
    /// `w` as stored for a grouped conv: `[c, 1, 3, 3]`.
    pub fn new(w: &[f32], b: &[f32], c: usize, stride: usize) -> Self {
        Self::for_isa(simd::best(), w, b, c, stride)
    }

    /// With `isa`'s kernel.
    ///
    /// # Panics
    /// If this CPU cannot run `isa`, on a stride other than 1 or 2, or on
    /// sizes that do not match.
    pub fn for_isa(isa: Isa, w: &[f32], b: &[f32], c: usize, stride: usize) -> Self {
        assert!(simd::supported(isa), "this CPU has no {isa}");
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
            floor: 0.0,
            isa,
        }
    }

    /// The same layer with no activation after it (a separable conv's
    /// depthwise half, a pointwise conv following).
    pub fn without_relu(mut self) -> Self {
        self.floor = f32::NEG_INFINITY;
        self
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

    /// One output row, ReLU applied (unless [`without_relu`](Self::without_relu)),
    /// from the three input rows it reads
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
        // SAFETY: the kernel's ISA was checked at construction; sizes above.
        unsafe {
            match self.isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => avx512::row(self, rows, win, wout, out),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => avx2::row(self, rows, win, wout, out),
                #[cfg(target_arch = "aarch64")]
                Isa::Neon => neon::row(self, rows, win, wout, out),
                _ => self.row_portable(rows, win, wout, out),
            }
        }
    }

    fn row_portable(&self, rows: [&[f32]; 3], win: usize, wout: usize, out: &mut [f32]) {
        let c = self.c;
        for (ox, o) in out[..wout * c].chunks_exact_mut(c).enumerate() {
            self.pixel_portable(rows, win, ox, o, 0..c);
        }
    }

    /// Channels `chans` of output pixel `ox` into `o` (that pixel's `c`
    /// floats), reading only the input columns that exist.
    fn pixel_portable(
        &self,
        rows: [&[f32]; 3],
        win: usize,
        ox: usize,
        o: &mut [f32],
        chans: Range<usize>,
    ) {
        let c = self.c;
        let o = &mut o[chans.clone()];
        o.copy_from_slice(&self.b[chans.clone()]);
        for (dy, r) in rows.iter().enumerate() {
            for dx in 0..3 {
                let Some(ix) = (ox * self.stride + dx).checked_sub(1) else {
                    continue;
                };
                if ix >= win {
                    continue;
                }
                let w = &self.w[(dy * 3 + dx) * c..][chans.clone()];
                let x = &r[ix * c..][chans.clone()];
                for ((o, w), x) in o.iter_mut().zip(w).zip(x) {
                    *o += w * x;
                }
            }
        }
        for v in o.iter_mut() {
            *v = v.max(self.floor);
        }
    }

    /// One output row for the AVX2 and NEON kernels: runs of `px` interior
    /// pixels go to `run(ox, true, out)`, single interior pixels to
    /// `run(ox, false, out)` (both for channels `0..full`, the whole
    /// vectors), edge pixels and channels `full..c` to the portable loop.
    #[allow(clippy::too_many_arguments, dead_code)] // unused on CPUs with neither kernel
    fn sweep(
        &self,
        rows: [&[f32]; 3],
        win: usize,
        wout: usize,
        out: &mut [f32],
        full: usize,
        px: usize,
        mut run: impl FnMut(usize, bool, *mut f32),
    ) {
        let c = self.c;
        let mut ox = 0;
        while ox < wout {
            let n = if ox + px <= wout && self.interior(ox, win) && self.interior(ox + px - 1, win)
            {
                run(ox, true, out.as_mut_ptr());
                px
            } else if self.interior(ox, win) {
                run(ox, false, out.as_mut_ptr());
                1
            } else {
                self.pixel_portable(rows, win, ox, &mut out[ox * c..][..c], 0..c);
                ox += 1;
                continue;
            };
            if full < c {
                for p in ox..ox + n {
                    self.pixel_portable(rows, win, p, &mut out[p * c..][..c], full..c);
                }
            }
            ox += n;
        }
    }

    /// Whether output pixel `ox` reads three real input columns (no padding).
    fn interior(&self, ox: usize, win: usize) -> bool {
        ox * self.stride >= 1 && ox * self.stride + 1 < win
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the definition, every kernel this CPU can run, both strides,
    /// odd widths (edge pixels, runs of interior pixels and a remainder),
    /// channel counts that are and are not whole vectors of 4, 8 and 16, and
    /// a zero padding row above; with ReLU and without.
    #[test]
    fn matches_the_definition() {
        for (c, win) in [(40, 37), (43, 37), (5, 9), (16, 3), (24, 2), (7, 1)] {
            check(c, win);
        }
    }

    fn check(c: usize, win: usize) {
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
        for (stride, isa, relu) in [1, 2].into_iter().flat_map(|s| {
            simd::all_supported()
                .into_iter()
                .flat_map(move |i| [(s, i, true), (s, i, false)])
        }) {
            let dw = Depthwise::for_isa(isa, &w, &b, c, stride);
            let dw = if relu { dw } else { dw.without_relu() };
            let wout = dw.out_dim(win);
            let mut got = vec![f32::NAN; wout * c];
            dw.row([&zeros, &r1, &r2], win, &mut got);
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
                    let want = if relu { s.max(0.0) } else { s };
                    let v = got[ox * c + ch];
                    assert!(
                        (v - want).abs() < 1e-4,
                        "{isa} c{c} w{win} s{stride} relu {relu} ({ox},{ch}): {v} vs {want}"
                    );
                }
            }
        }
    }
}
