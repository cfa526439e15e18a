//! Resampling of packed 8-bit RGB images (the letterbox's scaling step).
//!
//! Here rather than in the daemon because `fast_image_resize` is generic
//! over pixel types and instruction sets: its untyped `resize` instantiates
//! every pixel type's kernels (a million lines of LLVM IR, a quarter of
//! each of the daemon's two test-build compiles). Here, only the RGB8
//! kernels are instantiated (`resize_typed`), once, optimised.

use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::U8x3;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};

/// Why [`resize_rgb8`] refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResizeError(String);

impl std::fmt::Display for ResizeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ResizeError {}

/// `src`, packed RGB8 of `w`×`h` pixels (rows of `3w` bytes, no padding),
/// resampled to `rw`×`rh`; returns `3·rw·rh` bytes, packed the same way.
///
/// The filter is a bilinear (triangle) convolution whose support widens
/// with the reduction, so a shrunk image is anti-aliased where a nearest or
/// plain bilinear sample would alias.
///
/// # Errors
/// When a size is 0 or `src` is not `3·w·h` bytes long.
pub fn resize_rgb8(
    src: &[u8],
    (w, h): (u32, u32),
    (rw, rh): (u32, u32),
) -> Result<Vec<u8>, ResizeError> {
    if w == 0 || h == 0 || rw == 0 || rh == 0 {
        return Err(ResizeError(format!("cannot resize {w}x{h} to {rw}x{rh}")));
    }
    let need = (w as usize)
        .checked_mul(h as usize)
        .and_then(|n| n.checked_mul(3));
    if need != Some(src.len()) {
        return Err(ResizeError(format!(
            "a {w}x{h} RGB source is 3·{w}·{h} bytes, not {}",
            src.len()
        )));
    }
    let src =
        TypedImageRef::<U8x3>::from_buffer(w, h, src).map_err(|e| ResizeError(e.to_string()))?;
    let out_len = (rw as usize)
        .checked_mul(rh as usize)
        .and_then(|n| n.checked_mul(3))
        .ok_or_else(|| ResizeError(format!("a {rw}x{rh} RGB image does not fit in memory")))?;
    let mut out = vec![0u8; out_len];
    let mut dst = TypedImage::<U8x3>::from_buffer(rw, rh, &mut out)
        .map_err(|e| ResizeError(e.to_string()))?;
    let alg = ResizeAlg::Convolution(FilterType::Bilinear);
    Resizer::new()
        .resize_typed(&src, &mut dst, &ResizeOptions::new().resize_alg(alg))
        .map_err(|e| ResizeError(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_image_stays_flat_at_any_size() {
        let src: Vec<u8> = [200u8, 10, 30].repeat(200 * 100);
        for size in [(64, 32), (1, 1), (400, 7)] {
            let out = resize_rgb8(&src, (200, 100), size).unwrap();
            assert_eq!(out.len(), (size.0 * size.1 * 3) as usize);
            assert!(out.chunks_exact(3).all(|p| p == [200, 10, 30]), "{size:?}");
        }
    }

    #[test]
    fn shrinking_averages_instead_of_sampling() {
        // One-pixel stripes, black and white: any single sample of the
        // source is 0 or 255, an anti-aliased half-size image is grey.
        let src: Vec<u8> = (0..64 * 8)
            .flat_map(|i| [if i % 2 == 0 { 0u8 } else { 255 }; 3])
            .collect();
        let out = resize_rgb8(&src, (64, 8), (32, 4)).unwrap();
        assert!(out.iter().all(|&v| (100..=155).contains(&v)), "{out:?}");
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(resize_rgb8(&[0; 12], (2, 2), (0, 4)).is_err());
        assert!(resize_rgb8(&[0; 11], (2, 2), (4, 4)).is_err());
        assert!(resize_rgb8(&[], (0, 0), (4, 4)).is_err());
    }
}
