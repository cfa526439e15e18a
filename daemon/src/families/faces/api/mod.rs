//! The face detection and masking family (reference 004): /health, /live,
//! /ready, /metrics, POST /api/v1/detect, POST /api/v1/mask.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};
use uuid::Uuid;

use super::schema::{
    BBox, DetectResponse, Detection, ImageInfo, Landmarks, Point, Processing, Profiling, Relative,
    Size, Summary,
};
use super::store::{ImageRecord, JobRecord};
use super::Faces;
use crate::batch::Batcher;
use crate::detect::{self as pipeline, DetectParams, Detected, PipelineError, Prepared};
use crate::http::error::ApiError;
use crate::http::extract::{ApiKeyAuth, QueryMap};
use crate::http::{ClientAddr, RequestId};
use crate::imaging::budget::Reservation;
use crate::imaging::{decode::format_name, MaskMethod, MaskParams, OutputFormat};
use crate::model::Face;
use crate::store::{now_rfc3339, sha256_hex};

mod admission;
mod health;

use admission::admit;
pub(crate) use admission::{read_image_field, upload_then_slot, Route};
pub use health::*;

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Imaging(i) => i.into(),
            PipelineError::Submit(s) => ApiError::from_submit(s, 1),
            PipelineError::Inference(m) => ApiError::Internal(m),
        }
    }
}

// ---- parameters ----

/// Query parameter `name` parsed as `T` within `min..=max`, `default` when
/// absent; anything else is a 400 naming the range (`what`: "a number").
fn q_in<T>(
    q: &HashMap<String, String>,
    name: &str,
    (default, min, max): (T, T, T),
    what: &str,
    ok: impl Fn(&T) -> bool,
) -> Result<T, ApiError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let Some(s) = q.get(name) else {
        return Ok(default);
    };
    match s.trim().parse::<T>() {
        Ok(v) if ok(&v) && v >= min && v <= max => Ok(v),
        _ => Err(ApiError::Invalid(format!(
            "{name} must be {what} between {min} and {max}, got {s:?}"
        ))),
    }
}

pub(crate) fn q_f32(
    q: &HashMap<String, String>,
    name: &str,
    default: f32,
    min: f32,
    max: f32,
) -> Result<f32, ApiError> {
    q_in(q, name, (default, min, max), "a number", |v: &f32| {
        v.is_finite()
    })
}

