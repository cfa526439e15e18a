//! The reference's v3 surface (`001_*.txt`): signed uploads served by the
//! appliance itself, compute, per-batch results, a subject's parameters,
//! batch info and the batch list; and the v1 signed upload URL.
//!
//! A signed upload URL is `/api/v3/uploads/{image_id}/?expires=<unix
//! s>&signature=<hex HMAC-SHA256(key, "upload:<id>\n<expires>")>`, valid
//! `skin_api.upload_url_secs` (15 min) and for one successful PUT of 1
//! byte to `skin_api.max_image_bytes` (30 MiB). Expired or forged: 403;
//! used: 409. Files in results are signed the same way
//! (`/images/{id}.jpg?expires&signature`, `expiration_seconds` long).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::accounts::Caller;
use super::catalog;
use super::error::{SkinError, SkinErrorBody, SkinResult};
use super::intake::{self, NewImage};
use super::records::*;
use super::service::Skin;
use super::v1::new_batch;
use super::views::{extension, status_name, BatchView, Page};
use crate::store::{blocking, unix_now};

/// HMAC of `what` until `expires`.
pub fn signature(key: &[u8], what: &str, expires: u64) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(format!("{what}\n{expires}").as_bytes());
    hex::encode(m.finalize().into_bytes())
}

pub fn verify(key: &[u8], what: &str, expires: u64, sig: &str) -> bool {
    expires >= unix_now()
        && crate::auth::ct_eq(signature(key, what, expires).as_bytes(), sig.as_bytes())
}

/// A signed URL of file `id` (an image or an auxiliary image).
pub fn file_url(skin: &Skin, origin: &str, id: Uuid, ext: &str, ttl: u64) -> String {
    let exp = unix_now() + ttl;
    format!(
        "{origin}/images/{id}.{ext}?expires={exp}&signature={}",
        signature(&skin.upload_key, &format!("file:{id}"), exp)
    )
}

/// The headers to send with a signed upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadHeaders {
    #[serde(rename = "Content-Type")]
    pub content_type: String,
    /// `1,<max bytes>`: the sizes the upload may have.
    #[serde(rename = "X-Goog-Content-Length-Range")]
    pub length_range: String,
}

/// Where and how to upload one photo: `PUT` its bytes to `url` before
/// `expires_at`, once.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"content_type": "application/octet-stream", "expires_at": 1738316700,
    "headers": {"Content-Type": "application/octet-stream", "X-Goog-Content-Length-Range": "1,31457280"},
    "id": "0190f5a5-2c3d-7e4f-9a5b-6c7d8e9fa0b1", "method": "PUT",
    "url": "https://appliance.local/api/v3/uploads/0190f5a5-2c3d-7e4f-9a5b-6c7d8e9fa0b1/?expires=1738316700&signature=5d1c..."}))]
pub struct UploadTarget {
    /// The batch (the v1 signed upload URL only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<Uuid>,
    pub content_type: String,
    /// Unix seconds (`skin_api.upload_url_secs` from now, 15 min).
    pub expires_at: u64,
    pub headers: UploadHeaders,
    /// The image the upload fills.
    pub id: Uuid,
    /// The image again (the v1 signed upload URL only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<Uuid>,
    /// `PUT`.
    pub method: String,
    /// The signed URL on this appliance.
    pub url: String,
}

fn upload_target(skin: &Skin, origin: &str, img: &Image) -> UploadTarget {
    let exp = unix_now() + skin.config.skin_api.upload_url_secs;
    let sig = signature(&skin.upload_key, &format!("upload:{}", img.id), exp);
    UploadTarget {
        batch_id: None,
        content_type: "application/octet-stream".into(),
        expires_at: exp,
        headers: UploadHeaders {
            content_type: "application/octet-stream".into(),
            length_range: format!("1,{}", skin.config.skin_api.max_image_bytes),
        },
        id: img.id,
        image_id: None,
        method: "PUT".into(),
        url: format!(
            "{origin}/api/v3/uploads/{}/?expires={exp}&signature={sig}",
            img.id
        ),
    }
}

