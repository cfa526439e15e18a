//! The AVX-512F depthwise row: 16-channel groups, masked at the tail.

use std::arch::x86_64::*;

use super::Depthwise;

/// # Safety
/// AVX-512F must be available; rows are `win × c`, `out` is `wout × c`.
///
/// Pixels outer, channel groups inner: a pixel's channels are contiguous,
/// so the loads stream through memory in order; the nine weight vectors
/// of a group are re-read from L1 each time. (Holding the weights in
/// registers and sweeping the row per group measured 2x slower: every
/// load then lands on a different cache line.)
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn row(
    dw: &Depthwise,
    rows: [&[f32]; 3],
    win: usize,
    wout: usize,
    out: &mut [f32],
) {
    let (c, s) = (dw.c, dw.stride);
    let r = rows.map(|r| r.as_ptr());
    let (w, b) = (dw.w.as_ptr(), dw.b.as_ptr());
    let zero = _mm512_set1_ps(dw.floor);
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
                    run::<8, 1>(dw, r, ox, out.as_mut_ptr());
                } else {
                    run::<4, 2>(dw, r, ox, out.as_mut_ptr());
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
                                let wv = _mm512_maskz_loadu_ps(m, w.add((dy * 3 + dx) * c + c0));
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
#[target_feature(enable = "avx512f")]
unsafe fn run<const PX: usize, const S: usize>(
    dw: &Depthwise,
    r: [*const f32; 3],
    ox: usize,
    out: *mut f32,
) {
    let c = dw.c;
    let (w, b) = (dw.w.as_ptr(), dw.b.as_ptr());
    let zero = _mm512_set1_ps(dw.floor);
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