pub(crate) fn q_int(
    q: &HashMap<String, String>,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ApiError> {
    q_in(q, name, (default, min, max), "an integer", |_| true)
}

pub(crate) fn detect_params(q: &HashMap<String, String>) -> Result<DetectParams, ApiError> {
    Ok(DetectParams {
        confidence: q_f32(q, "confidence", 0.5, 0.0, 1.0)?,
        nms_threshold: q_f32(q, "nms_threshold", 0.4, 0.0, 1.0)?,
        max_faces: q_int(q, "max_faces", 0, 0, 10_000)? as usize,
        tile_min_face_px: None,
    })
}

pub(crate) struct MaskQuery {
    pub mask: MaskParams,
    pub format: OutputFormat,
    pub quality: u8,
}

pub(crate) fn mask_params(q: &HashMap<String, String>) -> Result<MaskQuery, ApiError> {
    let method = match q.get("method") {
        None => MaskMethod::Gaussian,
        Some(m) => MaskMethod::parse(m.trim()).ok_or_else(|| {
            ApiError::Invalid(format!(
                "method must be one of {}, got {m:?}",
                MaskMethod::ALL.join(", ")
            ))
        })?,
    };
    let format = match q.get("format") {
        None => OutputFormat::Jpeg,
        Some(f) => OutputFormat::parse(f.trim()).ok_or_else(|| {
            ApiError::Invalid(format!(
                "format must be one of {}, got {f:?}",
                OutputFormat::ALL.join(", ")
            ))
        })?,
    };
    Ok(MaskQuery {
        mask: MaskParams {
            method,
            strength: q_int(q, "strength", method.default_strength() as i64, 1, 999)? as u32,
            padding: q_f32(q, "padding", 0.15, 0.0, 2.0)?,
        },
        format,
        quality: q_int(q, "quality", 95, 1, 100)? as u8,
    })
}

// ---- response shapes ----

/// An f32 parameter as the decimal the client wrote (0.85, not 0.8500000238).
pub(crate) use crate::http::decimal as clean;

fn r2(v: f32) -> f64 {
    (v as f64 * 100.0).round() / 100.0
}

fn r4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

fn detections(faces: &[Face], w: u32, h: u32) -> Vec<Detection> {
    let (w, h) = (w as f64, h as f64);
    let pt = |[x, y]: [f32; 2]| Point { x: r2(x), y: r2(y) };
    faces
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (bw, bh) = ((f.x2 - f.x1) as f64, (f.y2 - f.y1) as f64);
            let (cx, cy) = ((f.x1 + f.x2) as f64 / 2.0, (f.y1 + f.y2) as f64 / 2.0);
            let [le, re, n, lm, rm] = f.landmarks;
            Detection {
                index: i,
                bbox: BBox {
                    x1: r2(f.x1),
                    y1: r2(f.y1),
                    x2: r2(f.x2),
                    y2: r2(f.y2),
                },
                confidence: r4(f.score as f64),
                landmarks: Landmarks {
                    left_eye: pt(le),
                    right_eye: pt(re),
                    nose: pt(n),
                    left_mouth: pt(lm),
                    right_mouth: pt(rm),
                },
                size: Size {
                    width: r2(bw as f32),
                    height: r2(bh as f32),
                },
                area: r2((bw * bh) as f32),
                center: Point {
                    x: r2(cx as f32),
                    y: r2(cy as f32),
                },
                relative: Relative {
                    x_center: r4(cx / w),
                    y_center: r4(cy / h),
                    width: r4(bw / w),
                    height: r4(bh / h),
                },
            }
        })
        .collect()
}

/// The detections as stored in a job record.
fn detections_json(faces: &[Face], w: u32, h: u32) -> Value {
    serde_json::to_value(detections(faces, w, h)).expect("detections serialize")
}

fn summary(faces: &[Face], w: u32, h: u32) -> Summary {
    let n = faces.len();
    let scores: Vec<f64> = faces.iter().map(|f| f.score as f64).collect();
    let area: f64 = faces.iter().map(|f| f.area() as f64).sum();
    let (avg, min, max) = if n == 0 {
        (0.0, 0.0, 0.0)
    } else {
        (
            scores.iter().sum::<f64>() / n as f64,
            scores.iter().cloned().fold(f64::INFINITY, f64::min),
            scores.iter().cloned().fold(0.0, f64::max),
        )
    };
    Summary {
        face_count: n,
        avg_confidence: r4(avg),
        min_confidence: r4(min),
        max_confidence: r4(max),
        total_face_area: (area * 100.0).round() / 100.0,
        face_area_ratio: r4(area / (w as f64 * h as f64)),
    }
}

/// Timings of one request, for `profiling` and the X-*-Ms headers.
#[derive(Default, Clone, Copy)]
pub(crate) struct Timings {
    pub mask_ms: Option<f64>,
    pub encode_ms: Option<f64>,
    pub storage_ms: Option<f64>,
    pub output_bytes: Option<usize>,
    pub total_ms: f64,
}

