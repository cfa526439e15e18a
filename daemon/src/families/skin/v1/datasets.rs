//! Datasets of a company: create, list, read, update.
use super::*;

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
    /// DRF ordering: `creation_time`, `name` (datasets, subjects, images)
    /// or `id`, `-` first for descending, several comma-separated; unknown
    /// names are ignored. Default: newest first.
    pub ordering: Option<String>,
}

/// Order `items` (in creation order) by `q.ordering`, else newest first.
pub(crate) fn ordered<T>(mut items: Vec<T>, q: &ListQuery, fields: &[paging::Field<T>]) -> Vec<T> {
    if !paging::order(&mut items, q.ordering.as_deref(), fields) {
        items.reverse();
    }
    items
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
    let fields: [paging::Field<Dataset>; 3] = [
        ("id", |d| Key::Id(d.id)),
        ("creation_time", |d| Key::Id(d.id)),
        ("name", |d| Key::Text(d.name.to_lowercase())),
    ];
    let views = ordered(all, &q, &fields).iter().map(dataset_view).collect();
    skin.page(&parts, views, &q.page, &q.page_size)
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
    tokio::spawn(async move { super::super::retention::sweep_now(&s2).await });
    Ok(Json(dataset_view(&ds)))
}
