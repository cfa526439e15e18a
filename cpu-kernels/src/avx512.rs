//! AVX-512 kernel for 1x1 convolutions (x86-64 with AVX-512F only; callers
//! check [`available`] and fall back to the portable GEMM path otherwise).
//!
//! `out[o, j] = act(bias[o] + Σ_c w[o, c] · x[c, j])` with x and out row-major
//! over j (the H×W plane). Activations are already contiguous along j, so no
//! packing is needed: a register block of R output channels × V vectors of 16
//! columns accumulates over all input channels, broadcasting one weight per
//! (o, c) from a transposed weight matrix, then adds bias, applies ReLU and
//! adds the residual (if any) and stores, all while the block is in registers.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output channels per register block.
const R: usize = 8;
/// 16-float vectors per register block (columns = 16 × V).
const V: usize = 3;
const COLS: usize = 16 * V;

/// Row strides, in floats, of the input (and of the output and residual).
#[derive(Debug, Clone, Copy)]
pub struct Strides {
    pub x: usize,
    pub out: usize,
}

pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            std::is_x86_feature_detected!("avx512f")
                && std::env::var_os("ARGUS_NO_AVX512").is_none()
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Columns `j0..j1` of `out[cout × hw] = act(wt^T · x + bias) + residual`,
/// where `wt` is the weight transposed to [cin × cout].
///
/// # Safety
/// AVX-512F must be available; `x` holds cin rows of `strides.x` floats,
/// `out` (and `residual`, if any) cout rows of `strides.out`; `wt` cin × cout,
/// `bias` cout; columns `j0..j1` exist in every row of x and out. Concurrent callers must
/// use disjoint column ranges of `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn pointwise_cols(
    out: *mut f32,
    x: *const f32,
    wt: *const f32,
    bias: *const f32,
    cin: usize,
    cout: usize,
    strides: Strides,
    j0: usize,
    j1: usize,
    relu: bool,
    residual: Option<*const f32>,
) {
    let mut j = j0;
    while j < j1 {
        let n = (j1 - j).min(COLS);
        let mut masks = [0u16; V];
        for (v, m) in masks.iter_mut().enumerate() {
            let lanes = n.saturating_sub(16 * v).min(16);
            *m = if lanes == 16 {
                0xFFFF
            } else {
                ((1u32 << lanes) - 1) as u16
            };
        }
        let mut o = 0;
        while o + R <= cout {
            // SAFETY: forwarded contract; o + R <= cout and j + n <= hw.
            unsafe {
                block::<R>(
                    out, x, wt, bias, cin, cout, strides, o, j, &masks, relu, residual,
                )
            };
            o += R;
        }
        while o < cout {
            // SAFETY: as above, one row.
            unsafe {
                block::<1>(
                    out, x, wt, bias, cin, cout, strides, o, j, &masks, relu, residual,
                )
            };
            o += 1;
        }
        j += n;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn block<const RB: usize>(
    out: *mut f32,
    x: *const f32,
    wt: *const f32,
    bias: *const f32,
    cin: usize,
    cout: usize,
    strides: Strides,
    o0: usize,
    j: usize,
    masks: &[u16; V],
    relu: bool,
    residual: Option<*const f32>,
) {
    let mut acc = [[_mm512_setzero_ps(); V]; RB];
    for c in 0..cin {
        // SAFETY: row c of x, columns j..j+16V masked to the valid lanes.
        let xr = unsafe { x.add(c * strides.x + j) };
        let mut xv = [_mm512_setzero_ps(); V];
        for v in 0..V {
            xv[v] = unsafe { _mm512_maskz_loadu_ps(masks[v], xr.add(16 * v)) };
        }
        // SAFETY: wt row c, columns o0..o0+RB <= cout.
        let wr = unsafe { wt.add(c * cout + o0) };
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let w = _mm512_set1_ps(unsafe { *wr.add(r) });
            for v in 0..V {
                acc_r[v] = _mm512_fmadd_ps(w, xv[v], acc_r[v]);
            }
        }
    }
    let zero = _mm512_setzero_ps();
    for (r, acc_r) in acc.iter().enumerate() {
        let b = _mm512_set1_ps(unsafe { *bias.add(o0 + r) });
        for v in 0..V {
            let mut y = _mm512_add_ps(acc_r[v], b);
            if relu {
                y = _mm512_max_ps(y, zero);
            }
            if let Some(res) = residual {
                // SAFETY: the residual has out's shape.
                y = _mm512_add_ps(y, unsafe {
                    _mm512_maskz_loadu_ps(masks[v], res.add((o0 + r) * strides.out + j + 16 * v))
                });
            }
            // SAFETY: out row o0 + r < cout, masked columns inside j..j1 <= hw.
            unsafe {
                _mm512_mask_storeu_ps(out.add((o0 + r) * strides.out + j + 16 * v), masks[v], y)
            };
        }
    }
}
