//! The blood-smear family's pages in the operator console: every study on
//! the appliance (all organisations: the operator is the appliance's
//! admin), and one study's status, tasks, report summaries and photos with
//! the cells the analysis found drawn over them.
//!
//! The overlay is server-rendered SVG (one `<rect>` or `<circle>` per
//! cell, coloured by class through the console's stylesheet): the console's
//! CSP allows no inline script or style. The boxes are the ones the
//! pipeline counted, kept per file by the runner ([`PbsStore::put_cells`]).
//!
//! [`PbsStore::put_cells`]: super::store::PbsStore::put_cells

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::fhir::MalariaFinding;
use super::pipeline::{CellBox, CellKind};
use super::store::StudyRecord;
use super::Pbs;
use crate::http::console::{api_error, page_error, render, Operator};
use crate::http::error::ApiError;
use crate::http::openapi::TAG_CONSOLE;
use crate::store::blocking;

/// Where the study list lives (the navigation's entry).
const NAV: &str = "/console/studies";

/// Studies per page unless asked otherwise, and the most one page shows.
const PER_PAGE: usize = 25;
const MAX_PER_PAGE: usize = 200;

/// Which page of the study list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StudiesQuery {
    /// From 1 (the default).
    pub page: Option<usize>,
    /// Studies per page: 1 to 200 (default 25).
    pub per_page: Option<usize>,
}

/// A number from the query, or `default` when absent or not a number.
fn number(q: &HashMap<String, String>, key: &str, default: usize) -> usize {
    q.get(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

// ---- the study list ----

/// A study as the list shows it.
struct StudyRow {
    id: Uuid,
    org: String,
    created_by: String,
    created_at: String,
    /// `created_at` to the second, for reading.
    created: String,
    status: &'static str,
    /// 0 to 100.
    percent: u32,
    progress_message: String,
    files: usize,
    tasks: String,
}

/// An RFC 3339 time to the second, as `2025-05-01 09:30:00 UTC`.
fn short_time(t: &str) -> String {
    match (t.get(..10), t.get(11..19)) {
        (Some(d), Some(h)) if t.ends_with('Z') => format!("{d} {h} UTC"),
        _ => t.to_string(),
    }
}

fn percent(progress: f32) -> u32 {
    (progress.clamp(0.0, 1.0) * 100.0).round() as u32
}

impl From<&StudyRecord> for StudyRow {
    fn from(s: &StudyRecord) -> Self {
        Self {
            id: s.id,
            org: s.org.clone(),
            created_by: s.created_by.clone(),
            created_at: s.created_at.clone(),
            created: short_time(&s.created_at),
            status: s.status.as_str(),
            percent: percent(s.progress),
            progress_message: s.progress_message.clone(),
            files: s.files.len(),
            tasks: s.tasks.join(", "),
        }
    }
}

#[derive(Template)]
#[template(path = "console/pbs_studies.html")]
struct StudiesPage<'a> {
    op: &'a Operator,
    nav: &'static str,
    rows: Vec<StudyRow>,
    total: usize,
    page: usize,
    pages: usize,
    per_page: usize,
}

/// Every blood-smear study on the appliance, newest first, with its
/// organisation, state, progress, files and tasks.
#[utoipa::path(get, path = "/console/studies", tag = TAG_CONSOLE, operation_id = "console_pbs_studies",
    params(StudiesQuery),
    responses((status = 200, description = "A page of studies.", content_type = "text/html"),
              (status = 303, description = "Not signed in: to the sign-in page.")),
    security(("admin_session" = [])))]
pub async fn studies(
    State(app): State<Arc<Pbs>>,
    op: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let per_page = number(&q, "per_page", PER_PAGE).clamp(1, MAX_PER_PAGE);
    let page = number(&q, "page", 1).max(1);
    let pbs = app.clinic.pbs.clone();
    match blocking(move || pbs.list_studies(page, per_page)).await {
        Ok((items, total)) => render(
            StatusCode::OK,
            &StudiesPage {
                op: &op,
                nav: NAV,
                rows: items.iter().map(StudyRow::from).collect(),
                total,
                page,
                pages: total.div_ceil(per_page).max(1),
                per_page,
            },
        ),
        Err(e) => api_error(ApiError::from(e)),
    }
}

// ---- one study ----

/// A requested task and where its report stands.
struct TaskRow {
    name: String,
    /// "ready (revision 2 of 2)", "processing", ...
    state: String,
}