/// The caller's subject `s` (any dataset of the company), with its dataset.
async fn subject_any(
    skin: &Skin,
    caller: &Caller,
    c: Uuid,
    s: Uuid,
) -> SkinResult<(Dataset, Subject)> {
    caller.company(c)?;
    let records = skin.records.clone();
    blocking(move || {
        let Some(sub) =
            SkinStore::get::<Subject>(&records.subjects, s)?.filter(|x| x.company_id == c)
        else {
            return Ok(None);
        };
        Ok(SkinStore::get::<Dataset>(&records.datasets, sub.dataset_id)?.map(|d| (d, sub)))
    })
    .await?
    .ok_or_else(|| SkinError::not_found("Subject"))
}

async fn batch_any(
    skin: &Skin,
    caller: &Caller,
    c: Uuid,
    b: Uuid,
) -> SkinResult<(Batch, Vec<Image>)> {
    caller.company(c)?;
    let records = skin.records.clone();
    blocking(move || {
        let Some(bt) = SkinStore::get::<Batch>(&records.batches, b)?.filter(|x| x.company_id == c)
        else {
            return Ok(None);
        };
        let imgs = records.batch_images(b)?;
        Ok(Some((bt, imgs)))
    })
    .await?
    .ok_or_else(|| SkinError::not_found("Batch"))
}

async fn store_batch(skin: &Skin, b: &Batch) -> SkinResult<()> {
    skin.save(|r| &r.batches, b.id, b).await
}

/// The photos to upload: a file name per side (at least one).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"front": "front.jpg", "creation_time": "2025-01-31T09:32:00Z"}))]
pub struct UploadBody {
    /// The front photo's name (1 to 255 characters).
    pub front: Option<String>,
    /// The left photo's name.
    pub left: Option<String>,
    /// The right photo's name.
    pub right: Option<String>,
    /// When the photos were taken (RFC 3339, not in the future); default
    /// now.
    pub creation_time: Option<String>,
    /// Stored with the batch and echoed.
    pub meta: Option<Value>,
}

/// A new batch and where to upload each side named.
#[derive(Debug, Serialize, ToSchema)]
pub struct StartedUpload {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub front: Option<UploadTarget>,
    /// The batch: `POST .../batches/{id}/compute/` once the uploads are done.
    pub image_batch_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left: Option<UploadTarget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub right: Option<UploadTarget>,
}

