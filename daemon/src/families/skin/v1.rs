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
use super::records::*;
use super::service::Skin;
use super::smoothing::{self, Method};
use crate::store::{blocking, now_rfc3339};

pub use super::views::*;

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

/// Attach the application to a dataset with the algorithms to run (every
/// computed one by default; the face detector always). Images uploaded
/// from then on are analysed at once; attaching again replaces the run.
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
    let (records, store, r) = (skin.records.clone(), skin.store.clone(), run.clone());
    let ds = blocking(move || {
        let Some(mut ds) =
            SkinStore::get::<Dataset>(&records.datasets, d)?.filter(|x| x.company_id == c)
        else {
            return Ok(None);
        };
        ds.run = Some(r);
        SkinStore::put(&records.datasets, ds.id, &ds)?;
        store.flush()?;
        Ok(Some(ds))
    })
    .await?
    .ok_or_else(|| SkinError::not_found("Dataset"))?;
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

/// A dataset's fields; on update, only those given change. Numbers and
/// booleans are also accepted as strings (form-style clients).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"name": "Spring trial", "image_type_id": 1, "expire_images_after_days": 30}))]
pub struct DatasetBody {
    /// 1 to 512 characters; required on creation.
    pub name: Option<String>,
    /// Only 1 (selfie); required on creation.
    #[serde(default, deserialize_with = "lenient::opt_u32")]
    pub image_type_id: Option<u32>,
    /// Erase photos this many days (1 to 365) after upload; null: keep.
    #[serde(default, deserialize_with = "lenient::opt_opt_u32")]
    #[schema(value_type = Option<u32>)]
    pub expire_images_after_days: Option<Option<u32>>,
    /// Clear names, metadata and results this many days (1 to 365) after
    /// creation; null: keep.
    #[serde(default, deserialize_with = "lenient::opt_opt_u32")]
    #[schema(value_type = Option<u32>)]
    pub expire_metadata_after_days: Option<Option<u32>>,
    /// Erase each photo as soon as its analysis is done.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub clean_images_as_soon_as_ready: Option<bool>,
    /// Stored and echoed.
    pub custom_branding: Option<Value>,
}

fn check_name(field: &'static str, name: &str) -> SkinResult<String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 512 {
        return Err(SkinError::Field(
            field,
            "Must be 1 to 512 characters.".into(),
        ));
    }
    Ok(n.to_string())
}

fn apply_dataset(ds: &mut Dataset, b: DatasetBody) -> SkinResult<()> {
    if let Some(n) = b.name {
        ds.name = check_name("name", &n)?;
    }
    if let Some(t) = b.image_type_id {
        if t != catalog::SELFIE {
            return Err(SkinError::Field(
                "image_type_id",
                format!("Image type {t} is not analysed by this appliance; only 1 (selfie)."),
            ));
        }
        ds.image_type_id = t;
    }
    for (field, v, slot) in [
        (
            "expire_images_after_days",
            b.expire_images_after_days,
            &mut ds.expire_images_after_days,
        ),
        (
            "expire_metadata_after_days",
            b.expire_metadata_after_days,
            &mut ds.expire_metadata_after_days,
        ),
    ] {
        if let Some(v) = v {
            if let Some(days) = v {
                if !(1..=365).contains(&days) {
                    return Err(SkinError::Field(
                        field,
                        "Ensure this value is between 1 and 365.".into(),
                    ));
                }
            }
            *slot = v;
        }
    }
    if let Some(c) = b.clean_images_as_soon_as_ready {
        ds.clean_images_as_soon_as_ready = c;
    }
    if let Some(cb) = b.custom_branding {
        ds.custom_branding = cb;
    }
    Ok(())
}

