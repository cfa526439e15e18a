//! The NEON depthwise row: 4-channel groups, in runs of 8 interior
//! pixels at stride 1 (4 at stride 2) that share their loads: 9 weight
//! vectors + 8 accumulators + 1 input of the 32 q registers. Edge pixels
//! and channels past the last whole group take the portable loop.

use std::arch::aarch64::*;

use super::Depthwise;

/// # Safety
/// NEON is available; rows are `win × c`, `out` is `wout × c`.
pub(super) unsafe fn row(
    dw: &Depthwise,
    rows: [&[f32]; 3],
    win: usize,
    wout: usize,
    out: &mut [f32],
) {
    let full = dw.c / 4 * 4;
    let px = if dw.stride == 1 { 8 } else { 4 };
    let r = rows.map(|r| r.as_ptr());
    dw.sweep(rows, win, wout, out, full, px, |ox, wide, o| {
        // SAFETY: the CPU has the ISA (forwarded); `sweep` passes only
        // pixels (px of them when `wide`) that are all interior.
        unsafe {
            match (dw.stride, wide) {
                (1, true) => run::<8, 1>(dw, r, ox, full, o),
                (_, true) => run::<4, 2>(dw, r, ox, full, o),
                (1, false) => run::<1, 1>(dw, r, ox, full, o),
                _ => run::<1, 2>(dw, r, ox, full, o),
            }
        }
    });
}

/// Channels `0..full` of `PX` consecutive interior output pixels from `ox`,
/// stride `S`.
///
/// # Safety
/// NEON; every input column the run reads is inside the rows; `full`
/// is a multiple of 4 no greater than `c`.
#[target_feature(enable = "neon")]
unsafe fn run<const PX: usize, const S: usize>(
    dw: &Depthwise,
    r: [*const f32; 3],
    ox: usize,
    full: usize,
    out: *mut f32,
) {
    let c = dw.c;
    let (w, b) = (dw.w.as_ptr(), dw.b.as_ptr());
    let zero = vdupq_n_f32(dw.floor);
    let base = (ox * S - 1) * c;
    let cols = (PX - 1) * S + 3;
    let mut c0 = 0;
    while c0 < full {
        // SAFETY: tap rows of w hold c ≥ c0 + 4 floats.
        let wv: [float32x4_t; 9] = std::array::from_fn(|t| unsafe { vld1q_f32(w.add(t * c + c0)) });
        let mut acc = [unsafe { vld1q_f32(b.add(c0)) }; PX];
        for (dy, row) in r.iter().enumerate() {
            for j in 0..cols {
                // SAFETY: column ox·S - 1 + j is inside the row.
                let x = unsafe { vld1q_f32(row.add(base + j * c + c0)) };
                for (p, a) in acc.iter_mut().enumerate() {
                    if j >= p * S && j - p * S < 3 {
                        *a = vfmaq_f32(*a, x, wv[dy * 3 + j - p * S]);
                    }
                }
            }
        }
        for (p, a) in acc.iter().enumerate() {
            // SAFETY: output pixel ox + p < wout.
            unsafe { vst1q_f32(out.add((ox + p) * c + c0), vmaxq_f32(*a, zero)) };
        }
        c0 += 4;
    }
}