/// Start an upload: a new batch for the subject and a signed PUT URL per
/// side named (`PUT /api/v3/uploads/{upload_id}/`), then
/// `POST .../batches/{batch_id}/compute/`.
#[utoipa::path(
    post,
    path = "/api/v3/companies/{company_id}/subjects/{subject_id}/upload/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_v3_start_upload",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("subject_id" = Uuid, Path, description = "A subject of the company (any dataset).")),
    request_body = UploadBody,
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The batch and the upload URLs.", body = StartedUpload),
        (status = 400, description = "A path id is not a UUID, the body is not JSON, no side is named, a name is empty or too long, or `creation_time` is invalid or in the future.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such subject of the caller's company.", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn start_upload(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Path((c, s)): Path<(Uuid, Uuid)>,
    Json(b): Json<UploadBody>,
) -> SkinResult<Json<StartedUpload>> {
    let (ds, sub) = subject_any(&skin, &caller, c, s).await?;
    let sides: Vec<(u32, String)> = [(1, b.front), (2, b.right), (3, b.left)]
        .into_iter()
        .filter_map(|(id, n)| n.map(|n| (id, n)))
        .collect();
    if sides.is_empty() {
        return Err(SkinError::BadRequest(
            "Name at least one of front, left, right.".into(),
        ));
    }
    for (id, n) in &sides {
        if n.trim().is_empty() || n.chars().count() > 255 {
            let field = catalog::side(*id).map(|s| s.tech_name).unwrap_or("front");
            return Err(SkinError::Field(
                field,
                "Ensure this field has 1 to 255 characters.".into(),
            ));
        }
    }
    let taken = intake::taken_at("creation_time", b.creation_time.as_deref())?;
    let mut bt = new_batch(c, ds.id, sub.id, b.meta.unwrap_or(Value::Null));
    if let Some((t, _)) = &taken {
        bt.creation_time = t.clone();
    }
    store_batch(&skin, &bt).await?;
    let origin = skin.origin(&parts);
    let mut out = StartedUpload {
        front: None,
        image_batch_id: bt.id,
        left: None,
        right: None,
    };
    for (side, name) in sides {
        let img = intake::add_image(
            &skin,
            &ds,
            &bt,
            NewImage {
                side_id: side,
                light_id: catalog::LIGHT_REGULAR,
                name,
                meta: Value::Null,
                bytes: None,
                taken_at: taken.clone(),
            },
        )
        .await?;
        let slot = match side {
            2 => &mut out.right,
            3 => &mut out.left,
            _ => &mut out.front,
        };
        *slot = Some(upload_target(&skin, &origin, &img));
    }
    Ok(Json(out))
}

/// One photo to upload through a signed URL.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"side_id": 1, "name": "front.jpg"}))]
pub struct V1SignedBody {
    /// A batch of the subject; default: a new one.
    pub batch_id: Option<Uuid>,
    /// 1 front (default), 2 right, 3 left.
    pub side_id: Option<u32>,
    /// 1 regular (default).
    pub light_id: Option<u32>,
    /// Default: the side's `tech_name`.
    pub name: Option<String>,
    /// Stored with the image and echoed.
    pub meta: Option<Value>,
    /// Stored with a new batch.
    pub app_args: Option<Value>,
    /// When the photo was taken (RFC 3339, not in the future).
    pub creation_time: Option<String>,
}

/// A signed PUT URL for one photo of the subject
/// (`PUT /api/v3/uploads/{upload_id}/`); the batch is made when none is
/// given.
#[utoipa::path(
    post,
    path = "/api/v1/companies/{company_id}/subjects/{subject_id}/signed_upload_url/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_signed_upload_url",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("subject_id" = Uuid, Path, description = "A subject of the company (any dataset).")),
    request_body = V1SignedBody,
    security(("skin_token" = [])),
    responses(
        (status = 201, description = "The upload URL, with `image_id` and `batch_id`.", body = UploadTarget),
        (status = 400, description = "A path id is not a UUID, the body is not JSON, or a field is invalid (`{\"<field>\": [\"...\"]}`).", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such subject (or batch) of the caller's company.", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn signed_upload_url_v1(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Path((c, s)): Path<(Uuid, Uuid)>,
    Json(b): Json<V1SignedBody>,
) -> SkinResult<Response> {
    let (ds, sub) = subject_any(&skin, &caller, c, s).await?;
    let bt = match b.batch_id {
        Some(id) => {
            let (bt, _) = batch_any(&skin, &caller, c, id).await?;
            if bt.subject_id != sub.id {
                return Err(SkinError::not_found("Batch"));
            }
            bt
        }
        None => {
            let mut bt = new_batch(c, ds.id, sub.id, Value::Null);
            bt.app_args = b.app_args.unwrap_or(Value::Null);
            store_batch(&skin, &bt).await?;
            bt
        }
    };
    let side = b.side_id.unwrap_or(1);
    let img = intake::add_image(
        &skin,
        &ds,
        &bt,
        NewImage {
            side_id: side,
            light_id: b.light_id.unwrap_or(catalog::LIGHT_REGULAR),
            name: b.name.unwrap_or_else(|| {
                catalog::side(side)
                    .map(|s| s.tech_name)
                    .unwrap_or("front")
                    .into()
            }),
            meta: b.meta.unwrap_or(Value::Null),
            bytes: None,
            taken_at: intake::taken_at("creation_time", b.creation_time.as_deref())?,
        },
    )
    .await?;
    let mut v = upload_target(&skin, &skin.origin(&parts), &img);
    v.image_id = Some(img.id);
    v.batch_id = Some(bt.id);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// A signed URL's signature.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SignedQuery {
    /// Unix seconds after which the URL is refused.
    pub expires: Option<u64>,
    /// Hex HMAC-SHA256 of the URL's object and `expires`.
    pub signature: Option<String>,
}

/// Upload a photo's bytes to a signed URL (from `.../upload/` or
/// `.../signed_upload_url/`). No token: the signature stands for it. Each
/// URL takes one successful upload of 1 byte to `skin_api.max_image_bytes`
/// (30 MiB).
#[utoipa::path(
    put,
    path = "/api/v3/uploads/{upload_id}/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_v3_put_upload",
    params(("upload_id" = Uuid, Path, description = "The image the URL was issued for."), SignedQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The photo's bytes (JPEG, PNG, WebP, BMP or TIFF)."),
    responses(
        (status = 200, description = "Stored."),
        (status = 400, description = "`upload_id` is not a UUID, or the body is empty or not an image the appliance reads.", body = SkinErrorBody),
        (status = 403, description = "The URL is not signed, has expired, or its signature does not match.", body = SkinErrorBody),
        (status = 404, description = "No such upload.", body = SkinErrorBody),
        (status = 409, description = "The URL has already been used.", body = SkinErrorBody),
        (status = 413, description = "Larger than `skin_api.max_image_bytes`.", body = SkinErrorBody),
        (status = 415, description = "Not an image format the appliance reads.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn put_upload(
    State(skin): State<Arc<Skin>>,
    Path(id): Path<Uuid>,
    Query(q): Query<SignedQuery>,
    body: Bytes,
) -> SkinResult<StatusCode> {
    let (Some(exp), Some(sig)) = (q.expires, q.signature) else {
        return Err(SkinError::Forbidden("The upload URL is not signed.".into()));
    };
    if !verify(&skin.upload_key, &format!("upload:{id}"), exp, &sig) {
        return Err(SkinError::Forbidden(
            "The upload URL has expired or its signature does not match; ask for a new one.".into(),
        ));
    }
    if body.is_empty() {
        return Err(SkinError::BadRequest(
            "The upload is empty; send the photo's bytes.".into(),
        ));
    }
    if body.len() > skin.config.skin_api.max_image_bytes {
        return Err(SkinError::PayloadTooLarge(format!(
            "The upload must be 1 to {} bytes, got {}.",
            skin.config.skin_api.max_image_bytes,
            body.len()
        )));
    }
    intake::check_bytes(&skin, &body)?;
    let (records, store) = (skin.records.clone(), skin.store.clone());
    let used = blocking(move || {
        // The marker first: of two PUTs racing on one URL, one wins.
        let prev = records.uploads.compare_and_swap(
            id.as_bytes(),
            None as Option<&[u8]>,
            Some(&[1u8][..]),
        )?;
        if prev.is_err() {
            return Ok(Some(true));
        }
        let Some(img) = SkinStore::get::<Image>(&records.images, id)? else {
            return Ok(None);
        };
        if img.status != ImageStatus::AwaitingUpload {
            return Ok(Some(true));
        }
        let key = intake::blob_key(id);
        store.blobs.put(&key, &body)?;
        records.update_image(id, |i| {
            i.blob = Some(key.clone());
            i.status = ImageStatus::Uploaded;
        })?;
        store.flush()?;
        Ok(Some(false))
    })
    .await?;
    match used {
        None => Err(SkinError::not_found("Upload")),
        Some(true) => Err(SkinError::Conflict(
            "This upload URL has already been used; ask for a new one.".into(),
        )),
        Some(false) => Ok(StatusCode::OK),
    }
}

/// Options of a computation.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ComputeBody {
    /// Stored with the batch.
    pub app_args: Option<Value>,
}

/// Queue the batch's uploaded photos for analysis; then poll
/// `.../results/`. The body is optional.
#[utoipa::path(
    post,
    path = "/api/v3/companies/{company_id}/batches/{batch_id}/compute/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_v3_compute",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("batch_id" = Uuid, Path, description = "A batch of the company.")),
    request_body = Option<ComputeBody>,
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "Queued (no body)."),
        (status = 400, description = "A path id is not a UUID, the body is not JSON, a side's upload has not arrived, or the batch has no images.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such batch of the caller's company.", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn compute(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, b)): Path<(Uuid, Uuid)>,
    body: Option<Json<ComputeBody>>,
) -> SkinResult<StatusCode> {
    let (mut bt, imgs) = batch_any(&skin, &caller, c, b).await?;
    if let Some(missing) = imgs
        .iter()
        .find(|i| i.status == ImageStatus::AwaitingUpload)
    {
        let side = catalog::side(missing.side_id)
            .map(|s| s.tech_name)
            .unwrap_or("front");
        return Err(SkinError::BadRequest(format!(
            "The {side} image has not been uploaded yet."
        )));
    }
    if imgs.is_empty() {
        return Err(SkinError::BadRequest("The batch has no images.".into()));
    }
    if let Some(Json(ComputeBody { app_args: Some(a) })) = body {
        bt.app_args = a;
        store_batch(&skin, &bt).await?;
    }
    let (records, store, queue) = (skin.records.clone(), skin.store.clone(), skin.queue.clone());
    blocking(move || {
        let ds: Option<Dataset> = SkinStore::get(&records.datasets, bt.dataset_id)?;
        for img in imgs.iter().filter(|i| i.status == ImageStatus::Uploaded) {
            records.update_image(img.id, |i| {
                i.status = ImageStatus::Queued;
                if let Some(ds) = &ds {
                    i.enabled = intake::enabled_for(ds);
                    i.app_run_id = ds.run.as_ref().map(|r| r.id);
                    i.application_id = ds.run.as_ref().map(|r| r.application_id);
                }
            })?;
            queue.enqueue(img.id)?;
        }
        store.flush()
    })
    .await?;
    skin.queue.wake();
    Ok(StatusCode::OK)
}

