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
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::Sha256;
use uuid::Uuid;

use super::accounts::Caller;
use super::catalog;
use super::error::{SkinError, SkinResult};
use super::intake::{self, NewImage};
use super::records::*;
use super::service::Skin;
use super::v1::new_batch;
use super::views::{extension, image_view};
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

fn upload_target(skin: &Skin, origin: &str, img: &Image) -> Value {
    let exp = unix_now() + skin.config.skin_api.upload_url_secs;
    let sig = signature(&skin.upload_key, &format!("upload:{}", img.id), exp);
    json!({
        "url": format!("{origin}/api/v3/uploads/{}/?expires={exp}&signature={sig}", img.id),
        "method": "PUT",
        "headers": {"Content-Type": "application/octet-stream",
            "X-Goog-Content-Length-Range": format!("1,{}", skin.config.skin_api.max_image_bytes)},
        "content_type": "application/octet-stream",
        "id": img.id,
        "expires_at": exp,
    })
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

#[derive(Debug, Default, Deserialize)]
pub struct UploadBody {
    pub front: Option<String>,
    pub left: Option<String>,
    pub right: Option<String>,
    pub creation_time: Option<String>,
    pub meta: Option<Value>,
}

/// `POST /api/v3/companies/{c}/subjects/{s}/upload/`: a new batch and a
/// signed PUT URL per side named.
pub async fn start_upload(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Path((c, s)): Path<(Uuid, Uuid)>,
    Json(b): Json<UploadBody>,
) -> SkinResult<Json<Value>> {
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
    let mut out = Map::new();
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
        let tech = catalog::side(side).map(|s| s.tech_name).unwrap_or("front");
        out.insert(tech.into(), upload_target(&skin, &origin, &img));
    }
    out.insert("image_batch_id".into(), json!(bt.id));
    Ok(Json(Value::Object(out)))
}

#[derive(Debug, Default, Deserialize)]
pub struct V1SignedBody {
    pub batch_id: Option<Uuid>,
    pub side_id: Option<u32>,
    pub light_id: Option<u32>,
    pub name: Option<String>,
    pub meta: Option<Value>,
    pub app_args: Option<Value>,
    pub creation_time: Option<String>,
}

/// `POST /api/v1/companies/{c}/subjects/{s}/signed_upload_url/` → 201:
/// one signed PUT URL; the batch is made when none is given.
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
    v["image_id"] = json!(img.id);
    v["batch_id"] = json!(bt.id);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct SignedQuery {
    pub expires: Option<u64>,
    pub signature: Option<String>,
}

/// `PUT /api/v3/uploads/{image_id}/?expires&signature`: the photo's bytes.
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

#[derive(Debug, Default, Deserialize)]
pub struct ComputeBody {
    pub app_args: Option<Value>,
}

/// `POST /api/v3/companies/{c}/batches/{b}/compute/` → 200, no body: the
/// uploaded photos are queued. A side whose upload has not arrived: 400.
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

#[derive(Debug, Deserialize)]
pub struct ResultsQuery {
    #[serde(default, deserialize_with = "super::lenient::opt_u32")]
    pub expiration_seconds: Option<u32>,
    #[serde(default, deserialize_with = "super::lenient::opt_bool")]
    pub with_masks: Option<bool>,
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

/// `GET /api/v3/companies/{c}/batches/{b}/results/`.
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

/// `GET /api/v3/companies/{c}/subjects/{s}/parameters/`: per batch,
/// newest first.
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

/// `GET /api/v3/companies/{c}/batches/{b}/`.
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
                "original_image_id": i.id, "meta": i.meta, "status": image_view(i)["status"]}),
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

#[derive(Debug, Default, Deserialize)]
pub struct BatchListQuery {
    pub ordering: Option<String>,
    pub dataset_id: Option<Uuid>,
    pub subject_id: Option<Uuid>,
    pub q: Option<String>,
    pub page: Option<String>,
    pub page_size: Option<String>,
}

/// `GET /api/v3/companies/{c}/batches/?ordering&q&page&page_size&dataset_id&subject_id`:
/// newest first unless `ordering=creation_time`; `q` matches the
/// subject's name or an image's name.
pub async fn list_batches(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Path(c): Path<Uuid>,
    Query(q): Query<BatchListQuery>,
) -> SkinResult<Json<Value>> {
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