/// Create a dataset (a folder of subjects, with its retention rules).
#[utoipa::path(
    post,
    path = "/api/v1/companies/{company_id}/datasets/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_create_dataset",
    params(("company_id" = Uuid, Path, description = "The caller's company.")),
    request_body = DatasetBody,
    security(("skin_token" = [])),
    responses(
        (status = 201, description = "Created.", body = DatasetView),
        (status = 400, description = "A path id is not a UUID, the body is not JSON, or a field is invalid (`{\"<field>\": [\"...\"]}`).", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "Not the caller's company.", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn create_dataset(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path(c): Path<Uuid>,
    Json(b): Json<DatasetBody>,
) -> SkinResult<Response> {
    caller.company(c)?;
    let name = check_name("name", b.name.as_deref().unwrap_or_default())?;
    let mut ds = Dataset {
        id: Uuid::now_v7(),
        company_id: c,
        name,
        image_type_id: catalog::SELFIE,
        expire_images_after_days: None,
        expire_metadata_after_days: None,
        clean_images_as_soon_as_ready: false,
        custom_branding: Value::Null,
        creation_time: now_rfc3339(),
        run: None,
    };
    if b.image_type_id.is_none() {
        return Err(SkinError::Field(
            "image_type_id",
            "This field is required.".into(),
        ));
    }
    apply_dataset(&mut ds, b)?;
    skin.save(|r| &r.datasets, ds.id, &ds).await?;
    Ok((StatusCode::CREATED, Json(dataset_view(&ds))).into_response())
}

/// DRF page-number pagination, with a name search.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1-based page number, or `last`; past the last page: 404.
    pub page: Option<String>,
    /// Items per page: default 20, at most 100; not a positive number
    /// means the default.
    pub page_size: Option<String>,
    /// Case-insensitive substring of the name (datasets, subjects;
    /// ignored for batches and images).
    pub q: Option<String>,
}

/// The company's datasets, newest first, paginated; `q` searches names.
#[utoipa::path(
    get,
    path = "/api/v1/companies/{company_id}/datasets/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_list_datasets",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ListQuery),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "A page of datasets.", body = Page<DatasetView>),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "Not the caller's company; or `page` past the last page (`Invalid page.`).", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn list_datasets(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path(c): Path<Uuid>,
    parts: Parts,
    Query(q): Query<ListQuery>,
) -> SkinResult<Json<Page<DatasetView>>> {
    caller.company(c)?;
    let records = skin.records.clone();
    let needle = q.q.clone().unwrap_or_default().to_lowercase();
    let all = blocking(move || {
        SkinStore::scan(&records.datasets, |d: &Dataset| {
            d.company_id == c && d.name.to_lowercase().contains(&needle)
        })
    })
    .await?;
    let views = all.iter().rev().map(dataset_view).collect();
    skin.page(&parts, views, &q.page, &q.page_size)
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

/// A dataset.
#[utoipa::path(
    get,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_get_dataset",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company.")),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The dataset.", body = DatasetView),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such dataset of the caller's company (another company's ids are 404 too).", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn get_dataset(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d)): Path<(Uuid, Uuid)>,
) -> SkinResult<Json<DatasetView>> {
    Ok(Json(dataset_view(&dataset(&skin, &caller, c, d).await?)))
}

/// Update a dataset's name and retention fields (only those given; `PUT`,
/// `POST` and `PATCH` are the same operation). Retention runs at once:
/// turning on `clean_images_as_soon_as_ready` erases the photos already
/// analysed, and shorter limits apply to what is already stored.
#[utoipa::path(
    method(put, post, patch),
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_update_dataset",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company.")),
    request_body = DatasetBody,
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The updated dataset.", body = DatasetView),
        (status = 400, description = "A path id is not a UUID, the body is not JSON, or a field is invalid (`{\"<field>\": [\"...\"]}`).", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such dataset of the caller's company (another company's ids are 404 too).", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn update_dataset(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d)): Path<(Uuid, Uuid)>,
    Json(b): Json<DatasetBody>,
) -> SkinResult<Json<DatasetView>> {
    let mut ds = dataset(&skin, &caller, c, d).await?;
    apply_dataset(&mut ds, b)?;
    skin.save(|r| &r.datasets, ds.id, &ds).await?;
    let s2 = skin.clone();
    tokio::spawn(async move { super::retention::sweep_now(&s2).await });
    Ok(Json(dataset_view(&ds)))
}

/// A subject's fields; on update, only those given change (null clears).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"name": "Jane Roe", "birth_date": "1990-04-12", "biological_sex": 1, "meta": {"crm_id": "A-1042"}}))]
pub struct SubjectBody {
    /// 1 to 512 characters; required on creation.
    pub name: Option<String>,
    /// `YYYY-MM-DD`, or null.
    #[schema(value_type = Option<String>, format = Date)]
    pub birth_date: Option<Option<String>>,
    /// 1 (female), 2 (male), 3 (other), their `tech_name`, an object with
    /// that `id`, or null.
    #[schema(value_type = Option<Value>)]
    pub biological_sex: Option<Option<Value>>,
    /// Anything; stored and echoed.
    pub meta: Option<Value>,
}

fn sex_id(v: &Value) -> SkinResult<u32> {
    let id = match v {
        Value::Number(n) => n.as_u64().map(|n| n as u32),
        Value::String(s) => match s.as_str() {
            "female" => Some(1),
            "male" => Some(2),
            "other" => Some(3),
            _ => None,
        },
        Value::Object(o) => o.get("id").and_then(Value::as_u64).map(|n| n as u32),
        _ => None,
    };
    id.filter(|i| (1..=3).contains(i)).ok_or_else(|| {
        SkinError::Field(
            "biological_sex",
            "Use 1 (female), 2 (male) or 3 (other).".into(),
        )
    })
}

fn apply_subject(sub: &mut Subject, b: SubjectBody) -> SkinResult<()> {
    if let Some(n) = b.name {
        sub.name = check_name("name", &n)?;
    }
    if let Some(bd) = b.birth_date {
        if let Some(s) = &bd {
            let fmt = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(s, &fmt).map_err(|_| {
                SkinError::Field(
                    "birth_date",
                    "Date has wrong format. Use YYYY-MM-DD.".into(),
                )
            })?;
        }
        sub.birth_date = bd;
    }
    if let Some(sex) = b.biological_sex {
        sub.biological_sex = sex.as_ref().map(sex_id).transpose()?;
    }
    if let Some(m) = b.meta {
        sub.meta = m;
    }
    Ok(())
}

