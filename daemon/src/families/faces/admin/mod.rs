//! The admin API of reference 004, under /api/v1/admin, plus the signed blob
//! downloads its redirects point at.
//!
//! `session` holds sign-in, the session and sign-out; `api_keys` the
//! API-key endpoints.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use serde::Deserialize;
use uuid::Uuid;

use super::api::{
    detect_params, detect_response, mask_params, q_int, read_image_field, run_detection, Timings,
};
use super::schema::{self, ImageDetail, ImageView, JobDetail, JobView};
use super::store::{ImageRecord, JobFilter, JobRecord};
use super::Faces;
use crate::detect as pipeline;
use crate::http::error::ApiError;
use crate::http::RequestId;
use crate::store::{blocking, StoreError};

use crate::audit::{Event, Outcome};
use crate::http::extract::{ClientIp, Origin, QueryMap};

mod api_keys;
mod session;
pub use crate::http::extract::{AdminUser as Admin, SESSION_COOKIE};
pub use api_keys::*;
pub use session::*;

fn require_storage(app: &Faces) -> Result<(), ApiError> {
    if app.storage_enabled() {
        Ok(())
    } else {
        Err(ApiError::NotImplemented(
            "Storage is disabled on this appliance (storage.enabled = false)".into(),
        ))
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(crate::http::without_bom(body))
        .map_err(|e| ApiError::Invalid(format!("Invalid JSON body: {e}")))
}

fn parse_id(s: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| ApiError::NotFound(format!("{what} not found")))
}

struct Page {
    page: u64,
    per_page: u64,
}

fn page(q: &HashMap<String, String>) -> Result<Page, ApiError> {
    Ok(Page {
        page: q_int(q, "page", 1, 1, 1_000_000)? as u64,
        per_page: q_int(q, "per_page", 20, 1, 100)? as u64,
    })
}

fn paginated<T>(items: Vec<T>, total: u64, p: &Page) -> schema::Page<T> {
    schema::Page {
        items,
        total,
        page: p.page,
        per_page: p.per_page,
        pages: total.div_ceil(p.per_page).max(1),
    }
}

// ---- images and jobs ----

/// A signed download of `key`, on this appliance's path (what a redirect
/// needs).
fn blob_path(app: &Faces, key: &str) -> String {
    app.signer.url(key, app.config.storage.signed_url_ttl_secs)
}

/// The same as an absolute URL under `origin`: the reference's
/// `original_url`/`processed_url` are URLs a client downloads as they are.
fn blob_url(app: &Faces, origin: &str, key: &str) -> String {
    format!("{origin}{}", blob_path(app, key))
}

fn job_view(app: &Faces, origin: &str, j: &JobRecord) -> JobView {
    JobView {
        id: j.id,
        image_id: j.image_id,
        job_type: j.job_type.clone(),
        method: j.method.clone(),
        status: j.status.clone(),
        face_count: j.face_count,
        // Hundredths of a millisecond, as the detect response gives them.
        inference_ms: (j.inference_ms * 100.0).round() / 100.0,
        total_ms: (j.total_ms * 100.0).round() / 100.0,
        processed_url: j
            .processed_blob
            .as_deref()
            .map(|k| blob_url(app, origin, k)),
        created_at: j.created_at.clone(),
    }
}

fn image_view(app: &Faces, origin: &str, img: &ImageRecord, jobs: &[JobRecord]) -> ImageView {
    let latest_processed = jobs.iter().find_map(|j| j.processed_blob.as_deref());
    ImageView {
        id: img.id,
        filename: img.filename.clone(),
        content_type: img.content_type.clone(),
        width: img.width,
        height: img.height,
        channels: img.channels,
        size_bytes: img.size_bytes,
        sha256: img.sha256.clone(),
        job_count: jobs.len(),
        created_at: img.created_at.clone(),
        original_url: img.blob.as_deref().map(|k| blob_url(app, origin, k)),
        processed_url: latest_processed.map(|k| blob_url(app, origin, k)),
    }
}

