//! The reference's v1 surface: dictionaries, applications and runs,
//! datasets, subjects, batches, b64 image uploads, results, auxiliary
//! images and their files, history and smoothing. Every id in a path is
//! checked against the caller's company: another tenant's data is 404,
//! exactly as an unknown id.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::accounts::Caller;
use super::catalog::{self, AlgorithmView, ApplicationView, ImageType, Named, FACE_DETECTOR};
use super::error::{SkinError, SkinErrorBody, SkinResult};
use super::hooks::{WebhookBody, WebhookView};
use super::lenient;
use super::paging::{self, Key};
use super::records::*;
use super::service::Skin;
use super::smoothing::{self, Method};
use crate::http::extract::OptionalJson;
use crate::store::{blocking, now_rfc3339};

pub use super::views::*;

mod datasets;
mod history;
mod images;
mod subjects;
mod webhooks;

pub use datasets::*;
pub use history::*;
pub use images::*;
pub use subjects::*;
pub use webhooks::*;

/// The image types the appliance analyses (selfies), with their sides
/// and lights. No authentication.
#[utoipa::path(
    get,
    path = "/api/v1/dicts/image_types/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_image_types",
    responses(
        (status = 200, description = "The image types.", body = [ImageType]),
    ),
)]
pub async fn image_types() -> Json<Vec<ImageType>> {
    Json(vec![catalog::image_type_json()])
}

/// Every algorithm of the reference, with whether the appliance computes
/// it: the ones it does not have `is_available: false` and the reason.
/// No authentication.
#[utoipa::path(
    get,
    path = "/api/v1/dicts/algorithms/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_algorithms",
    responses(
        (status = 200, description = "The algorithms.", body = [AlgorithmView]),
    ),
)]
pub async fn algorithms() -> Json<Vec<AlgorithmView>> {
    Json(
        catalog::algorithms()
            .iter()
            .map(catalog::algorithm_json)
            .collect(),
    )
}

/// The applications the company can attach to a dataset: the appliance's
/// one, with the algorithms it computes.
#[utoipa::path(
    get,
    path = "/api/v1/companies/{company_id}/applications/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_applications",
    params(("company_id" = Uuid, Path, description = "The caller's company.")),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The application.", body = [ApplicationView]),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "Not the caller's company.", body = SkinErrorBody),
    ),
)]
pub async fn applications(
    caller: Caller,
    Path(c): Path<Uuid>,
) -> SkinResult<Json<Vec<ApplicationView>>> {
    caller.company(c)?;
    Ok(Json(vec![catalog::application_json()]))
}

/// The dataset to attach the application to, and what it runs.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"dataset_id": "0190f5a4-9b1c-7d2e-8f3a-1c2d3e4f5a6b", "enabled_algorithms": [30, 31]}))]
pub struct RunBody {
    /// Required.
    pub dataset_id: Option<Uuid>,
    /// Algorithm ids (`/api/v1/dicts/algorithms/`, available ones only);
    /// default: every computed one. The face detector (40) is always added.
    #[serde(default, deserialize_with = "lenient::opt_u32_list")]
    pub enabled_algorithms: Option<Vec<u32>>,
}

/// An application run: the application attached to a dataset.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"application_id": "61726775-732d-4000-8000-736b696e0001",
    "creation_time": "2025-01-31T09:30:30Z", "dataset_id": "0190f5a4-9b1c-7d2e-8f3a-1c2d3e4f5a6b",
    "enabled_algorithms": [30, 31, 40], "id": "0190f5a4-a1b2-7c3d-8e4f-5a6b7c8d9e0f",
    "message": "Application argus Skin Metrics has been successfully attached to dataset 0190f5a4-9b1c-7d2e-8f3a-1c2d3e4f5a6b"}))]
pub struct AttachedRun {
    pub application_id: Uuid,
    pub creation_time: String,
    pub dataset_id: Uuid,
    /// Sorted, with the face detector.
    pub enabled_algorithms: Vec<u32>,
    /// The run's id (`application_run_id` in results).
    pub id: Uuid,
    pub message: String,
}

/// The images of `ds` uploaded while no application was attached, queued
/// with its run's algorithms ("after Application and Dataset are linked
/// all images from Dataset will be processed", reference 000). A batch
/// still awaiting one of its uploads is left for its `/compute/`.
fn queue_waiting(
    records: &SkinStore,
    queue: &crate::jobs::JobQueue,
    ds: &Dataset,
) -> Result<(), crate::store::StoreError> {
    let now = crate::store::unix_now();
    let images = SkinStore::scan(&records.images, |i: &Image| i.dataset_id == ds.id)?;
    let awaiting: std::collections::HashSet<Uuid> = images
        .iter()
        .filter(|i| i.status == ImageStatus::AwaitingUpload && !i.upload_lapsed(now))
        .map(|i| i.batch_id)
        .collect();
    for img in images
        .iter()
        .filter(|i| i.status == ImageStatus::Uploaded && !awaiting.contains(&i.batch_id))
    {
        if crate::families::skin::intake::queue_if_uploaded(records, img.id, Some(ds))? {
            queue.enqueue(img.id)?;
        }
    }
    Ok(())
}

