//! Face detection and masking: decode -> letterbox -> batched inference ->
//! boxes in original pixels -> NMS -> (mask -> encode).

use std::sync::Arc;
use std::time::Instant;

use image::{ImageFormat, RgbImage};

use crate::backend::{FaceImage, Resident};
use crate::batch::{Batcher, SubmitError};
use crate::imaging::{self, resize, DecodeLimits, ImagingError};
use crate::model::{decode::nms, Face};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Imaging(#[from] ImagingError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("inference failed: {0}")]
    Inference(String),
}

#[derive(Debug, Clone, Copy)]
pub struct DetectParams {
    pub confidence: f32,
    pub nms_threshold: f32,
    /// 0: no limit.
    pub max_faces: usize,
}

impl Default for DetectParams {
    fn default() -> Self {
        Self {
            confidence: 0.5,
            nms_threshold: 0.4,
            max_faces: 0,
        }
    }
}

/// A decoded upload and its model input.
pub struct Prepared {
    /// The decoded frame. Where the device letterboxes, the frame itself is
    /// the model input: it is lent to the batch and is back once `detect`
    /// returns, with this field empty until then.
    pub image: RgbImage,
    pub format: ImageFormat,
    pub channels: u8,
    pub input_bytes: usize,
    pub scale: f32,
    pub model_input: FaceImage,
    /// The frame's copy on the device, once `detect` has returned (see
    /// [`Prepared::upload`]), for masking and encoding there.
    pub resident: Option<Resident>,
    pub decode_ms: f64,
    pub preprocess_ms: f64,
}

impl Prepared {
    /// Put the frame on `masker`'s device now, on the request's thread,
    /// so the batch letterboxes it there and the masker reuses it: the
    /// frame goes up once, and not on the backend's thread. Where that
    /// cannot be (no device, its budget spent, a device error) the batch
    /// uploads the frame itself, as it always could.
    ///
    /// Returns who uploads the frame, "request" or "batch", or None when
    /// no frame goes to a device.
    pub fn upload(&mut self, masker: &Masker) -> Option<&'static str> {
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        if let (Masker::Device(name, dev), FaceImage::Frame(frame, copy @ None)) =
            (masker, &mut self.model_input)
        {
            let t0 = Instant::now();
            let by = match dev.upload(frame) {
                Ok(c) => {
                    *copy = Some(c);
                    "request"
                }
                Err(e) => {
                    tracing::debug!(backend = name, reason = %e, "frame left for the batch to upload");
                    "batch"
                }
            };
            self.preprocess_ms += ms(t0.elapsed());
            return Some(by);
        }
        #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
        let _ = masker;
        None
    }
}

/// Decode and, unless `frames` (the backend letterboxes whole frames on its
/// device), letterbox. Blocking: run it off the async workers.
pub fn prepare(
    bytes: &[u8],
    limits: &DecodeLimits,
    input_w: usize,
    input_h: usize,
    frames: bool,
) -> Result<Prepared, ImagingError> {
    let t0 = Instant::now();
    let decoded = imaging::decode(bytes, limits)?;
    let t1 = Instant::now();
    let (image, scale, model_input) = if frames {
        let (w, h) = decoded.image.dimensions();
        let (scale, _, _) = resize::fit(w, h, input_w as u32, input_h as u32);
        let frame = FaceImage::Frame(Arc::new(decoded.image), None);
        (RgbImage::new(0, 0), scale, frame)
    } else {
        let lb = resize::letterbox(&decoded.image, input_w as u32, input_h as u32)?;
        (decoded.image, lb.scale, FaceImage::Letterboxed(lb.pixels))
    };
    let t2 = Instant::now();
    Ok(Prepared {
        image,
        format: decoded.format,
        channels: decoded.channels,
        input_bytes: bytes.len(),
        scale,
        model_input,
        resident: None,
        decode_ms: ms(t1 - t0),
        preprocess_ms: ms(t2 - t1),
    })
}

#[derive(Debug, Clone)]
pub struct Detected {
    /// Kept faces, best first, in original image pixels.
    pub faces: Vec<Face>,
    pub candidates_before_nms: usize,
    pub queue_ms: f64,
    pub pack_ms: f64,
    pub inference_ms: f64,
    pub batch_size: usize,
    pub postprocess_ms: f64,
    pub nms_ms: f64,
}

pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Queue the prepared input on the batcher and turn its candidates into faces.
pub async fn detect(
    batcher: &Batcher,
    prep: &mut Prepared,
    params: DetectParams,
) -> Result<Detected, PipelineError> {
    let input = std::mem::replace(&mut prep.model_input, FaceImage::Letterboxed(Vec::new()));
    let lent = match &input {
        FaceImage::Frame(f, copy) => Some((f.clone(), copy.clone())),
        FaceImage::Letterboxed(_) => None,
    };
    let result = match batcher.submit(input, params.confidence) {
        Ok(rx) => rx
            .await
            .map_err(|_| PipelineError::Inference("the backend thread stopped".into()))
            .and_then(|r| r.map_err(PipelineError::Inference)),
        Err(e) => Err(e.into()),
    };
    if let Some((frame, copy)) = lent {
        // The batch is dropped before its replies go out, so these are the
        // last references: no copy is made, and the device copy is this
        // request's alone to mask.
        prep.image = Arc::try_unwrap(frame).unwrap_or_else(|f| (*f).clone());
        prep.resident = copy;
    }
    let result = result?;
    let t0 = Instant::now();
    let (w, h) = (prep.image.width() as f32, prep.image.height() as f32);
    let inv = 1.0 / prep.scale;
    let candidates: Vec<Face> = result
        .output
        .into_iter()
        .map(|f| Face {
            score: f.score,
            x1: (f.x1 * inv).clamp(0.0, w),
            y1: (f.y1 * inv).clamp(0.0, h),
            x2: (f.x2 * inv).clamp(0.0, w),
            y2: (f.y2 * inv).clamp(0.0, h),
            landmarks: f.landmarks.map(|[x, y]| [x * inv, y * inv]),
        })
        .filter(|f| f.x2 > f.x1 && f.y2 > f.y1)
        .collect();
    let t1 = Instant::now();
    let n = candidates.len();
    let mut faces = nms(candidates, params.nms_threshold);
    if params.max_faces > 0 {
        faces.truncate(params.max_faces);
    }
    let t2 = Instant::now();
    Ok(Detected {
        faces,
        candidates_before_nms: n,
        queue_ms: result.queue_ms,
        pack_ms: result.pack_ms,
        inference_ms: result.inference_ms,
        batch_size: result.batch_size,
        postprocess_ms: ms(t1 - t0),
        nms_ms: ms(t2 - t1),
    })
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

/// Mask the faces and encode. Blocking.
///
/// A JPEG answer from a device masker is masked and encoded on the device
/// (on `resident`, the frame's copy there, if the request made one), and
/// `image` is left as it was; otherwise `image` is masked in place (on the
/// device or the CPU) and encoded on the CPU. A device failure falls back
/// to the CPU, so a frame never leaves unmasked; so does a frame whose
/// encoding would not fit the device's scratch budget now.
pub fn mask_and_encode(
    masker: &Masker,
    image: &mut RgbImage,
    resident: Option<Resident>,
    faces: &[Face],
    params: imaging::MaskParams,
    format: imaging::OutputFormat,
    quality: u8,
) -> Result<Masked, ImagingError> {
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
                return encode_on_host(&Masker::Cpu, image, &boxes, params, format, quality);
            }
        }
    }
    encode_on_host(masker, image, &boxes, params, format, quality)
}

fn encode_on_host(
    masker: &Masker,
    image: &mut RgbImage,
    boxes: &[[f32; 4]],
    params: imaging::MaskParams,
    format: imaging::OutputFormat,
    quality: u8,
) -> Result<Masked, ImagingError> {
    let t0 = Instant::now();
    let regions = masker.apply(image, boxes, params).len();
    let t1 = Instant::now();
    let bytes = imaging::encode(image, format, quality)?;
    Ok(Masked {
        bytes,
        regions,
        mask_ms: ms(t1 - t0),
        encode_ms: ms(t1.elapsed()),
        encoder: "host",
    })
}
