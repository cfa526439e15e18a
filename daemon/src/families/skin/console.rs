//! The skin family's pages in the operator console (`/console/skin`): the
//! subjects of every company and dataset (the operator is the appliance's
//! admin), and one subject's history: a chart per chosen metric, drawn as
//! inline SVG on the server ([`super::chart`]), and each analysed photo
//! with the measured areas' outlines and the redness heat map laid over
//! it, with its values. The photos and the analysis' images are served
//! under `/console/skin/images/` to a signed-in operator only.
//!
//! The pages use the platform's console shell ([`crate::http::console`]):
//! the session's [`Operator`], its navigation and its headers.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;
use uuid::Uuid;

use super::catalog::{self, FACE_DETECTOR};
use super::chart::{self, Chart, Series};
use super::records::{AlgoResult, Batch, Company, Dataset, Image, ImageStatus, SkinStore, Subject};
use super::service::Skin;
use crate::http::console::{api_error, page_error, render, Operator};
use crate::http::error::ApiError;
use crate::http::openapi::TAG_CONSOLE;
use crate::store::{blocking, StoreError};

/// Subjects on a page of the list.
const PAGE_SIZE: usize = 25;
/// The console's navigation entry of these pages.
const NAV: &str = "/console/skin";

/// A metric the history can chart: its main value's algorithm.
struct Metric {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    algorithm: u32,
}

const METRICS: [Metric; 4] = [
    Metric {
        key: "ita",
        label: "ITA",
        unit: "°",
        algorithm: 31,
    },
    Metric {
        key: "redness",
        label: "Erythema index",
        unit: "",
        algorithm: 30,
    },
    Metric {
        key: "age",
        label: "Perceived age",
        unit: " years",
        algorithm: 34,
    },
    Metric {
        key: "dark_circles",
        label: "Under-eye ΔL*",
        unit: "",
        algorithm: 33,
    },
];

/// Charted when the query chooses none.
const DEFAULT_METRICS: [&str; 3] = ["ita", "redness", "age"];

fn internal(e: StoreError) -> Response {
    api_error(ApiError::from(e))
}

fn not_found(what: &str) -> Response {
    page_error(StatusCode::NOT_FOUND, &format!("No such {what}."))
}

// ---- the subjects ----

/// A subject as the list shows it.
pub struct SubjectRow {
    pub id: Uuid,
    pub name: String,
    pub company: String,
    pub dataset: String,
    pub batches: usize,
    pub images: usize,
    pub analysed: usize,
    /// When its latest analysis finished (RFC 3339).
    pub last_analysis: Option<String>,
}

/// Every subject whose name contains `needle` (any case) or whose id is
/// `needle`, newest first, with its counts.
pub fn subject_rows(r: &SkinStore, needle: &str) -> Result<Vec<SubjectRow>, StoreError> {
    let needle = needle.trim().to_lowercase();
    let companies: HashMap<Uuid, String> = SkinStore::scan(&r.companies, |_: &Company| true)?
        .into_iter()
        .map(|c| (c.id, c.name))
        .collect();
    let datasets: HashMap<Uuid, String> = SkinStore::scan(&r.datasets, |_: &Dataset| true)?
        .into_iter()
        .map(|d| (d.id, d.name))
        .collect();
    let subjects = SkinStore::scan(&r.subjects, |s: &Subject| {
        s.name.to_lowercase().contains(&needle) || s.id.to_string() == needle
    })?;
    let mut batches: HashMap<Uuid, usize> = HashMap::new();
    for b in SkinStore::scan(&r.batches, |_: &Batch| true)? {
        *batches.entry(b.subject_id).or_default() += 1;
    }
    // (images, analysed, latest finish as (unix, RFC 3339)).
    type Counts = (usize, usize, Option<(u64, String)>);
    let mut images: HashMap<Uuid, Counts> = HashMap::new();
    for i in SkinStore::scan(&r.images, |_: &Image| true)? {
        let e = images.entry(i.subject_id).or_default();
        e.0 += 1;
        if i.status == ImageStatus::Done {
            e.1 += 1;
            if let (Some(u), Some(at)) = (i.processed_unix, i.processed_at) {
                if e.2.as_ref().is_none_or(|(v, _)| u >= *v) {
                    e.2 = Some((u, at));
                }
            }
        }
    }
    let unknown = || "(deleted)".to_string();
    Ok(subjects
        .into_iter()
        .rev()
        .map(|s| {
            let (n, done, last) = images.remove(&s.id).unwrap_or_default();
            SubjectRow {
                company: companies
                    .get(&s.company_id)
                    .cloned()
                    .unwrap_or_else(unknown),
                dataset: datasets.get(&s.dataset_id).cloned().unwrap_or_else(unknown),
                batches: batches.get(&s.id).copied().unwrap_or(0),
                images: n,
                analysed: done,
                last_analysis: last.map(|l| l.1),
                id: s.id,
                name: s.name,
            }
        })
        .collect())
}

