//! Letterboxing into the model's fixed input size.

use image::RgbImage;

use super::ImagingError;

/// A letterboxed model input: the image scaled by `scale` (aspect kept) into
/// the top-left corner of a `width`×`height` canvas, the rest zero.
pub struct Letterbox {
    pub pixels: Vec<u8>,
    pub scale: f32,
    pub resized_width: u32,
    pub resized_height: u32,
}

/// Where a `w`×`h` image lands in a `width`×`height` letterbox: the scale
/// (aspect kept) and the resized width and height. Host and device
/// letterboxing both place images by it.
pub fn fit(w: u32, h: u32, width: u32, height: u32) -> (f32, u32, u32) {
    let scale = (width as f32 / w as f32).min(height as f32 / h as f32);
    let rw = ((w as f32 * scale).round() as u32).clamp(1, width);
    let rh = ((h as f32 * scale).round() as u32).clamp(1, height);
    (scale, rw, rh)
}

/// `img` letterboxed into `width`×`height` RGB8 (placed by [`fit`], scaled
/// by [`argus_kernels::resize::resize_rgb8`]'s anti-aliased bilinear
/// convolution). `ImagingError::Corrupt` when `img` is empty, which
/// [`super::decode()`] never returns (it refuses images under its minimum
/// side).
pub fn letterbox(img: &RgbImage, width: u32, height: u32) -> Result<Letterbox, ImagingError> {
    let (w, h) = img.dimensions();
    let (scale, rw, rh) = fit(w, h, width, height);
    let resized = argus_kernels::resize::resize_rgb8(img.as_raw(), (w, h), (rw, rh))
        .map_err(|e| ImagingError::Corrupt(e.to_string()))?;
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    let row = (rw * 3) as usize;
    for (y, src_row) in resized.chunks_exact(row).enumerate() {
        let at = y * (width * 3) as usize;
        pixels[at..at + row].copy_from_slice(src_row);
    }
    Ok(Letterbox {
        pixels,
        scale,
        resized_width: rw,
        resized_height: rh,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_image_fills_width_and_pads_bottom() {
        let img = RgbImage::from_pixel(200, 100, image::Rgb([200, 10, 30]));
        let lb = letterbox(&img, 64, 64).unwrap();
        assert_eq!((lb.resized_width, lb.resized_height), (64, 32));
        assert!((lb.scale - 0.32).abs() < 1e-6);
        let px = |x: usize, y: usize| &lb.pixels[(y * 64 + x) * 3..(y * 64 + x) * 3 + 3];
        assert_eq!(px(10, 10), &[200, 10, 30]);
        assert_eq!(px(10, 40), &[0, 0, 0]);
    }
}
