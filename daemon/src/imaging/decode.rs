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
    /// The alpha channel (one byte per pixel, upright like `image`) of an
    /// image that has transparent pixels; `image` is then composited over
    /// [`BACKGROUND`]. None for an opaque image.
    pub alpha: Option<Vec<u8>>,
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

/// Where the first complete JPEG image in `bytes` ends, found by walking
/// its marker segments (lengths skipped, so an EXIF thumbnail's own markers
/// inside APP1 are not mistaken for the image's) and its entropy-coded
/// scans up to the end-of-image marker. Anything after it (a motion
/// photo's video, padding) is not part of the image, as libjpeg and Pillow
/// also read it. Errors: the stream ends before its EOI (the decoder would
/// pad a truncated scan with grey instead of failing), or it uses coding
/// the decoder does not implement (arithmetic, lossless, hierarchical).
/// How many frames an animated PNG (APNG `acTL`), WebP (`ANMF` chunks
/// under an animated `VP8X`) or GIF (image descriptors) holds; None for a
/// still image or another format. Reads only the container's structure.
pub fn animation_frames(bytes: &[u8], format: ImageFormat) -> Option<u32> {
    let n = match format {
        ImageFormat::Png => apng_frames(bytes),
        ImageFormat::WebP => webp_frames(bytes),
        ImageFormat::Gif => gif_frames(bytes),
        _ => None,
    }?;
    (n > 1).then_some(n)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// `acTL`'s frame count; the chunk must come before the first `IDAT`.
fn apng_frames(b: &[u8]) -> Option<u32> {
    let mut at = 8;
    while at + 8 <= b.len() {
        let len = be32(b, at)? as usize;
        match b.get(at + 4..at + 8)? {
            b"acTL" => return be32(b, at + 8),
            b"IDAT" | b"IEND" => return None,
            _ => at = at.checked_add(12)?.checked_add(len)?,
        }
    }
    None
}

/// The number of `ANMF` chunks of an animated WebP.
fn webp_frames(b: &[u8]) -> Option<u32> {
    if b.get(0..4)? != b"RIFF" || b.get(8..12)? != b"WEBP" || b.get(12..16)? != b"VP8X" {
        return None;
    }
    if b.get(20)? & 0x02 == 0 {
        return None;
    }
    let (mut at, mut frames) = (12usize, 0u32);
    while at + 8 <= b.len() {
        let len = le32(b, at + 4)? as usize;
        if b.get(at..at + 4)? == b"ANMF" {
            frames += 1;
        }
        at = at.checked_add(8)?.checked_add(len + (len & 1))?;
    }
    Some(frames.max(1))
}

/// Image descriptors of a GIF, counted through its block structure (stops
/// at the second: that is enough to know it is animated).
fn gif_frames(b: &[u8]) -> Option<u32> {
    if b.get(0..3)? != b"GIF" {
        return None;
    }
    let skip_sub_blocks = |mut at: usize| -> Option<usize> {
        loop {
            let n = *b.get(at)? as usize;
            at += 1 + n;
            if n == 0 {
                return Some(at);
            }
        }
    };
    let flags = *b.get(10)?;
    let mut at = 13
        + if flags & 0x80 != 0 {
            3 << ((flags & 7) + 1)
        } else {
            0
        };
    let mut frames = 0;
    while frames < 2 {
        match *b.get(at)? {
            0x21 => at = skip_sub_blocks(at + 2)?,
            0x2C => {
                frames += 1;
                let f = *b.get(at + 9)?;
                at += 10 + if f & 0x80 != 0 { 3 << ((f & 7) + 1) } else { 0 };
                at = skip_sub_blocks(at + 1)?;
            }
            _ => break,
        }
    }
    Some(frames)
}

fn jpeg_image_end(bytes: &[u8]) -> Result<usize, ImagingError> {
    let truncated = || {
        ImagingError::Corrupt(
            "the JPEG data ends before its end-of-image marker (truncated file?)".into(),
        )
    };
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(ImagingError::Corrupt(
            "not a JPEG stream (no SOI marker)".into(),
        ));
    }
    let mut i = 2;
    loop {
        // The next marker: 0xFF, fill bytes (more 0xFF), then the code.
        while i < bytes.len() && bytes[i] != 0xFF {
            i += 1;
        }
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&code) = bytes.get(i) else {
            return Err(truncated());
        };
        i += 1;
        match code {
            0xD9 => return Ok(i),
            0x01 | 0xD0..=0xD7 => continue,
            0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(ImagingError::UnsupportedCoding(format!(
                    "arithmetic-coded JPEG (SOF{}) is not supported; save it with Huffman coding (the usual baseline or progressive JPEG)",
                    code - 0xC0
                )))
            }
            0xCC => {
                return Err(ImagingError::UnsupportedCoding(
                    "arithmetic-coded JPEG (DAC marker) is not supported; save it with Huffman coding".into(),
                ))
            }
            0xC3 | 0xC5..=0xC7 => {
                return Err(ImagingError::UnsupportedCoding(format!(
                    "lossless or hierarchical JPEG (SOF{}) is not supported",
                    code - 0xC0
                )))
            }
            _ => {}
        }
        let len = match bytes.get(i..i + 2) {
            Some(l) => u16::from_be_bytes([l[0], l[1]]) as usize,
            None => return Err(truncated()),
        };
        if len < 2 || i + len > bytes.len() {
            return Err(truncated());
        }
        i += len;
        if code == 0xDA {
            // Entropy-coded data: up to the next marker that is neither a
            // stuffed zero (FF 00) nor a restart (FF D0..D7).
            loop {
                match bytes.get(i..i + 2) {
                    None => return Err(truncated()),
                    Some([0xFF, 0x00]) | Some([0xFF, 0xD0..=0xD7]) => i += 2,
                    Some([0xFF, _]) => break,
                    Some(_) => i += 1,
                }
            }
        }
    }
}