/// The list's query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubjectsQuery {
    /// The page, from 1 (25 subjects a page).
    pub page: Option<String>,
    /// Only subjects whose name contains this (any case), or with this id.
    pub q: Option<String>,
}

#[derive(Template)]
#[template(path = "console/skin_subjects.html")]
struct SubjectsPage<'a> {
    op: &'a Operator,
    nav: &'static str,
    rows: Vec<SubjectRow>,
    total: usize,
    page: usize,
    pages: usize,
    q: String,
}

/// The subjects of every company and dataset, newest first, with their
/// batches, images and latest analysis.
#[utoipa::path(get, path = "/console/skin", tag = TAG_CONSOLE, operation_id = "console_skin_subjects",
    params(SubjectsQuery),
    responses((status = 200, description = "A page of subjects.", content_type = "text/html"),
              (status = 303, description = "Not signed in: to the sign-in page.")),
    security(("admin_session" = [])))]
pub async fn subjects(
    State(skin): State<Arc<Skin>>,
    op: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let needle = q.get("q").cloned().unwrap_or_default();
    let records = skin.records.clone();
    let n = needle.clone();
    let rows = match blocking(move || subject_rows(&records, &n)).await {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let total = rows.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, pages);
    let rows = rows
        .into_iter()
        .skip((page - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .collect();
    render(
        StatusCode::OK,
        &SubjectsPage {
            op: &op,
            nav: NAV,
            rows,
            total,
            page,
            pages,
            q: needle,
        },
    )
}

// ---- one subject ----

/// One subject with what the page shows of it.
struct Loaded {
    subject: Subject,
    company: String,
    dataset: String,
    batches: usize,
    /// Its images, oldest first.
    images: Vec<Image>,
}

fn load_subject(r: &SkinStore, id: Uuid) -> Result<Option<Loaded>, StoreError> {
    let Some(subject) = SkinStore::get::<Subject>(&r.subjects, id)? else {
        return Ok(None);
    };
    let company = SkinStore::get::<Company>(&r.companies, subject.company_id)?
        .map_or_else(|| "(deleted)".into(), |c| c.name);
    let dataset = SkinStore::get::<Dataset>(&r.datasets, subject.dataset_id)?
        .map_or_else(|| "(deleted)".into(), |d| d.name);
    let batches = SkinStore::scan(&r.batches, |b: &Batch| b.subject_id == id)?.len();
    let mut images = r.subject_images(id, |_| true)?;
    images.sort_by(|a, b| uploaded(a).total_cmp(&uploaded(b)));
    Ok(Some(Loaded {
        subject,
        company,
        dataset,
        batches,
        images,
    }))
}

/// An RFC 3339 time as a person reads it (`2026-11-30 20:04 UTC`); as it
/// is when it does not parse.
pub fn short_time(rfc3339: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(rfc3339, &Rfc3339)
        .ok()
        .and_then(|t| {
            t.to_offset(time::UtcOffset::UTC)
                .format(time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute] UTC"
                ))
                .ok()
        })
        .unwrap_or_else(|| rfc3339.to_string())
}

/// When the photo was uploaded, in unix seconds with their fraction.
fn uploaded(i: &Image) -> f64 {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(&i.creation_time, &Rfc3339)
        .map(|t| t.unix_timestamp_nanos() as f64 / 1e9)
        .unwrap_or(i.created_unix as f64)
}

/// The stored result of algorithm `alg`, when it was computed.
fn ok_result(i: &Image, alg: u32) -> Option<&AlgoResult> {
    i.results
        .iter()
        .find(|r| r.algorithm_version_id == alg && r.is_ok)
}

