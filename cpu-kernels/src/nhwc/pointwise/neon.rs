//! The NEON tile: up to 6 pixels × 16 output channels (four q vectors):
//! 24 accumulators and the panel row's four vectors of the 32 registers.
//! NEON has no masked loads or stores, so a panel's padding channels are
//! computed in registers and only the valid lanes are written back.

use std::arch::aarch64::*;

use super::Tile;

const PANEL: usize = 16;

/// Runs one tile of `rows` (1..=6) pixels.
///
/// # Safety
/// NEON is available; the tile's operands are in bounds (see `Tile`).
#[target_feature(enable = "neon")]
pub(super) unsafe fn tile(rows: usize, t: &Tile<'_>) {
    // SAFETY: forwarded.
    unsafe {
        match rows {
            6 => kernel::<6>(t),
            5 => kernel::<5>(t),
            4 => kernel::<4>(t),
            3 => kernel::<3>(t),
            2 => kernel::<2>(t),
            1 => kernel::<1>(t),
            _ => unreachable!("tile height {rows} > 6"),
        }
    }
}

#[target_feature(enable = "neon")]
#[inline]
unsafe fn kernel<const ROWS: usize>(t: &Tile<'_>) {
    let mut acc = [[vdupq_n_f32(0.0); 4]; ROWS];
    let mut wr = t.panel;
    for &(off, len) in t.segs {
        // SAFETY: the caller checked every segment of every pixel in bounds.
        let xs = unsafe { t.x.add(off) };
        for i in 0..len {
            // SAFETY: one panel row (PANEL floats, zero-padded) per input.
            let w: [float32x4_t; 4] = std::array::from_fn(|v| unsafe { vld1q_f32(wr.add(4 * v)) });
            wr = unsafe { wr.add(PANEL) };
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // SAFETY: pixel r < ROWS of the tile, input i of the segment.
                let a = unsafe { *xs.add(r * t.stride + i) };
                for v in 0..4 {
                    acc_r[v] = vfmaq_n_f32(acc_r[v], w[v], a);
                }
            }
        }
    }
    let zero = vdupq_n_f32(0.0);
    // Consumed by value, never indexed at run time (see the AVX2 kernel).
    for (r, acc_r) in acc.into_iter().enumerate() {
        for (v, a) in acc_r.into_iter().enumerate() {
            let lanes = t.valid.saturating_sub(4 * v).min(4);
            if lanes == 0 {
                break;
            }
            // SAFETY: the bias is padded to whole panels.
            let mut y = vaddq_f32(a, unsafe { vld1q_f32(t.bias.add(4 * v)) });
            if t.relu {
                y = vmaxq_f32(y, zero);
            }
            let at = r * t.ld + 4 * v;
            // SAFETY: whole vectors where all four channels are valid; lane
            // by lane otherwise, never past the valid channels.
            unsafe {
                if lanes == 4 {
                    if !t.res.is_null() {
                        y = vaddq_f32(y, vld1q_f32(t.res.add(at)));
                    }
                    vst1q_f32(t.out.add(at), y);
                } else {
                    let mut tmp = [0f32; 4];
                    vst1q_f32(tmp.as_mut_ptr(), y);
                    for (l, v) in tmp.iter().enumerate().take(lanes) {
                        let add = if t.res.is_null() {
                            0.0
                        } else {
                            *t.res.add(at + l)
                        };
                        *t.out.add(at + l) = v + add;
                    }
                }
            }
        }
    }
}
