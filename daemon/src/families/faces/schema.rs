//! The face family's documented response bodies (reference 004), as typed
//! structs: what `/api/v1/detect` (and the `/mask` preview) and `/health`
//! answer. Coordinates are original-image pixels, rounded to 0.01;
//! confidences and ratios to 0.0001; times in milliseconds to 0.01.

use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BBox {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Size {
    pub width: f64,
    pub height: f64,
}

/// A box relative to the image: centre, width and height in 0..1.
#[derive(Debug, Serialize, ToSchema)]
pub struct Relative {
    pub x_center: f64,
    pub y_center: f64,
    pub width: f64,
    pub height: f64,
}

/// The five CenterFace landmarks, named as the reference names them.
#[derive(Debug, Serialize, ToSchema)]
pub struct Landmarks {
    pub left_eye: Point,
    pub right_eye: Point,
    pub nose: Point,
    pub left_mouth: Point,
    pub right_mouth: Point,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Detection {
    pub index: usize,
    pub bbox: BBox,
    pub confidence: f64,
    pub landmarks: Landmarks,
    pub size: Size,
    pub area: f64,
    pub center: Point,
    pub relative: Relative,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Summary {
    pub face_count: usize,
    pub avg_confidence: f64,
    pub min_confidence: f64,
    pub max_confidence: f64,
    /// Square pixels.
    pub total_face_area: f64,
    pub face_area_ratio: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImageInfo {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub size_bytes: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Processing {
    pub model: &'static str,
    pub input_size: [usize; 2],
    pub confidence_threshold: f64,
    pub nms_threshold: f64,
    pub inference_ms: f64,
    pub total_ms: f64,
}

/// Where the time went. `blob_ms` is packing into the batch buffer;
/// `queue_ms`, `batch_size` and `backend` (extensions of the reference)
/// say how the request was batched.
#[derive(Debug, Serialize, ToSchema)]
pub struct Profiling {
    pub decode_ms: f64,
    pub preprocess_ms: f64,
    pub blob_ms: f64,
    pub inference_ms: f64,
    pub postprocess_ms: f64,
    pub nms_ms: f64,
    pub mask_ms: Option<f64>,
    pub encode_ms: Option<f64>,
    pub storage_ms: Option<f64>,
    pub total_ms: f64,
    pub candidates_before_nms: usize,
    pub candidates_after_nms: usize,
    pub det_scale: f64,
    pub input_resolution: String,
    pub det_resolution: String,
    pub input_bytes: usize,
    pub output_bytes: Option<usize>,
    pub input_pixels: u64,
    pub model_name: &'static str,
    pub queue_ms: f64,
    pub batch_size: usize,
    pub backend: &'static str,
}

/// `POST /api/v1/detect` (and the JSON part of a mask preview).
#[derive(Debug, Serialize, ToSchema)]
pub struct DetectResponse {
    pub request_id: String,
    /// Stored upload and job (null with storage off).
    pub image_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub image: ImageInfo,
    pub detections: Vec<Detection>,
    pub summary: Summary,
    pub processing: Processing,
    pub profiling: Profiling,
}

/// `GET /health`: 200 when `status` is "ok", else 503.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// "ok" or "unavailable".
    pub status: &'static str,
    pub model: &'static str,
    pub model_loaded: bool,
    pub input_size: [usize; 2],
    pub supports_landmarks: bool,
    pub database_enabled: bool,
    pub database_ready: bool,
    pub storage_enabled: bool,
    pub storage_ready: bool,
    /// "cpu", "wgpu" or "cuda".
    pub backend: &'static str,
    pub device: String,
    /// Why the device handed over to the CPU, once it has.
    pub fallback: Option<String>,
    pub max_batch_size: usize,
    /// Where uploads are resized to the model input: "device" or "host".
    pub letterbox: &'static str,
    /// Where masked frames asked for as JPEG are masked and encoded
    /// ("device" or "host"; PNG and WebP are encoded on the host).
    pub jpeg_encode: &'static str,
    pub version: &'static str,
}

/// `GET /live` and `GET /ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    pub status: &'static str,
}

// ---- the admin API ----

/// A page of a listing: `page` is 1-based, `pages` at least 1.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub page: u64,
    pub per_page: u64,
    pub pages: u64,
}

/// A job as listed; `processed_url` is a signed download URL.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub image_id: Uuid,
    /// "detect" or "mask".
    pub job_type: String,
    pub method: Option<String>,
    pub status: String,
    pub face_count: usize,
    pub inference_ms: f64,
    pub total_ms: f64,
    pub processed_url: Option<String>,
    pub created_at: String,
}

/// `GET /api/v1/admin/jobs/{id}`: the job with its parameters and output.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobView,
    pub params: serde_json::Value,
    pub detections: serde_json::Value,
    pub processed_content_type: Option<String>,
    pub processed_size_bytes: Option<u64>,
}

/// An uploaded image as listed; URLs are signed downloads.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageView {
    pub id: Uuid,
    pub filename: Option<String>,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub size_bytes: u64,
    pub sha256: String,
    pub job_count: usize,
    pub created_at: String,
    /// Null when `storage.keep_originals` is off.
    pub original_url: Option<String>,
    pub processed_url: Option<String>,
}

