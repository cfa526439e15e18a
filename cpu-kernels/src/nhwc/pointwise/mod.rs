//! 1x1 convolution over NHWC pixels, which is a GEMM with the pixels as rows:
//! `out[p, o] = act(b[o] + Σ_k x[p, k] · w[o, k]) + residual[p, o]`.
//!
//! The same kernel serves every layer that reduces to a matrix product: 1x1
//! convolutions, the 3x3 convolutions after im2col, and the 2x2 transposed
//! convolutions (one GEMM to 4 × cout columns, then a scatter).
//!
//! With AVX-512, AVX2 or NEON the weights are packed once, at load, into
//! panels of two to four vectors' worth of output channels (`k × width`,
//! zero-padded), and a register tile of several pixels × one panel
//! accumulates over all of `k` with one broadcast per pixel and one vector
//! load per panel vector per step; bias, ReLU and the residual are applied
//! while the tile is still in registers (`avx512.rs`, `avx2.rs`, `neon.rs`).
//! Elsewhere the portable `gemm` crate runs the product and the epilogue is
//! a second pass.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

use crate::simd::{self, Isa};

#[derive(Debug, Clone)]
enum Weights {
    /// Panels of `k × isa.panel()`, zero-padded past `cout`; bias padded
    /// likewise to whole panels.
    Packed(Isa, Vec<f32>),
    /// `k × cout`, row-major (the weight matrix transposed).
    Plain(Vec<f32>),
}

/// Panel width (output channels) and tile height (pixels) of each kernel:
/// the accumulators (height × panel vectors) plus the panel's vectors fill
/// the register file without spilling.
fn panel_and_rows(isa: Isa) -> (usize, usize) {
    match isa {
        // 14 × 2 accumulators + 2 weight vectors of the 32 zmm registers.
        Isa::Avx512 => (32, 14),
        // 6 × 2 accumulators + 2 weight vectors + 1 broadcast of 16 ymm.
        Isa::Avx2 => (16, 6),
        // 6 × 4 accumulators + 4 weight vectors of the 32 q registers.
        Isa::Neon => (16, 6),
        Isa::Portable => unreachable!("the portable path is not packed"),
    }
}

/// A `[cout × k]` weight matrix and its bias, packed for the CPU this runs on.
#[derive(Debug, Clone)]
pub struct Pointwise {
    k: usize,
    cout: usize,
    bias: Vec<f32>,
    weights: Weights,
}

impl Pointwise {
    /// `w` is `[cout × k]` row-major (a conv weight `[cout, cin, 1, 1]` as
    /// stored, or any matrix whose rows are output channels).
    pub fn new(w: &[f32], b: &[f32], cout: usize, k: usize) -> Self {
        Self::for_isa(simd::best(), w, b, cout, k)
    }

    /// The portable layout, whatever the CPU (tests compare the two).
    pub fn plain(w: &[f32], b: &[f32], cout: usize, k: usize) -> Self {
        Self::for_isa(Isa::Portable, w, b, cout, k)
    }

