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
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::accounts::Caller;
use super::catalog::{self, FACE_DETECTOR};
use super::error::{SkinError, SkinResult};
use super::lenient;
use super::records::*;
use super::service::Skin;
use super::smoothing::{self, Method};
use crate::store::{blocking, now_rfc3339};

pub use super::views::*;

/// `GET /api/v1/dicts/image_types/` (no auth).
pub async fn image_types() -> Json<Value> {
    Json(json!([catalog::image_type_json()]))
}

/// `GET /api/v1/dicts/algorithms/` (no auth): every algorithm, the ones
/// the appliance does not compute with `is_available: false` and why.
pub async fn algorithms() -> Json<Value> {
    Json(Value::Array(
        catalog::algorithms()
            .iter()
            .map(catalog::algorithm_json)
            .collect(),
    ))
}

/// `GET /api/v1/companies/{c}/applications/`.
pub async fn applications(caller: Caller, Path(c): Path<Uuid>) -> SkinResult<Json<Value>> {
    caller.company(c)?;
    Ok(Json(json!([catalog::application_json()])))
}

#[derive(Debug, Deserialize)]
pub struct RunBody {
    pub dataset_id: Option<Uuid>,
    pub enabled_algorithms: Option<Vec<u32>>,
}

/// `POST .../applications/{app_id}/runs/`: attach the application to a
/// dataset with the algorithms to run (all computed ones by default; the
/// face detector always).
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
        Json(json!({"id": run.id, "application_id": app_id, "dataset_id": ds.id,
            "enabled_algorithms": run.enabled_algorithms, "creation_time": run.creation_time,
            "message": format!("Application {} has been successfully attached to dataset {}", catalog::APPLICATION_NAME, ds.id)})),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct DatasetBody {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_u32")]
    pub image_type_id: Option<u32>,
    #[serde(default, deserialize_with = "lenient::opt_opt_u32")]
    pub expire_images_after_days: Option<Option<u32>>,
    #[serde(default, deserialize_with = "lenient::opt_opt_u32")]
    pub expire_metadata_after_days: Option<Option<u32>>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub clean_images_as_soon_as_ready: Option<bool>,
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

/// `POST /api/v1/companies/{c}/datasets/` → 201.
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

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub page: Option<String>,
    pub page_size: Option<String>,
    pub q: Option<String>,
}

/// `GET /api/v1/companies/{c}/datasets/` (paginated, `q` searches names).
pub async fn list_datasets(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path(c): Path<Uuid>,
    parts: Parts,
    Query(q): Query<ListQuery>,
) -> SkinResult<Json<Value>> {
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

/// `GET .../datasets/{d}/`.
pub async fn get_dataset(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d)): Path<(Uuid, Uuid)>,
) -> SkinResult<Json<Value>> {
    Ok(Json(dataset_view(&dataset(&skin, &caller, c, d).await?)))
}

/// `PUT`/`POST`/`PATCH .../datasets/{d}/`: name and retention fields.
/// Turning on `clean_images_as_soon_as_ready` erases the photos already
/// analysed at the next sweep, which runs at once.
pub async fn update_dataset(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d)): Path<(Uuid, Uuid)>,
    Json(b): Json<DatasetBody>,
) -> SkinResult<Json<Value>> {
    let mut ds = dataset(&skin, &caller, c, d).await?;
    apply_dataset(&mut ds, b)?;
    skin.save(|r| &r.datasets, ds.id, &ds).await?;
    let s2 = skin.clone();
    tokio::spawn(async move { super::retention::sweep_now(&s2).await });
    Ok(Json(dataset_view(&ds)))
}

#[derive(Debug, Default, Deserialize)]
pub struct SubjectBody {
    pub name: Option<String>,
    pub birth_date: Option<Option<String>>,
    pub biological_sex: Option<Option<Value>>,
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

/// `POST .../datasets/{d}/subjects/` → 201.
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

/// `GET .../datasets/{d}/subjects/` (paginated, `q` searches names).
pub async fn list_subjects(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Path((c, d)): Path<(Uuid, Uuid)>,
    Query(q): Query<ListQuery>,
) -> SkinResult<Json<Value>> {
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

pub async fn get_subject(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d, s)): Path<(Uuid, Uuid, Uuid)>,
) -> SkinResult<Json<Value>> {
    let (ds, sub) = subject(&skin, &caller, c, d, s).await?;
    Ok(Json(subject_view(&sub, &ds)))
}