/// Create a subject in a dataset.
#[utoipa::path(
    post,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_create_subject",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company.")),
    request_body = SubjectBody,
    security(("skin_token" = [])),
    responses(
        (status = 201, description = "Created.", body = SubjectView),
        (status = 400, description = "A path id is not a UUID, the body is not JSON, or a field is invalid (`{\"<field>\": [\"...\"]}`).", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such dataset of the caller's company (another company's ids are 404 too).", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn create_subject(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d)): Path<(Uuid, Uuid)>,
    Json(b): Json<SubjectBody>,
) -> SkinResult<Response> {
    let ds = dataset(&skin, &caller, c, d).await?;
    let mut sub = Subject {
        id: Uuid::now_v7(),
        company_id: c,
        dataset_id: d,
        name: check_name("name", b.name.as_deref().unwrap_or_default())?,
        birth_date: None,
        biological_sex: None,
        meta: Value::Null,
        author_id: caller.user.id,
        creation_time: now_rfc3339(),
    };
    apply_subject(&mut sub, b)?;
    skin.save(|r| &r.subjects, sub.id, &sub).await?;
    Ok((StatusCode::CREATED, Json(subject_view(&sub, &ds))).into_response())
}

/// The dataset's subjects, newest first, paginated; `q` searches names.
#[utoipa::path(
    get,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_list_subjects",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company."), ListQuery),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "A page of subjects.", body = Page<SubjectView>),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such dataset of the caller's company (another company's ids are 404 too); or `page` past the last page (`Invalid page.`).", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn list_subjects(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Path((c, d)): Path<(Uuid, Uuid)>,
    Query(q): Query<ListQuery>,
) -> SkinResult<Json<Page<SubjectView>>> {
    let ds = dataset(&skin, &caller, c, d).await?;
    let records = skin.records.clone();
    let needle = q.q.clone().unwrap_or_default().to_lowercase();
    let all = blocking(move || {
        SkinStore::scan(&records.subjects, |s: &Subject| {
            s.dataset_id == d && s.name.to_lowercase().contains(&needle)
        })
    })
    .await?;
    let views = all.iter().rev().map(|s| subject_view(s, &ds)).collect();
    skin.page(&parts, views, &q.page, &q.page_size)
}

/// A subject.
#[utoipa::path(
    get,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/{subject_id}/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_get_subject",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company."), ("subject_id" = Uuid, Path, description = "A subject of the dataset.")),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The subject.", body = SubjectView),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such subject (or dataset) of the caller's company.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn get_subject(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d, s)): Path<(Uuid, Uuid, Uuid)>,
) -> SkinResult<Json<SubjectView>> {
    let (ds, sub) = subject(&skin, &caller, c, d, s).await?;
    Ok(Json(subject_view(&sub, &ds)))
}

/// Update a subject's fields (only those given).
#[utoipa::path(
    patch,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/{subject_id}/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_patch_subject",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company."), ("subject_id" = Uuid, Path, description = "A subject of the dataset.")),
    request_body = SubjectBody,
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The updated subject.", body = SubjectView),
        (status = 400, description = "A path id is not a UUID, the body is not JSON, or a field is invalid (`{\"<field>\": [\"...\"]}`).", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such subject (or dataset) of the caller's company.", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn patch_subject(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d, s)): Path<(Uuid, Uuid, Uuid)>,
    Json(b): Json<SubjectBody>,
) -> SkinResult<Json<SubjectView>> {
    let (ds, mut sub) = subject(&skin, &caller, c, d, s).await?;
    apply_subject(&mut sub, b)?;
    skin.save(|r| &r.subjects, sub.id, &sub).await?;
    Ok(Json(subject_view(&sub, &ds)))
}

/// Delete a subject with its batches, images, results and files.
#[utoipa::path(
    delete,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/{subject_id}/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_delete_subject",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company."), ("subject_id" = Uuid, Path, description = "A subject of the dataset.")),
    security(("skin_token" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such subject (or dataset) of the caller's company.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn delete_subject(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d, s)): Path<(Uuid, Uuid, Uuid)>,
) -> SkinResult<StatusCode> {
    subject(&skin, &caller, c, d, s).await?;
    super::accounts::audit_ok(&skin, "subject_deleted", &caller.user.email, &s.to_string());
    let (records, store) = (skin.records.clone(), skin.store.clone());
    blocking(move || {
        let images = SkinStore::scan(&records.images, |i: &Image| i.subject_id == s)?;
        for img in images {
            super::retention::queue_blob_cleanup(&store, &img, true)?;
            records.images.remove(img.id.as_bytes())?;
        }
        for b in SkinStore::scan(&records.batches, |b: &Batch| b.subject_id == s)? {
            records.batches.remove(b.id.as_bytes())?;
        }
        records.subjects.remove(s.as_bytes())?;
        store.flush()?;
        store.run_cleanup().map(|_| ())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many images had their photo erased.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"erased_images": 3}))]
pub struct Erased {
    pub erased_images: usize,
}