/// The colour transparent pixels are composited over: white.
pub const BACKGROUND: [u8; 3] = [255, 255, 255];

/// The image as a viewer shows it: an image with alpha is composited over
/// [`BACKGROUND`], so what lay under transparent pixels (a cut-out
/// portrait's original scene) is never detected on, masked around or
/// returned. (Dropping the alpha channel instead would reveal it.)
///
/// Returns the alpha channel too when any pixel is not fully opaque.
fn flatten(img: DynamicImage) -> (image::RgbImage, Option<Vec<u8>>) {
    if !img.color().has_alpha() {
        return (img.into_rgb8(), None);
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = image::RgbImage::new(w, h);
    let mut alpha = Vec::with_capacity((w * h) as usize);
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = p[3] as u32;
        alpha.push(p[3]);
        for c in 0..3 {
            let v = p[c] as u32 * a + BACKGROUND[c] as u32 * (255 - a);
            o[c] = ((v + 127) / 255) as u8;
        }
    }
    let opaque = alpha.iter().all(|&a| a == 255);
    (out, (!opaque).then_some(alpha))
}

/// The checks [`decode`] makes before it decodes, from the header alone
/// (format accepted, still image, size within the limits): for uploads
/// that are stored now and decoded later. Returns the format's name.
pub fn probe(bytes: &[u8], limits: &DecodeLimits) -> Result<&'static str, ImagingError> {
    if bytes.is_empty() {
        return Err(ImagingError::Empty);
    }
    let format = image::guess_format(bytes).map_err(|_| ImagingError::UnknownFormat)?;
    let name = format_name(format);
    if !limits.formats.iter().any(|f| f == name) {
        return Err(ImagingError::UnsupportedFormat(
            format!("{format:?}").to_lowercase(),
            limits.formats.join(", "),
        ));
    }
    if let Some(n) = animation_frames(bytes, format) {
        return Err(ImagingError::UnsupportedCoding(format!(
            "animated {name} images ({n} frames) are not supported: send a still photo"
        )));
    }
    if let Ok(s) = imagesize::blob_size(bytes) {
        check_size(s.width as u64, s.height as u64, limits)?;
    }
    Ok(name)
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
    // Processing one frame of an animation would leave the faces of the
    // others untouched, silently.
    if let Some(n) = animation_frames(bytes, format) {
        return Err(ImagingError::UnsupportedCoding(format!(
            "animated {name} images ({n} frames) are not supported: only still images are \
             processed, and one frame would leave the others unexamined; send each frame as a \
             still image"
        )));
    }
    // Size from the header bytes alone, before any decoder buffers anything:
    // a decompression bomb is refused without reading its pixel data.
    if let Ok(size) = imagesize::blob_size(bytes) {
        check_size(size.width as u64, size.height as u64, limits)?;
    }
    let reader = if format == ImageFormat::Jpeg {
        let end = jpeg_image_end(bytes)?;
        ImageReader::with_format(Cursor::new(&bytes[..end]), format)
    } else {
        reader
    };
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
    let (image, alpha) = flatten(img);
    Ok(Decoded {
        image,
        format,
        channels,
        alpha,
    })
}