pub async fn patch_subject(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d, s)): Path<(Uuid, Uuid, Uuid)>,
    Json(b): Json<SubjectBody>,
) -> SkinResult<Json<Value>> {
    let (ds, mut sub) = subject(&skin, &caller, c, d, s).await?;
    apply_subject(&mut sub, b)?;
    skin.save(|r| &r.subjects, sub.id, &sub).await?;
    Ok(Json(subject_view(&sub, &ds)))
}

/// `DELETE .../subjects/{s}/` → 204: the subject, its batches, images,
/// results and files.
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

/// `POST .../subjects/{s}/delete_photos/`: erase every photo of the
/// subject (and the images made from them); results stay.
pub async fn erase_subject_photos(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d, s)): Path<(Uuid, Uuid, Uuid)>,
) -> SkinResult<Json<Value>> {
    subject(&skin, &caller, c, d, s).await?;
    let n = super::retention::erase_images(&skin, move |i| i.subject_id == s, true).await?;
    super::accounts::audit_ok(
        &skin,
        "subject_photos_erased",
        &caller.user.email,
        &s.to_string(),
    );
    Ok(Json(json!({"erased_images": n})))
}

/// `POST .../subjects/{s}/clear_metadata/`: the subject's name, birth
/// date, sex and meta, and every result, are cleared; photos stay.
pub async fn clear_subject_metadata(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d, s)): Path<(Uuid, Uuid, Uuid)>,
) -> SkinResult<Json<Value>> {
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

#[derive(Debug, Default, Deserialize)]
pub struct BatchBody {
    pub meta: Option<Value>,
}

/// `POST .../subjects/{s}/batches/` → 201 `{id, ...}`.
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

pub async fn list_subject_batches(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Path((c, d, s)): Path<(Uuid, Uuid, Uuid)>,
    Query(q): Query<ListQuery>,
) -> SkinResult<Json<Value>> {
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

#[derive(Debug, Deserialize)]
pub struct ImageBody {
    #[serde(default, deserialize_with = "lenient::opt_u32")]
    pub side_id: Option<u32>,
    #[serde(default, deserialize_with = "lenient::opt_u32")]
    pub light_id: Option<u32>,
    pub b64data: Option<String>,
    pub name: Option<String>,
    pub meta: Option<Value>,
}

/// `POST .../batches/{b}/images/` with `{side_id, light_id, b64data}` →
/// 201 `{id, ...}`. The photo is checked (format, still, size) and stored;
/// when the dataset has the application attached it is queued for
/// analysis at once.
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

/// `GET .../batches/{b}/images/` (paginated, by side).
pub async fn list_batch_images(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Path((c, d, s, b)): Path<(Uuid, Uuid, Uuid, Uuid)>,
    Query(q): Query<ListQuery>,
) -> SkinResult<Json<Value>> {
    batch(&skin, &caller, (c, d, s, b)).await?;
    let records = skin.records.clone();
    let imgs = blocking(move || records.batch_images(b)).await?;
    let views = imgs.iter().map(image_view).collect();
    skin.page(&parts, views, &q.page, &q.page_size)
}

pub async fn get_image(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path(ids): Path<(Uuid, Uuid, Uuid, Uuid, Uuid)>,
) -> SkinResult<Json<Value>> {
    Ok(Json(image_view(&image(&skin, &caller, ids).await?)))
}

#[derive(Debug, Default, Deserialize)]
pub struct ResultsQuery {
    pub application_run_id: Option<Uuid>,
    pub application_id: Option<Uuid>,
    pub application_name: Option<String>,
}

/// `GET .../images/{i}/results/`: one row per algorithm that has
/// finished; polled early, the rows so far (and `all_algorithms_calculated`
/// on each row says whether more are coming).
pub async fn image_results(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path(ids): Path<(Uuid, Uuid, Uuid, Uuid, Uuid)>,
    Query(q): Query<ResultsQuery>,
) -> SkinResult<Json<Value>> {
    let img = image(&skin, &caller, ids).await?;
    if q.application_id
        .is_some_and(|a| !catalog::is_application(a))
        || q.application_name
            .as_deref()
            .is_some_and(|n| n != catalog::APPLICATION_NAME)
        || q.application_run_id
            .is_some_and(|r| Some(r) != img.app_run_id)
    {
        return Ok(Json(json!([])));
    }
    Ok(Json(Value::Array(result_rows(&img))))
}

/// `GET .../images/{i}/aux/`: the images the analysis made, each with
/// the results it illustrates; files at `/images/{id}.jpg?token=`.
pub async fn image_aux(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path(ids): Path<(Uuid, Uuid, Uuid, Uuid, Uuid)>,
) -> SkinResult<Json<Value>> {
    let img = image(&skin, &caller, ids).await?;
    Ok(Json(Value::Array(aux_rows(&img))))
}

/// `GET /images/{aux_id}.jpg?token=` (or any extension; the bytes keep
/// their own type): an auxiliary image, or the original photo by the
/// image's own id, for a caller of the owning company or through a signed
/// URL (`?expires&signature`, from the v3 results).
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

#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    pub date_from: Option<String>,
    pub date_to: Option<String>,
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

/// `GET .../subjects/{s}/all_results/?date_from&date_to`: the subject's
/// skin diary: every analysed image in the range, oldest first, with its
/// results.
pub async fn all_results(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d, s)): Path<(Uuid, Uuid, Uuid)>,
    Query(q): Query<HistoryQuery>,
) -> SkinResult<Json<Value>> {
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
    Ok(Json(Value::Array(
        imgs.iter()
            .map(|i| json!({"image_id": i.id, "batch_id": i.batch_id, "side": side_json(i.side_id), "creation_time": i.creation_time,
                "all_algorithms_calculated": i.all_calculated(), "results": result_rows(i)}))
            .collect(),
    )))
}

