//! Decoding uploads: format sniffing, limits before allocation, EXIF orientation.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use super::ImagingError;

#[derive(Debug, Clone)]
pub struct DecodeLimits {
    /// Width × height above which an image is refused before its pixels are allocated.
    pub max_pixels: u64,
    /// Formats accepted, by lowercase name ("jpeg", "png", "webp", "bmp", "gif", "tiff").
    pub formats: Vec<String>,
}

pub struct Decoded {
    /// Upright RGB pixels (EXIF orientation applied).
    pub image: RgbImage,
    pub format: ImageFormat,
    /// Channels in the encoded file (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA).
    pub channels: u8,
}

pub fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::Png => "png",
        ImageFormat::WebP => "webp",
        ImageFormat::Bmp => "bmp",
        ImageFormat::Gif => "gif",
        ImageFormat::Tiff => "tiff",
        _ => "other",
    }
}

/// The smallest image worth running a detector on.
pub const MIN_SIDE: u32 = 2;

fn check_size(width: u64, height: u64, limits: &DecodeLimits) -> Result<(), ImagingError> {
    let pixels = width.saturating_mul(height);
    let (w, h) = (
        width.min(u32::MAX as u64) as u32,
        height.min(u32::MAX as u64) as u32,
    );
    if pixels > limits.max_pixels {
        return Err(ImagingError::TooManyPixels {
            width: w,
            height: h,
            pixels,
            max: limits.max_pixels,
        });
    }
    if w < MIN_SIDE || h < MIN_SIDE {
        return Err(ImagingError::TooSmall {
            width: w,
            height: h,
            min: MIN_SIDE,
        });
    }
    Ok(())
}

/// The JPEG decoder pads a truncated scan with grey instead of failing, so
/// check that an end-of-image marker follows the last start-of-scan. (An
/// EXIF thumbnail has its own EOI, but it sits before the main scan.)
fn jpeg_scan_is_complete(bytes: &[u8]) -> bool {
    let last = |m: u8| bytes.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Decoded, ImagingError> {
    if bytes.is_empty() {
        return Err(ImagingError::Empty);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImagingError::Corrupt(e.to_string()))?;
    let format = reader.format().ok_or(ImagingError::UnknownFormat)?;
    let name = format_name(format);
    if !limits.formats.iter().any(|f| f == name) {
        return Err(ImagingError::UnsupportedFormat(
            format!("{format:?}").to_lowercase(),
            limits.formats.join(", "),
        ));
    }
    // Size from the header bytes alone, before any decoder buffers anything:
    // a decompression bomb is refused without reading its pixel data.
    if let Ok(size) = imagesize::blob_size(bytes) {
        check_size(size.width as u64, size.height as u64, limits)?;
    }
    if format == ImageFormat::Jpeg && !jpeg_scan_is_complete(bytes) {
        return Err(ImagingError::Corrupt(
            "the JPEG data ends before its end-of-image marker (truncated file?)".into(),
        ));
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| ImagingError::Corrupt(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    check_size(width as u64, height as u64, limits)?;
    let pixels = width as u64 * height as u64;
    let mut alloc = image::Limits::default();
    // Room for the decoded frame and one conversion copy; the header check
    // above already refused anything larger.
    alloc.max_alloc = Some(pixels.saturating_mul(16).max(1 << 20));
    decoder
        .set_limits(alloc)
        .map_err(|e| ImagingError::Corrupt(e.to_string()))?;
    let channels = decoder.color_type().channel_count();
    let orientation = decoder.orientation().ok();
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| ImagingError::Corrupt(e.to_string()))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(Decoded {
        image: img.into_rgb8(),
        format,
        channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DecodeLimits {
        DecodeLimits {
            max_pixels: 40_000_000,
            formats: vec!["jpeg".into(), "png".into(), "webp".into()],
        }
    }

    fn png_header(w: u32, h: u32) -> Vec<u8> {
        // A valid PNG signature and IHDR chunk; no pixel data follows.
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(b"IHDR");
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let crc = crc32(&ihdr);
        let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
        v.extend_from_slice(&13u32.to_be_bytes());
        v.extend_from_slice(&ihdr);
        v.extend_from_slice(&crc.to_be_bytes());
        v
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    #[test]
    fn decompression_bomb_is_refused_from_the_header() {
        match decode(&png_header(30_000, 30_000), &limits()) {
            Err(ImagingError::TooManyPixels { pixels, .. }) => assert_eq!(pixels, 900_000_000),
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("a 900 MP header must be refused"),
        }
    }

    #[test]
    fn empty_text_and_truncated_inputs_are_errors() {
        assert!(matches!(decode(b"", &limits()), Err(ImagingError::Empty)));
        assert!(matches!(
            decode(b"hello, I am not an image", &limits()),
            Err(ImagingError::UnknownFormat)
        ));
        let jpeg = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/astronaut.jpg"
        ))
        .unwrap();
        assert!(matches!(
            decode(&jpeg[..jpeg.len() / 3], &limits()),
            Err(ImagingError::Corrupt(_))
        ));
    }

    #[test]
    fn exif_orientation_is_applied() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/");
        let upright = decode(
            &std::fs::read(format!("{dir}astronaut.jpg")).unwrap(),
            &limits(),
        )
        .unwrap()
        .image;
        let rotated = decode(
            &std::fs::read(format!("{dir}astronaut_exif8.jpg")).unwrap(),
            &limits(),
        )
        .unwrap()
        .image;
        assert_eq!(upright.dimensions(), rotated.dimensions());
        // Same picture up to JPEG noise: compare a coarse mean difference.
        let diff: u64 = upright
            .as_raw()
            .iter()
            .zip(rotated.as_raw())
            .map(|(a, b)| a.abs_diff(*b) as u64)
            .sum();
        assert!(
            diff / (upright.as_raw().len() as u64) < 8,
            "mean abs diff {}",
            diff / upright.as_raw().len() as u64
        );
    }

    #[test]
    fn format_not_in_the_list_is_refused() {
        let png = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/astronaut.png"
        ))
        .unwrap();
        let only_jpeg = DecodeLimits {
            max_pixels: 1 << 30,
            formats: vec!["jpeg".into()],
        };
        assert!(matches!(
            decode(&png, &only_jpeg),
            Err(ImagingError::UnsupportedFormat(..))
        ));
    }
}