/// The charts of the metrics `chosen`, over the analysed images.
fn charts(images: &[Image], chosen: &[&str]) -> (Vec<Chart>, Vec<&'static str>) {
    let (mut out, mut empty) = (Vec::new(), Vec::new());
    for m in METRICS.iter().filter(|m| chosen.contains(&m.key)) {
        let points: Vec<(f64, f64)> = images
            .iter()
            .filter(|i| i.status == ImageStatus::Done)
            .filter_map(|i| {
                let v = super::present::main_value(&ok_result(i, m.algorithm)?.result)?;
                Some((uploaded(i), v))
            })
            .collect();
        match chart::line_chart(&Series {
            key: m.key,
            label: m.label,
            unit: m.unit,
            points: &points,
        }) {
            Some(c) => out.push(c),
            None => empty.push(m.label),
        }
    }
    (out, empty)
}

/// A row of an analysis' table of values.
pub struct ValueRow {
    pub metric: String,
    pub measure: String,
    pub value: String,
    pub note: String,
}

/// A number as stored, or a category with its underscores as spaces.
fn shown(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.replace('_', " "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn unit_of(main: &Value) -> &'static str {
    match main["widget_meta"]["unit"].as_str() {
        Some("degree") => "°",
        Some("year") => " years",
        _ => "",
    }
}

/// The image's values: each metric's main value, with the grade the
/// analysis gave it (ITA class, age decade) or why it was not computed.
fn value_rows(i: &Image) -> Vec<ValueRow> {
    let mut results: Vec<&AlgoResult> = i
        .results
        .iter()
        .filter(|r| r.algorithm_version_id != FACE_DETECTOR)
        .collect();
    results.sort_by_key(|r| r.algorithm_version_id);
    let params = super::present::stored_parameters(i);
    results
        .into_iter()
        .map(|r| {
            let alg = catalog::algorithm(r.algorithm_version_id);
            let metric =
                alg.map_or_else(|| r.algorithm_version_id.to_string(), |a| a.family.into());
            if !r.is_ok {
                return ValueRow {
                    metric,
                    measure: String::new(),
                    value: "not computed".into(),
                    note: shown(&r.result["message"]),
                };
            }
            let main = &r.result["area_results"][0]["main_metric"];
            let tag = alg
                .and_then(|a| a.parameter)
                .and_then(|p| params.as_ref()?.get(p)?.get("tag"))
                .map(shown)
                .unwrap_or_default();
            ValueRow {
                metric,
                measure: shown(&main["name"]),
                value: format!("{}{}", shown(&main["value"]), unit_of(main)),
                note: tag,
            }
        })
        .collect()
}

/// A picture with layers over it: (url, alternative text).
pub struct Layered {
    pub base: (String, String),
    pub layer: (String, String),
    /// The layer's CSS class (how opaque it is drawn).
    pub class: &'static str,
    pub caption: String,
}

/// One analysed (or failed, or waiting) photo as the page shows it.
pub struct AnalysisView {
    pub id: Uuid,
    pub batch_id: Uuid,
    pub uploaded: String,
    pub side: &'static str,
    pub status: &'static str,
    pub error: Option<String>,
    pub pictures: Vec<Layered>,
    pub values: Vec<ValueRow>,
    pub quality: Vec<String>,
}

fn file_url(image: Uuid, file: &str) -> String {
    format!("/console/skin/images/{image}/{file}")
}

/// The photo under the areas' outlines, and the aligned face under the
/// redness heat map, where the analysis made them.
fn pictures(i: &Image) -> Vec<Layered> {
    let aux = |kind: &str| i.aux.iter().find(|a| a.kind == kind);
    let mut out = Vec::new();
    let photo = match (&i.blob, aux("anonymised")) {
        (Some(_), _) => Some((file_url(i.id, "photo"), "The photo", "")),
        (None, Some(a)) => Some((
            file_url(i.id, &a.id.to_string()),
            "The anonymised copy of the photo",
            " (the photo itself was erased)",
        )),
        (None, None) => None,
    };
    if let (Some((url, alt, erased)), Some(m)) = (photo, aux("area_masks")) {
        out.push(Layered {
            base: (url, alt.to_string()),
            layer: (
                file_url(i.id, &m.id.to_string()),
                "Outlines of the measured areas".into(),
            ),
            class: "layer masks",
            caption: format!("Measured areas over the photo{erased}"),
        });
    }
    if let (Some(face), Some(heat)) = (aux("aligned_face"), aux("redness_heatmap")) {
        out.push(Layered {
            base: (
                file_url(i.id, &face.id.to_string()),
                "The face, aligned".into(),
            ),
            layer: (
                file_url(i.id, &heat.id.to_string()),
                "Redness heat map: warmer where the erythema index is higher".into(),
            ),
            class: "layer heat",
            caption: "Redness over the aligned face".into(),
        });
    }
    out
}

fn analysis_view(i: &Image) -> AnalysisView {
    AnalysisView {
        id: i.id,
        batch_id: i.batch_id,
        uploaded: i.creation_time.clone(),
        side: catalog::side(i.side_id).map_or("", |s| s.name),
        status: super::views::status_name(i.status),
        error: i.error.clone().or_else(|| i.detection_error.clone()),
        pictures: pictures(i),
        values: value_rows(i),
        quality: i.quality_issues.clone(),
    }
}

/// The subject page's query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// A metric to chart (`ita`, `redness`, `age`, `dark_circles`); give it
    /// once per metric. Without any: ITA, redness and age.
    pub metric: Option<Vec<String>>,
}