/// What the results carry.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// Seconds the file URLs in the answer stay valid (default 3600, 1 s
    /// to 7 days).
    #[serde(default, deserialize_with = "super::lenient::opt_u32")]
    pub expiration_seconds: Option<u32>,
    /// Add each parameter's area masks (default true).
    #[serde(default, deserialize_with = "super::lenient::opt_bool")]
    pub with_masks: Option<bool>,
    /// Masks as a signed SVG file URL (default true) rather than polygons.
    #[serde(default, deserialize_with = "super::lenient::opt_bool")]
    pub svg_masks: Option<bool>,
}

/// Points of an SVG path made of M/L commands.
fn polygon(d: &str) -> Vec<[f64; 2]> {
    let nums: Vec<f64> = d
        .split(|c: char| c.is_ascii_alphabetic() || c.is_whitespace())
        .filter_map(|t| t.parse().ok())
        .collect();
    nums.chunks_exact(2).map(|p| [p[0], p[1]]).collect()
}

fn side_name(i: &Image) -> &'static str {
    catalog::side(i.side_id)
        .map(|s| s.tech_name)
        .unwrap_or("front")
}

/// The signed URLs of an image's photo and derived images.
fn predicted(skin: &Skin, origin: &str, i: &Image, ttl: u64) -> Value {
    let aux = |kind: &str| {
        i.aux
            .iter()
            .find(|a| a.kind == kind)
            .map(|a| file_url(skin, origin, a.id, extension(&a.content_type), ttl))
    };
    json!({
        "original": i.blob.as_ref().map(|_| file_url(skin, origin, i.id, "jpg", ttl)),
        "anonymised": aux("anonymised"),
        "aligned_face": aux("aligned_face"),
    })
}