/// `GET /api/v1/admin/images/{id}`: the image and its jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageDetail {
    #[serde(flatten)]
    pub image: ImageView,
    pub jobs: Vec<JobView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobsByType {
    pub detect: u64,
    pub mask: u64,
}

/// `GET /api/v1/admin/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub total_images: u64,
    pub total_jobs: u64,
    pub jobs_by_type: JobsByType,
    pub jobs_by_method: std::collections::BTreeMap<String, u64>,
    pub total_faces: u64,
    pub storage_bytes: u64,
    pub pending_cleanups: u64,
}

/// An API key as shown (never the key itself, only a preview).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: Uuid,
    pub name: String,
    pub key_prefix: String,
    pub key_suffix: String,
    pub key_preview: String,
    pub is_active: bool,
    pub request_count: u64,
    pub last_used_at: Option<String>,
    pub created_at: String,
}

/// `POST /api/v1/admin/api-keys`: the new key, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: KeyView,
    pub key: String,
}

/// `GET /api/v1/admin/auth/session`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    pub authenticated: bool,
    pub username: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Masking {
    pub method: &'static str,
    /// Kernel size (blurs) or block size in px (pixelate); null for
    /// pixelate's default, six blocks across each face.
    pub strength: Option<u32>,
    pub padding: f64,
    pub regions_masked: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MaskOutput {
    pub format: &'static str,
    pub quality: u8,
    pub size_bytes: usize,
    pub image_base64: String,
}

/// `POST /api/v1/admin/test/mask`: the detection, how it was masked, and
/// the masked image.
#[derive(Debug, Serialize, ToSchema)]
pub struct MaskPreview {
    #[serde(flatten)]
    pub detection: DetectResponse,
    pub masking: Masking,
    pub output: MaskOutput,
}

// ---- what the handlers read, for the OpenAPI document ----
//
// The handlers parse their query strings by hand (for the reference's
// exact messages); these describe the same names, defaults and ranges.

/// Query parameters of `POST /api/v1/detect` (and of `/mask`).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct DetectQuery {
    /// Minimum face confidence, 0..1.
    #[param(minimum = 0.0, maximum = 1.0, default = 0.5)]
    pub confidence: Option<f32>,
    /// IoU above which overlapping boxes are merged by non-maximum suppression, 0..1.
    #[param(minimum = 0.0, maximum = 1.0, default = 0.4)]
    pub nms_threshold: Option<f32>,
    /// Keep at most this many faces, the most confident first; 0 keeps all.
    #[param(minimum = 0, maximum = 10000, default = 0)]
    pub max_faces: Option<u32>,
}

/// Query parameters of `POST /api/v1/mask` beyond [`DetectQuery`].
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct MaskQuery {
    /// `gaussian`, `pixelate`, `solid` or `elliptical`.
    #[param(default = "gaussian")]
    pub method: Option<String>,
    /// Blur kernel or pixel block size; without it each method's default
    /// (pixelate: six blocks across each face).
    #[param(minimum = 1, maximum = 999)]
    pub strength: Option<u32>,
    /// Box padding as a fraction of the face size.
    #[param(minimum = 0.0, maximum = 2.0, default = 0.15)]
    pub padding: Option<f32>,
    /// Output format: `jpeg`, `png` or `webp`.
    #[param(default = "jpeg")]
    pub format: Option<String>,
    /// JPEG/WebP quality.
    #[param(minimum = 1, maximum = 100, default = 95)]
    pub quality: Option<u8>,
}

/// Paging of the admin listings.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageQuery {
    /// 1-based page number.
    #[param(minimum = 1, maximum = 1000000, default = 1)]
    pub page: Option<u64>,
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub per_page: Option<u64>,
}

/// Filters of `GET /api/v1/admin/jobs`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct JobsQuery {
    /// `detect` or `mask`.
    pub job_type: Option<String>,
    /// A masking method.
    pub method: Option<String>,
}

/// `GET /api/v1/admin/audit` filters.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AuditQuery {
    /// Only records at or after this Unix time (seconds).
    #[param(default = 0)]
    pub since: Option<u64>,
    /// Only this action (e.g. `login`, `key_created`).
    pub action: Option<String>,
    /// The last this many records.
    #[param(minimum = 1, maximum = 10000, default = 200)]
    pub limit: Option<u64>,
}

/// The signature of a blob download URL (made by the admin API's redirects).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct BlobQuery {
    /// Unix time after which the URL is refused.
    pub expires: u64,
    /// HMAC-SHA256 of the blob key and `expires`, hex.
    pub signature: String,
}

/// The upload: a multipart form with the photo in the `image` field
/// (a format of `limits.formats`: JPEG, PNG, WebP, BMP by default, TIFF and
/// GIF where the operator adds them; at most `limits.max_body_bytes`).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ImageUpload {
    #[schema(value_type = String, format = Binary)]
    pub image: Vec<u8>,
}
