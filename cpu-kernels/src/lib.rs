//! argus's CPU inference kernels, apart from the daemon so that every build
//! profile optimises them (the workspace's `Cargo.toml` sets opt-level 3 for
//! this crate in dev and test builds too).
//!
//! - [`nhwc`]: the layers of the CPU models in NHWC layout (1x1, depthwise
//!   and dense 3x3 convolutions, 2x2 upsampling, pooling) over pixel rows.
//! - [`simd`]: which instruction set's kernels run on this CPU.
//! - [`avx512`]: the AVX-512 1x1 convolution of the NCHW ops.
//! - [`gemm_tile`]: one single-threaded GEMM tile through the `gemm` crate.
//! - [`resize`]: anti-aliased resampling of packed RGB8 images.
//!
//! The crate knows nothing of models, candle, HTTP or the API families: its
//! inputs are slices of `f32` (or of RGB8 bytes, for [`resize`]) and its
//! outputs are [`nhwc::Map`]s or slices.

pub mod avx512;
pub mod nhwc;
pub mod resize;
pub mod simd;

/// `dst[.., c0..c0+n]` (rows of stride `dst_rs`) = lhs[m×k] · rhs[.., c0..c0+n]
/// (rows of stride `rhs_rs`), single-threaded; the caller parallelises.
///
/// # Panics
/// When `lhs` holds fewer than `m × k` values.
///
/// # Safety
/// - `dst` is valid for writes of `m` rows of stride `dst_rs`, `rhs` for
///   reads of `k` rows of stride `rhs_rs`, each row `n` columns long from
///   where the pointer points (so `n <= dst_rs` and `n <= rhs_rs`);
/// - the written `m × n` block of `dst` overlaps neither `lhs` nor `rhs`,
///   and no other thread reads or writes it during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_tile(
    dst: *mut f32,
    dst_rs: usize,
    lhs: &[f32],
    rhs: *const f32,
    rhs_rs: usize,
    m: usize,
    k: usize,
    n: usize,
) {
    assert!(
        lhs.len() >= m * k,
        "gemm_tile: lhs holds {} < {m}×{k}",
        lhs.len()
    );
    // SAFETY: forwarded from the caller's contract; lhs is a live m×k slice.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs,
            1,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
