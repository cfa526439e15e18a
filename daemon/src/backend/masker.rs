//! Where a frame's faces get masked: on the GPU the batch ran on (the
//! frame's copy there is reused), else on the CPU. Backends hand their
//! masker out once, when a batcher starts; the face family uses it.

#[cfg(any(feature = "wgpu", feature = "cuda"))]
use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;

use crate::frame::Resident;
use crate::imaging::{self, ImagingError};
use crate::model::Face;

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Masks (and JPEG-encodes) frames on an accelerator; see `gpu::mask`.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub type DeviceMask = Arc<dyn crate::gpu::mask::DeviceMasker>;

/// Where masking runs: on the GPU the faces were found on, else on the CPU.
#[derive(Clone, Default)]
pub enum Masker {
    #[default]
    Cpu,
    /// The backend's name ("wgpu", "cuda") and its device's masker.
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    Device(&'static str, DeviceMask),
}

impl Masker {
    pub fn name(&self) -> &'static str {
        match self {
            Masker::Cpu => "cpu",
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            Masker::Device(name, _) => name,
        }
    }

    /// Mask every box in place. A device failure falls back to the CPU
    /// masker (the device path writes the frame only once it fully
    /// succeeded), so a frame never leaves unmasked.
    pub fn apply(
        &self,
        image: &mut RgbImage,
        boxes: &[[f32; 4]],
        params: imaging::MaskParams,
    ) -> Vec<imaging::mask::Region> {
        match self {
            Masker::Cpu => imaging::mask::apply(image, boxes, params),
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            Masker::Device(name, dev) => dev.mask(image, boxes, params).unwrap_or_else(|e| {
                tracing::warn!(backend = name, error = %e, "device masking failed; masking on the CPU");
                imaging::mask::apply(image, boxes, params)
            }),
        }
    }
}

/// A masked, encoded frame.
#[derive(Debug)]
pub struct Masked {
    pub bytes: Vec<u8>,
    pub regions: usize,
    pub mask_ms: f64,
    pub encode_ms: f64,
    /// Where it was encoded: "device" or "host".
    pub encoder: &'static str,
}

/// How a masked frame is encoded.
#[derive(Debug, Clone, Copy)]
pub struct Encoding<'a> {
    pub format: imaging::OutputFormat,
    /// 1-100, for JPEG and lossy WebP.
    pub quality: u8,
    /// The upload's alpha channel (see `Decoded::alpha`): PNG and WebP keep it.
    pub alpha: Option<&'a [u8]>,
}

impl Encoding<'_> {
    /// An opaque frame in `format` at `quality`.
    pub fn opaque(format: imaging::OutputFormat, quality: u8) -> Self {
        Self {
            format,
            quality,
            alpha: None,
        }
    }
}

/// Mask the faces and encode. Blocking.
///
/// A JPEG answer from a device masker is masked and encoded on the device
/// (on `resident`, the frame's copy there, if the request made one), and
/// `image` is left as it was; otherwise `image` is masked in place (on the
/// device or the CPU) and encoded on the CPU. A device failure falls back
/// to the CPU, so a frame never leaves unmasked; so does a frame whose
/// encoding would not fit the device's scratch budget now. With `alpha`
/// (the upload's, see `Decoded::alpha`), PNG and WebP answers keep it.
pub fn mask_and_encode(
    masker: &Masker,
    image: &mut RgbImage,
    resident: Option<Resident>,
    faces: &[Face],
    params: imaging::MaskParams,
    out: Encoding,
) -> Result<Masked, ImagingError> {
    let Encoding {
        format,
        quality,
        alpha,
    } = out;
    let boxes: Vec<[f32; 4]> = faces.iter().map(|f| [f.x1, f.y1, f.x2, f.y2]).collect();
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    drop(resident);
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if let (Masker::Device(name, dev), imaging::OutputFormat::Jpeg) = (masker, format) {
        use crate::gpu::GpuError;
        match dev.mask_jpeg(image, resident, &boxes, params, quality) {
            Ok(e) => {
                return Ok(Masked {
                    bytes: e.jpeg,
                    regions: e.regions.len(),
                    mask_ms: ms(e.mask),
                    encode_ms: ms(e.encode),
                    encoder: "device",
                })
            }
            // Too big for the device, or its budget is in use: the device
            // still masks, the CPU encodes.
            Err(e @ (GpuError::Busy(_) | GpuError::Shape(_))) => {
                tracing::debug!(backend = name, reason = %e, "JPEG encoded on the CPU");
            }
            Err(e) => {
                tracing::warn!(backend = name, error = %e, "device masking and JPEG encoding failed; doing both on the CPU");
                return encode_on_host(&Masker::Cpu, image, &boxes, params, format, quality, alpha);
            }
        }
    }
    encode_on_host(masker, image, &boxes, params, format, quality, alpha)
}

