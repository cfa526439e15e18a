//! Subjects of a dataset: create, list, read, update, delete, and the
//! erasure of their photos or of their personal data.
use super::*;

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
        // Out of u32's range is out of 1..=3 too, not wrapped into it.
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => match s.as_str() {
            "female" => Some(1),
            "male" => Some(2),
            "other" => Some(3),
            _ => None,
        },
        Value::Object(o) => o
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
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
            let date = time::Date::parse(s, &fmt).map_err(|_| {
                SkinError::Field(
                    "birth_date",
                    "Date has wrong format. Use YYYY-MM-DD.".into(),
                )
            })?;
            // A day ahead of UTC's today: somewhere on Earth it is already
            // that day.
            let latest = time::OffsetDateTime::now_utc().date().next_day();
            if latest.is_some_and(|l| date > l) {
                return Err(SkinError::Field(
                    "birth_date",
                    "A birth date cannot be in the future.".into(),
                ));
            }
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
    let fields: [paging::Field<Subject>; 3] = [
        ("id", |s| Key::Id(s.id)),
        ("creation_time", |s| Key::Id(s.id)),
        ("name", |s| Key::Text(s.name.to_lowercase())),
    ];
    let views = ordered(all, &q, &fields)
        .iter()
        .map(|s| subject_view(s, &ds))
        .collect();
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
    super::super::accounts::audit_ok(&skin, "subject_deleted", &caller.user.email, &s.to_string());
    remove_subjects(&skin, vec![s]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove subjects with their batches, images, results and files.
async fn remove_subjects(skin: &Skin, mut ids: Vec<Uuid>) -> SkinResult<()> {
    ids.sort();
    ids.dedup();
    let (records, store) = (skin.records.clone(), skin.store.clone());
    blocking(move || {
        let of = |s: &Uuid| ids.binary_search(s).is_ok();
        let mut images = Vec::new();
        for s in &ids {
            images.extend(records.subject_images(*s, |_| true)?);
        }
        for img in images {
            super::super::retention::queue_blob_cleanup(&store, &img, true)?;
            records.remove_image(&img)?;
        }
        for b in SkinStore::scan(&records.batches, |b: &Batch| of(&b.subject_id))? {
            records.batches.remove(b.id.as_bytes())?;
        }
        for s in &ids {
            records.subjects.remove(s.as_bytes())?;
        }
        store.flush()?;
        store.run_cleanup().map(|_| ())
    })
    .await?;
    Ok(())
}

/// The subjects to delete at once.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"ids": ["0190f5a5-2c3d-7e4f-9a5b-6c7d8e9fa0b1"]}))]
pub struct BulkDelete {
    /// 1 to 1000 subject ids of the dataset.
    pub ids: Vec<Uuid>,
}

/// Delete several subjects of the dataset at once, each as `DELETE
/// .../subjects/{subject_id}/` would. All or none: if any id is not a
/// subject of this dataset, nothing is deleted and the 404 names it.
#[utoipa::path(
    delete,
    path = "/api/v1/companies/{company_id}/datasets/{dataset_id}/subjects/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_bulk_delete_subjects",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company.")),
    request_body = BulkDelete,
    security(("skin_token" = [])),
    responses(
        (status = 204, description = "Deleted, every one."),
        (status = 400, description = "A path id is not a UUID, the body is not `{\"ids\": [...]}`, or it holds no id or over 1000.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "An id is not a subject of the dataset (nothing was deleted), or no such dataset.", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn delete_subjects(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path((c, d)): Path<(Uuid, Uuid)>,
    Json(b): Json<BulkDelete>,
) -> SkinResult<StatusCode> {
    dataset(&skin, &caller, c, d).await?;
    let mut ids = b.ids;
    ids.sort();
    ids.dedup();
    if ids.is_empty() || ids.len() > 1000 {
        return Err(SkinError::Field(
            "ids",
            "Give 1 to 1000 subject ids.".into(),
        ));
    }
    let records = skin.records.clone();
    let (ids, mut found) = blocking(move || {
        let found: Vec<Uuid> = SkinStore::scan(&records.subjects, |x: &Subject| {
            x.company_id == c && x.dataset_id == d && ids.binary_search(&x.id).is_ok()
        })?
        .into_iter()
        .map(|x| x.id)
        .collect();
        Ok::<_, crate::store::StoreError>((ids, found))
    })
    .await?;
    found.sort();
    if let Some(missing) = ids.iter().find(|i| found.binary_search(i).is_err()) {
        return Err(SkinError::NotFound(format!(
            "Subject {missing} not found; nothing was deleted."
        )));
    }
    for s in &ids {
        super::super::accounts::audit_ok(
            &skin,
            "subject_deleted",
            &caller.user.email,
            &s.to_string(),
        );
    }
    remove_subjects(&skin, ids).await?;
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
    let n = super::super::retention::erase_subject_images(&skin, s, true).await?;
    super::super::accounts::audit_ok(
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
    super::super::retention::clear_subject_results(&skin, s).await?;
    super::super::accounts::audit_ok(
        &skin,
        "subject_metadata_cleared",
        &caller.user.email,
        &s.to_string(),
    );
    Ok(Json(subject_view(&sub, &ds)))
}