/// The `CBC_COUNTS` report as stored (fields older reports lack read as
/// empty).
#[derive(Deserialize, Default)]
#[serde(default)]
struct CbcStored {
    rbc: u64,
    wbc: u64,
    platelets: u64,
    files: Vec<CbcFileStored>,
    model: String,
    differential: Option<DifferentialStored>,
    created_at: String,
}

/// A white-cell differential as stored (in `WBC_DIFFERENTIAL` or inside
/// `CBC_COUNTS`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct DifferentialStored {
    /// Set for a `WBC_DIFFERENTIAL` report (inside `CBC_COUNTS` it is the
    /// CBC report's).
    created_at: String,
    leukocytes_classified: u64,
    review: u64,
    classes: Vec<super::schema::DifferentialClass>,
    model: String,
    min_confidence: f32,
}

/// The latest differential, from `WBC_DIFFERENTIAL` or else `CBC_COUNTS`.
struct DifferentialSummary {
    /// The report it is from, with its revision: `WBC_DIFFERENTIAL`, revision 2.
    source: String,
    report: DifferentialStored,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CbcFileStored {
    file_id: String,
    rbc: u64,
    wbc: u64,
    platelets: u64,
    rbc_size: Option<SizeStored>,
}

/// What the page shows of a file's red-cell size: its warning, and
/// whether the photo was marked unlike a smear's monolayer.
#[derive(Deserialize, Default)]
#[serde(default)]
struct SizeStored {
    warning: Option<String>,
    unlike_smear: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MarkedFileStored {
    unlike_smear: bool,
}

/// The `MALARIA_ANY_ANY` report as stored.
#[derive(Deserialize, Default)]
#[serde(default)]
struct MalariaStored {
    positive_count: u64,
    negative_count: u64,
    model: String,
    parasite_threshold: f32,
    created_at: String,
    files: Vec<MarkedFileStored>,
}

/// The latest CBC report, summarised.
struct CbcSummary {
    version: usize,
    report: CbcStored,
}

/// The latest malaria report, summarised.
struct MalariaSummary {
    version: usize,
    report: MalariaStored,
    /// The finding in words.
    finding: String,
    positive: bool,
    /// Files of the report whose photo was marked unlike a smear's
    /// monolayer: the finding is preliminary, as in FHIR.
    held: usize,
}

fn latest<T: for<'de> Deserialize<'de>>(s: &StudyRecord, task: &str) -> Option<(usize, T)> {
    let versions = s.reports.get(task)?;
    let v = versions.last()?;
    Some((versions.len(), serde_json::from_value(v.clone()).ok()?))
}

fn malaria_finding(m: &MalariaStored) -> String {
    let (p, n) = (m.positive_count, m.negative_count);
    match p + n {
        0 => "No whole red cell could be classified.".into(),
        all if MalariaFinding::of(p, all) == MalariaFinding::TooFew => format!(
            "Red cells called parasitized: {p} of {all} classified ({:.1}%), too few for a \
             finding (the classifier calls up to 1-2% of a normal smear's cells so); review them.",
            100.0 * p as f64 / all as f64
        ),
        all if p > 0 => format!(
            "Parasitized red cells found: {p} of {all} classified ({:.1}%).",
            100.0 * p as f64 / all as f64
        ),
        all => format!("No parasitized red cells among {all} classified."),
    }
}

fn task_rows(s: &StudyRecord) -> Vec<TaskRow> {
    s.tasks
        .iter()
        .map(|t| {
            let n = s.reports.get(t).map_or(0, Vec::len);
            let busy = matches!(
                s.status,
                super::store::ReportStatus::Queued | super::store::ReportStatus::Processing
            );
            let state = match (n, busy) {
                (0, _) => s.status.as_str().to_string(),
                (n, false) => format!("ready (revision {n})"),
                (n, true) => format!("{} (revision {n} ready)", s.status.as_str()),
            };
            TaskRow {
                name: t.clone(),
                state,
            }
        })
        .collect()
}

/// One cell as drawn: a rectangle (red and white cells) or a circle
/// (platelets), in the photo's pixels.
struct Mark {
    /// The CSS class that colours it: `rbc`, `rbc-pos`, `wbc`, `plt`.
    class: &'static str,
    circle: bool,
    x: u32,
    y: u32,
    w: u32,
    h: u32,
    cx: f32,
    cy: f32,
    r: f32,
    title: String,
}

/// The classes of the overlay, in legend order: (class, label).
const CLASSES: [(&str, &str); 4] = [
    ("rbc", "Red cell"),
    ("rbc-pos", "Red cell, parasitized"),
    ("wbc", "White cell"),
    ("plt", "Platelet"),
];

/// A white cell's title: its class, or why it is left for review.
fn wbc_title(p: Option<&[f32; 9]>, min_confidence: f32) -> String {
    use crate::model::wbc::{decide, CLASSES};
    let Some(p) = p else {
        return "White cell".into();
    };
    let label = |k: usize| CLASSES[k].replace('_', " ");
    let top = (0..p.len()).fold(0, |a, i| if p[i] > p[a] { i } else { a });
    match decide(p, min_confidence) {
        // Sure of the lineage only: the pooled probability decided it.
        Some(k @ (0 | 1)) if p[k] < min_confidence => format!(
            "White cell: {} (p = {:.2} as a neutrophil, the likelier form)",
            label(k),
            p[0] + p[1]
        ),
        Some(k) => format!("White cell: {} (p = {:.2})", label(k), p[k]),
        None => format!(
            "White cell: left for review (likeliest {}, p = {:.2})",
            label(top),
            p[top]
        ),
    }
}

fn mark(c: &CellBox, threshold: f32, min_confidence: f32) -> Mark {
    let (class, title) = match (c.kind, c.p_parasitized) {
        (CellKind::Rbc, Some(p)) if p >= threshold => {
            ("rbc-pos", format!("Red cell, parasitized (p = {p:.2})"))
        }
        (CellKind::Rbc, Some(p)) => ("rbc", format!("Red cell (p parasitized = {p:.2})")),
        (CellKind::Rbc, None) => ("rbc", "Red cell".to_string()),
        (CellKind::Wbc, _) => (
            "wbc",
            wbc_title(c.wbc_probabilities.as_ref(), min_confidence),
        ),
        (CellKind::Platelet, _) => ("plt", "Platelet".to_string()),
    };
    Mark {
        class,
        circle: c.kind == CellKind::Platelet,
        x: c.x,
        y: c.y,
        w: c.width.max(1),
        h: c.height.max(1),
        cx: c.x as f32 + c.width as f32 / 2.0,
        cy: c.y as f32 + c.height as f32 / 2.0,
        r: (c.width.max(c.height) as f32 / 2.0 + 2.0).max(4.0),
        title,
    }
}

/// A file of the study with the cells drawn on it.
struct FileView {
    /// From 1: the file's number in the study (and in its image URL).
    n: usize,
    name: String,
    file_id: String,
    width: u32,
    height: u32,
    content_type: String,
    bytes: usize,
    uploaded_at: String,
    /// `None`: no analysis of this file kept its cells.
    marks: Option<Vec<Mark>>,
    /// (class, label, how many) of each class present.
    legend: Vec<(&'static str, &'static str, usize)>,
    /// The CBC report's counts for this file, when there is one.
    counts: Option<(u64, u64, u64)>,
    /// The CBC report's warning about this file's red-cell size, and
    /// whether its photo was marked unlike a smear's monolayer.
    warning: Option<(String, bool)>,
}

fn file_views(
    s: &StudyRecord,
    cells: Vec<Option<Vec<CellBox>>>,
    cbc: Option<&CbcSummary>,
    (threshold, min_confidence): (f32, f32),
) -> Vec<FileView> {
    s.files
        .iter()
        .zip(cells)
        .enumerate()
        .map(|(i, (f, cells))| {
            let marks: Option<Vec<Mark>> = cells.map(|cs| {
                cs.iter()
                    .map(|c| mark(c, threshold, min_confidence))
                    .collect()
            });
            let legend = CLASSES
                .iter()
                .filter_map(|&(class, label)| {
                    let n = marks.as_ref()?.iter().filter(|m| m.class == class).count();
                    (n > 0).then_some((class, label, n))
                })
                .collect();
            let row = cbc.and_then(|c| c.report.files.iter().find(|x| x.file_id == f.file_id));
            let counts = row.map(|r| (r.rbc, r.wbc, r.platelets));
            let warning = row
                .and_then(|r| r.rbc_size.as_ref())
                .and_then(|s| Some((s.warning.clone()?, s.unlike_smear)));
            FileView {
                n: i + 1,
                name: f.file_name.clone().unwrap_or_else(|| "(no name)".into()),
                file_id: f.file_id.clone(),
                width: f.width,
                height: f.height,
                content_type: f.content_type.clone(),
                bytes: f.bytes,
                uploaded_at: f.uploaded_at.clone(),
                marks,
                legend,
                counts,
                warning,
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "console/pbs_study.html")]
struct StudyPage<'a> {
    op: &'a Operator,
    nav: &'static str,
    study: StudyRow,
    tags: Vec<(String, String)>,
    error: Option<String>,
    tasks: Vec<TaskRow>,
    cbc: Option<CbcSummary>,
    differential: Option<DifferentialSummary>,
    malaria: Option<MalariaSummary>,
    files: Vec<FileView>,
}

/// The study `id`, or a 404 page.
async fn find_study(app: &Pbs, id: &str) -> Result<StudyRecord, Response> {
    let missing = || page_error(StatusCode::NOT_FOUND, "No such study.");
    let uuid = Uuid::parse_str(id).map_err(|_| missing())?;
    let pbs = app.clinic.pbs.clone();
    match blocking(move || pbs.get_study(uuid)).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(missing()),
        Err(e) => Err(api_error(ApiError::from(e))),
    }
}

/// One study: its status and progress, its tasks and their reports
/// summarised, and each photo with the cells found drawn on it.
#[utoipa::path(get, path = "/console/studies/{id}", tag = TAG_CONSOLE, operation_id = "console_pbs_study",
    params(("id" = Uuid, Path, description = "The study's `pbs_study_id`.")),
    responses((status = 200, description = "The study page.", content_type = "text/html"),
              (status = 303, description = "Not signed in: to the sign-in page."),
              (status = 404, description = "No such study.", content_type = "text/html")),
    security(("admin_session" = [])))]
