//! The PDF report of one image (`POST /service/pdf-generator/companies/
//! {c}/datasets/{d}/subjects/{s}/batches/{b}/images/{i}/pdf/`, token in the
//! `access-token` header as the reference sends it), drawn by the
//! appliance with `printpdf` (no browser): one A4 page with the photo (its
//! anonymised copy when the body or query says `anonymised: true`, and
//! always when the original has been erased), the face's area outlines
//! drawn over it, each computed metric with its value and band, the
//! parameters not computed, and the subject's history of each numeric
//! metric as a line chart. The body's `timeout` and `waitUntil` (browser
//! options of the reference's renderer) are accepted and have nothing to
//! do here.
//!
//! Text uses the PDF standard fonts (WinAnsi), so Greek letters are
//! spelled out ("dL*").

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use printpdf::{
    BuiltinFont, Color, Line, LinePoint, Mm, Op, PdfDocument, PdfFontHandle, PdfPage,
    PdfSaveOptions, Point, Pt, RawImage, Rgb, TextItem, XObjectTransform,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::accounts::Caller;
use super::catalog::{self, FACE_DETECTOR};
use super::error::{SkinError, SkinErrorBody, SkinResult};
use super::records::{Image, Subject};
use super::service::Skin;
use crate::store::blocking;

/// A4 in points.
const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 40.0;

/// How to draw the report (in the query or the JSON body).
#[derive(Debug, Default, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[schema(example = json!({"anonymised": true}))]
pub struct ReportOptions {
    /// Show the anonymised copy of the photo (always, once the original
    /// is erased). Default false; `true`/`false`, 1/0 or `True` as text.
    #[serde(default, deserialize_with = "super::lenient::opt_bool")]
    pub anonymised: Option<bool>,
    /// The reference's browser options: accepted, unused.
    pub timeout: Option<u64>,
    #[serde(rename = "waitUntil")]
    pub wait_until: Option<String>,
}

/// What the page shows, gathered before drawing.
pub struct ReportData {
    pub subject: Subject,
    pub image: Image,
    /// JPEG or PNG bytes of the photo shown, with whether it is the
    /// anonymised copy.
    pub photo: Option<(Vec<u8>, bool)>,
    /// The subject's analysed images, oldest first.
    pub history: Vec<Image>,
}

fn rgb(r: f32, g: f32, b: f32) -> Color {
    Color::Rgb(Rgb {
        r,
        g,
        b,
        icc_profile: None,
    })
}

fn text(ops: &mut Vec<Op>, x: f32, y: f32, size: f32, bold: bool, s: &str) {
    let font = if bold {
        BuiltinFont::HelveticaBold
    } else {
        BuiltinFont::Helvetica
    };
    ops.extend([
        Op::StartTextSection,
        Op::SetTextCursor {
            pos: Point::new(Mm(x * 25.4 / 72.0), Mm(y * 25.4 / 72.0)),
        },
        Op::SetFont {
            font: PdfFontHandle::Builtin(font),
            size: Pt(size),
        },
        Op::SetFillColor {
            col: rgb(0.1, 0.1, 0.1),
        },
        Op::ShowText {
            items: vec![TextItem::Text(s.to_string())],
        },
        Op::EndTextSection,
    ]);
}

fn polyline(ops: &mut Vec<Op>, pts: &[(f32, f32)], closed: bool, color: Color, width: f32) {
    if pts.len() < 2 {
        return;
    }
    ops.extend([
        Op::SetOutlineColor { col: color },
        Op::SetOutlineThickness { pt: Pt(width) },
        Op::DrawLine {
            line: Line {
                points: pts
                    .iter()
                    .map(|(x, y)| LinePoint {
                        p: Point {
                            x: Pt(*x),
                            y: Pt(*y),
                        },
                        bezier: false,
                    })
                    .collect(),
                is_closed: closed,
            },
        },
    ]);
}

/// Points of an SVG path of M/L commands.
fn path_points(d: &str) -> Vec<(f32, f32)> {
    let nums: Vec<f32> = d
        .split(|c: char| c.is_ascii_alphabetic() || c.is_whitespace())
        .filter_map(|t| t.parse().ok())
        .collect();
    nums.chunks_exact(2).map(|p| (p[0], p[1])).collect()
}

/// The metric lines of the page: (label, value, band).
fn metric_lines(img: &Image) -> Vec<(String, String, String)> {
    let p = super::present::stored_parameters(img).unwrap_or_default();
    let num = |v: &serde_json::Value| v.as_f64().map(|x| format!("{x:.1}"));
    let mut out = Vec::new();
    if let Some(i) = p.get("ita") {
        out.push((
            "ITA (individual typology angle)".into(),
            format!("{} deg", num(&i["value"]).unwrap_or_default()),
            format!("class: {}", i["tag"].as_str().unwrap_or("-")),
        ));
    }
    if let Some(s) = p.get("skintone") {
        out.push((
            "Skin tone (ITA class)".into(),
            s["value"].as_str().unwrap_or("-").replace('_', " "),
            "Del Bino 2006 bands".into(),
        ));
    }
    if let Some(r) = p.get("redness") {
        out.push((
            "Redness: erythema index".into(),
            num(&r["erythema_index"]).unwrap_or_default(),
            format!(
                "a* {}; no validated band",
                num(&r["a_mean"]).unwrap_or_default()
            ),
        ));
    }
    if let Some(d) = p.get("dark_circles") {
        out.push((
            "Dark circles: under-eye dL*".into(),
            num(&d["delta_l"]).unwrap_or_default(),
            format!(
                "dE*ab {}; no validated band",
                num(&d["delta_e"]).unwrap_or_default()
            ),
        ));
    }
    if let Some(a) = p.get("age") {
        out.push((
            "Perceived age".into(),
            format!("{} years", num(&a["age"]).unwrap_or_default()),
            format!("band: {}", a["tag"].as_str().unwrap_or("-")),
        ));
    }
    out
}

/// The photo with the area outlines, in the box (x, y, w, h), y upwards.
fn draw_photo(
    doc: &mut PdfDocument,
    ops: &mut Vec<Op>,
    d: &ReportData,
    bx: (f32, f32, f32, f32),
) -> Result<(), String> {
    let (x0, y0, bw, bh) = bx;
    let Some((bytes, anonymised)) = &d.photo else {
        text(
            ops,
            x0,
            y0 + bh / 2.0,
            10.0,
            false,
            "The photo has been erased (retention or request).",
        );
        return Ok(());
    };
    let img = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
    let (w, h) = (img.width() as f32, img.height() as f32);
    // Downscaled so the report stays small; outlines are scaled alike.
    let small = img.thumbnail(900, 900).to_rgb8();
    let jpeg = crate::imaging::encode(&small, crate::imaging::OutputFormat::Jpeg, 85)
        .map_err(|e| e.to_string())?;
    let raw = RawImage::decode_from_bytes(&jpeg, &mut Vec::new())?;
    let scale = (bw / w).min(bh / h);
    let (dw, dh) = (w * scale, h * scale);
    let (left, bottom) = (x0 + (bw - dw) / 2.0, y0 + (bh - dh) / 2.0);
    let id = doc.add_image(&raw);
    ops.push(Op::UseXobject {
        id,
        transform: XObjectTransform {
            translate_x: Some(Pt(left)),
            translate_y: Some(Pt(bottom)),
            // At this dpi the thumbnail spans `dw` points.
            dpi: Some(small.width() as f32 * 72.0 / dw),
            ..Default::default()
        },
    });
    for d in d.image.masks.values() {
        let pts: Vec<(f32, f32)> = path_points(d)
            .into_iter()
            .map(|(px, py)| (left + px * scale, bottom + dh - py * scale))
            .collect();
        polyline(ops, &pts, true, rgb(0.0, 0.8, 1.0), 1.0);
    }
    let caption = if *anonymised {
        "Anonymised photo with the measured areas"
    } else {
        "Photo with the measured areas"
    };
    text(ops, x0, y0 - 12.0, 8.0, false, caption);
    Ok(())
}

/// A line chart of one metric's history in the box (x, y, w, h).
fn draw_chart(ops: &mut Vec<Op>, title: &str, series: &[(u64, f64)], bx: (f32, f32, f32, f32)) {
    let (x0, y0, w, h) = bx;
    text(ops, x0, y0 + h + 4.0, 8.0, true, title);
    polyline(
        ops,
        &[(x0, y0 + h), (x0, y0), (x0 + w, y0)],
        false,
        rgb(0.4, 0.4, 0.4),
        0.5,
    );
    if series.is_empty() {
        text(ops, x0 + 4.0, y0 + h / 2.0, 7.0, false, "no results");
        return;
    }
    // The time axis runs from the first point to the last: in time order,
    // whatever order the caller gave.
    let mut series = series.to_vec();
    series.sort_by_key(|s| s.0);
    let (t0, t1) = (series[0].0 as f64, series[series.len() - 1].0 as f64);
    let lo = series.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
    let hi = series.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
    let span = if hi - lo < 1e-9 { 1.0 } else { hi - lo };
    let pts: Vec<(f32, f32)> = series
        .iter()
        .map(|(t, v)| {
            let fx = if t1 > t0 {
                (*t as f64 - t0) / (t1 - t0)
            } else {
                0.5
            };
            (
                x0 + 4.0 + fx as f32 * (w - 8.0),
                y0 + 4.0 + ((v - lo) / span) as f32 * (h - 8.0),
            )
        })
        .collect();
    polyline(ops, &pts, false, rgb(0.85, 0.2, 0.2), 1.0);
    // A marker per result: results minutes apart still show apart.
    for (x, y) in &pts {
        let sq = [
            (x - 2.5, y - 2.5),
            (x + 2.5, y - 2.5),
            (x + 2.5, y + 2.5),
            (x - 2.5, y + 2.5),
        ];
        polyline(ops, &sq, true, rgb(0.85, 0.2, 0.2), 1.5);
    }
    text(
        ops,
        x0 + w + 2.0,
        y0 + h - 6.0,
        6.0,
        false,
        &format!("{hi:.1}"),
    );
    text(ops, x0 + w + 2.0, y0, 6.0, false, &format!("{lo:.1}"));
    text(
        ops,
        x0,
        y0 - 8.0,
        6.0,
        false,
        &format!("{} result(s)", series.len()),
    );
}

/// The title, the subject, image, side and time, and who computed it.
fn draw_header(ops: &mut Vec<Op>, d: &ReportData, top: f32) {
    text(ops, MARGIN, top - 14.0, 18.0, true, "Skin analysis report");
    text(
        ops,
        MARGIN,
        top - 32.0,
        9.0,
        false,
        &format!(
            "Subject: {}   Image: {} ({})   Taken: {}",
            d.subject.name,
            d.image.id,
            catalog::side(d.image.side_id)
                .map(|s| s.tech_name)
                .unwrap_or("front"),
            d.image.creation_time
        ),
    );
    text(
        ops,
        MARGIN,
        top - 44.0,
        8.0,
        false,
        &format!(
            "Computed on the appliance by {}.",
            catalog::APPLICATION_NAME
        ),
    );
}

/// The computed metrics, each with its value and band, from `at` (right of
/// the photo) down; why there are none; the quality issues; and the
/// parameters this appliance does not compute.
fn draw_metrics(ops: &mut Vec<Op>, d: &ReportData, at: (f32, f32)) {
    let (mx, mut y) = at;
    text(ops, mx, y, 11.0, true, "Metrics");
    y -= 16.0;
    let lines = metric_lines(&d.image);
    if lines.is_empty() {
        let why = d
            .image
            .detection_error
            .clone()
            .or(d.image.error.clone())
            .unwrap_or_else(|| {
                format!(
                    "no metric passed the quality gates ({})",
                    d.image.quality_issues.join(", ")
                )
            });
        text(ops, mx, y, 8.0, false, &why);
        y -= 12.0;
    }
    for (label, value, band) in &lines {
        text(ops, mx, y, 9.0, true, label);
        text(ops, mx + 150.0, y, 9.0, false, value);
        text(ops, mx, y - 10.0, 7.0, false, band);
        y -= 26.0;
    }
    if !d.image.quality_issues.is_empty() {
        text(
            ops,
            mx,
            y,
            8.0,
            false,
            &format!("Quality: {}", d.image.quality_issues.join(", ")),
        );
        y -= 12.0;
    }
    text(
        ops,
        mx,
        y - 4.0,
        7.0,
        false,
        "Not computed by this appliance (see /api/v1/dicts/algorithms/):",
    );
    let names: Vec<&str> = super::UNAVAILABLE.iter().map(|(k, _)| *k).collect();
    for (i, chunk) in names.chunks(6).enumerate() {
        text(
            ops,
            mx,
            y - 14.0 - i as f32 * 9.0,
            6.5,
            false,
            &chunk.join(", "),
        );
    }
}

/// History charts under the photo, from `cy` down: one per numeric main
/// metric, two to a row.
fn draw_history(ops: &mut Vec<Op>, d: &ReportData, cy: f32) {
    text(ops, MARGIN, cy + 40.0, 11.0, true, "History");
    let charts: Vec<_> = catalog::algorithms()
        .into_iter()
        .filter(|a| {
            a.unavailable.is_none() && a.id != FACE_DETECTOR && a.parameter != Some("skintone")
        })
        .collect();
    for (k, alg) in charts.iter().enumerate() {
        let series: Vec<(u64, f64)> = d
            .history
            .iter()
            .filter_map(|i| {
                let r = i
                    .results
                    .iter()
                    .find(|r| r.algorithm_version_id == alg.id && r.is_ok)?;
                Some((i.created_unix, super::present::main_value(&r.result)?))
            })
            .collect();
        let (col, row) = ((k % 2) as f32, (k / 2) as f32);
        draw_chart(
            ops,
            alg.family,
            &series,
            (MARGIN + col * 260.0, cy - row * 110.0 - 60.0, 220.0, 70.0),
        );
    }
}

/// Draw the report. Errors: the photo does not decode.
pub fn render(d: &ReportData) -> Result<Vec<u8>, String> {
    let mut doc = PdfDocument::new("argus skin report");
    let mut ops = Vec::new();
    let top = PAGE_H - MARGIN;
    draw_header(&mut ops, d, top);
    draw_photo(&mut doc, &mut ops, d, (MARGIN, top - 340.0, 240.0, 280.0))?;
    draw_metrics(&mut ops, d, (MARGIN + 260.0, top - 70.0));
    draw_history(&mut ops, d, top - 420.0);
    let page = PdfPage::new(Mm(PAGE_W * 25.4 / 72.0), Mm(PAGE_H * 25.4 / 72.0), ops);
    Ok(doc
        .with_pages(vec![page])
        .save(&PdfSaveOptions::default(), &mut Vec::new()))
}

/// A one-page A4 PDF report of an image: the photo with the face's area
/// outlines, each computed metric with its value and band, the parameters
/// not computed, and the subject's history of each metric as a chart. The
/// token may come in the `access-token` header, as the reference sends it.
/// `GET` and `POST` are the same operation.
#[utoipa::path(
    method(post, get),
    path = "/service/pdf-generator/companies/{company_id}/datasets/{dataset_id}/subjects/{subject_id}/batches/{batch_id}/images/{image_id}/pdf/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_pdf_report",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("dataset_id" = Uuid, Path, description = "A dataset of the company."), ("subject_id" = Uuid, Path, description = "A subject of the dataset."), ("batch_id" = Uuid, Path, description = "A batch of the subject."), ("image_id" = Uuid, Path, description = "An image of the batch."), ReportOptions),
    request_body = Option<ReportOptions>,
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "The report, `Content-Disposition: attachment`.", content_type = "application/pdf", body = Vec<u8>),
        (status = 400, description = "A path id is not a UUID, or the body or query is invalid.", body = SkinErrorBody),
        (status = 401, description = "No token (`access-token` header or `Authorization`), or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such image (or batch, subject, dataset) of the caller's company.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn pdf(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path(ids): Path<(Uuid, Uuid, Uuid, Uuid, Uuid)>,
    Query(q): Query<ReportOptions>,
    crate::http::extract::OptionalJson(body): crate::http::extract::OptionalJson<ReportOptions>,
) -> SkinResult<Response> {
    let (_, sub) = super::v1::subject(&skin, &caller, ids.0, ids.1, ids.2).await?;
    let img = super::v1::image(&skin, &caller, ids).await?;
    super::accounts::audit_ok(
        &skin,
        "report_read",
        &caller.user.email,
        &img.id.to_string(),
    );
    let want_anon = q
        .anonymised
        .or(body.and_then(|b| b.anonymised))
        .unwrap_or(false);
    let (records, store) = (skin.records.clone(), skin.store.clone());
    let data = blocking(move || {
        let anon = img.aux.iter().find(|a| a.kind == "anonymised");
        let photo = match (&img.blob, anon) {
            (Some(b), _) if !want_anon => store.blobs.get(b)?.map(|x| (x, false)),
            (_, Some(a)) => store.blobs.get(&a.blob)?.map(|x| (x, true)),
            _ => None,
        };
        let sid = sub.id;
        let mut history = records.subject_images(sid, |i: &Image| !i.results.is_empty())?;
        history.sort_by_key(|i| (i.created_unix, i.id));
        Ok(ReportData {
            subject: sub,
            image: img,
            photo,
            history,
        })
    })
    .await?;
    let id = data.image.id;
    let pdf = tokio::task::spawn_blocking(move || render(&data))
        .await?
        .map_err(SkinError::Internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"skin-report-{id}.pdf\""),
            ),
            (header::CACHE_CONTROL, "private, no-store".to_string()),
        ],
        pdf,
    )
        .into_response())
}
