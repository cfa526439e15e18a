//! The AVX-512F tile: up to 14 pixels × 32 output channels (two zmm
//! vectors), masked to the panel's valid channels on store.

use std::arch::x86_64::*;

use super::Tile;

/// Runs one tile of `rows` (1..=14) pixels.
///
/// # Safety
/// AVX-512F is available; the tile's operands are in bounds (see `Tile`).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile(rows: usize, t: &Tile<'_>) {
    // SAFETY: forwarded.
    unsafe {
        if t.valid > 16 {
            by_rows::<2>(rows, t)
        } else {
            by_rows::<1>(rows, t)
        }
    }
}

/// Picks the tile height at compile time so the accumulators stay in registers.
#[target_feature(enable = "avx512f")]
unsafe fn by_rows<const NV: usize>(rows: usize, t: &Tile<'_>) {
    // SAFETY: forwarded.
    unsafe {
        match rows {
            14 => kernel::<14, NV>(t),
            13 => kernel::<13, NV>(t),
            12 => kernel::<12, NV>(t),
            11 => kernel::<11, NV>(t),
            10 => kernel::<10, NV>(t),
            9 => kernel::<9, NV>(t),
            8 => kernel::<8, NV>(t),
            7 => kernel::<7, NV>(t),
            6 => kernel::<6, NV>(t),
            5 => kernel::<5, NV>(t),
            4 => kernel::<4, NV>(t),
            3 => kernel::<3, NV>(t),
            2 => kernel::<2, NV>(t),
            1 => kernel::<1, NV>(t),
            _ => unreachable!("tile height {rows} > 14"),
        }
    }
}

fn lane_mask(lanes: usize) -> u16 {
    if lanes >= 16 {
        0xFFFF
    } else {
        ((1u32 << lanes) - 1) as u16
    }
}

#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn kernel<const ROWS: usize, const NV: usize>(t: &Tile<'_>) {
    const PANEL: usize = 32;
    let masks = [lane_mask(t.valid), lane_mask(t.valid.saturating_sub(16))];
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
    // Consumed by value, never indexed at run time (see the AVX2 kernel).
    for (r, acc_r) in acc.into_iter().enumerate() {
        for (v, a) in acc_r.into_iter().enumerate() {
            // SAFETY: the bias is padded to whole panels.
            let mut y = _mm512_add_ps(a, unsafe { _mm512_loadu_ps(t.bias.add(16 * v)) });
            if t.relu {
                y = _mm512_max_ps(y, zero);
            }
            let at = r * t.ld + 16 * v;
            if !t.res.is_null() {
                // SAFETY: masked to the valid channels of this pixel.
                y = _mm512_add_ps(y, unsafe { _mm512_maskz_loadu_ps(masks[v], t.res.add(at)) });
            }
            // SAFETY: as above.
            unsafe { _mm512_mask_storeu_ps(t.out.add(at), masks[v], y) };
        }
    }
}