#[utoipa::path(
    get,
    path = "/stats",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_stats",
    responses((status = 200, description = "Totals over stored images and jobs.", body = super::schema::Stats), (status = 401, description = "No valid session cookie or Basic credentials.", body = crate::http::error::Detail), (status = 501, description = "Storage is disabled (storage.enabled = false).", body = crate::http::error::Detail)),
    security(("admin_session" = []), ("admin_basic" = [])),
)]
pub async fn stats(
    State(app): State<Arc<Faces>>,
    _a: Admin,
) -> Result<Json<schema::Stats>, ApiError> {
    require_storage(&app)?;
    let (records, store) = (app.records.clone(), app.store.clone());
    let s = blocking(move || records.stats(&store)).await?;
    Ok(Json(schema::Stats {
        total_images: s.total_images,
        total_jobs: s.total_jobs,
        jobs_by_type: schema::JobsByType {
            detect: s.detect_jobs,
            mask: s.mask_jobs,
        },
        jobs_by_method: s.jobs_by_method,
        total_faces: s.total_faces,
        storage_bytes: s.storage_bytes,
        pending_cleanups: s.pending_cleanups,
    }))
}

#[utoipa::path(
    get,
    path = "/images",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_list_images",
    params(super::schema::PageQuery),
    responses((status = 200, description = "A page of stored uploads, newest first.", body = super::schema::Page<ImageView>), (status = 401, description = "No valid session cookie or Basic credentials.", body = crate::http::error::Detail), (status = 422, description = "A query parameter or body field is out of range.", body = crate::http::error::Detail), (status = 501, description = "Storage is disabled (storage.enabled = false).", body = crate::http::error::Detail)),
    security(("admin_session" = []), ("admin_basic" = [])),
)]
pub async fn list_images(
    State(app): State<Arc<Faces>>,
    _a: Admin,
    Origin(origin): Origin,
    QueryMap(q): QueryMap,
) -> Result<Json<schema::Page<ImageView>>, ApiError> {
    require_storage(&app)?;
    let p = page(&q)?;
    let (store, (pg, per)) = (app.records.clone(), (p.page, p.per_page));
    let (listed, total) = blocking(move || {
        let (images, total) = store.list_images(pg, per)?;
        let with_jobs = images
            .into_iter()
            .map(|img| Ok((store.jobs_for_image(img.id)?, img)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((with_jobs, total))
    })
    .await?;
    let items = listed
        .iter()
        .map(|(jobs, img)| image_view(&app, &origin, img, jobs))
        .collect();
    Ok(Json(paginated(items, total, &p)))
}

async fn find_image(app: &Faces, id: &str) -> Result<ImageRecord, ApiError> {
    let (store, id) = (app.records.clone(), parse_id(id, "Image")?);
    blocking(move || store.get_image(id))
        .await?
        .ok_or_else(|| ApiError::NotFound("Image not found".into()))
}

async fn find_job(app: &Faces, id: &str) -> Result<JobRecord, ApiError> {
    let (store, id) = (app.records.clone(), parse_id(id, "Job")?);
    blocking(move || store.get_job(id))
        .await?
        .ok_or_else(|| ApiError::NotFound("Job not found".into()))
}

#[utoipa::path(
    get,
    path = "/images/{image_id}",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_get_image",
    params(("image_id" = String, Path, description = "The image's id (UUID).")),
    responses((status = 200, description = "The upload and its jobs.", body = ImageDetail), (status = 401, description = "No valid session cookie or Basic credentials.", body = crate::http::error::Detail), (status = 404, description = "No such image.", body = crate::http::error::Detail), (status = 501, description = "Storage is disabled (storage.enabled = false).", body = crate::http::error::Detail)),
    security(("admin_session" = []), ("admin_basic" = [])),
)]
pub async fn get_image(
    State(app): State<Arc<Faces>>,
    _a: Admin,
    Origin(origin): Origin,
    Path(id): Path<String>,
) -> Result<Json<ImageDetail>, ApiError> {
    require_storage(&app)?;
    let img = find_image(&app, &id).await?;
    let (store, iid) = (app.records.clone(), img.id);
    let jobs = blocking(move || store.jobs_for_image(iid)).await?;
    Ok(Json(ImageDetail {
        image: image_view(&app, &origin, &img, &jobs),
        jobs: jobs.iter().map(|j| job_view(&app, &origin, j)).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/images/{image_id}",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_delete_image",
    params(("image_id" = String, Path, description = "The image's id (UUID).")),
    responses((status = 204, description = "The upload, its jobs and their files are deleted."), (status = 401, description = "No valid session cookie or Basic credentials.", body = crate::http::error::Detail), (status = 404, description = "No such image.", body = crate::http::error::Detail), (status = 501, description = "Storage is disabled (storage.enabled = false).", body = crate::http::error::Detail)),
    security(("admin_session" = []), ("admin_basic" = [])),
)]
pub async fn delete_image(
    State(app): State<Arc<Faces>>,
    a: Admin,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_storage(&app)?;
    let id = parse_id(&id, "Image")?;
    let (records, store) = (app.records.clone(), app.store.clone());
    let deleted = tokio::task::spawn_blocking(move || -> Result<bool, ApiError> {
        let Some(_) = records.delete_image(id)? else {
            return Ok(false);
        };
        // The records are gone and the blobs queued; failures stay queued for
        // the next start-up or cleanup run.
        let (_, left) = store.run_cleanup()?;
        if left > 0 {
            tracing::warn!(pending = left, "some blobs could not be deleted yet");
        }
        Ok(true)
    })
    .await??;
    if deleted {
        audit_ok(&app, "image_deleted", &a.0, &ip, &id.to_string());
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("Image not found".into()))
    }
}

fn redirect(url: String) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

#[utoipa::path(
    get,
    path = "/images/{image_id}/download",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_download_image",
    params(("image_id" = String, Path, description = "The image's id (UUID).")),
    responses((status = 302, description = "Redirect to a signed URL of the original."), (status = 401, description = "No valid session cookie or Basic credentials.", body = crate::http::error::Detail), (status = 404, description = "No such image or kept original.", body = crate::http::error::Detail), (status = 501, description = "Storage is disabled (storage.enabled = false).", body = crate::http::error::Detail)),
    security(("admin_session" = []), ("admin_basic" = [])),
)]
pub async fn download_image(
    State(app): State<Arc<Faces>>,
    _a: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_storage(&app)?;
    let img = find_image(&app, &id).await?;
    match &img.blob {
        Some(k) => Ok(redirect(blob_path(&app, k))),
        None => Err(ApiError::NotFound(
            "The original of this image was not kept (storage.keep_originals is off)".into(),
        )),
    }
}

