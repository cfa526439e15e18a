//! Face detection for every family: decode -> letterbox -> batched
//! inference -> boxes in original pixels -> NMS (-> mask -> encode).

use std::sync::Arc;
use std::time::Instant;

use image::{ImageFormat, RgbImage};

pub use crate::backend::masker::{mask_and_encode, Masked, Masker};
use crate::batch::{Batcher, SubmitError};
use crate::frame::{FaceImage, Resident};
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