/// Attach the application to a dataset with the algorithms to run (every
/// computed one by default; the face detector always). Images uploaded
/// from then on are analysed at once, and those already uploaded are
/// queued now; attaching again replaces the run.
#[utoipa::path(
    post,
    path = "/api/v1/companies/{company_id}/applications/{app_id}/runs/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_attach_application",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("app_id" = Uuid, Path, description = "The application (`GET .../applications/`; the reference's Face Metrics 2.0 id is accepted too).")),
    request_body = RunBody,
    security(("skin_token" = [])),
    responses(
        (status = 201, description = "Attached.", body = AttachedRun),
        (status = 400, description = "A path id is not a UUID, the body is not JSON, `dataset_id` is missing, or an algorithm is unknown or not available.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such application, or no such dataset of the caller's company.", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn attach_application(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, app_id)): Path<(Uuid, Uuid)>,
    Json(b): Json<RunBody>,
) -> SkinResult<Response> {
    caller.company(c)?;
    if !catalog::is_application(app_id) {
        return Err(SkinError::not_found("Application"));
    }
    let d = b
        .dataset_id
        .ok_or_else(|| SkinError::Field("dataset_id", "This field is required.".into()))?;
    let mut algs = b.enabled_algorithms.unwrap_or_else(catalog::computed_ids);
    for a in &algs {
        match catalog::algorithm(*a) {
            None => {
                return Err(SkinError::Field(
                    "enabled_algorithms",
                    format!("Unknown algorithm id {a}."),
                ))
            }
            Some(alg) if alg.unavailable.is_some() => {
                return Err(SkinError::Field(
                    "enabled_algorithms",
                    format!(
                        "Algorithm {a} ({}) is not available on this appliance: {}",
                        alg.tech_name,
                        alg.unavailable.unwrap_or_default()
                    ),
                ))
            }
            _ => {}
        }
    }
    if !algs.contains(&FACE_DETECTOR) {
        algs.insert(0, FACE_DETECTOR);
    }
    algs.sort();
    algs.dedup();
    let run = AppRun {
        id: Uuid::now_v7(),
        application_id: app_id,
        enabled_algorithms: algs,
        creation_time: now_rfc3339(),
    };
    let (records, store, queue, r) = (
        skin.records.clone(),
        skin.store.clone(),
        skin.queue.clone(),
        run.clone(),
    );
    let ds = blocking(move || {
        let Some(mut ds) =
            SkinStore::get::<Dataset>(&records.datasets, d)?.filter(|x| x.company_id == c)
        else {
            return Ok(None);
        };
        ds.run = Some(r);
        SkinStore::put(&records.datasets, ds.id, &ds)?;
        queue_waiting(&records, &queue, &ds)?;
        store.flush()?;
        Ok(Some(ds))
    })
    .await?
    .ok_or_else(|| SkinError::not_found("Dataset"))?;
    skin.queue.wake();
    Ok((
        StatusCode::CREATED,
        Json(AttachedRun {
            application_id: app_id,
            creation_time: run.creation_time,
            dataset_id: ds.id,
            enabled_algorithms: run.enabled_algorithms,
            id: run.id,
            message: format!(
                "Application {} has been successfully attached to dataset {}",
                catalog::APPLICATION_NAME,
                ds.id
            ),
        }),
    )
        .into_response())
}

fn check_name(field: &'static str, name: &str) -> SkinResult<String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 512 {
        return Err(SkinError::Field(
            field,
            "Must be 1 to 512 characters.".into(),
        ));
    }
    // DRF's CharField refuses them too (PostgreSQL text cannot hold one).
    if n.contains('\0') {
        return Err(SkinError::Field(
            field,
            "Null characters are not allowed.".into(),
        ));
    }
    Ok(n.to_string())
}

/// The caller's dataset `d` of company `c`, or 404.
pub async fn dataset(skin: &Skin, caller: &Caller, c: Uuid, d: Uuid) -> SkinResult<Dataset> {
    caller.company(c)?;
    let records = skin.records.clone();
    blocking(move || SkinStore::get::<Dataset>(&records.datasets, d))
        .await?
        .filter(|x| x.company_id == c)
        .ok_or_else(|| SkinError::not_found("Dataset"))
}

/// The caller's subject `s` in dataset `d`, or 404.
pub async fn subject(
    skin: &Skin,
    caller: &Caller,
    c: Uuid,
    d: Uuid,
    s: Uuid,
) -> SkinResult<(Dataset, Subject)> {
    let ds = dataset(skin, caller, c, d).await?;
    let records = skin.records.clone();
    let sub = blocking(move || SkinStore::get::<Subject>(&records.subjects, s))
        .await?
        .filter(|x| x.company_id == c && x.dataset_id == d)
        .ok_or_else(|| SkinError::not_found("Subject"))?;
    Ok((ds, sub))
}

/// The caller's batch `b` of subject `s`, or 404.
pub async fn batch(
    skin: &Skin,
    caller: &Caller,
    ids: (Uuid, Uuid, Uuid, Uuid),
) -> SkinResult<(Dataset, Subject, Batch)> {
    let (c, d, s, b) = ids;
    let (ds, sub) = subject(skin, caller, c, d, s).await?;
    let records = skin.records.clone();
    let bt = blocking(move || SkinStore::get::<Batch>(&records.batches, b))
        .await?
        .filter(|x| x.subject_id == s && x.company_id == c)
        .ok_or_else(|| SkinError::not_found("Batch"))?;
    Ok((ds, sub, bt))
}

/// The caller's image `i` in batch `b`, or 404.
pub async fn image(
    skin: &Skin,
    caller: &Caller,
    ids: (Uuid, Uuid, Uuid, Uuid, Uuid),
) -> SkinResult<Image> {
    let (c, d, s, b, i) = ids;
    batch(skin, caller, (c, d, s, b)).await?;
    let records = skin.records.clone();
    blocking(move || SkinStore::get::<Image>(&records.images, i))
        .await?
        .filter(|x| x.batch_id == b && x.company_id == c)
        .ok_or_else(|| SkinError::not_found("Image"))
}