/// Erase every photo of the subject (and the images made from them);
/// results stay.
#[utoipa::path(
    post,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/{subject_id}/delete_photos/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_erase_subject_photos",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company."), ("subject_id" = Uuid, Path, description = "A subject of the dataset.")),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "Erased.", body = Erased),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such subject (or dataset) of the caller's company.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn erase_subject_photos(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d, s)): Path<(Uuid, Uuid, Uuid)>,
) -> SkinResult<Json<Erased>> {
    subject(&skin, &caller, c, d, s).await?;
    let n = super::retention::erase_images(&skin, move |i| i.subject_id == s, true).await?;
    super::accounts::audit_ok(
        &skin,
        "subject_photos_erased",
        &caller.user.email,
        &s.to_string(),
    );
    Ok(Json(Erased { erased_images: n }))
}

/// Clear the subject's name (to `(cleared)`), birth date, sex and meta,
/// and every result of its images; photos stay.
#[utoipa::path(
    post,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/{subject_id}/clear_metadata/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_clear_subject_metadata",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company."), ("subject_id" = Uuid, Path, description = "A subject of the dataset.")),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The cleared subject.", body = SubjectView),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such subject (or dataset) of the caller's company.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn clear_subject_metadata(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d, s)): Path<(Uuid, Uuid, Uuid)>,
) -> SkinResult<Json<SubjectView>> {
    let (ds, mut sub) = subject(&skin, &caller, c, d, s).await?;
    sub.name = "(cleared)".into();
    sub.birth_date = None;
    sub.biological_sex = None;
    sub.meta = Value::Null;
    skin.save(|r| &r.subjects, sub.id, &sub).await?;
    super::retention::clear_results(&skin, move |i| i.subject_id == s).await?;
    super::accounts::audit_ok(
        &skin,
        "subject_metadata_cleared",
        &caller.user.email,
        &s.to_string(),
    );
    Ok(Json(subject_view(&sub, &ds)))
}

/// A batch's metadata.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"meta": {"visit": 2}}))]
pub struct BatchBody {
    /// Anything; stored and echoed.
    pub meta: Option<Value>,
}

/// Create a batch (the photos of one sitting) for a subject. The body is
/// optional.
#[utoipa::path(
    post,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/{subject_id}/batches/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_create_batch",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company."), ("subject_id" = Uuid, Path, description = "A subject of the dataset.")),
    request_body = Option<BatchBody>,
    security(("skin_token" = [])),
    responses(
        (status = 201, description = "Created (no images yet).", body = BatchView),
        (status = 400, description = "A path id is not a UUID, the body is not JSON, or a field is invalid (`{\"<field>\": [\"...\"]}`).", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such subject (or dataset) of the caller's company.", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn create_batch(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d, s)): Path<(Uuid, Uuid, Uuid)>,
    body: Option<Json<BatchBody>>,
) -> SkinResult<Response> {
    subject(&skin, &caller, c, d, s).await?;
    let b = new_batch(
        c,
        d,
        s,
        body.and_then(|Json(b)| b.meta).unwrap_or(Value::Null),
    );
    skin.save(|r| &r.batches, b.id, &b).await?;
    Ok((StatusCode::CREATED, Json(batch_view(&b, &[]))).into_response())
}

pub fn new_batch(c: Uuid, d: Uuid, s: Uuid, meta: Value) -> Batch {
    Batch {
        id: Uuid::now_v7(),
        company_id: c,
        dataset_id: d,
        subject_id: s,
        creation_time: now_rfc3339(),
        meta,
        app_args: Value::Null,
    }
}

/// The subject's batches with their images, newest first, paginated.
#[utoipa::path(
    get,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/{subject_id}/batches/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_list_subject_batches",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company."), ("subject_id" = Uuid, Path, description = "A subject of the dataset."), ListQuery),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "A page of batches.", body = Page<BatchView>),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such subject (or dataset) of the caller's company; or `page` past the last page (`Invalid page.`).", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn list_subject_batches(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Path((c, d, s)): Path<(Uuid, Uuid, Uuid)>,
    Query(q): Query<ListQuery>,
) -> SkinResult<Json<Page<BatchView>>> {
    subject(&skin, &caller, c, d, s).await?;
    let records = skin.records.clone();
    let views = blocking(move || {
        let bs = SkinStore::scan(&records.batches, |b: &Batch| b.subject_id == s)?;
        bs.iter()
            .rev()
            .map(|b| Ok(batch_view(b, &records.batch_images(b.id)?)))
            .collect::<Result<Vec<_>, crate::store::StoreError>>()
    })
    .await?;
    skin.page(&parts, views, &q.page, &q.page_size)
}

