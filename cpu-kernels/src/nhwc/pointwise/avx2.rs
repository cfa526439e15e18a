//! The AVX2/FMA tile: up to 6 pixels × 16 output channels (two ymm
//! vectors), the classic 6×16 shape for 16 registers: 12 accumulators, the
//! panel row's two vectors and one broadcast.

use std::arch::x86_64::*;

use super::Tile;
use crate::simd::avx2_lanes as lane_mask;

const PANEL: usize = 16;

/// Runs one tile of `rows` (1..=6) pixels.
///
/// # Safety
/// AVX2 and FMA are available; the tile's operands are in bounds (see `Tile`).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile(rows: usize, t: &Tile<'_>) {
    // SAFETY: forwarded.
    unsafe {
        if t.valid > 8 {
            by_rows::<2>(rows, t)
        } else {
            by_rows::<1>(rows, t)
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn by_rows<const NV: usize>(rows: usize, t: &Tile<'_>) {
    // SAFETY: forwarded.
    unsafe {
        match rows {
            6 => kernel::<6, NV>(t),
            5 => kernel::<5, NV>(t),
            4 => kernel::<4, NV>(t),
            3 => kernel::<3, NV>(t),
            2 => kernel::<2, NV>(t),
            1 => kernel::<1, NV>(t),
            _ => unreachable!("tile height {rows} > 6"),
        }
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn kernel<const ROWS: usize, const NV: usize>(t: &Tile<'_>) {
    let lanes = [t.valid.min(8), t.valid.saturating_sub(8).min(8)];
    let mut acc = [[_mm256_setzero_ps(); NV]; ROWS];
    let mut wr = t.panel;
    for &(off, len) in t.segs {
        // SAFETY: the caller checked every segment of every pixel in bounds.
        let xs = unsafe { t.x.add(off) };
        for i in 0..len {
            // SAFETY: one panel row (PANEL floats, zero-padded) per input.
            let mut w = [_mm256_setzero_ps(); NV];
            for (v, wv) in w.iter_mut().enumerate() {
                *wv = unsafe { _mm256_loadu_ps(wr.add(8 * v)) };
            }
            wr = unsafe { wr.add(PANEL) };
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // SAFETY: pixel r < ROWS of the tile, input i of the segment.
                let a = _mm256_set1_ps(unsafe { *xs.add(r * t.stride + i) });
                for v in 0..NV {
                    acc_r[v] = _mm256_fmadd_ps(a, w[v], acc_r[v]);
                }
            }
        }
    }
    let zero = _mm256_setzero_ps();
    let masks = [lane_mask(lanes[0]), lane_mask(lanes[1])];
    // The accumulators are consumed by value, never indexed at run time:
    // a run-time index keeps the array in memory, and LLVM then stores every
    // accumulator to the stack on every step of the loop above.
    for (r, acc_r) in acc.into_iter().enumerate() {
        for (v, a) in acc_r.into_iter().enumerate() {
            // SAFETY: the bias is padded to whole panels.
            let mut y = _mm256_add_ps(a, unsafe { _mm256_loadu_ps(t.bias.add(8 * v)) });
            if t.relu {
                y = _mm256_max_ps(y, zero);
            }
            let at = r * t.ld + 8 * v;
            // SAFETY: whole vectors only where all 8 channels are valid,
            // masked to the valid channels otherwise.
            unsafe {
                if lanes[v] == 8 {
                    if !t.res.is_null() {
                        y = _mm256_add_ps(y, _mm256_loadu_ps(t.res.add(at)));
                    }
                    _mm256_storeu_ps(t.out.add(at), y);
                } else {
                    if !t.res.is_null() {
                        y = _mm256_add_ps(y, _mm256_maskload_ps(t.res.add(at), masks[v]));
                    }
                    _mm256_maskstore_ps(t.out.add(at), masks[v], y);
                }
            }
        }
    }
}