#[cfg(test)]
mod tests {
    use crate::imaging::test_animations::{animated_gif, animated_webp, apng};

    #[test]
    fn animations_are_counted_and_refused_and_stills_are_not() {
        let limits = DecodeLimits {
            max_pixels: 40_000_000,
            formats: ["jpeg", "png", "webp", "gif"].map(String::from).to_vec(),
        };
        for (bytes, format, name) in [
            (animated_gif(2), ImageFormat::Gif, "gif"),
            (animated_webp(2), ImageFormat::WebP, "webp"),
            (apng(3), ImageFormat::Png, "png"),
        ] {
            assert!(
                animation_frames(&bytes, format).is_some_and(|n| n >= 2),
                "{name}"
            );
            match decode(&bytes, &limits) {
                Err(ImagingError::UnsupportedCoding(m)) => {
                    assert!(m.contains("animated") && m.contains(name), "{m}")
                }
                other => panic!("{name}: {:?}", other.map(|d| d.format)),
            }
        }
        for (bytes, format) in [
            (animated_gif(1), ImageFormat::Gif),
            (animated_webp(1), ImageFormat::WebP),
            (apng(1), ImageFormat::Png),
        ] {
            assert_eq!(animation_frames(&bytes, format), None, "{format:?}");
        }
        assert!(decode(&animated_gif(1), &limits).is_ok());
    }

    use super::*;

    fn limits() -> DecodeLimits {
        DecodeLimits {
            max_pixels: 40_000_000,
            formats: vec!["jpeg".into(), "png".into(), "webp".into()],
        }
    }

    #[test]
    fn decompression_bomb_is_refused_from_the_header() {
        match decode(
            &crate::imaging::test_animations::png_header(30_000, 30_000),
            &limits(),
        ) {
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

    /// A motion photo (a JPEG with a video appended, here bytes holding an
    /// `FF DA` pair) decodes to the very image; an arithmetic-coded JPEG is
    /// refused naming its coding; a stream cut inside its scan is truncated.
    #[test]
    fn data_after_the_image_is_ignored_and_unsupported_coding_is_named() {
        let jpeg = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/astronaut.jpg"
        ))
        .unwrap();
        let plain = decode(&jpeg, &limits()).unwrap().image;
        let mut motion = jpeg.clone();
        motion.extend_from_slice(b"\x00\x00\x00\x18ftypmp42");
        for i in 0..4096u32 {
            motion.push((i.wrapping_mul(2654435761) >> 13) as u8);
        }
        motion.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 0xFF, 0xD8]);
        assert_eq!(jpeg_image_end(&motion).unwrap(), jpeg.len());
        assert_eq!(decode(&motion, &limits()).unwrap().image, plain);
        // The same stream marked arithmetic-coded (SOF0 -> SOF9).
        let sof0 = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let mut arith = jpeg.clone();
        arith[sof0 + 1] = 0xC9;
        match decode(&arith, &limits()) {
            Err(ImagingError::UnsupportedCoding(m)) => assert!(m.contains("arithmetic"), "{m}"),
            other => panic!("{:?}", other.map(|d| d.format)),
        }
        let sos = jpeg.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap();
        assert!(matches!(
            decode(&jpeg[..sos + 200], &limits()),
            Err(ImagingError::Corrupt(m)) if m.contains("end-of-image")
        ));
    }

    /// Pixels under alpha 0 never come back: a cut-out whose hidden area
    /// holds a red scene decodes to the background there, and half-
    /// transparent pixels are blended.
    #[test]
    fn transparent_pixels_are_composited_not_revealed() {
        let mut img = image::RgbaImage::from_pixel(64, 64, image::Rgba([200, 0, 0, 0]));
        img.put_pixel(10, 10, image::Rgba([0, 0, 0, 255]));
        img.put_pixel(20, 20, image::Rgba([0, 0, 0, 128]));
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        let d = decode(&png, &limits()).unwrap();
        assert_eq!(d.channels, 4);
        assert_eq!(
            d.image.get_pixel(0, 0).0,
            BACKGROUND,
            "hidden red is not revealed"
        );
        assert_eq!(d.image.get_pixel(10, 10).0, [0, 0, 0]);
        assert_eq!(d.image.get_pixel(20, 20).0, [127, 127, 127]);
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
