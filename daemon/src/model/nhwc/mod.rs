//! CPU inference in NHWC layout: the layers of CenterFace as kernels over
//! pixel rows, with the weights packed once at load.
//!
//! NCHW suits candle's generic ops, but on a CPU the MobileNetV2 layers want
//! channels innermost: a 1x1 convolution becomes a GEMM over pixel rows that
//! needs no packing of the activations, and a depthwise convolution becomes
//! vector multiply-adds across channels. Row bands also let an inverted
//! residual block run expand → depthwise → project while the six-times-wider
//! hidden rows are still in cache (see `centerface::InvertedResidual`).

mod conv;
pub mod depthwise;
pub mod pointwise;

pub use conv::{Dense3x3, Upsample2x2};
pub use depthwise::Depthwise;
pub use pointwise::Pointwise;

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

/// One image's feature map, `h × w × c` row-major (NHWC without the N).
#[derive(Debug, Clone, PartialEq)]
pub struct Map {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<f32>,
}

impl Map {
    pub fn zeros(h: usize, w: usize, c: usize) -> Self {
        Self {
            h,
            w,
            c,
            data: vec![0f32; h * w * c],
        }
    }

    /// Floats in one row.
    pub fn row_len(&self) -> usize {
        self.w * self.c
    }

    /// Rows `r` as one slice.
    pub fn rows(&self, r: Range<usize>) -> &[f32] {
        &self.data[r.start * self.row_len()..r.end * self.row_len()]
    }

    /// The map in NCHW order (`c × h × w`).
    pub fn to_chw(&self) -> Vec<f32> {
        let hw = self.h * self.w;
        let mut out = vec![0f32; self.data.len()];
        for (p, px) in self.data.chunks_exact(self.c).enumerate() {
            for (ch, v) in px.iter().enumerate() {
                out[ch * hw + p] = *v;
            }
        }
        out
    }

    /// From NCHW order (`c × h × w`).
    pub fn from_chw(data: &[f32], c: usize, h: usize, w: usize) -> Self {
        assert_eq!(data.len(), c * h * w, "from_chw: wrong size");
        let hw = h * w;
        let mut m = Self::zeros(h, w, c);
        for (p, px) in m.data.chunks_exact_mut(c).enumerate() {
            for (ch, v) in px.iter_mut().enumerate() {
                *v = data[ch * hw + p];
            }
        }
        m
    }
}

/// Splits `out`'s rows into one contiguous range per thread (each a
/// multiple of `unit` rows but the last) and runs `f(rows, their data)` in
/// parallel. Contiguous ranges keep halo work (rows a band must recompute at
/// its edges) to one band edge per thread.
pub fn par_rows(out: &mut Map, unit: usize, f: impl Fn(Range<usize>, &mut [f32]) + Sync) {
    let units = out.h.div_ceil(unit);
    let tasks = rayon::current_num_threads().clamp(1, units.max(1));
    let per = units.div_ceil(tasks) * unit;
    let row_len = out.row_len();
    if row_len == 0 || out.h == 0 {
        return;
    }
    let h = out.h;
    out.data
        .par_chunks_mut(per * row_len)
        .enumerate()
        .for_each(|(i, chunk)| {
            let r0 = i * per;
            f(r0..(r0 + per).min(h), chunk)
        });
}

/// A 1x1 convolution over a whole map, split over threads by rows.
pub fn pointwise_map(pw: &Pointwise, x: &Map, relu: bool, residual: Option<&Map>) -> Map {
    assert_eq!(x.c, pw.k(), "pointwise: input channels");
    let mut out = Map::zeros(x.h, x.w, pw.cout());
    par_rows(&mut out, 1, |rows, dst| {
        pw.run(
            x.rows(rows.clone()),
            dst,
            relu,
            residual.map(|r| r.rows(rows.clone())),
        )
    });
    out
}

thread_local! {
    static SCRATCH: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
    static ZEROS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with two per-thread scratch buffers of the given lengths (their
/// contents are left over from earlier calls: write before reading) and a
/// zero row of `zeros` floats. Reusing them keeps large allocations, and the
/// page faults of fresh memory, out of every layer.
pub fn with_scratch<R>(
    lens: [usize; 2],
    zeros: usize,
    f: impl FnOnce(&mut [f32], &mut [f32], &[f32]) -> R,
) -> R {
    SCRATCH.with(|s| {
        ZEROS.with(|z| {
            let mut s = s.borrow_mut();
            let mut z = z.borrow_mut();
            if z.len() < zeros {
                z.resize(zeros, 0.0);
            }
            let [a, b] = &mut *s;
            for (buf, &n) in [&mut *a, &mut *b].into_iter().zip(&lens) {
                if buf.len() < n {
                    buf.resize(n, 0.0);
                }
            }
            f(&mut a[..lens[0]], &mut b[..lens[1]], &z[..zeros])
        })
    })
}
