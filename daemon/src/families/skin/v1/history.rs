//! A subject's results over time: the raw history and its smoothing.
use super::*;

/// A range of upload times.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// From this day (`YYYY-MM-DD`, from 00:00 UTC) or time (RFC 3339 or ISO
    /// 8601; with no offset, UTC).
    pub date_from: Option<String>,
    /// To this day (`YYYY-MM-DD`, to 23:59:59 UTC) or time (as `date_from`).
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

/// A date (`YYYY-MM-DD`, the start of that day UTC), an RFC 3339 or ISO
/// 8601 time, or one with no offset (UTC; Python's `isoformat()` and
/// `str()` of a naive `datetime`, the latter with a space for the `T`), as
/// unix seconds.
fn parse_when(field: &'static str, s: &str, end_of_day: bool) -> SkinResult<u64> {
    use time::format_description::well_known::{Iso8601, Rfc3339};
    let iso = match s.as_bytes().get(10) {
        Some(b' ') => format!("{}T{}", &s[..10], &s[11..]),
        _ => s.to_string(),
    };
    let with_offset = time::OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(&iso, &Iso8601::DEFAULT));
    if let Ok(t) = with_offset {
        return Ok(t.unix_timestamp().max(0) as u64);
    }
    if let Ok(t) = time::PrimitiveDateTime::parse(&iso, &Iso8601::DEFAULT) {
        return Ok(t.assume_utc().unix_timestamp().max(0) as u64);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(s, &fmt).map_err(|_| {
        SkinError::Field(
            field,
            "Use YYYY-MM-DD, or a time in RFC 3339 or ISO 8601.".into(),
        )
    })?;
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
        (status = 400, description = "A path id is not a UUID, or `date_from` or `date_to` is not `YYYY-MM-DD`, nor a time in RFC 3339 or ISO 8601.", body = SkinErrorBody),
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
    let mut imgs = blocking(move || {
        records.subject_images(s, |i: &Image| {
            i.created_unix >= from && i.created_unix <= to && !i.results.is_empty()
        })
    })
    .await?;
    // By when each photo was taken, not when it was uploaded: a back-dated
    // upload (`creation_time`) takes its place in the history.
    imgs.sort_by_key(|i| (i.created_unix, i.id));
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
        // DRF's integer field takes "14.0" as 14.
        Some(s) => lenient::parse_u64(s)
            .and_then(|n| u32::try_from(n).ok())
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
/// to the image (see [`smoothing`]); only the metrics the image itself
/// measured: smoothing steadies a photo's values, it does not make up one
/// its photo could not give (no face, a gate failed, not uploaded yet).
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
    let history = blocking(move || records.subject_images(subject, |_| true)).await?;
    let mut out = Vec::new();
    for alg in catalog::algorithms().iter().filter(|a| {
        a.unavailable.is_none()
            && a.id != FACE_DETECTOR
            && img
                .results
                .iter()
                .any(|r| r.algorithm_version_id == a.id && r.is_ok)
    }) {
        let series: Vec<(u64, f64)> = history
            .iter()
            .filter_map(|i| {
                let r = i
                    .results
                    .iter()
                    .find(|r| r.algorithm_version_id == alg.id && r.is_ok)?;
                Some((
                    i.created_unix,
                    super::super::present::main_value(&r.result)?,
                ))
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
