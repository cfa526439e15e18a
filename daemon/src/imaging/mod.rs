//! Image decode, resize, mask and encode. Pure CPU work with no async:
//! callers run it off the tokio workers (`spawn_blocking`).

pub mod decode;
pub mod encode;
pub mod mask;
pub mod resize;
pub mod segment;
pub mod smear;

pub use decode::{decode, DecodeLimits, Decoded};
pub use encode::{encode, OutputFormat};
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
    #[error("image is {width}x{height}; the smallest accepted is {min}x{min}")]
    TooSmall { width: u32, height: u32, min: u32 },
    #[error("the image could not be decoded: {0}")]
    Corrupt(String),
    #[error("encoding the output failed: {0}")]
    Encode(String),
}