#[derive(Debug, Default, Deserialize)]
pub struct SmoothQuery {
    pub sample_time_window: Option<String>,
    pub sample_max_size: Option<String>,
    pub smoothing_method: Option<String>,
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

/// `GET .../images/{i}/smoothed_results/`: each main metric of the
/// image, smoothed over the subject's history (see [`smoothing`]).
pub async fn smoothed_results(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path(ids): Path<(Uuid, Uuid, Uuid, Uuid, Uuid)>,
    Query(q): Query<SmoothQuery>,
) -> SkinResult<Json<Value>> {
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
            out.push(json!({"algorithm_version_id": alg.id, "tech_name": alg.tech_name, "parameter": alg.parameter,
                "value": (v * 100.0).round() / 100.0, "samples": samples.len(),
                "smoothing_method": method_name, "sample_time_window": window, "sample_max_size": max}));
        }
    }
    Ok(Json(Value::Array(out)))
}

/// `POST .../datasets/{d}/webhooks/` (again: replaces it) → 201.
pub async fn set_webhook(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d)): Path<(Uuid, Uuid)>,
    Json(b): Json<super::hooks::WebhookBody>,
) -> SkinResult<Response> {
    dataset(&skin, &caller, c, d).await?;
    let w = super::hooks::configure(&skin, d, b).await?;
    Ok((StatusCode::CREATED, Json(super::hooks::view(&w, true))).into_response())
}

pub async fn get_webhook(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d)): Path<(Uuid, Uuid)>,
) -> SkinResult<Json<Value>> {
    dataset(&skin, &caller, c, d).await?;
    let records = skin.records.clone();
    let w = blocking(move || SkinStore::get::<Webhook>(&records.webhooks, d))
        .await?
        .ok_or_else(|| SkinError::not_found("Webhook"))?;
    Ok(Json(super::hooks::view(&w, false)))
}

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