/// The detect answer (reference 004's schema) of one analysed image; the
/// offline `argusd detect --json` prints the same.
pub(crate) fn detect_response(
    batcher: &Batcher,
    request_id: &str,
    ids: (Option<Uuid>, Option<Uuid>),
    prep: &Prepared,
    det: &Detected,
    params: DetectParams,
    t: Timings,
) -> DetectResponse {
    let (w, h) = prep.image.dimensions();
    let info = batcher.info();
    let r = |v: f64| (v * 100.0).round() / 100.0;
    DetectResponse {
        request_id: request_id.to_string(),
        image_id: ids.0,
        job_id: ids.1,
        image: ImageInfo {
            width: w,
            height: h,
            channels: prep.channels,
            size_bytes: prep.input_bytes,
        },
        detections: detections(&det.faces, w, h),
        summary: summary(&det.faces, w, h),
        processing: Processing {
            model: super::MODEL_NAME,
            input_size: [info.input_width, info.input_height],
            // What was applied: scores under the floor are never candidates.
            confidence_threshold: clean(params.confidence.max(crate::detect::MIN_CANDIDATE_SCORE)),
            nms_threshold: clean(params.nms_threshold),
            inference_ms: r(det.inference_ms),
            total_ms: r(t.total_ms),
        },
        profiling: Profiling {
            decode_ms: r(prep.decode_ms),
            preprocess_ms: r(prep.preprocess_ms),
            blob_ms: r(det.pack_ms),
            inference_ms: r(det.inference_ms),
            postprocess_ms: r(det.postprocess_ms),
            nms_ms: r(det.nms_ms),
            mask_ms: t.mask_ms.map(r),
            encode_ms: t.encode_ms.map(r),
            storage_ms: t.storage_ms.map(r),
            total_ms: r(t.total_ms),
            candidates_before_nms: det.candidates_before_nms,
            candidates_after_nms: det.faces.len(),
            det_scale: (prep.scale as f64 * 1e6).round() / 1e6,
            input_resolution: format!("{w}x{h}"),
            det_resolution: format!("{}x{}", info.input_width, info.input_height),
            input_bytes: prep.input_bytes,
            output_bytes: t.output_bytes,
            input_pixels: w as u64 * h as u64,
            model_name: super::MODEL_NAME,
            queue_ms: r(det.queue_ms),
            batch_size: det.batch_size,
            backend: info.backend,
        },
    }
}

// ---- persistence ----

pub(crate) struct ToStore {
    pub original: bytes::Bytes,
    pub filename: Option<String>,
    pub prep_format: image::ImageFormat,
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub job_type: &'static str,
    pub method: Option<String>,
    pub params: Value,
    pub detections: Value,
    pub face_count: usize,
    pub processed: Option<(Vec<u8>, OutputFormat)>,
    pub inference_ms: f64,
    pub total_ms: f64,
    pub api_key_id: Option<Uuid>,
}

/// Write blobs and records and flush, so what the response acknowledges is on disk.
pub(crate) async fn persist(app: &Faces, s: ToStore) -> Result<(Uuid, Uuid, f64), ApiError> {
    let (store, records) = (app.store.clone(), app.records.clone());
    let keep_original = app.config.storage.keep_originals;
    let t0 = Instant::now();
    let (image_id, job_id) =
        tokio::task::spawn_blocking(move || -> Result<(Uuid, Uuid), ApiError> {
            let image_id = Uuid::now_v7();
            let job_id = Uuid::now_v7();
            let fmt = format_name(s.prep_format);
            let ext = s
                .prep_format
                .extensions_str()
                .first()
                .copied()
                .unwrap_or("bin");
            let blob = keep_original.then(|| format!("originals/{image_id}.{ext}"));
            if let Some(key) = &blob {
                store.blobs.put(key, &s.original)?;
            }
            let processed = match &s.processed {
                Some((bytes, f)) => {
                    let key = format!("processed/{job_id}.{}", f.extension());
                    store.blobs.put(&key, bytes)?;
                    Some((key, f.mime().to_string(), bytes.len() as u64))
                }
                None => None,
            };
            records.put_image(&ImageRecord {
                id: image_id,
                filename: s.filename,
                content_type: format!("image/{fmt}"),
                width: s.width,
                height: s.height,
                channels: s.channels,
                size_bytes: s.original.len() as u64,
                sha256: sha256_hex(&s.original),
                blob,
                created_at: now_rfc3339(),
            })?;
            records.put_job(&JobRecord {
                id: job_id,
                image_id,
                job_type: s.job_type.into(),
                method: s.method,
                status: "completed".into(),
                face_count: s.face_count,
                params: s.params,
                detections: s.detections,
                processed_content_type: processed.as_ref().map(|p| p.1.clone()),
                processed_size_bytes: processed.as_ref().map(|p| p.2),
                processed_blob: processed.map(|p| p.0),
                inference_ms: s.inference_ms,
                total_ms: s.total_ms,
                api_key_id: s.api_key_id,
                created_at: now_rfc3339(),
            })?;
            Ok((image_id, job_id))
        })
        .await??;
    app.store.flush_async().await?;
    Ok((image_id, job_id, pipeline::ms(t0.elapsed())))
}