fn masks_json(skin: &Skin, origin: &str, i: &Image, svg: bool, ttl: u64) -> Value {
    if svg {
        let url = i
            .aux
            .iter()
            .find(|a| a.kind == "area_masks")
            .map(|a| file_url(skin, origin, a.id, "svg", ttl));
        json!({"svg": url})
    } else {
        Value::Object(
            i.masks
                .iter()
                .map(|(k, d)| {
                    (
                        k.clone(),
                        json!({"type": "polygon_mask", "points": polygon(d)}),
                    )
                })
                .collect(),
        )
    }
}

/// The batch's computed parameters: the front image's, with per-side
/// masks, and the detection errors by side.
fn batch_parameters(skin: &Skin, origin: &str, imgs: &[Image], q: &ResultsQuery) -> Value {
    let ttl = (q.expiration_seconds.unwrap_or(3600) as u64).clamp(1, 7 * 86_400);
    let front = imgs.iter().find(|i| i.side_id == 1).or(imgs.first());
    let mut params = front
        .and_then(|i| i.parameters.clone())
        .unwrap_or_else(|| json!({}));
    if q.with_masks.unwrap_or(true) {
        if let Some(obj) = params.as_object_mut() {
            for p in obj.values_mut() {
                let masks: Map<String, Value> = imgs
                    .iter()
                    .filter(|i| !i.masks.is_empty())
                    .map(|i| {
                        (
                            side_name(i).to_string(),
                            masks_json(skin, origin, i, q.svg_masks.unwrap_or(true), ttl),
                        )
                    })
                    .collect();
                p["masks"] = Value::Object(masks);
            }
        }
    }
    let errors: Map<String, Value> = imgs
        .iter()
        .filter_map(|i| {
            Some((
                side_name(i).to_string(),
                json!(i.detection_error.clone().or(i.error.clone())?),
            ))
        })
        .collect();
    json!({
        "image_batch_id": imgs.first().map(|i| i.batch_id),
        "parameters": params,
        "all_algorithms_calculated": !imgs.is_empty() && imgs.iter().all(|i| i.status != ImageStatus::Queued && i.status != ImageStatus::Uploaded && i.status != ImageStatus::AwaitingUpload && i.all_calculated()),
        "detection_errors": errors,
        "quality_issues": imgs.iter().map(|i| (side_name(i).to_string(), json!(i.quality_issues))).collect::<Map<_, _>>(),
        "predicted_images": imgs.iter().map(|i| (side_name(i).to_string(), predicted(skin, origin, i, ttl))).collect::<Map<_, _>>(),
    })
}

