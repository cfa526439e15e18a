//! 1x1 convolution over NHWC pixels, which is a GEMM with the pixels as rows:
//! `out[p, o] = act(b[o] + Σ_k x[p, k] · w[o, k]) + residual[p, o]`.
//!
//! The same kernel serves every layer that reduces to a matrix product: 1x1
//! convolutions, the 3x3 convolutions after im2col, and the 2x2 transposed
//! convolutions (one GEMM to 4 × cout columns, then a scatter).
//!
//! On x86-64 with AVX-512 the weights are packed once, at load, into panels of
//! 32 output channels (`k × 32`, zero-padded), and a register tile of up to 14
//! pixels × 32 channels accumulates over all of `k` with one broadcast per
//! pixel and two vector loads per step, so bias, ReLU and the residual are
//! applied while the tile is still in registers. Elsewhere the portable `gemm`
//! crate runs the product and the epilogue is a second pass.

/// Output channels per packed panel (two 16-lane vectors).
const PANEL: usize = 32;
/// Pixels per register tile: 14 × 2 accumulators + 2 weight vectors fit the
/// 32 vector registers.
#[cfg(target_arch = "x86_64")]
const MR: usize = 14;

#[derive(Debug, Clone)]
enum Weights {
    /// Panels of `k × PANEL`, zero-padded past `cout`; bias padded likewise.
    #[cfg(target_arch = "x86_64")]
    Panels(Vec<f32>),
    /// `k × cout`, row-major (the weight matrix transposed).
    Plain(Vec<f32>),
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
        #[cfg(target_arch = "x86_64")]
        if crate::model::avx512::available() {
            return Self::panels(w, b, cout, k);
        }
        Self::plain(w, b, cout, k)
    }

    /// The portable layout, whatever the CPU (tests compare the two).
    pub fn plain(w: &[f32], b: &[f32], cout: usize, k: usize) -> Self {
        assert_eq!(w.len(), cout * k, "pointwise weight is not cout × k");
        assert_eq!(b.len(), cout, "pointwise bias is not cout");
        let mut t = vec![0f32; k * cout];
        for o in 0..cout {
            for i in 0..k {
                t[i * cout + o] = w[o * k + i];
            }
        }
        Self {
            k,
            cout,
            bias: b.to_vec(),
            weights: Weights::Plain(t),
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn panels(w: &[f32], b: &[f32], cout: usize, k: usize) -> Self {
        assert_eq!(w.len(), cout * k, "pointwise weight is not cout × k");
        assert_eq!(b.len(), cout, "pointwise bias is not cout");
        let n = cout.div_ceil(PANEL);
        let mut p = vec![0f32; n * k * PANEL];
        let mut bias = vec![0f32; n * PANEL];
        for o in 0..cout {
            let (panel, lane) = (o / PANEL, o % PANEL);
            for i in 0..k {
                p[(panel * k + i) * PANEL + lane] = w[o * k + i];
            }
            bias[o] = b[o];
        }
        Self {
            k,
            cout,
            bias,
            weights: Weights::Panels(p),
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
            #[cfg(target_arch = "x86_64")]
            Weights::Panels(p) => {
                // SAFETY: panels were only built where AVX-512F was detected;
                // every read was bounds-checked above.
                unsafe { self.run_panels(p, x, g, m, out, relu, residual) }
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
            crate::model::ops::gemm_tile(
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
    /// AVX-512F must be available; `x` is m × k, `out` (and `residual`) m × cout.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_panels(
        &self,
        panels: &[f32],
        x: &[f32],
        g: &Gather,
        m: usize,
        out: &mut [f32],
        relu: bool,
        residual: Option<&[f32]>,
    ) {
        let (k, cout) = (self.k, self.cout);
        let res = residual.map_or(std::ptr::null(), |r| r.as_ptr());
        let mut p0 = 0;
        while p0 < m {
            let rows = (m - p0).min(MR);
            for j in 0..cout.div_ceil(PANEL) {
                let o0 = j * PANEL;
                let valid = (cout - o0).min(PANEL);
                let masks = [lane_mask(valid), lane_mask(valid.saturating_sub(16))];
                let args = Tile {
                    x: unsafe { x.as_ptr().add(p0 * g.stride) },
                    stride: g.stride,
                    segs: g.segs,
                    panel: unsafe { panels.as_ptr().add(j * k * PANEL) },
                    bias: unsafe { self.bias.as_ptr().add(o0) },
                    out: unsafe { out.as_mut_ptr().add(p0 * cout + o0) },
                    ld: cout,
                    masks,
                    relu,
                    res: if res.is_null() {
                        res
                    } else {
                        unsafe { res.add(p0 * cout + o0) }
                    },
                };
                // SAFETY: rows ≤ MR pixels from p0 and `valid` channels from
                // o0 lie inside x, out and the panel.
                unsafe {
                    if valid > 16 {
                        by_rows::<2>(rows, &args)
                    } else {
                        by_rows::<1>(rows, &args)
                    }
                }
            }
            p0 += rows;
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn lane_mask(lanes: usize) -> u16 {
    if lanes >= 16 {
        0xFFFF
    } else {
        ((1u32 << lanes) - 1) as u16
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
/// pixel (and, for out/res, first channel); output rows of `ld` floats.
#[cfg(target_arch = "x86_64")]
struct Tile<'a> {
    x: *const f32,
    stride: usize,
    segs: &'a [(usize, usize)],
    panel: *const f32,
    bias: *const f32,
    out: *mut f32,
    ld: usize,
    masks: [u16; 2],
    relu: bool,
    res: *const f32,
}

/// Picks the tile height at compile time so the accumulators stay in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn by_rows<const NV: usize>(rows: usize, t: &Tile<'_>) {
    // SAFETY: forwarded.
    unsafe {
        match rows {
            14 => tile::<14, NV>(t),
            13 => tile::<13, NV>(t),
            12 => tile::<12, NV>(t),
            11 => tile::<11, NV>(t),
            10 => tile::<10, NV>(t),
            9 => tile::<9, NV>(t),
            8 => tile::<8, NV>(t),
            7 => tile::<7, NV>(t),
            6 => tile::<6, NV>(t),
            5 => tile::<5, NV>(t),
            4 => tile::<4, NV>(t),
            3 => tile::<3, NV>(t),
            2 => tile::<2, NV>(t),
            1 => tile::<1, NV>(t),
            _ => unreachable!("tile height {rows} > {MR}"),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const ROWS: usize, const NV: usize>(t: &Tile<'_>) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); NV]; ROWS];
    let mut wr = t.panel;
    for &(off, len) in t.segs {
        // SAFETY: the caller checked every segment of every pixel in bounds.
        let xs = unsafe { t.x.add(off) };
        for i in 0..len {
            // SAFETY: one panel row (PANEL floats, zero-padded) per input.
            let mut w = [_mm512_setzero_ps(); NV];
            for (v, wv) in w.iter_mut().enumerate() {
                *wv = unsafe { _mm512_loadu_ps(wr.add(16 * v)) };
            }
            wr = unsafe { wr.add(PANEL) };
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // SAFETY: pixel r < ROWS of the tile, input i of the segment.
                let a = _mm512_set1_ps(unsafe { *xs.add(r * t.stride + i) });
                for v in 0..NV {
                    acc_r[v] = _mm512_fmadd_ps(a, w[v], acc_r[v]);
                }
            }
        }
    }
    let zero = _mm512_setzero_ps();
    for v in 0..NV {
        // SAFETY: the bias is padded to whole panels.
        let b = unsafe { _mm512_loadu_ps(t.bias.add(16 * v)) };
        for (r, acc_r) in acc.iter().enumerate() {
            let mut y = _mm512_add_ps(acc_r[v], b);
            if t.relu {
                y = _mm512_max_ps(y, zero);
            }
            let at = r * t.ld + 16 * v;
            if !t.res.is_null() {
                // SAFETY: masked to the valid channels of this pixel.
                y = _mm512_add_ps(y, unsafe {
                    _mm512_maskz_loadu_ps(t.masks[v], t.res.add(at))
                });
            }
            // SAFETY: as above.
            unsafe { _mm512_mask_storeu_ps(t.out.add(at), t.masks[v], y) };
        }
    }
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

    /// Every tile height and panel width, with ReLU and a residual, against a
    /// plain f64 sum; both layouts.
    #[test]
    fn matches_the_definition_for_awkward_shapes() {
        for (m, k, cout) in [
            (1, 3, 1),
            (13, 27, 15),
            (29, 24, 144),
            (40, 160, 960),
            (17, 96, 24),
        ] {
            let (w, b, x, r) = (
                lcg(cout * k, 1),
                lcg(cout, 2),
                lcg(m * k, 3),
                lcg(m * cout, 4),
            );
            let want: Vec<f32> = reference(&w, &b, &x, cout, k)
                .iter()
                .zip(&r)
                .map(|(v, r)| v.max(0.0) + r)
                .collect();
            for pw in [
                Pointwise::new(&w, &b, cout, k),
                Pointwise::plain(&w, &b, cout, k),
            ] {
                let mut got = vec![f32::NAN; m * cout];
                pw.run(&x, &mut got, true, Some(&r));
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(err < 1e-4, "m {m} k {k} cout {cout}: max error {err}");
            }
        }
    }
}