// ---- handlers ----

/// Decode and detect: the common first half of detect, mask and the admin preview.
pub(crate) async fn run_detection(
    app: &Arc<Faces>,
    bytes: bytes::Bytes,
    params: DetectParams,
) -> Result<(Prepared, Detected, Reservation), ApiError> {
    // Held until the caller's response is made: the decoded frame lives that long.
    let reservation = app.decode_budget.reserve(&bytes).await?;
    let (limits, info) = (app.decode_limits.clone(), app.batcher.info().clone());
    let masker = app.batcher.masker().clone();
    let decode_timer = app.metrics.image_decode.start_timer();
    let (mut prep, uploaded_by) = tokio::task::spawn_blocking(move || {
        let mut prep = pipeline::prepare(
            &bytes,
            &limits,
            info.input_width,
            info.input_height,
            info.frames,
        )?;
        let by = prep.upload(&masker);
        Ok::<_, crate::imaging::ImagingError>((prep, by))
    })
    .await??;
    if let Some(by) = uploaded_by {
        app.metrics.frame_uploads.with_label_values(&[by]).inc();
    }
    decode_timer.observe_duration();
    let params = DetectParams {
        tile_min_face_px: app.config.detector.tile_min_face_px(),
        ..params
    };
    let det = pipeline::detect(&app.batcher, &mut prep, params).await?;
    app.metrics.faces_detected.inc_by(det.faces.len() as u64);
    Ok((prep, det, reservation))
}