/// The batch's results: the front image's `parameters` (with area masks
/// per side), detection errors and quality issues by side, signed URLs of
/// the photos and derived images, and the parameters the appliance does
/// not compute. Poll until `all_algorithms_calculated`.
#[utoipa::path(
    get,
    path = "/api/v3/companies/{company_id}/batches/{batch_id}/results/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_v3_batch_results",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("batch_id" = Uuid, Path, description = "A batch of the company."), ResultsQuery),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The results so far.", body = Object, example = json!({"all_algorithms_calculated": true, "detection_errors": {}, "face_skin_metrics_3": {"application_id": "61726775-732d-4000-8000-736b696e0001", "parameters": {"redness": {"value": 14.2, "masks": {"front": {"svg": "https://appliance.local/images/0190f5a5-4e5f-7a6b-9c7d-8e9fa0b1c2d3.svg?expires=1738319400&signature=..."}}}}}, "image_batch_id": "0190f5a5-1b2c-7d3e-8f4a-5b6c7d8e9fa0", "predicted_images": {"front": {"aligned_face": null, "anonymised": null, "original": null}}, "quality_issues": {"front": []}, "subject_id": "0190f5a5-0a1b-7c2d-9e3f-4a5b6c7d8e9f", "unavailable_parameters": ["puffiness"]})),
        (status = 400, description = "A path id is not a UUID, or a query parameter is invalid.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such batch of the caller's company.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn batch_results(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Path((c, b)): Path<(Uuid, Uuid)>,
    Query(q): Query<ResultsQuery>,
) -> SkinResult<Json<Value>> {
    let (bt, imgs) = batch_any(&skin, &caller, c, b).await?;
    let origin = skin.origin(&parts);
    let p = batch_parameters(&skin, &origin, &imgs, &q);
    Ok(Json(json!({
        "image_batch_id": bt.id,
        "subject_id": bt.subject_id,
        "all_algorithms_calculated": p["all_algorithms_calculated"],
        "face_skin_metrics_3": {"application_id": super::views::app_id(imgs.first()), "parameters": p["parameters"]},
        "detection_errors": p["detection_errors"],
        "quality_issues": p["quality_issues"],
        "predicted_images": p["predicted_images"],
        "unavailable_parameters": super::UNAVAILABLE.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
    })))
}