    /// Packed for `isa`'s kernels.
    ///
    /// # Panics
    /// If this CPU cannot run `isa` ([`simd::supported`]), or on sizes that
    /// do not match.
    pub fn for_isa(isa: Isa, w: &[f32], b: &[f32], cout: usize, k: usize) -> Self {
        assert!(simd::supported(isa), "this CPU has no {isa}");
        assert_eq!(w.len(), cout * k, "pointwise weight is not cout × k");
        assert_eq!(b.len(), cout, "pointwise bias is not cout");
        if isa == Isa::Portable {
            let mut t = vec![0f32; k * cout];
            for o in 0..cout {
                for i in 0..k {
                    t[i * cout + o] = w[o * k + i];
                }
            }
            return Self {
                k,
                cout,
                bias: b.to_vec(),
                weights: Weights::Plain(t),
            };
        }
        let width = panel_and_rows(isa).0;
        let n = cout.div_ceil(width);
        let mut p = vec![0f32; n * k * width];
        let mut bias = vec![0f32; n * width];
        for o in 0..cout {
            let (panel, lane) = (o / width, o % width);
            for i in 0..k {
                p[(panel * k + i) * width + lane] = w[o * k + i];
            }
            bias[o] = b[o];
        }
        Self {
            k,
            cout,
            bias,
            weights: Weights::Packed(isa, p),
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn cout(&self) -> usize {
        self.cout
    }

    /// Runs on `x.len() / k` pixels (rows of `k`), writing rows of `cout` to
    /// `out`; `residual`, if any, has `out`'s shape and is added after the
    /// activation. Single-threaded: callers split the pixels.
    pub fn run(&self, x: &[f32], out: &mut [f32], relu: bool, residual: Option<&[f32]>) {
        let m = x.len() / self.k;
        assert_eq!(x.len(), m * self.k, "pointwise input is not whole pixels");
        assert_eq!(
            out.len(),
            m * self.cout,
            "pointwise output has the wrong size"
        );
        let segs = [(0, self.k)];
        let g = Gather {
            stride: self.k,
            segs: &segs,
        };
        self.run_gather(x, &g, out, relu, residual)
    }

    /// Like [`run`](Self::run) with each pixel's `k` inputs gathered from
    /// `x` as `g` describes (an implicit im2col), for `out.len() / cout` pixels.
    pub fn run_gather(
        &self,
        x: &[f32],
        g: &Gather,
        out: &mut [f32],
        relu: bool,
        residual: Option<&[f32]>,
    ) {
        let m = out.len() / self.cout;
        assert_eq!(
            out.len(),
            m * self.cout,
            "pointwise output is not whole pixels"
        );
        let k: usize = g.segs.iter().map(|s| s.1).sum();
        assert_eq!(k, self.k, "gather does not cover k inputs");
        if m == 0 {
            return;
        }
        let reach = g.segs.iter().map(|&(o, l)| o + l).max().unwrap_or(0);
        assert!(
            (m - 1) * g.stride + reach <= x.len(),
            "gather reads past the input"
        );
        if let Some(r) = residual {
            assert_eq!(r.len(), out.len(), "pointwise residual has the wrong size");
        }
        match &self.weights {
            Weights::Packed(isa, p) => {
                // SAFETY: panels are only built for an ISA this CPU has
                // (`for_isa`); every read was bounds-checked above.
                unsafe { self.run_packed(*isa, p, x, g, m, out, relu, residual) }
            }
            Weights::Plain(t) => {
                if g.segs == [(0, self.k)] && g.stride == self.k {
                    self.run_plain(t, &x[..m * self.k], m, out, relu, residual)
                } else {
                    let mut col = Vec::with_capacity(m * self.k);
                    for p in 0..m {
                        for &(o, l) in g.segs {
                            col.extend_from_slice(&x[p * g.stride + o..][..l]);
                        }
                    }
                    self.run_plain(t, &col, m, out, relu, residual)
                }
            }
        }
    }

    fn run_plain(
        &self,
        t: &[f32],
        x: &[f32],
        m: usize,
        out: &mut [f32],
        relu: bool,
        residual: Option<&[f32]>,
    ) {
        // SAFETY: x is m × k, t is k × cout and out m × cout, all row-major
        // and live for the call.
        unsafe {
            crate::gemm_tile(
                out.as_mut_ptr(),
                self.cout,
                x,
                t.as_ptr(),
                self.cout,
                m,
                self.k,
                self.cout,
            )
        };
        for (p, row) in out.chunks_exact_mut(self.cout).enumerate() {
            for (o, v) in row.iter_mut().enumerate() {
                let mut y = *v + self.bias[o];
                if relu {
                    y = y.max(0.0);
                }
                if let Some(r) = residual {
                    y += r[p * self.cout + o];
                }
                *v = y;
            }
        }
    }

    /// # Safety
    /// The CPU supports `isa`; `panels` were packed for it; `x` holds the
    /// gathered inputs of m pixels (bounds checked by the caller), `out` (and
    /// `residual`) m × cout.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_packed(
        &self,
        isa: Isa,
        panels: &[f32],
        x: &[f32],
        g: &Gather,
        m: usize,
        out: &mut [f32],
        relu: bool,
        residual: Option<&[f32]>,
    ) {
        let (k, cout) = (self.k, self.cout);
        let (width, mr) = panel_and_rows(isa);
        let res = residual.map_or(std::ptr::null(), |r| r.as_ptr());
        let mut p0 = 0;
        while p0 < m {
            let rows = (m - p0).min(mr);
            for j in 0..cout.div_ceil(width) {
                let o0 = j * width;
                // SAFETY (all the offsets): rows ≤ mr pixels from p0 and
                // `valid` channels from o0 lie inside x, out and the panel.
                let t = Tile {
                    x: unsafe { x.as_ptr().add(p0 * g.stride) },
                    stride: g.stride,
                    segs: g.segs,
                    panel: unsafe { panels.as_ptr().add(j * k * width) },
                    bias: unsafe { self.bias.as_ptr().add(o0) },
                    out: unsafe { out.as_mut_ptr().add(p0 * cout + o0) },
                    ld: cout,
                    valid: (cout - o0).min(width),
                    relu,
                    res: if res.is_null() {
                        res
                    } else {
                        unsafe { res.add(p0 * cout + o0) }
                    },
                };
                // SAFETY: the CPU has `isa` (forwarded); the tile is in bounds.
                unsafe {
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 => avx512::tile(rows, &t),
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 => avx2::tile(rows, &t),
                        #[cfg(target_arch = "aarch64")]
                        Isa::Neon => neon::tile(rows, &t),
                        _ => unreachable!("no {isa} kernel on this architecture"),
                    }
                }
            }
            p0 += rows;
        }
    }
}