#[utoipa::path(
    post,
    path = "/api/v1/detect",
    tag = crate::http::openapi::TAG_FACES,
    operation_id = "faces_detect",
    params(super::schema::DetectQuery),
    request_body(content = super::schema::ImageUpload, content_type = "multipart/form-data"),
    responses((status = 200, description = "The faces found, with landmarks and timings.", body = super::schema::DetectResponse), (status = 400, description = "Malformed multipart body or not an image.", body = crate::http::error::Detail), (status = 401, description = "Missing or unknown X-API-Key.", body = crate::http::error::Detail), (status = 408, description = "The upload did not arrive in time.", body = crate::http::error::Detail), (status = 413, description = "Body or image over the limits.", body = crate::http::error::Detail), (status = 415, description = "Not a supported image format.", body = crate::http::error::Detail), (status = 422, description = "A query parameter or body field is out of range.", body = crate::http::error::Detail), (status = 429, description = "Rate limit or inference queue full; see Retry-After.", body = crate::http::error::Detail), (status = 503, description = "Overloaded or not ready; see Retry-After.", body = crate::http::error::Detail)),
    security(("api_key" = [])),
)]
pub async fn detect(
    State(app): State<Arc<Faces>>,
    Extension(rid): Extension<RequestId>,
    client: Option<Extension<ClientAddr>>,
    key: ApiKeyAuth,
    QueryMap(q): QueryMap,
    req: Request,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let checks: Result<_, ApiError> = async {
        Ok((
            admit(&app, key, client.as_deref(), Route::Detect).await?,
            detect_params(&q)?,
        ))
    }
    .await;
    // A refused upload's body is read to the end by http::linger.
    let (key, params) = checks?;
    let (upload, mut slot) = upload_then_slot(&app, req).await?;
    let (prep, det, _reservation) = run_detection(&app, upload.bytes.clone(), params).await?;
    slot.inference_done();
    let (w, h) = prep.image.dimensions();
    let mut t = Timings {
        total_ms: pipeline::ms(start.elapsed()),
        ..Default::default()
    };
    let mut ids = (None, None);
    if app.storage_enabled() {
        let (image_id, job_id, storage_ms) = persist(
            &app,
            ToStore {
                original: upload.bytes,
                filename: upload.filename,
                prep_format: prep.format,
                width: w,
                height: h,
                channels: prep.channels,
                job_type: "detect",
                method: None,
                params: json!({"confidence": clean(params.confidence), "nms_threshold": clean(params.nms_threshold), "max_faces": params.max_faces}),
                detections: detections_json(&det.faces, w, h),
                face_count: det.faces.len(),
                processed: None,
                inference_ms: det.inference_ms,
                total_ms: t.total_ms,
                api_key_id: key.as_ref().map(|k| k.id),
            },
        )
        .await?;
        ids = (Some(image_id), Some(job_id));
        t.storage_ms = Some(storage_ms);
    }
    t.total_ms = pipeline::ms(start.elapsed());
    let body = detect_response(&app.batcher, &rid.0, ids, &prep, &det, params, t);
    Ok((StatusCode::OK, Json(body)).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/mask",
    tag = crate::http::openapi::TAG_FACES,
    operation_id = "faces_mask",
    params(super::schema::DetectQuery, super::schema::MaskQuery),
    request_body(content = super::schema::ImageUpload, content_type = "multipart/form-data"),
    responses((status = 200, description = "The photo with every face masked, in the asked format; X-Face-Count, X-Inference-Ms, X-Mask-Ms, X-Encode-Ms, X-Total-Ms, X-Model and (storage on) X-Image-Id, X-Job-Id headers.", content(("image/jpeg"), ("image/png"), ("image/webp"))), (status = 400, description = "Malformed multipart body or not an image.", body = crate::http::error::Detail), (status = 401, description = "Missing or unknown X-API-Key.", body = crate::http::error::Detail), (status = 408, description = "The upload did not arrive in time.", body = crate::http::error::Detail), (status = 413, description = "Body or image over the limits.", body = crate::http::error::Detail), (status = 415, description = "Not a supported image format.", body = crate::http::error::Detail), (status = 422, description = "A query parameter or body field is out of range.", body = crate::http::error::Detail), (status = 429, description = "Rate limit or inference queue full; see Retry-After.", body = crate::http::error::Detail), (status = 503, description = "Overloaded or not ready; see Retry-After.", body = crate::http::error::Detail)),
    security(("api_key" = [])),
)]
pub async fn mask(
    State(app): State<Arc<Faces>>,
    client: Option<Extension<ClientAddr>>,
    key: ApiKeyAuth,
    QueryMap(q): QueryMap,
    req: Request,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let checks: Result<_, ApiError> = async {
        let key = admit(&app, key, client.as_deref(), Route::Mask).await?;
        Ok((key, detect_params(&q)?, mask_params(&q)?))
    }
    .await;
    let (key, params, mq) = checks?;
    let (upload, mut slot) = upload_then_slot(&app, req).await?;
    let (prep, det, _reservation) = run_detection(&app, upload.bytes.clone(), params).await?;
    slot.inference_done();
    let (w, h) = prep.image.dimensions();
    let channels = prep.channels;
    let (format, image_format) = (mq.format, prep.format);
    let faces = det.faces.clone();
    let (mut image, resident, alpha) = (prep.image, prep.resident, prep.alpha);
    let masker = app.batcher.masker().clone();
    let masked = tokio::task::spawn_blocking(move || {
        pipeline::mask_and_encode(
            &masker,
            &mut image,
            resident,
            &faces,
            mq.mask,
            pipeline::Encoding {
                format,
                quality: mq.quality,
                alpha: alpha.as_deref(),
            },
        )
    })
    .await??;
    app.metrics
        .masked_frames
        .with_label_values(&[format.as_str(), masked.encoder])
        .inc();
    let (out, mask_ms, encode_ms) = (masked.bytes, masked.mask_ms, masked.encode_ms);
    let mut ids = (None, None);
    let total_before_store = pipeline::ms(start.elapsed());
    if app.storage_enabled() {
        let (image_id, job_id, _) = persist(
            &app,
            ToStore {
                original: upload.bytes,
                filename: upload.filename,
                prep_format: image_format,
                width: w,
                height: h,
                channels,
                job_type: "mask",
                method: Some(mq.mask.method.as_str().into()),
                params: json!({
                    "confidence": clean(params.confidence), "nms_threshold": clean(params.nms_threshold),
                    "max_faces": params.max_faces, "method": mq.mask.method.as_str(),
                    "strength": mq.mask.method.given_strength(mq.mask.strength),
                    "padding": clean(mq.mask.padding),
                    "format": format.as_str(), "quality": mq.quality,
                }),
                detections: detections_json(&det.faces, w, h),
                face_count: det.faces.len(),
                processed: Some((out.clone(), format)),
                inference_ms: det.inference_ms,
                total_ms: total_before_store,
                api_key_id: key.as_ref().map(|k| k.id),
            },
        )
        .await?;
        ids = (Some(image_id), Some(job_id));
    }
    let timings = MaskTimings {
        inference_ms: det.inference_ms,
        mask_ms,
        encode_ms,
        total_ms: pipeline::ms(start.elapsed()),
    };
    let headers = mask_headers(format, det.faces.len(), timings, app.model_name, ids);
    Ok((StatusCode::OK, headers, out).into_response())
}