/// A photo, base64-encoded in JSON.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"side_id": 1, "light_id": 1, "b64data": "data:image/jpeg;base64,/9j/4AAQSkZJRg..."}))]
pub struct ImageBody {
    /// 1 front (default), 2 right, 3 left.
    #[serde(default, deserialize_with = "lenient::opt_u32")]
    pub side_id: Option<u32>,
    /// 1 regular (default; the only light).
    #[serde(default, deserialize_with = "lenient::opt_u32")]
    pub light_id: Option<u32>,
    /// Required: the JPEG, PNG, WebP, BMP or TIFF bytes in base64 (a
    /// `data:` URL prefix is accepted), at most `skin_api.max_image_bytes`
    /// decoded (30 MiB).
    pub b64data: Option<String>,
    /// Default: the side's `tech_name`.
    pub name: Option<String>,
    /// Anything; stored and echoed.
    pub meta: Option<Value>,
}

/// Upload a photo to a batch. It is checked (format, a still image, its
/// size) and stored; when the dataset has the application attached it is
/// queued for analysis at once (poll `.../results/`, or follow the
/// websockets or the dataset's webhook).
#[utoipa::path(
    post,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/{subject_id}/batches/{batch_id}/images/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_upload_image",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company."), ("subject_id" = Uuid, Path, description = "A subject of the dataset."), ("batch_id" = Uuid, Path, description = "A batch of the subject.")),
    request_body = ImageBody,
    security(("skin_token" = [])),
    responses(
        (status = 201, description = "Stored (and queued when the application is attached).", body = ImageView),
        (status = 400, description = "A path id is not a UUID, the body is not JSON, `b64data` is missing or not base64, or the bytes are not an image the appliance reads.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such batch (or subject, dataset) of the caller's company.", body = SkinErrorBody),
        (status = 413, description = "The body or the decoded image is larger than allowed (`skin_api.max_image_bytes`).", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`, or the image format is not supported.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn upload_image(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d, s, b)): Path<(Uuid, Uuid, Uuid, Uuid)>,
    Json(body): Json<ImageBody>,
) -> SkinResult<Response> {
    let (ds, _sub, bt) = batch(&skin, &caller, (c, d, s, b)).await?;
    let side = body.side_id.unwrap_or(1);
    let b64 = body
        .b64data
        .ok_or_else(|| SkinError::Field("b64data", "This field is required.".into()))?;
    let cleaned: String = b64
        .split(',')
        .next_back()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .map_err(|e| SkinError::Field("b64data", format!("Not valid base64: {e}.")))?;
    let name = body.name.unwrap_or_else(|| {
        catalog::side(side)
            .map(|s| s.tech_name)
            .unwrap_or("image")
            .to_string()
    });
    let img = super::intake::add_image(
        &skin,
        &ds,
        &bt,
        super::intake::NewImage {
            side_id: side,
            light_id: body.light_id.unwrap_or(catalog::LIGHT_REGULAR),
            name,
            meta: body.meta.unwrap_or(Value::Null),
            bytes: Some(bytes),
            taken_at: None,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(image_view(&img))).into_response())
}

/// The batch's images, by side, paginated.
#[utoipa::path(
    get,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/{subject_id}/batches/{batch_id}/images/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_list_batch_images",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company."), ("subject_id" = Uuid, Path, description = "A subject of the dataset."), ("batch_id" = Uuid, Path, description = "A batch of the subject."), ListQuery),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "A page of images.", body = Page<ImageView>),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such batch (or subject, dataset) of the caller's company; or `page` past the last page (`Invalid page.`).", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn list_batch_images(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Path((c, d, s, b)): Path<(Uuid, Uuid, Uuid, Uuid)>,
    Query(q): Query<ListQuery>,
) -> SkinResult<Json<Page<ImageView>>> {
    batch(&skin, &caller, (c, d, s, b)).await?;
    let records = skin.records.clone();
    let imgs = blocking(move || records.batch_images(b)).await?;
    let views = imgs.iter().map(image_view).collect();
    skin.page(&parts, views, &q.page, &q.page_size)
}

/// An image and its analysis state.
#[utoipa::path(
    get,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/{subject_id}/batches/{batch_id}/images/{image_id}/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_get_image",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company."), ("subject_id" = Uuid, Path, description = "A subject of the dataset."), ("batch_id" = Uuid, Path, description = "A batch of the subject."), ("image_id" = Uuid, Path, description = "An image of the batch.")),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The image.", body = ImageView),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such image (or batch, subject, dataset) of the caller's company.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn get_image(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path(ids): Path<(Uuid, Uuid, Uuid, Uuid, Uuid)>,
) -> SkinResult<Json<ImageView>> {
    Ok(Json(image_view(&image(&skin, &caller, ids).await?)))
}

/// Filters of an image's results: a row is listed only when it matches
/// every one given.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// The dataset's application run the image was analysed under.
    pub application_run_id: Option<Uuid>,
    /// The application (the appliance's id or the reference's alias).
    pub application_id: Option<Uuid>,
    /// The application's name (`argus Skin Metrics`).
    pub application_name: Option<String>,
}

/// The image's results: one row per algorithm that has finished. Polled
/// early, the rows so far (`all_algorithms_calculated` on each row says
/// whether more are coming); filters that do not match give `[]`.
/// The token may also be given as `?token=` (a results link).
#[utoipa::path(
    get,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/{subject_id}/batches/{batch_id}/images/{image_id}/results/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_image_results",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company."), ("subject_id" = Uuid, Path, description = "A subject of the dataset."), ("batch_id" = Uuid, Path, description = "A batch of the subject."), ("image_id" = Uuid, Path, description = "An image of the batch."), ResultsQuery, ("token" = Option<String>, Query, description = "The access or private token, where a header cannot be sent (it ends up in logs: prefer the header).")),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The rows so far.", body = [ResultRow]),
        (status = 400, description = "A path id is not a UUID, or a query parameter is invalid.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such image (or batch, subject, dataset) of the caller's company.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn image_results(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path(ids): Path<(Uuid, Uuid, Uuid, Uuid, Uuid)>,
    Query(q): Query<ResultsQuery>,
) -> SkinResult<Json<Vec<ResultRow>>> {
    let img = image(&skin, &caller, ids).await?;
    if q.application_id
        .is_some_and(|a| !catalog::is_application(a))
        || q.application_name
            .as_deref()
            .is_some_and(|n| n != catalog::APPLICATION_NAME)
        || q.application_run_id
            .is_some_and(|r| Some(r) != img.app_run_id)
    {
        return Ok(Json(Vec::new()));
    }
    Ok(Json(result_rows(&img)))
}

/// The images the analysis made (aligned face, anonymised photo, redness
/// heat map, area masks), each with the results it illustrates; the files
/// are at `/images/{id}.{ext}`.
#[utoipa::path(
    get,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/{subject_id}/batches/{batch_id}/images/{image_id}/aux/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_image_aux",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company."), ("subject_id" = Uuid, Path, description = "A subject of the dataset."), ("batch_id" = Uuid, Path, description = "A batch of the subject."), ("image_id" = Uuid, Path, description = "An image of the batch.")),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The auxiliary images.", body = [AuxRow]),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such image (or batch, subject, dataset) of the caller's company.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn image_aux(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path(ids): Path<(Uuid, Uuid, Uuid, Uuid, Uuid)>,
) -> SkinResult<Json<Vec<AuxRow>>> {
    let img = image(&skin, &caller, ids).await?;
    Ok(Json(aux_rows(&img)))
}

/// A stored image file: an auxiliary image by its id, or the original
/// photo by the image's id (`{id}.jpg`; any extension, the bytes keep
/// their own type). For a caller of the owning company (token in the
/// header or `?token=`), or through a signed URL (`?expires&signature`,
/// from the v3 results) with no token.
#[utoipa::path(
    get,
    path = "/images/{file}",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_image_file",
    params(("file" = String, Path, description = "`{id}.{ext}`: an image's or an auxiliary image's id."), super::v3::SignedQuery, ("token" = Option<String>, Query, description = "The access or private token, where a header cannot be sent.")),
    security(("skin_token" = []), ()),
    responses(
        (status = 200, description = "The file, `Cache-Control: private, no-store`.", content((Vec<u8> = "image/jpeg"), (Vec<u8> = "image/png"), (Vec<u8> = "image/svg+xml"), (Vec<u8> = "application/octet-stream"))),
        (status = 400, description = "A query parameter is invalid.", body = SkinErrorBody),
        (status = 401, description = "No valid token and no valid signature.", body = SkinErrorBody),
        (status = 404, description = "No such file of the caller's company, or the photo was erased.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn image_file(
    State(skin): State<Arc<Skin>>,
    caller: Result<Caller, SkinError>,
    Path(file): Path<String>,
    Query(signed): Query<super::v3::SignedQuery>,
) -> SkinResult<Response> {
    let id: Uuid = file
        .split('.')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| SkinError::not_found("Image"))?;
    // A signed URL (v3 results) stands for the token.
    let by_signature = match (signed.expires, signed.signature.as_deref()) {
        (Some(exp), Some(sig)) => {
            super::v3::verify(&skin.upload_key, &format!("file:{id}"), exp, sig)
        }
        _ => false,
    };
    let company = match caller {
        _ if by_signature => None,
        Ok(c) => Some(c.user.company_id),
        Err(e) => return Err(e),
    };
    let mine = move |c: Uuid| company.is_none_or(|m| m == c);
    let records = skin.records.clone();
    let store = skin.store.clone();
    let found = blocking(move || {
        if let Some(img) =
            SkinStore::get::<Image>(&records.images, id)?.filter(|i| mine(i.company_id))
        {
            let Some(blob) = img.blob else {
                return Ok(None);
            };
            return Ok(store.blobs.get(&blob)?.map(|b| {
                let ct = mime_of(&b);
                (b, ct.to_string())
            }));
        }
        for img in SkinStore::scan(&records.images, |i: &Image| {
            mine(i.company_id) && i.aux.iter().any(|a| a.id == id)
        })? {
            if let Some(a) = img.aux.iter().find(|a| a.id == id) {
                return Ok(store
                    .blobs
                    .get(&a.blob)?
                    .map(|b| (b, a.content_type.clone())));
            }
        }
        Ok(None)
    })
    .await?;
    let (bytes, ct) = found.ok_or_else(|| SkinError::not_found("Image"))?;
    Ok((
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "private, no-store".into()),
        ],
        bytes,
    )
        .into_response())
}

/// A range of upload times.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// From this day (`YYYY-MM-DD`, from 00:00 UTC) or time (RFC 3339).
    pub date_from: Option<String>,
    /// To this day (`YYYY-MM-DD`, to 23:59:59 UTC) or time (RFC 3339).
    pub date_to: Option<String>,
}

/// An analysed image of the subject's history, with its results.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub all_algorithms_calculated: bool,
    pub batch_id: Uuid,
    pub creation_time: String,
    pub image_id: Uuid,
    pub results: Vec<ResultRow>,
    pub side: Option<Named>,
}

/// A date (`YYYY-MM-DD`, the start of that day UTC) or an RFC 3339 time,
/// as unix seconds.
fn parse_when(field: &'static str, s: &str, end_of_day: bool) -> SkinResult<u64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.unix_timestamp().max(0) as u64);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(s.get(..10).unwrap_or(s), &fmt)
        .map_err(|_| SkinError::Field(field, "Use YYYY-MM-DD or an RFC 3339 time.".into()))?;
    let t = date.midnight().assume_utc().unix_timestamp().max(0) as u64;
    Ok(if end_of_day { t + 86_399 } else { t })
}

/// The subject's skin diary: every analysed image uploaded in the range,
/// oldest first, with its results.
#[utoipa::path(
    get,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/{subject_id}/all_results/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_all_results",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company."), ("subject_id" = Uuid, Path, description = "A subject of the dataset."), HistoryQuery),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The history.", body = [HistoryEntry]),
        (status = 400, description = "A path id is not a UUID, or `date_from` or `date_to` is neither `YYYY-MM-DD` nor RFC 3339.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such subject (or dataset) of the caller's company.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn all_results(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d, s)): Path<(Uuid, Uuid, Uuid)>,
    Query(q): Query<HistoryQuery>,
) -> SkinResult<Json<Vec<HistoryEntry>>> {
    subject(&skin, &caller, c, d, s).await?;
    let from = q
        .date_from
        .as_deref()
        .map(|v| parse_when("date_from", v, false))
        .transpose()?
        .unwrap_or(0);
    let to = q
        .date_to
        .as_deref()
        .map(|v| parse_when("date_to", v, true))
        .transpose()?
        .unwrap_or(u64::MAX);
    let records = skin.records.clone();
    let imgs = blocking(move || {
        SkinStore::scan(&records.images, |i: &Image| {
            i.subject_id == s
                && i.created_unix >= from
                && i.created_unix <= to
                && !i.results.is_empty()
        })
    })
    .await?;
    Ok(Json(
        imgs.iter()
            .map(|i| HistoryEntry {
                all_algorithms_calculated: i.all_calculated(),
                batch_id: i.batch_id,
                creation_time: i.creation_time.clone(),
                image_id: i.id,
                results: result_rows(i),
                side: side_json(i.side_id),
            })
            .collect(),
    ))
}

/// How to smooth.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SmoothQuery {
    /// Days before the image to take samples from (default 14; a whole
    /// number over 0).
    pub sample_time_window: Option<String>,
    /// At most this many samples, the nearest (default 10; over 0).
    pub sample_max_size: Option<String>,
    /// `mean` (default), `mean_without_outliers` or `linear_approximation`.
    pub smoothing_method: Option<String>,
}

/// A metric of the image, smoothed over the subject's history.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"algorithm_version_id": 30, "parameter": "redness", "sample_max_size": 10,
    "sample_time_window": 14, "samples": 4, "smoothing_method": "mean",
    "tech_name": "selfie_v2.redness", "value": 13.87}))]
pub struct SmoothedRow {
    pub algorithm_version_id: u32,
    /// The v3 parameter.
    pub parameter: Option<String>,
    pub sample_max_size: usize,
    /// Days.
    pub sample_time_window: u32,
    /// How many samples went in.
    pub samples: usize,
    pub smoothing_method: String,
    pub tech_name: String,
    /// The smoothed main value, in the metric's own unit, to 2 decimals.
    pub value: f64,
}

/// A positive whole number query parameter, or its default.
fn positive(field: &'static str, v: Option<&str>, default: u32) -> SkinResult<u32> {
    match v {
        None => Ok(default),
        Some(s) => s
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                SkinError::Field(
                    field,
                    "Ensure this value is a whole number greater than 0.".into(),
                )
            }),
    }
}

/// Each main metric of the image, smoothed over the subject's history up
/// to the image (see [`smoothing`]); metrics with no sample are left out.
#[utoipa::path(
    get,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/{subject_id}/batches/{batch_id}/images/{image_id}/smoothed_results/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_smoothed_results",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company."), ("subject_id" = Uuid, Path, description = "A subject of the dataset."), ("batch_id" = Uuid, Path, description = "A batch of the subject."), ("image_id" = Uuid, Path, description = "An image of the batch."), SmoothQuery),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The smoothed metrics.", body = [SmoothedRow]),
        (status = 400, description = "A path id is not a UUID, or a query parameter is invalid.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such image (or batch, subject, dataset) of the caller's company.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn smoothed_results(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path(ids): Path<(Uuid, Uuid, Uuid, Uuid, Uuid)>,
    Query(q): Query<SmoothQuery>,
) -> SkinResult<Json<Vec<SmoothedRow>>> {
    let img = image(&skin, &caller, ids).await?;
    let method_name = q.smoothing_method.unwrap_or_else(|| "mean".into());
    let method = Method::parse(&method_name).ok_or_else(|| {
        SkinError::Field(
            "smoothing_method",
            "Use mean, mean_without_outliers or linear_approximation.".into(),
        )
    })?;
    let window = positive("sample_time_window", q.sample_time_window.as_deref(), 14)?;
    let max = positive("sample_max_size", q.sample_max_size.as_deref(), 10)? as usize;
    let records = skin.records.clone();
    let subject = img.subject_id;
    let history =
        blocking(move || SkinStore::scan(&records.images, |i: &Image| i.subject_id == subject))
            .await?;
    let mut out = Vec::new();
    for alg in catalog::algorithms()
        .iter()
        .filter(|a| a.unavailable.is_none() && a.id != FACE_DETECTOR)
    {
        let series: Vec<(u64, f64)> = history
            .iter()
            .filter_map(|i| {
                let r = i
                    .results
                    .iter()
                    .find(|r| r.algorithm_version_id == alg.id && r.is_ok)?;
                Some((i.created_unix, super::present::main_value(&r.result)?))
            })
            .collect();
        let samples = smoothing::window(&series, img.created_unix, window, max);
        if let Some(v) = smoothing::smooth(method, &samples, img.created_unix) {
            out.push(SmoothedRow {
                algorithm_version_id: alg.id,
                parameter: alg.parameter.map(Into::into),
                sample_max_size: max,
                sample_time_window: window,
                samples: samples.len(),
                smoothing_method: method_name.clone(),
                tech_name: alg.tech_name.into(),
                value: (v * 100.0).round() / 100.0,
            });
        }
    }
    Ok(Json(out))
}

/// Set the dataset's webhook (posting again replaces it): called when
/// each image of the dataset has its results or failed, signed with
/// `X-Argus-Signature` (its `secret_key` is in this answer only).
#[utoipa::path(
    post,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/webhooks/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_set_webhook",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company.")),
    request_body = WebhookBody,
    security(("skin_token" = [])),
    responses(
        (status = 201, description = "Set; `secret_key` signs the calls.", body = WebhookView),
        (status = 400, description = "A path id is not a UUID, the body is not JSON, or a field is invalid (the URL must be HTTPS and not an internal address unless `outbound.allow` permits it).", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such dataset of the caller's company (another company's ids are 404 too).", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn set_webhook(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d)): Path<(Uuid, Uuid)>,
    Json(b): Json<WebhookBody>,
) -> SkinResult<Response> {
    dataset(&skin, &caller, c, d).await?;
    let w = super::hooks::configure(&skin, d, b).await?;
    Ok((StatusCode::CREATED, Json(super::hooks::view(&w, true))).into_response())
}

/// The dataset's webhook (without its secret).
#[utoipa::path(
    get,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/webhooks/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_get_webhook",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company.")),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The webhook.", body = WebhookView),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such dataset of the caller's company, or it has no webhook.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn get_webhook(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d)): Path<(Uuid, Uuid)>,
) -> SkinResult<Json<WebhookView>> {
    dataset(&skin, &caller, c, d).await?;
    let records = skin.records.clone();
    let w = blocking(move || SkinStore::get::<Webhook>(&records.webhooks, d))
        .await?
        .ok_or_else(|| SkinError::not_found("Webhook"))?;
    Ok(Json(super::hooks::view(&w, false)))
}

/// Remove the dataset's webhook.
#[utoipa::path(
    delete,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/webhooks/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_delete_webhook",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company.")),
    security(("skin_token" = [])),
    responses(
        (status = 204, description = "Removed."),
        (status = 400, description = "A path id is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such dataset of the caller's company, or it has no webhook.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn delete_webhook(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d)): Path<(Uuid, Uuid)>,
) -> SkinResult<StatusCode> {
    dataset(&skin, &caller, c, d).await?;
    let (records, store) = (skin.records.clone(), skin.store.clone());
    let had = blocking(move || {
        let had = records.webhooks.remove(d.as_bytes())?.is_some();
        store.flush()?;
        Ok(had)
    })
    .await?;
    if had {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(SkinError::not_found("Webhook"))
    }
}

/// The media type of image bytes, by their signature.
pub fn mime_of(bytes: &[u8]) -> &'static str {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Jpeg) => "image/jpeg",
        Ok(image::ImageFormat::Png) => "image/png",
        Ok(image::ImageFormat::WebP) => "image/webp",
        Ok(image::ImageFormat::Bmp) => "image/bmp",
        Ok(image::ImageFormat::Gif) => "image/gif",
        Ok(image::ImageFormat::Tiff) => "image/tiff",
        _ => "application/octet-stream",
    }
}