#[utoipa::path(
    get,
    path = "/jobs",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_list_jobs",
    params(super::schema::PageQuery, super::schema::JobsQuery),
    responses((status = 200, description = "A page of jobs, newest first.", body = super::schema::Page<JobView>), (status = 401, description = "No valid session cookie or Basic credentials.", body = crate::http::error::Detail), (status = 422, description = "A query parameter or body field is out of range.", body = crate::http::error::Detail), (status = 501, description = "Storage is disabled (storage.enabled = false).", body = crate::http::error::Detail)),
    security(("admin_session" = []), ("admin_basic" = [])),
)]
pub async fn list_jobs(
    State(app): State<Arc<Faces>>,
    _a: Admin,
    Origin(origin): Origin,
    QueryMap(q): QueryMap,
) -> Result<Json<schema::Page<JobView>>, ApiError> {
    require_storage(&app)?;
    let p = page(&q)?;
    let filter = JobFilter {
        job_type: q.get("job_type").filter(|s| !s.is_empty()).cloned(),
        method: q.get("method").filter(|s| !s.is_empty()).cloned(),
    };
    if let Some(t) = &filter.job_type {
        if t != "detect" && t != "mask" {
            return Err(ApiError::Invalid(format!(
                "job_type must be detect or mask, got {t:?}"
            )));
        }
    }
    let (store, (pg, per)) = (app.records.clone(), (p.page, p.per_page));
    let (jobs, total) = blocking(move || store.list_jobs(&filter, pg, per)).await?;
    Ok(Json(paginated(
        jobs.iter().map(|j| job_view(&app, &origin, j)).collect(),
        total,
        &p,
    )))
}

#[utoipa::path(
    get,
    path = "/jobs/{job_id}",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_get_job",
    params(("job_id" = String, Path, description = "The job's id (UUID).")),
    responses((status = 200, description = "The job with its parameters and detections.", body = JobDetail), (status = 401, description = "No valid session cookie or Basic credentials.", body = crate::http::error::Detail), (status = 404, description = "No such job.", body = crate::http::error::Detail), (status = 501, description = "Storage is disabled (storage.enabled = false).", body = crate::http::error::Detail)),
    security(("admin_session" = []), ("admin_basic" = [])),
)]
pub async fn get_job(
    State(app): State<Arc<Faces>>,
    _a: Admin,
    Origin(origin): Origin,
    Path(id): Path<String>,
) -> Result<Json<JobDetail>, ApiError> {
    require_storage(&app)?;
    let j = find_job(&app, &id).await?;
    Ok(Json(JobDetail {
        job: job_view(&app, &origin, &j),
        params: j.params.clone(),
        detections: j.detections.clone(),
        processed_content_type: j.processed_content_type.clone(),
        processed_size_bytes: j.processed_size_bytes,
    }))
}

