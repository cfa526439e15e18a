//! Batches of a subject and their images: b64 uploads, results,
//! auxiliary images and the files behind them.
use super::*;

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
    OptionalJson(body): OptionalJson<BatchBody>,
) -> SkinResult<Response> {
    subject(&skin, &caller, c, d, s).await?;
    let b = new_batch(c, d, s, body.and_then(|b| b.meta).unwrap_or(Value::Null));
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
    let bs =
        blocking(move || SkinStore::scan(&records.batches, |b: &Batch| b.subject_id == s)).await?;
    let fields: [paging::Field<Batch>; 2] = [
        ("id", |b| Key::Id(b.id)),
        ("creation_time", |b| Key::Id(b.id)),
    ];
    let bs = ordered(bs, &q, &fields);
    let records = skin.records.clone();
    let views = blocking(move || {
        bs.iter()
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
    /// Required: the photo's bytes in base64 (a `data:` URL prefix is
    /// accepted), at most `skin_api.max_image_bytes` decoded (30 MiB), in a
    /// format of `limits.formats` (JPEG, PNG, WebP, BMP by default; TIFF and
    /// GIF where the operator adds them).
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
    let img = super::super::intake::add_image(
        &skin,
        &ds,
        &bt,
        super::super::intake::NewImage {
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
    let mut imgs = blocking(move || records.batch_images(b)).await?;
    // Their own order (by side) unless `ordering` names another.
    let fields: [paging::Field<Image>; 3] = [
        ("id", |i| Key::Id(i.id)),
        ("creation_time", |i| Key::Num(i.created_unix)),
        ("name", |i| Key::Text(i.name.to_lowercase())),
    ];
    paging::order(&mut imgs, q.ordering.as_deref(), &fields);
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
    /// The application's name: `argus Skin Metrics`, or the reference's
    /// `Face Skin Metrics` or `Face Metrics 2.0`.
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
            .is_some_and(|n| !catalog::is_application_name(n))
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
    params(("file" = String, Path, description = "`{id}.{ext}`: an image's or an auxiliary image's id."), super::super::v3::SignedQuery, ("token" = Option<String>, Query, description = "The access or private token, where a header cannot be sent.")),
    security(("skin_token" = []), ()),
    responses(
        (status = 200, description = "The file, `Cache-Control: private, no-store`.", content((Vec<u8> = "image/jpeg"), (Vec<u8> = "image/png"), (Vec<u8> = "image/svg+xml"), (Vec<u8> = "application/octet-stream"))),
        (status = 400, description = "A query parameter is invalid.", body = SkinErrorBody),
        (status = 401, description = "No valid token and no signature.", body = SkinErrorBody),
        (status = 403, description = "No valid token, and a signature that has expired or does not match.", body = SkinErrorBody),
        (status = 404, description = "No such file of the caller's company, or the photo was erased.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn image_file(
    State(skin): State<Arc<Skin>>,
    caller: Result<Caller, SkinError>,
    Path(file): Path<String>,
    Query(signed): Query<super::super::v3::SignedQuery>,
) -> SkinResult<Response> {
    let id: Uuid = file
        .split('.')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| SkinError::not_found("Image"))?;
    // A signed URL (v3 results) stands for the token.
    let by_signature = match (signed.expires, signed.signature.as_deref()) {
        (Some(exp), Some(sig)) => {
            super::super::v3::verify(&skin.upload_key, &format!("file:{id}"), exp, sig)
        }
        _ => false,
    };
    let signed_link = signed.expires.is_some() || signed.signature.is_some();
    let company = match caller {
        _ if by_signature => None,
        Ok(c) => Some(c.user.company_id),
        // A signed link that no longer opens says why, as upload URLs do,
        // rather than asking for credentials its holder never had.
        Err(_) if signed_link => {
            return Err(SkinError::Forbidden(
                "This link has expired or its signature does not match; ask for a new one.".into(),
            ))
        }
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