/// The subject's parameters per batch, newest first (batches without
/// images are left out).
#[utoipa::path(
    get,
    path = "/api/v3/companies/{company_id}/subjects/{subject_id}/parameters/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_v3_parameters",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("subject_id" = Uuid, Path, description = "A subject of the company (any dataset).")),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "One entry per batch.", body = [Object], example = json!([{"all_algorithms_calculated": true, "can_watch_predicted_images": true, "detection_errors": {}, "image_batch_id": "0190f5a5-1b2c-7d3e-8f4a-5b6c7d8e9fa0", "parameters": {"redness": {"value": 14.2}}, "predicted_images": {"front": {"aligned_face": null, "anonymised": null, "original": null}}, "sc_app_id": "61726775-732d-4000-8000-736b696e0001", "subject_id": "0190f5a5-0a1b-7c2d-9e3f-4a5b6c7d8e9f", "survey_results": []}])),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such subject of the caller's company.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn parameters(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Path((c, s)): Path<(Uuid, Uuid)>,
) -> SkinResult<Json<Value>> {
    subject_any(&skin, &caller, c, s).await?;
    let records = skin.records.clone();
    let batches = blocking(move || {
        let bs = SkinStore::scan(&records.batches, |b: &Batch| b.subject_id == s)?;
        bs.into_iter()
            .rev()
            .map(|b| Ok((b.id, records.batch_images(b.id)?)))
            .collect::<Result<Vec<_>, crate::store::StoreError>>()
    })
    .await?;
    let origin = skin.origin(&parts);
    let q = ResultsQuery {
        expiration_seconds: None,
        with_masks: Some(false),
        svg_masks: Some(true),
    };
    Ok(Json(Value::Array(
        batches
            .iter()
            .filter(|(_, imgs)| !imgs.is_empty())
            .map(|(id, imgs)| {
                let p = batch_parameters(&skin, &origin, imgs, &q);
                json!({"image_batch_id": id, "subject_id": s, "parameters": p["parameters"], "survey_results": [],
                    "all_algorithms_calculated": p["all_algorithms_calculated"], "sc_app_id": super::views::app_id(imgs.first()),
                    "can_watch_predicted_images": true, "predicted_images": p["predicted_images"],
                    "detection_errors": p["detection_errors"]})
            })
            .collect(),
    )))
}

/// A batch: its images by side (with signed URLs valid 1 h), subject,
/// dataset and application.
#[utoipa::path(
    get,
    path = "/api/v3/companies/{company_id}/batches/{batch_id}/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_v3_batch_info",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("batch_id" = Uuid, Path, description = "A batch of the company.")),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The batch.", body = Object, example = json!({"connected_applications": ["61726775-732d-4000-8000-736b696e0001"], "created_at": "2025-01-31T09:32:00Z", "dataset": {"id": "0190f5a4-9b1c-7d2e-8f3a-1c2d3e4f5a6b", "name": "Spring trial"}, "id": "0190f5a5-1b2c-7d3e-8f4a-5b6c7d8e9fa0", "images": {"front": {"created_at": "2025-01-31T09:32:00Z", "id": "0190f5a5-2c3d-7e4f-9a5b-6c7d8e9fa0b1", "meta": null, "name": "front.jpg", "original_image_id": "0190f5a5-2c3d-7e4f-9a5b-6c7d8e9fa0b1", "signed_url": null, "status": "awaiting_upload"}}, "meta": null, "subject": {"id": "0190f5a5-0a1b-7c2d-9e3f-4a5b6c7d8e9f", "name": "Jane Roe"}})),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such batch of the caller's company.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn batch_info(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Path((c, b)): Path<(Uuid, Uuid)>,
) -> SkinResult<Json<Value>> {
    let (bt, imgs) = batch_any(&skin, &caller, c, b).await?;
    let records = skin.records.clone();
    let (sid, did) = (bt.subject_id, bt.dataset_id);
    let (sub, ds) = blocking(move || {
        Ok((
            SkinStore::get::<Subject>(&records.subjects, sid)?,
            SkinStore::get::<Dataset>(&records.datasets, did)?,
        ))
    })
    .await?;
    let origin = skin.origin(&parts);
    let images: Map<String, Value> = imgs
        .iter()
        .map(|i| {
            (
                side_name(i).to_string(),
                json!({"id": i.id, "name": i.name, "created_at": i.creation_time,
                "signed_url": i.blob.as_ref().map(|_| file_url(&skin, &origin, i.id, "jpg", 3600)),
                "original_image_id": i.id, "meta": i.meta, "status": status_name(i.status)}),
            )
        })
        .collect();
    Ok(Json(json!({
        "id": bt.id, "images": images,
        "subject": sub.map(|s| json!({"id": s.id, "name": s.name})),
        "dataset": ds.map(|d| json!({"id": d.id, "name": d.name})),
        "connected_applications": [super::views::app_id(imgs.first())],
        "created_at": bt.creation_time, "meta": bt.meta,
    })))
}