#[utoipa::path(
    get,
    path = "/jobs/{job_id}/download",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_download_job",
    params(("job_id" = String, Path, description = "The job's id (UUID).")),
    responses((status = 302, description = "Redirect to a signed URL of the masked output."), (status = 401, description = "No valid session cookie or Basic credentials.", body = crate::http::error::Detail), (status = 404, description = "No such job or output.", body = crate::http::error::Detail), (status = 501, description = "Storage is disabled (storage.enabled = false).", body = crate::http::error::Detail)),
    security(("admin_session" = []), ("admin_basic" = [])),
)]
pub async fn download_job(
    State(app): State<Arc<Faces>>,
    _a: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_storage(&app)?;
    let j = find_job(&app, &id).await?;
    match &j.processed_blob {
        Some(k) => Ok(redirect(blob_path(&app, k))),
        None => Err(ApiError::NotFound(
            "This job has no processed image (detect jobs produce none)".into(),
        )),
    }
}

/// Serve a blob by signed URL: no admin credentials, like a presigned object URL.
#[utoipa::path(
    get,
    path = "/blobs/{kind}/{name}",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_blob",
    params(("kind" = String, Path, description = "`originals` or `processed`."), ("name" = String, Path, description = "The blob's name."), super::schema::BlobQuery),
    responses((status = 200, description = "The stored file (original or masked output).", content_type = "application/octet-stream"), (status = 401, description = "Signature wrong or expired.", body = crate::http::error::Detail), (status = 404, description = "No such file.", body = crate::http::error::Detail)),
)]
pub async fn blob(
    State(app): State<Arc<Faces>>,
    Path((kind, name)): Path<(String, String)>,
    QueryMap(q): QueryMap,
) -> Result<Response, ApiError> {
    let key = format!("{kind}/{name}");
    let expires = q
        .get("expires")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let sig = q.get("signature").map(String::as_str).unwrap_or("");
    if !app.signer.verify(&key, expires, sig) {
        return Err(ApiError::Unauthorized(
            "Invalid or expired download link".into(),
        ));
    }
    let store = app.store.clone();
    let k = key.clone();
    let data = tokio::task::spawn_blocking(move || store.blobs.get(&k)).await??;
    let data = data.ok_or_else(|| ApiError::NotFound("File not found".into()))?;
    let mime = match key.rsplit('.').next() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("bmp") => "image/bmp",
        Some("gif") => "image/gif",
        Some("tif" | "tiff") => "image/tiff",
        _ => "application/octet-stream",
    };
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "private, no-store"),
        ],
        data,
    )
        .into_response())
}

// ---- preview ----