/// What `POST /api/v1/mask` reports of its time, in milliseconds.
struct MaskTimings {
    inference_ms: f64,
    mask_ms: f64,
    encode_ms: f64,
    total_ms: f64,
}

/// The masked photo's headers: its type, X-Face-Count, the timings
/// (X-Inference-Ms, X-Mask-Ms, X-Encode-Ms, X-Total-Ms, two decimals),
/// X-Model and, when stored, X-Image-Id and X-Job-Id.
fn mask_headers(
    format: OutputFormat,
    faces: usize,
    t: MaskTimings,
    model: &'static str,
    ids: (Option<Uuid>, Option<Uuid>),
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let hv = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""));
    let f2 = |v: f64| format!("{v:.2}");
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.mime()),
    );
    headers.insert("x-face-count", hv(faces.to_string()));
    headers.insert("x-inference-ms", hv(f2(t.inference_ms)));
    headers.insert("x-mask-ms", hv(f2(t.mask_ms)));
    headers.insert("x-encode-ms", hv(f2(t.encode_ms)));
    headers.insert("x-total-ms", hv(f2(t.total_ms)));
    headers.insert("x-model", HeaderValue::from_static(model));
    if let (Some(i), Some(j)) = ids {
        headers.insert("x-image-id", hv(i.to_string()));
        headers.insert("x-job-id", hv(j.to_string()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_numbers_take_defaults_ranges_and_refuse_the_rest() {
        let q = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(q_f32(&HashMap::new(), "c", 0.5, 0.0, 1.0).unwrap(), 0.5);
        assert_eq!(q_f32(&q("c", " 0.25 "), "c", 0.5, 0.0, 1.0).unwrap(), 0.25);
        assert_eq!(q_int(&q("n", "7"), "n", 1, 0, 10).unwrap(), 7);
        for bad in ["NaN", "inf", "2", "-0.1", "x"] {
            match q_f32(&q("c", bad), "c", 0.5, 0.0, 1.0) {
                Err(ApiError::Invalid(m)) => assert_eq!(
                    m,
                    format!("c must be a number between 0 and 1, got {bad:?}")
                ),
                other => panic!("{bad}: {other:?}"),
            }
        }
        match q_int(&q("n", "1.5"), "n", 1, 0, 10) {
            Err(ApiError::Invalid(m)) => {
                assert_eq!(m, "n must be an integer between 0 and 10, got \"1.5\"")
            }
            other => panic!("{other:?}"),
        }
    }
}
