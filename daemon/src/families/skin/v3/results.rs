//! What a batch gives back: its results, a subject's parameters, batch
//! info and the batch list.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::IntoParams;
use uuid::Uuid;

use super::{batch_any, file_url, subject_any};
use crate::families::skin::accounts::Caller;
use crate::families::skin::catalog;
use crate::families::skin::catalog::FACE_DETECTOR;
use crate::families::skin::error::{SkinErrorBody, SkinResult};
use crate::families::skin::records::*;
use crate::families::skin::service::Skin;
use crate::families::skin::views::{extension, status_name, BatchView, Page};
use crate::store::blocking;

/// What the results carry.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// Seconds the file URLs in the answer stay valid (default 3600, 1 s
    /// to 7 days).
    #[serde(default, deserialize_with = "crate::families::skin::lenient::opt_u32")]
    pub expiration_seconds: Option<u32>,
    /// Add each parameter's area masks (default true).
    #[serde(default, deserialize_with = "crate::families::skin::lenient::opt_bool")]
    pub with_masks: Option<bool>,
    /// Masks as a signed SVG file URL (default true) rather than polygons.
    #[serde(default, deserialize_with = "crate::families::skin::lenient::opt_bool")]
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
        .and_then(super::super::present::stored_parameters)
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
            // A failed quality gate is why a side has no values, too, when
            // it withheld every metric (a blurred photo keeps its colour).
            let none_ok = !i
                .results
                .iter()
                .any(|r| r.algorithm_version_id != FACE_DETECTOR && r.is_ok);
            let gates =
                (none_ok && !i.quality_issues.is_empty()).then(|| i.quality_issues.join(", "));
            Some((
                side_name(i).to_string(),
                json!(i.detection_error.clone().or(i.error.clone()).or(gates)?),
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
        "face_skin_metrics_3": {"application_id": crate::families::skin::views::app_id(imgs.first()), "parameters": p["parameters"]},
        "detection_errors": p["detection_errors"],
        "quality_issues": p["quality_issues"],
        "predicted_images": p["predicted_images"],
        "unavailable_parameters": crate::families::skin::UNAVAILABLE.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
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
                    "all_algorithms_calculated": p["all_algorithms_calculated"], "sc_app_id": crate::families::skin::views::app_id(imgs.first()),
                    "can_watch_predicted_images": true, "predicted_images": p["predicted_images"],
                    "detection_errors": p["detection_errors"], "quality_issues": p["quality_issues"]})
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
        "connected_applications": crate::families::skin::views::connected_applications(&imgs),
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
                // When its photos were taken (a back-dated upload's
                // `creation_time`), else when the batch was made.
                let taken = imgs
                    .iter()
                    .map(|i| i.created_unix)
                    .min()
                    .or_else(|| rfc3339_unix(&b.creation_time))
                    .unwrap_or(0);
                out.push((
                    taken,
                    b.id,
                    crate::families::skin::views::batch_view(&b, &imgs),
                ));
            }
        }
        out.sort_by_key(|(t, id, _)| (*t, *id));
        Ok(out)
    })
    .await?;
    let rows = rows.into_iter().map(|(_, _, v)| v);
    let rows: Vec<_> = if ascending {
        rows.collect()
    } else {
        rows.rev().collect()
    };
    skin.page(&parts, rows, &q.page, &q.page_size)
}

/// Unix seconds of an RFC 3339 time.
fn rfc3339_unix(s: &str) -> Option<u64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
}
