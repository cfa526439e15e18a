//! Signed uploads: the v3 upload flow served by the appliance itself and
//! the v1 signed upload URL, and the HMAC signatures of upload and file URLs.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{batch_any, store_batch, subject_any};
use crate::families::skin::accounts::Caller;
use crate::families::skin::catalog;
use crate::families::skin::error::{SkinError, SkinErrorBody, SkinResult};
use crate::families::skin::intake::{self, NewImage};
use crate::families::skin::records::*;
use crate::families::skin::service::Skin;
use crate::families::skin::v1::new_batch;
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
    let exp = img
        .upload_expires_unix
        .unwrap_or_else(|| unix_now() + skin.config.skin_api.upload_url_secs);
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
    /// 1 front (default), 2 right, 3 left (a number or its text).
    #[serde(default, deserialize_with = "super::super::lenient::opt_u32")]
    pub side_id: Option<u32>,
    /// 1 regular (default).
    #[serde(default, deserialize_with = "super::super::lenient::opt_u32")]
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
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The photo's bytes, in a format of `limits.formats` (JPEG, PNG, WebP, BMP by default; TIFF and GIF where the operator adds them)."),
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
    let outcome = blocking(move || {
        // The marker first: of two PUTs racing on one URL, one wins.
        let prev = records.uploads.compare_and_swap(
            id.as_bytes(),
            None as Option<&[u8]>,
            Some(&[1u8][..]),
        )?;
        if prev.is_err() {
            return Ok(Fill::Used);
        }
        let Some(img) = SkinStore::get::<Image>(&records.images, id)? else {
            return Ok(Fill::Missing);
        };
        if img.status != ImageStatus::AwaitingUpload {
            return Ok(Fill::Used);
        }
        // The file outside the batch's lock: its key is this image's own.
        let key = intake::blob_key(id);
        store.blobs.put(&key, &body)?;
        let fill = fill_record(&records, &img, &key);
        // Not filled, or failed before the record took the file's name: the
        // file is no one's. Kept when that cannot be read.
        let orphan = match SkinStore::get::<Image>(&records.images, id) {
            Ok(Some(i)) => i.blob.as_deref() != Some(key.as_str()),
            Ok(None) => true,
            Err(_) => false,
        };
        if orphan {
            if let Err(e) = store.blobs.delete(&key) {
                tracing::warn!(%key, error = %e, "skin: refused upload's file not deleted");
            }
        }
        let fill = fill?;
        if fill == Fill::Filled {
            store.flush()?;
        }
        Ok(fill)
    })
    .await?;
    match outcome {
        Fill::Filled => Ok(StatusCode::OK),
        Fill::Missing => Err(SkinError::not_found("Upload")),
        Fill::Used => Err(SkinError::Conflict(
            "This upload URL has already been used; ask for a new one.".into(),
        )),
        Fill::Lapsed => Err(SkinError::Forbidden(
            "The upload URL has expired or its signature does not match; ask for a new one.".into(),
        )),
    }
}

/// What a signed PUT did to its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    Filled,
    /// No such image (never, or removed as lapsed).
    Missing,
    /// The URL was used before, or the image has its photo.
    Used,
    /// The URL expired between its check and the write.
    Lapsed,
}

/// Give image `img` the file at `key`, if it still awaits it and its URL
/// has not lapsed, under its batch's intake lock: a new upload of the side
/// that saw this image as lapsed holds the same lock, so of the two only
/// one lands ([`SkinStore::intake_lock`]).
fn fill_record(
    records: &SkinStore,
    img: &Image,
    key: &str,
) -> Result<Fill, crate::store::StoreError> {
    let _intake = records.intake_lock(img.batch_id);
    let mut fill = Fill::Missing;
    records.update_image(img.id, |i| {
        // Decided afresh if the update retries.
        fill = if i.upload_lapsed(unix_now()) {
            Fill::Lapsed
        } else if i.status != ImageStatus::AwaitingUpload {
            Fill::Used
        } else {
            i.blob = Some(key.to_string());
            i.status = ImageStatus::Uploaded;
            Fill::Filled
        };
    })?;
    Ok(fill)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn awaiting(s: &SkinStore, expires: u64) -> Image {
        let img = Image {
            blob: None,
            upload_expires_unix: Some(expires),
            ..Image::sample(ImageStatus::AwaitingUpload)
        };
        s.put_image(&img).unwrap();
        img
    }

    /// A PUT whose URL lapsed between its signature check and its write
    /// fills nothing: a new upload of the side may already have taken
    /// the image's place in the batch.
    #[test]
    fn a_put_fills_its_image_only_while_its_url_holds() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let s = SkinStore::open(&db).unwrap();

        let live = awaiting(&s, unix_now() + 60);
        assert_eq!(fill_record(&s, &live, "skin/a.img").unwrap(), Fill::Filled);
        let got: Image = SkinStore::get(&s.images, live.id).unwrap().unwrap();
        assert_eq!(got.status, ImageStatus::Uploaded);
        assert_eq!(got.blob.as_deref(), Some("skin/a.img"));
        // Filled once only.
        assert_eq!(fill_record(&s, &live, "skin/b.img").unwrap(), Fill::Used);

        let lapsed = awaiting(&s, unix_now() - 1);
        assert_eq!(
            fill_record(&s, &lapsed, "skin/c.img").unwrap(),
            Fill::Lapsed
        );
        let got: Image = SkinStore::get(&s.images, lapsed.id).unwrap().unwrap();
        assert_eq!(got.status, ImageStatus::AwaitingUpload);
        assert!(got.blob.is_none());
        // The batch no longer counts it, so a new upload of the side may come.
        assert!(s.batch_images(lapsed.batch_id).unwrap().is_empty());

        let gone = Image::sample(ImageStatus::AwaitingUpload);
        assert_eq!(fill_record(&s, &gone, "skin/d.img").unwrap(), Fill::Missing);
    }
}