pub async fn study(State(app): State<Arc<Pbs>>, op: Operator, Path(id): Path<String>) -> Response {
    let s = match find_study(&app, &id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (pbs, sid) = (app.clinic.pbs.clone(), s.id);
    let ids: Vec<String> = s.files.iter().map(|f| f.file_id.clone()).collect();
    let cells = blocking(move || ids.iter().map(|f| pbs.get_cells(sid, f)).collect()).await;
    let cells: Vec<Option<Vec<CellBox>>> = match cells {
        Ok(c) => c,
        Err(e) => return api_error(ApiError::from(e)),
    };
    let mut cbc = latest::<CbcStored>(&s, "CBC_COUNTS")
        .map(|(version, report)| CbcSummary { version, report });
    // The newer of the two: a study re-run with one task keeps the other's
    // older report, and the marks below are from the latest run.
    let own = latest::<DifferentialStored>(&s, "WBC_DIFFERENTIAL").map(|(version, report)| {
        DifferentialSummary {
            source: format!("WBC_DIFFERENTIAL, revision {version}"),
            report,
        }
    });
    let in_cbc = cbc.as_mut().and_then(|c| {
        let mut report = c.report.differential.take()?;
        report.created_at = c.report.created_at.clone();
        Some(DifferentialSummary {
            source: format!("CBC_COUNTS, revision {}", c.version),
            report,
        })
    });
    let differential = match (own, in_cbc) {
        (Some(a), Some(b)) if b.report.created_at > a.report.created_at => Some(b),
        (a, b) => a.or(b),
    };
    let min_confidence = differential
        .as_ref()
        .map_or(app.config.cells.wbc_min_confidence, |d| {
            d.report.min_confidence
        });
    let malaria =
        latest::<MalariaStored>(&s, "MALARIA_ANY_ANY").map(|(version, report)| MalariaSummary {
            version,
            finding: malaria_finding(&report),
            // Styled as a finding only where the FHIR report makes one.
            positive: MalariaFinding::of(
                report.positive_count,
                report.positive_count + report.negative_count,
            ) == MalariaFinding::Detected,
            held: report.files.iter().filter(|f| f.unlike_smear).count(),
            report,
        });
    let threshold = malaria
        .as_ref()
        .map_or(app.config.cells.parasite_threshold, |m| {
            m.report.parasite_threshold
        });
    render(
        StatusCode::OK,
        &StudyPage {
            op: &op,
            nav: NAV,
            study: StudyRow::from(&s),
            tags: s.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            error: s.error.clone(),
            tasks: task_rows(&s),
            files: file_views(&s, cells, cbc.as_ref(), (threshold, min_confidence)),
            cbc,
            differential,
            malaria,
        },
    )
}

/// A study's photo as uploaded, for the study page (operators only).
#[utoipa::path(get, path = "/console/studies/{id}/files/{n}", tag = TAG_CONSOLE,
    operation_id = "console_pbs_study_file",
    params(("id" = Uuid, Path, description = "The study's `pbs_study_id`."),
           ("n" = usize, Path, description = "The file's number in the study, from 1.")),
    responses((status = 200, description = "The image's bytes, with its type.",
               content_type = "image/*"),
              (status = 303, description = "Not signed in: to the sign-in page."),
              (status = 404, description = "No such study or file.", content_type = "text/html")),
    security(("admin_session" = [])))]
