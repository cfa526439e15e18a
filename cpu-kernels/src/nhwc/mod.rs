//! CPU inference in NHWC layout: the layers of CenterFace, the cell nets and
//! the skin models (face mesh, iris, age) as kernels over
//! pixel rows, with the weights packed once at load.
//!
//! NCHW suits candle's generic ops, but on a CPU the MobileNetV2 layers want
//! channels innermost: a 1x1 convolution becomes a GEMM over pixel rows that
//! needs no packing of the activations, and a depthwise convolution becomes
//! vector multiply-adds across channels. Row bands also let an inverted
//! residual block run expand → depthwise → project while the six-times-wider
//! hidden rows are still in cache (as the daemon's CenterFace does).

mod conv;
pub mod depthwise;
pub mod pointwise;
pub mod pooling;

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

    /// A map whose contents are left over from an earlier, dropped map (or
    /// zeros): for outputs that are written in full. Recycling the buffers
    /// saves zeroing them and the page faults of fresh memory on every layer.
    pub fn recycled(h: usize, w: usize, c: usize) -> Self {
        Self {
            h,
            w,
            c,
            data: pool::take(h * w * c),
        }
    }

    /// A copy with a one-pixel zero border.
    pub fn padded(&self) -> Self {
        let (pw, rl) = (self.w + 2, self.row_len());
        let mut p = Self::recycled(self.h + 2, pw, self.c);
        let prl = p.row_len();
        p.data[..prl].fill(0.0);
        p.data[(self.h + 1) * prl..].fill(0.0);
        for y in 0..self.h {
            let row = &mut p.data[(y + 1) * prl..][..prl];
            row[..self.c].fill(0.0);
            row[prl - self.c..].fill(0.0);
            row[self.c..prl - self.c].copy_from_slice(&self.data[y * rl..][..rl]);
        }
        p
    }

    /// An interleaved 8-bit image (`h × w × c` bytes) as f32 (values kept
    /// in 0..=255) with a one-pixel zero border.
    pub fn padded_from_hwc_u8(data: &[u8], c: usize, h: usize, w: usize) -> Self {
        assert_eq!(data.len(), c * h * w, "padded_from_hwc_u8: wrong size");
        let mut p = Self::recycled(h + 2, w + 2, c);
        let prl = p.row_len();
        par_rows(&mut p, 1, |rows, dst| {
            for (i, y) in rows.enumerate() {
                let row = &mut dst[i * prl..][..prl];
                if y == 0 || y == h + 1 {
                    row.fill(0.0);
                    continue;
                }
                row[..c].fill(0.0);
                row[prl - c..].fill(0.0);
                let src = &data[(y - 1) * w * c..][..w * c];
                for (d, s) in row[c..prl - c].iter_mut().zip(src) {
                    *d = f32::from(*s);
                }
            }
        });
        p
    }

    /// An NCHW image (`c × h × w`) as NHWC with a one-pixel zero border.
    pub fn padded_from_chw(data: &[f32], c: usize, h: usize, w: usize) -> Self {
        assert_eq!(data.len(), c * h * w, "padded_from_chw: wrong size");
        let mut p = Self::recycled(h + 2, w + 2, c);
        let prl = p.row_len();
        p.data[..prl].fill(0.0);
        p.data[(h + 1) * prl..].fill(0.0);
        for y in 1..=h {
            p.data[y * prl..][..c].fill(0.0);
            p.data[(y + 1) * prl - c..][..c].fill(0.0);
        }
        for ch in 0..c {
            for y in 0..h {
                let src = &data[(ch * h + y) * w..][..w];
                let row = &mut p.data[(y + 1) * prl + c..];
                for (x, v) in src.iter().enumerate() {
                    row[x * c + ch] = *v;
                }
            }
        }
        p
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
/// Inside [`whole_images`], one task: the whole map on this thread.
pub fn par_rows(out: &mut Map, unit: usize, f: impl Fn(Range<usize>, &mut [f32]) + Sync) {
    let units = out.h.div_ceil(unit);
    let row_len = out.row_len();
    if row_len == 0 || out.h == 0 {
        return;
    }
    let h = out.h;
    if WHOLE_IMAGE.get() {
        return f(0..h, &mut out.data);
    }
    let tasks = rayon::current_num_threads().clamp(1, units.max(1));
    let per = units.div_ceil(tasks) * unit;
    out.data
        .par_chunks_mut(per * row_len)
        .enumerate()
        .for_each(|(i, chunk)| {
            let r0 = i * per;
            f(r0..(r0 + per).min(h), chunk)
        });
}

thread_local! {
    static WHOLE_IMAGE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f(i)` for images `0..n` and returns the results in order, on the
/// rayon pool. As many images as there are threads run at once, each whole
/// on one thread (its layers' [`par_rows`] loops unsplit); what is left
/// over, fewer images than threads, runs one at a time with each layer
/// split over the threads.
///
/// Splitting every layer of one image over the threads makes each layer
/// wait for its slowest part: on a machine where request handling shares
/// the cores, one inference thread descheduled for a time slice stalls the
/// other at the next layer's end (measured on 2 vCPUs under load: the two
/// threads 37% and 29% busy, the machine 6% idle). Whole images per
/// thread have no such barrier, and no halo rows at band edges.
pub fn whole_images<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let threads = rayon::current_num_threads().max(1);
    let whole = if threads > 1 {
        n / threads * threads
    } else {
        0
    };
    let mut out: Vec<R> = on_pool(|| {
        (0..whole)
            .into_par_iter()
            .map(|i| {
                // Reset on the way out, by panic too: the pool's threads live on.
                struct Reset(bool);
                impl Drop for Reset {
                    fn drop(&mut self) {
                        WHOLE_IMAGE.set(self.0);
                    }
                }
                let _reset = Reset(WHOLE_IMAGE.replace(true));
                f(i)
            })
            .collect()
    });
    out.extend((whole..n).map(|i| on_pool(|| f(i))));
    out
}

/// Runs `f` on a thread of the rayon pool. The layers' parallel loops are
/// then joins among the pool's own threads; called from outside the pool,
/// every loop is a job injected from outside, and the caller sleeps and is
/// woken again around each of the model's ~40 layers.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let mut out = None;
    rayon::scope(|_| out = Some(f()));
    out.expect("rayon::scope runs its body")
}

/// A 1x1 convolution over a whole map, split over threads by rows.
pub fn pointwise_map(pw: &Pointwise, x: &Map, relu: bool, residual: Option<&Map>) -> Map {
    assert_eq!(x.c, pw.k(), "pointwise: input channels");
    let mut out = Map::recycled(x.h, x.w, pw.cout());
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

/// The mean of each channel over all pixels (global average pooling).
pub fn global_mean(x: &Map) -> Vec<f32> {
    let mut mean = vec![0f32; x.c];
    for px in x.data.chunks_exact(x.c) {
        for (m, v) in mean.iter_mut().zip(px) {
            *m += v;
        }
    }
    let n = (x.h * x.w) as f32;
    mean.iter_mut().for_each(|m| *m /= n);
    mean
}

impl Drop for Map {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.data));
    }
}

/// Buffers of dropped maps, for [`Map::recycled`].
///
/// A buffer is handed out again only for a map of exactly its length:
/// successive frames of one size ask for the same lengths in the same order,
/// so after the first frame no layer allocates, and nothing is ever grown
/// (growing would copy) or zero-filled.
mod pool {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Buffers kept: more than one forward pass drops, few enough that an
    /// appliance switching input sizes does not hoard memory (oldest go
    /// first), and at most 256 MB in all. One 640x640 frame's maps come to
    /// about 30 MB, a 1280x736 frame's to about 100 MB.
    const MAX: usize = 96;
    const MAX_FLOATS: usize = 64 << 20;
    /// Smaller buffers are cheaper to allocate than to pool.
    const MIN_LEN: usize = 16 * 1024;

    static POOL: Mutex<VecDeque<Vec<f32>>> = Mutex::new(VecDeque::new());

    pub fn take(n: usize) -> Vec<f32> {
        if n >= MIN_LEN {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = pool.iter().position(|v| v.len() == n) {
                if let Some(v) = pool.remove(i) {
                    return v;
                }
            }
        }
        vec![0f32; n]
    }

    pub fn give(v: Vec<f32>) {
        if v.len() < MIN_LEN {
            return;
        }
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        pool.push_back(v);
        while pool.len() > MAX || pool.iter().map(Vec::len).sum::<usize>() > MAX_FLOATS {
            pool.pop_front();
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_images_keep_order_and_run_each_image_unsplit() {
        let threads = rayon::current_num_threads();
        for n in [0, 1, 2, 3, 5] {
            let got = whole_images(n, |i| {
                let mut m = Map::zeros(64, 2, 1);
                let tasks = std::sync::atomic::AtomicUsize::new(0);
                par_rows(&mut m, 1, |rows, dst| {
                    tasks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    for (r, v) in rows.zip(dst.chunks_exact_mut(2)) {
                        v.fill((i * 100 + r) as f32);
                    }
                });
                (i, tasks.into_inner(), m)
            });
            let whole = if threads > 1 {
                n / threads * threads
            } else {
                0
            };
            assert_eq!(got.len(), n);
            for (k, (i, tasks, m)) in got.into_iter().enumerate() {
                assert_eq!(i, k);
                let expect = if k < whole { 1 } else { threads.min(64) };
                assert_eq!(tasks, expect, "image {k} of {n}");
                let rows_right = m
                    .data
                    .chunks_exact(2)
                    .enumerate()
                    .all(|(r, v)| v == [(k * 100 + r) as f32; 2]);
                assert!(rows_right, "image {k} of {n}");
            }
        }
        // Outside, layers split again.
        let mut m = Map::zeros(64, 1, 1);
        let tasks = std::sync::atomic::AtomicUsize::new(0);
        par_rows(&mut m, 1, |_, _| {
            tasks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        assert_eq!(tasks.into_inner(), threads.min(64));
    }
}