#[utoipa::path(
    post,
    path = "/test/mask",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_test_mask",
    params(super::schema::DetectQuery, super::schema::MaskQuery),
    request_body(content = super::schema::ImageUpload, content_type = "multipart/form-data"),
    responses((status = 200, description = "Detection, masking and the masked image (base64), nothing stored.", body = super::schema::MaskPreview), (status = 401, description = "No valid session cookie or Basic credentials.", body = crate::http::error::Detail), (status = 400, description = "Malformed multipart body or not an image.", body = crate::http::error::Detail), (status = 408, description = "The upload did not arrive in time.", body = crate::http::error::Detail), (status = 413, description = "Body or image over the limits.", body = crate::http::error::Detail), (status = 415, description = "Not a supported image format.", body = crate::http::error::Detail), (status = 422, description = "A query parameter or body field is out of range.", body = crate::http::error::Detail), (status = 429, description = "Rate limit or inference queue full; see Retry-After.", body = crate::http::error::Detail), (status = 503, description = "Overloaded or not ready; see Retry-After.", body = crate::http::error::Detail)),
    security(("admin_session" = []), ("admin_basic" = [])),
)]
pub async fn test_mask(
    State(app): State<Arc<Faces>>,
    _a: Admin,
    Extension(rid): Extension<RequestId>,
    QueryMap(q): QueryMap,
    req: Request,
) -> Result<Json<schema::MaskPreview>, ApiError> {
    let start = Instant::now();
    let checks = (|| -> Result<_, ApiError> {
        let permit =
            app.in_flight
                .clone()
                .try_acquire_owned()
                .map_err(|_| ApiError::Overloaded {
                    retry_after: app.config.limits.retry_after_secs,
                })?;
        Ok((permit, detect_params(&q)?, mask_params(&q)?))
    })();
    let (_permit, params, mq) = checks?;
    let upload = read_image_field(Multipart::from_request(req, &()).await).await?;
    // A place in the queue before the decode, as the API's requests take
    // (`admission`): its detection then waits for room rather than being
    // refused after the decode.
    let _ticket = app.batcher.ticket().ok_or(ApiError::QueueFull {
        retry_after: app.config.limits.retry_after_secs,
    })?;
    let (mut prep, det, _reservation) = run_detection(&app, upload.bytes, params).await?;
    let faces = det.faces.clone();
    let (format, quality, mask) = (mq.format, mq.quality, mq.mask);
    let image = std::mem::replace(&mut prep.image, image::RgbImage::new(0, 0));
    let resident = prep.resident.take();
    let alpha = prep.alpha.take();
    let masker = app.batcher.masker().clone();
    let (image, masked) = tokio::task::spawn_blocking(move || {
        let mut image = image;
        pipeline::mask_and_encode(
            &masker,
            &mut image,
            resident,
            &faces,
            mask,
            pipeline::Encoding {
                format,
                quality,
                alpha: alpha.as_deref(),
            },
        )
        .map(|m| (image, m))
    })
    .await??;
    app.metrics
        .masked_frames
        .with_label_values(&[format.as_str(), masked.encoder])
        .inc();
    let (out, regions, mask_ms, encode_ms) = (
        masked.bytes,
        masked.regions,
        masked.mask_ms,
        masked.encode_ms,
    );
    prep.image = image;
    let t = Timings {
        mask_ms: Some(mask_ms),
        encode_ms: Some(encode_ms),
        storage_ms: None,
        output_bytes: Some(out.len()),
        total_ms: pipeline::ms(start.elapsed()),
    };
    Ok(Json(schema::MaskPreview {
        detection: detect_response(&app.batcher, &rid.0, (None, None), &prep, &det, params, t),
        masking: schema::Masking {
            method: mask.method.as_str(),
            strength: mask.method.given_strength(mask.strength),
            padding: super::api::clean(mask.padding),
            regions_masked: regions,
        },
        output: schema::MaskOutput {
            format: format.as_str(),
            quality,
            size_bytes: out.len(),
            image_base64: base64::engine::general_purpose::STANDARD.encode(&out),
        },
    }))
}

/// Record an admin's action in the audit trail.
fn audit_ok(app: &Faces, action: &str, admin: &str, ip: &str, object: &str) {
    app.audit.record(
        Event {
            family: "faces",
            action,
            actor: Some(admin),
            address: Some(ip),
            object: Some(object),
            ..Default::default()
        },
        Outcome::Ok,
    );
}

/// `GET /api/v1/admin/audit?since=&action=&limit=`: the audit trail,
/// oldest first (the last `limit`, default 200, at most 10000).
#[utoipa::path(
    get,
    path = "/audit",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "admin_audit",
    params(super::schema::AuditQuery),
    responses((status = 200, description = "The audit trail (every family's), oldest first; each line chained to the previous by SHA-256.", body = Vec<crate::audit::Record>), (status = 401, description = "No valid session cookie or Basic credentials.", body = crate::http::error::Detail), (status = 422, description = "A query parameter or body field is out of range.", body = crate::http::error::Detail)),
    security(("admin_session" = []), ("admin_basic" = [])),
)]
pub async fn audit(
    State(app): State<Arc<Faces>>,
    _a: Admin,
    QueryMap(q): QueryMap,
) -> Result<Json<Vec<crate::audit::Record>>, ApiError> {
    let num = |k: &str, d: u64| -> Result<u64, ApiError> {
        q.get(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::Invalid(format!("{k} must be a whole number")))
            })
            .transpose()
            .map(|v| v.unwrap_or(d))
    };
    let (since, limit) = (num("since", 0)?, num("limit", 200)?.clamp(1, 10_000));
    let action = q.get("action").cloned();
    let log = app.audit.clone();
    let recs =
        tokio::task::spawn_blocking(move || log.read(since, action.as_deref(), limit as usize))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(recs))
}