pub async fn study_file(
    State(app): State<Arc<Pbs>>,
    _op: Operator,
    Path((id, n)): Path<(String, String)>,
) -> Response {
    let s = match find_study(&app, &id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let file = n
        .parse::<usize>()
        .ok()
        .and_then(|n| s.files.get(n.checked_sub(1)?));
    let Some(file) = file else {
        return page_error(StatusCode::NOT_FOUND, "No such file in this study.");
    };
    let (store, blob) = (app.store.clone(), file.blob.clone());
    let bytes = match blocking(move || store.blobs.get(&blob)).await {
        Ok(Some(b)) => b,
        Ok(None) => return page_error(StatusCode::NOT_FOUND, "The file is missing from storage."),
        Err(e) => return api_error(ApiError::from(e)),
    };
    let ctype = HeaderValue::from_str(&file.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut r = ([(header::CONTENT_TYPE, ctype)], bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(kind: CellKind, p: Option<f32>) -> CellBox {
        CellBox {
            kind,
            x: 10,
            y: 20,
            width: 30,
            height: 40,
            p_parasitized: p,
            wbc_probabilities: None,
        }
    }

    #[test]
    fn marks_are_coloured_by_class_and_parasitized_cells_stand_out() {
        let mark = |c: &CellBox, t| mark(c, t, 0.7);
        assert_eq!(mark(&cell(CellKind::Rbc, None), 0.5).class, "rbc");
        assert_eq!(mark(&cell(CellKind::Rbc, Some(0.2)), 0.5).class, "rbc");
        assert_eq!(mark(&cell(CellKind::Rbc, Some(0.9)), 0.5).class, "rbc-pos");
        assert_eq!(mark(&cell(CellKind::Wbc, None), 0.5).class, "wbc");
        let p = mark(&cell(CellKind::Platelet, None), 0.5);
        assert!(p.circle);
        assert_eq!((p.cx, p.cy), (25.0, 40.0));
    }

    #[test]
    fn white_cells_are_titled_by_class_or_review() {
        let mut p = [0.0f32; 9];
        p[2] = 0.93;
        p[3] = 0.07;
        assert_eq!(
            wbc_title(Some(&p), 0.7),
            "White cell: lymphocyte (p = 0.93)"
        );
        p[2] = 0.5;
        p[3] = 0.5;
        assert_eq!(
            wbc_title(Some(&p), 0.7),
            "White cell: left for review (likeliest lymphocyte, p = 0.50)"
        );
        assert_eq!(wbc_title(None, 0.7), "White cell");
        let mut n = [0.0f32; 9];
        n[0] = 0.4;
        n[1] = 0.5;
        n[6] = 0.1;
        assert_eq!(
            wbc_title(Some(&n), 0.7),
            "White cell: neutrophil band (p = 0.90 as a neutrophil, the likelier form)"
        );
    }

    #[test]
    fn times_are_shown_to_the_second() {
        assert_eq!(
            short_time("2025-05-01T09:30:00.123456Z"),
            "2025-05-01 09:30:00 UTC"
        );
        assert_eq!(short_time("yesterday"), "yesterday");
    }

    #[test]
    fn the_malaria_finding_says_what_was_found() {
        let m = |p, n| MalariaStored {
            positive_count: p,
            negative_count: n,
            ..Default::default()
        };
        assert!(malaria_finding(&m(0, 0)).starts_with("No whole red cell"));
        assert!(malaria_finding(&m(0, 40)).contains("No parasitized red cells among 40"));
        assert!(malaria_finding(&m(2, 38)).contains("2 of 40 classified (5.0%)"));
    }
}