#[derive(Template)]
#[template(path = "console/skin_subject.html")]
struct SubjectPage<'a> {
    op: &'a Operator,
    nav: &'static str,
    subject: Subject,
    company: String,
    dataset: String,
    batches: usize,
    analysed: usize,
    /// (key, label, charted) of every metric, for the chooser.
    metrics: Vec<(&'static str, &'static str, bool)>,
    charts: Vec<Chart>,
    /// Chosen metrics with no value yet.
    empty: Vec<&'static str>,
    /// Newest first.
    analyses: Vec<AnalysisView>,
}

/// A subject's history: a chart per chosen metric over its analyses, and
/// each photo with the analysis' outlines and heat map over it and its
/// values.
#[utoipa::path(get, path = "/console/skin/subjects/{subject_id}", tag = TAG_CONSOLE,
    operation_id = "console_skin_subject",
    params(("subject_id" = String, Path, description = "The subject's id (UUID)."), HistoryQuery),
    responses((status = 200, description = "The subject's page.", content_type = "text/html"),
              (status = 303, description = "Not signed in: to the sign-in page."),
              (status = 404, description = "No such subject.", content_type = "text/html")),
    security(("admin_session" = [])))]
pub async fn subject(
    State(skin): State<Arc<Skin>>,
    op: Operator,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return not_found("subject");
    };
    let records = skin.records.clone();
    let loaded = match blocking(move || load_subject(&records, id)).await {
        Ok(Some(l)) => l,
        Ok(None) => return not_found("subject"),
        Err(e) => return internal(e),
    };
    let mut chosen: Vec<&str> = METRICS
        .iter()
        .map(|m| m.key)
        .filter(|k| q.iter().any(|(n, v)| n == "metric" && v == k))
        .collect();
    if chosen.is_empty() {
        chosen = DEFAULT_METRICS.to_vec();
    }
    let (charts, empty) = charts(&loaded.images, &chosen);
    render(
        StatusCode::OK,
        &SubjectPage {
            op: &op,
            nav: NAV,
            company: loaded.company,
            dataset: loaded.dataset,
            batches: loaded.batches,
            analysed: loaded
                .images
                .iter()
                .filter(|i| i.status == ImageStatus::Done)
                .count(),
            metrics: METRICS
                .iter()
                .map(|m| (m.key, m.label, chosen.contains(&m.key)))
                .collect(),
            charts,
            empty,
            analyses: loaded.images.iter().rev().map(analysis_view).collect(),
            subject: loaded.subject,
        },
    )
}

// ---- the pictures ----

/// A subject's photo (`photo`) or an image its analysis made (by the
/// image's id in the analysis), for a signed-in operator only.
#[utoipa::path(get, path = "/console/skin/images/{image_id}/{file}", tag = TAG_CONSOLE,
    operation_id = "console_skin_image_file",
    params(("image_id" = String, Path, description = "The photo's id (UUID)."),
           ("file" = String, Path, description = "`photo`, or the id of an image the analysis made (aligned face, anonymised copy, redness heat map, area outlines).")),
    responses((status = 200, description = "The picture, `Cache-Control: private, no-store`.",
               content((Vec<u8> = "image/jpeg"), (Vec<u8> = "image/png"), (Vec<u8> = "image/svg+xml"))),
              (status = 303, description = "Not signed in: to the sign-in page."),
              (status = 404, description = "No such picture, or the photo was erased.", content_type = "text/html")),
    security(("admin_session" = [])))]