/// Filters, order and page of the batch list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchListQuery {
    /// `creation_time` (also `created_at`, `id`): oldest first; anything
    /// else: newest first.
    pub ordering: Option<String>,
    /// Only this dataset's.
    pub dataset_id: Option<Uuid>,
    /// Only this subject's.
    pub subject_id: Option<Uuid>,
    /// Case-insensitive substring of the subject's or an image's name.
    pub q: Option<String>,
    /// 1-based page number, or `last`; past the last page: 404.
    pub page: Option<String>,
    /// Items per page: default 20, at most 100.
    pub page_size: Option<String>,
}

/// The company's batches with their images, newest first unless
/// `ordering=creation_time`, paginated.
#[utoipa::path(
    get,
    path = "/api/v3/companies/{company_id}/batches/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_v3_list_batches",
    params(("company_id" = Uuid, Path, description = "The caller's company."), BatchListQuery),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "A page of batches.", body = Page<BatchView>),
        (status = 400, description = "A path id is not a UUID, or a query parameter is invalid.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "Not the caller's company; or `page` past the last page (`Invalid page.`).", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn list_batches(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Path(c): Path<Uuid>,
    Query(q): Query<BatchListQuery>,
) -> SkinResult<Json<Page<BatchView>>> {
    caller.company(c)?;
    // As DRF's ordering filter: an unknown field is ignored.
    let ascending = matches!(
        q.ordering.as_deref().map(str::trim),
        Some("creation_time") | Some("created_at") | Some("id")
    );
    let records = skin.records.clone();
    let (dsf, sf) = (q.dataset_id, q.subject_id);
    let needle = q.q.clone().unwrap_or_default().to_lowercase();
    let rows = blocking(move || {
        let subjects: std::collections::HashMap<Uuid, String> =
            SkinStore::scan(&records.subjects, |s: &Subject| s.company_id == c)?
                .into_iter()
                .map(|s| (s.id, s.name.to_lowercase()))
                .collect();
        let mut out = Vec::new();
        for b in SkinStore::scan(&records.batches, |b: &Batch| {
            b.company_id == c
                && dsf.is_none_or(|d| b.dataset_id == d)
                && sf.is_none_or(|s| b.subject_id == s)
        })? {
            let imgs = records.batch_images(b.id)?;
            let hit = needle.is_empty()
                || subjects
                    .get(&b.subject_id)
                    .is_some_and(|n| n.contains(&needle))
                || imgs.iter().any(|i| i.name.to_lowercase().contains(&needle));
            if hit {
                out.push(super::views::batch_view(&b, &imgs));
            }
        }
        Ok(out)
    })
    .await?;
    let rows = if ascending {
        rows
    } else {
        rows.into_iter().rev().collect()
    };
    skin.page(&parts, rows, &q.page, &q.page_size)
}
