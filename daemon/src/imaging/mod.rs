//! Image decode, resize, mask and encode. Pure CPU work with no async:
//! callers run it off the tokio workers (`spawn_blocking`).

pub mod budget;
pub mod circles;
pub mod decode;
pub mod encode;
pub mod field;
pub mod mask;
pub mod rbc_mask;
pub mod rbc_size;
pub mod resize;
pub mod segment;
pub mod smear;

/// Where the peak of a sampled curve lies between its samples: the vertex
/// of the parabola through three equally spaced samples `a`, `b`, `c`
/// (`b` the highest), as an offset from `b` in sample steps, within
/// -0.5..=0.5; 0 where the three do not bend down.
pub fn peak_offset(a: f32, b: f32, c: f32) -> f32 {
    let curve = a - 2.0 * b + c;
    if curve < 0.0 {
        (0.5 * (a - c) / curve).clamp(-0.5, 0.5)
    } else {
        0.0
    }
}

pub use decode::{decode, DecodeLimits, Decoded};
pub use encode::{encode, encode_with_alpha, OutputFormat};
pub use mask::{MaskMethod, MaskParams};

#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    #[error("the image is empty (0 bytes)")]
    Empty,
    #[error("the data is not an image in a recognised format")]
    UnknownFormat,
    #[error("image format {0} is not accepted; accepted formats: {1}")]
    UnsupportedFormat(String, String),
    /// A format accepted in general, in a variant the decoder cannot read
    /// (e.g. an arithmetic-coded JPEG).
    #[error("{0}")]
    UnsupportedCoding(String),
    #[error("image is {width}x{height} = {pixels} pixels, over the limit of {max} pixels")]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        max: u64,
    },
    /// A long thin strip whose face search would take a detector pass per
    /// few pixels ([`crate::detect::max_tiles`]).
    #[error(
        "image is {width}x{height}: its shape would need {tiles} detector tiles to find small \
         faces, more than the {max} allowed for its area; crop it into pieces of ordinary shape"
    )]
    TooManyTiles {
        width: u32,
        height: u32,
        tiles: usize,
        max: usize,
    },
    #[error("image is {width}x{height}; the smallest accepted is {min}x{min}")]
    TooSmall { width: u32, height: u32, min: u32 },
    #[error("the image could not be decoded: {0}")]
    Corrupt(String),
    #[error("encoding the output failed: {0}")]
    Encode(String),
}

/// Images for tests (here and in `tests/`): animations whose frames are
/// flat colours, built with the same encoders a user's tools use, and a
/// bare PNG header.
#[doc(hidden)]
pub mod test_animations {
    use image::{Delay, Frame, RgbaImage};

    /// The first bytes of a PNG whose header says `w` x `h` (8-bit RGB) and
    /// whose data is a few bytes: a decompression bomb's shape, for the limits
    /// that are checked from the header before decoding.
    pub fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let crc = crc32fast::hash(&ihdr);
        let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
        v.extend_from_slice(&13u32.to_be_bytes());
        v.extend_from_slice(&ihdr);
        v.extend_from_slice(&crc.to_be_bytes());
        // An IDAT chunk header follows, as in a real bomb, with a little data.
        v.extend_from_slice(&[
            0, 0, 0, 4, b'I', b'D', b'A', b'T', 0x78, 0x9c, 0, 0, 0, 0, 0, 0,
        ]);
        v
    }

    fn frame(i: usize) -> RgbaImage {
        RgbaImage::from_pixel(64, 48, image::Rgba([(40 * i) as u8, 120, 200, 255]))
    }

    /// A GIF of `n` frames (image's encoder).
    pub fn animated_gif(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
            enc.encode_frames(
                (0..n)
                    .map(|i| Frame::from_parts(frame(i), 0, 0, Delay::from_numer_denom_ms(100, 1))),
            )
            .expect("gif");
        }
        out
    }

    /// A WebP of `n` frames (libwebp's animation encoder); one frame gives
    /// libwebp's still form.
    pub fn animated_webp(n: usize) -> Vec<u8> {
        let config = webp::WebPConfig::new().expect("webp config");
        let frames: Vec<RgbaImage> = (0..n).map(frame).collect();
        let mut enc = webp::AnimEncoder::new(64, 48, &config);
        for (i, f) in frames.iter().enumerate() {
            enc.add_frame(webp::AnimFrame::from_rgba(
                f.as_raw(),
                64,
                48,
                100 * i as i32,
            ));
        }
        enc.encode().to_vec()
    }

    /// A PNG whose `acTL` chunk declares `n` frames (an APNG header over a
    /// still PNG's data).
    pub fn apng(n: u32) -> Vec<u8> {
        let mut png = Vec::new();
        image::DynamicImage::ImageRgba8(frame(0))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .expect("png");
        if n <= 1 {
            return png;
        }
        let mut chunk = b"acTL".to_vec();
        chunk.extend(n.to_be_bytes());
        chunk.extend(0u32.to_be_bytes());
        let crc = crc32fast::hash(&chunk);
        let ihdr_end = 8 + 12 + 13;
        let mut out = png[..ihdr_end].to_vec();
        out.extend(8u32.to_be_bytes());
        out.extend(&chunk);
        out.extend(crc.to_be_bytes());
        out.extend(&png[ihdr_end..]);
        out
    }
}