fn encode_on_host(
    masker: &Masker,
    image: &mut RgbImage,
    boxes: &[[f32; 4]],
    params: imaging::MaskParams,
    format: imaging::OutputFormat,
    quality: u8,
    alpha: Option<&[u8]>,
) -> Result<Masked, ImagingError> {
    let t0 = Instant::now();
    let regions = masker.apply(image, boxes, params).len();
    let t1 = Instant::now();
    let bytes = match alpha {
        Some(a) => imaging::encode_with_alpha(image, a, format, quality)?,
        None => imaging::encode(image, format, quality)?,
    };
    Ok(Masked {
        bytes,
        regions,
        mask_ms: ms(t1 - t0),
        encode_ms: ms(t1.elapsed()),
        encoder: "host",
    })
}

#[cfg(all(test, any(feature = "wgpu", feature = "cuda")))]
mod tests {
    use super::*;
    use crate::gpu::mask::{DeviceMasker, OnDevice};
    use crate::gpu::{jpeg, on_every_shared_device, Compute, GpuError};
    use crate::imaging::mask::{MaskMethod, MaskParams};

    fn photo() -> RgbImage {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/astronaut.png"
        );
        image::open(path).expect("fixture").to_rgb8()
    }

    /// A JPEG whose encoding would overspend the device's scratch budget
    /// is masked on the device and encoded on the CPU, to the CPU
    /// encoder's very bytes.
    #[test]
    fn a_spent_budget_leaves_the_encoding_to_the_cpu() {
        on_every_shared_device!(budget_case);
    }

    fn budget_case<D: Compute>(dev: Arc<D>) {
        let img = photo();
        let boxes = [[170.0, 60.0, 330.0, 250.0]];
        let p = MaskParams {
            method: MaskMethod::Solid,
            strength: 25,
            padding: 0.1,
        };
        let need = jpeg::Plan::new(img.width(), img.height(), 95)
            .unwrap()
            .device_bytes();
        let small = OnDevice::new(dev, need - 1);
        let err = small.mask_jpeg(&img, None, &boxes, p, 95).unwrap_err();
        assert!(matches!(err, GpuError::Busy(_)), "{err}");
        let masker = Masker::Device("test", Arc::new(small));
        let face = Face {
            score: 1.0,
            x1: boxes[0][0],
            y1: boxes[0][1],
            x2: boxes[0][2],
            y2: boxes[0][3],
            landmarks: [[0.0; 2]; 5],
        };
        let mut frame = img.clone();
        let m = mask_and_encode(
            &masker,
            &mut frame,
            None,
            &[face],
            p,
            Encoding::opaque(imaging::OutputFormat::Jpeg, 95),
        )
        .unwrap();
        assert_eq!((m.encoder, m.regions), ("host", 1));
        assert_ne!(frame, img, "masked in place");
        assert_eq!(
            m.bytes,
            imaging::encode(&frame, imaging::OutputFormat::Jpeg, 95).unwrap()
        );
    }
}
