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
//!
//! `upload` holds the signed uploads, `results` what a batch gives back;
//! this file the pieces both use and compute.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::accounts::Caller;
use super::catalog;
use super::error::{SkinError, SkinErrorBody, SkinResult};
use super::intake;
use super::records::*;
use super::service::Skin;
use crate::http::extract::OptionalJson;
use crate::store::blocking;

mod results;
mod upload;

pub use results::*;
pub use upload::*;

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
    OptionalJson(body): OptionalJson<ComputeBody>,
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
    if let Some(ComputeBody { app_args: Some(a) }) = body {
        bt.app_args = a;
        store_batch(&skin, &bt).await?;
    }
    let (records, store, queue) = (skin.records.clone(), skin.store.clone(), skin.queue.clone());
    blocking(move || {
        let ds: Option<Dataset> = SkinStore::get(&records.datasets, bt.dataset_id)?;
        for img in imgs.iter().filter(|i| i.status == ImageStatus::Uploaded) {
            if intake::queue_if_uploaded(&records, img.id, ds.as_ref())? {
                queue.enqueue(img.id)?;
            }
        }
        store.flush()
    })
    .await?;
    skin.queue.wake();
    Ok(StatusCode::OK)
}