pub async fn image_file(
    State(skin): State<Arc<Skin>>,
    _op: Operator,
    Path((image, file)): Path<(String, String)>,
) -> Response {
    let Ok(id) = image.parse::<Uuid>() else {
        return not_found("picture");
    };
    let (records, store) = (skin.records.clone(), skin.store.clone());
    let found = blocking(move || {
        let Some(img) = SkinStore::get::<Image>(&records.images, id)? else {
            return Ok(None);
        };
        let (blob, ct) = if file == "photo" {
            match img.blob {
                Some(b) => (b, None),
                None => return Ok(None),
            }
        } else {
            let aux = file
                .parse::<Uuid>()
                .ok()
                .and_then(|a| img.aux.into_iter().find(|x| x.id == a));
            match aux {
                Some(a) => (a.blob, Some(a.content_type)),
                None => return Ok(None),
            }
        };
        Ok(store.blobs.get(&blob)?.map(|bytes| {
            let ct = ct.unwrap_or_else(|| super::v1::mime_of(&bytes).to_string());
            (bytes, ct)
        }))
    })
    .await;
    let (bytes, ct) = match found {
        Ok(Some(f)) => f,
        Ok(None) => return not_found("picture"),
        Err(e) => return internal(e),
    };
    let mut r = ([(header::CONTENT_TYPE, ct)], bytes).into_response();
    let h = r.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "private, no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // An SVG opened on its own runs nothing and loads nothing.
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::skin::records::AuxImage;

    fn image() -> Image {
        let (_, _, _, mut i) = crate::families::skin::views::tests::records();
        i.status = ImageStatus::Done;
        i
    }

    #[test]
    fn values_show_main_metrics_and_why_others_are_missing() {
        let mut i = image();
        i.results = vec![
            AlgoResult {
                id: Uuid::now_v7(),
                algorithm_version_id: 31,
                result: serde_json::json!({"area_results": [{"main_metric":
                    {"name": "ITA", "value": 41.5, "widget_meta": {"unit": "degree"}}}]}),
                is_ok: true,
                creation_time: String::new(),
            },
            AlgoResult {
                id: Uuid::now_v7(),
                algorithm_version_id: 34,
                result: serde_json::json!({"error": "not_computed", "message": "Too blurry"}),
                is_ok: false,
                creation_time: String::new(),
            },
        ];
        // Stored by an earlier version: the class's name, shown as its label.
        i.parameters = Some(serde_json::json!({"ita": {"tag": "very_light"}}));
        let rows = value_rows(&i);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].metric, "ITA");
        assert_eq!(rows[0].value, "41.5°");
        assert_eq!(rows[0].note, "Very light");
        assert_eq!(rows[1].value, "not computed");
        assert_eq!(rows[1].note, "Too blurry");
        assert_eq!(
            short_time("2026-11-30T20:04:19.5983Z"),
            "2026-11-30 20:04 UTC"
        );
        assert_eq!(short_time("yesterday"), "yesterday");
        let (c, empty) = charts(&[i], &["ita", "age"]);
        assert_eq!(c.len(), 1);
        assert_eq!(empty, vec!["Perceived age"]);
    }

    #[test]
    fn outlines_go_over_the_photo_or_its_anonymised_copy() {
        let mut i = image();
        let aux = |kind: &str| AuxImage {
            id: Uuid::now_v7(),
            kind: kind.into(),
            blob: format!("skin/{kind}"),
            content_type: "image/png".into(),
            algorithm_version_ids: vec![],
        };
        i.aux = vec![aux("anonymised"), aux("area_masks")];
        i.blob = Some("skin/photo.jpg".into());
        let p = pictures(&i);
        assert_eq!(p.len(), 1);
        assert!(p[0].base.0.ends_with("/photo"));
        i.blob = None;
        let p = pictures(&i);
        assert!(p[0].base.0.ends_with(&i.aux[0].id.to_string()));
        assert!(p[0].caption.contains("erased"));
    }
}