/// Where each pixel's inputs are: pixel `p` reads, in order, the slices
/// `x[p·stride + off ..][..len]` for each `(off, len)` of `segs`. A plain 1x1
/// convolution is one segment `(0, k)` with stride `k`; a 3x3 convolution over
/// a zero-padded NHWC map is nine segments, one per tap, each a whole pixel,
/// with a stride of one pixel (or two, for stride 2).
#[derive(Debug, Clone, Copy)]
pub struct Gather<'a> {
    pub stride: usize,
    pub segs: &'a [(usize, usize)],
}

/// One register tile's operands: `x` and `out`/`res` point at its first
/// pixel (and, for out/res, first channel); output rows of `ld` floats;
/// `valid` of the panel's channels exist (the rest are padding, never
/// stored); `res` is null when there is no residual.
#[allow(dead_code)] // fields unused where no kernel is built (not x86-64 or aarch64)
struct Tile<'a> {
    x: *const f32,
    stride: usize,
    segs: &'a [(usize, usize)],
    panel: *const f32,
    bias: *const f32,
    out: *mut f32,
    ld: usize,
    valid: usize,
    relu: bool,
    res: *const f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn reference(w: &[f32], b: &[f32], x: &[f32], cout: usize, k: usize) -> Vec<f32> {
        let m = x.len() / k;
        let mut out = vec![0f32; m * cout];
        for p in 0..m {
            for o in 0..cout {
                let s: f64 = (0..k)
                    .map(|i| x[p * k + i] as f64 * w[o * k + i] as f64)
                    .sum();
                out[p * cout + o] = s as f32 + b[o];
            }
        }
        out
    }

    /// Every tile height and panel width, with and without ReLU and a
    /// residual, against a plain f64 sum; every kernel this CPU can run.
    #[test]
    fn matches_the_definition_for_awkward_shapes() {
        for (m, k, cout) in [
            (1, 3, 1),
            (13, 27, 15),
            (29, 24, 144),
            (40, 160, 960),
            (17, 96, 24),
            (7, 5, 9),
            (6, 8, 16),
            (19, 33, 37),
        ] {
            let (w, b, x, r) = (
                lcg(cout * k, 1),
                lcg(cout, 2),
                lcg(m * k, 3),
                lcg(m * cout, 4),
            );
            let plain = reference(&w, &b, &x, cout, k);
            for (relu, res) in [
                (true, Some(&r)),
                (false, None),
                (true, None),
                (false, Some(&r)),
            ] {
                let want: Vec<f32> = plain
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let v = if relu { v.max(0.0) } else { v };
                        v + res.map_or(0.0, |r| r[i])
                    })
                    .collect();
                for isa in simd::all_supported() {
                    let pw = Pointwise::for_isa(isa, &w, &b, cout, k);
                    let mut got = vec![f32::NAN; m * cout];
                    pw.run(&x, &mut got, relu, res.map(Vec::as_slice));
                    let err = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        err < 1e-4,
                        "{isa} m {m} k {k} cout {cout} relu {relu}: max error {err}"
                    );
                }
            }
        }
    }
}
