//! One selfie, end to end: detect the face, fit the face mesh (twice: from
//! the detector's box, then from the mesh's own box, as MediaPipe tracks),
//! find the irises and the age, align the face and measure it, gate every
//! metric on the photo's quality.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::crops::{
    age_crop, aligned_map, black_outside, eye_rois, mesh_to_image, mirrored, roi_from_detection,
    roi_from_mesh, xy,
};
use super::geometry::{dist, mid, Affine, Border, Pyramid};
use super::measure::{self, Colour, DarkCircle, Exposure, Rgb};
use super::quality::{self, Reason};
use super::regions::{self, Area};
use super::work::SkinBatchers;
use crate::batch::{Batcher, Workload};
use crate::config::SkinParams;
use crate::detect::{self, DetectParams, PipelineError};
use crate::frame::MeshPoints;
use crate::imaging::DecodeLimits;
use crate::model::{age, face_mesh, iris, Face};

/// Mean adult human iris diameter, mm (horizontal visible iris diameter,
/// 11.7 ± 0.5 mm; Rüfer et al. 2005): the photo's ruler.
pub const IRIS_DIAMETER_MM: f32 = 11.7;

/// What analysing a selfie can fail with: the same as the face pipeline it
/// starts with (the photo, a full queue, the backend), so one type.
pub type AnalyzeError = PipelineError;

mod shapes;

pub use shapes::*;

/// Submit one item and wait for its output.
async fn infer<W: Workload>(b: &Batcher<W>, item: W::Item) -> Result<W::Output, AnalyzeError> {
    let rx = b.submit_item(item)?;
    let r = rx
        .await
        .map_err(|_| AnalyzeError::Inference("the backend thread stopped".into()))?
        .map_err(AnalyzeError::Inference)?;
    Ok(r.output)
}

/// Run a blocking step off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AnalyzeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AnalyzeError::Inference(format!("worker failed: {e}")))
}

fn ms(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e4).round() / 10.0
}

/// Yaw and pitch from the face's normal (the cross product of its
/// cheek-to-cheek and forehead-to-chin axes), roll from the eye line.
fn pose(p: &[[f32; 3]]) -> Pose {
    let sub = |a: [f32; 3], b: [f32; 3]| [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
    let x = sub(p[454], p[234]);
    let y = sub(p[152], p[10]);
    let mut n = [
        x[1] * y[2] - x[2] * y[1],
        x[2] * y[0] - x[0] * y[2],
        x[0] * y[1] - x[1] * y[0],
    ];
    if n[2] < 0.0 {
        n = [-n[0], -n[1], -n[2]];
    }
    let eye_r = mid2(p[33], p[133]);
    let eye_l = mid2(p[263], p[362]);
    Pose {
        yaw: n[0].atan2(n[2]).to_degrees(),
        pitch: n[1].atan2(n[2]).to_degrees(),
        roll: (eye_l[1] - eye_r[1])
            .atan2(eye_l[0] - eye_r[0])
            .to_degrees(),
    }
}

fn mid2(a: [f32; 3], b: [f32; 3]) -> [f32; 2] {
    mid([a[0], a[1]], [b[0], b[1]])
}

/// SVG path data of a polygon.
fn svg_path(poly: &[[f32; 2]]) -> String {
    let mut s = String::new();
    for (i, p) in poly.iter().enumerate() {
        // Centre coordinates -> SVG's edge coordinates.
        s.push_str(&format!(
            "{}{:.1} {:.1} ",
            if i == 0 { "M" } else { "L" },
            p[0] + 0.5,
            p[1] + 0.5
        ));
    }
    s.push('Z');
    s
}

/// A whole SVG document of the area outlines over a `width` x `height` photo.
pub fn masks_svg(width: u32, height: u32, masks: &BTreeMap<Area, String>) -> String {
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n"
    );
    for (area, d) in masks {
        s.push_str(&format!(
            "  <path id=\"{}\" d=\"{d}\" fill=\"none\" stroke=\"#00e0ff\" stroke-width=\"2\"/>\n",
            area.name()
        ));
    }
    s.push_str("</svg>\n");
    s
}

/// What to make besides the numbers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Want {
    /// The aligned face, the redness heat map and the anonymised copy.
    pub images: bool,
}

/// Analyse one photo: the whole pipeline, with its blocking steps off the
/// async workers and its inferences on the shared batchers.
///
/// Errors: the photo cannot be decoded or is over the limits (`Imaging`),
/// a batcher's queue is full (`Submit`), a backend failed (`Inference`).
/// A photo without a usable face is not an error: its analysis says why.
pub async fn analyze(
    b: &SkinBatchers,
    bytes: Vec<u8>,
    limits: DecodeLimits,
    params: SkinParams,
    want: Want,
) -> Result<Analysis, AnalyzeError> {
    analyze_with(b, bytes, limits, params, want, |_| {}).await
}

/// One detected face: its box (original-image pixels) and score.
#[derive(Debug, Clone, Serialize)]
pub struct DetectedFace {
    pub bbox: [f32; 4],
    pub score: f32,
}

/// What detection alone tells, before the mesh and the metrics: final
/// from then on (the face detector's result).
#[derive(Debug, Clone, Serialize)]
pub struct Detected {
    pub width: u32,
    pub height: u32,
    /// Largest first.
    pub faces: Vec<DetectedFace>,
    /// The quality issue detection alone decides: `no_face` or
    /// `multiple_faces`.
    pub issue: Option<Issue>,
}

/// [`analyze`], calling `on_detect` as soon as the faces are known (the
/// rest of the pass takes most of the time), so a caller can report the
/// detector's result first.
pub async fn analyze_with(
    b: &SkinBatchers,
    bytes: Vec<u8>,
    limits: DecodeLimits,
    params: SkinParams,
    want: Want,
    on_detect: impl FnOnce(&Detected) + Send,
) -> Result<Analysis, AnalyzeError> {
    let mut timings = BTreeMap::new();
    let t = Instant::now();
    let info = b.detector.info().clone();
    let mut prep = blocking(move || {
        detect::prepare(
            &bytes,
            &limits,
            info.input_width,
            info.input_height,
            info.frames,
        )
    })
    .await??;
    timings.insert("decode", ms(t));
    let t = Instant::now();
    let det = detect::detect(
        &b.detector,
        &mut prep,
        DetectParams {
            confidence: params.face_confidence,
            nms_threshold: 0.4,
            max_faces: 0,
            // A selfie's face is large; the size gate refuses small ones.
            tile_min_face_px: None,
        },
    )
    .await?;
    timings.insert("detect", ms(t));
    let (width, height) = prep.image.dimensions();
    let mut faces = det.faces;
    faces.sort_by(|x, y| y.area().total_cmp(&x.area()));
    let main = faces.first().cloned();
    let mut issues = Vec::new();
    if let Some(main) = &main {
        let big = |f: &&Face| f.area() >= params.second_face_area_ratio * main.area();
        if faces.iter().filter(big).count() > 1 {
            issues.push(Reason::MultipleFaces);
        }
    }
    on_detect(&detected(width, height, &faces, &issues));
    let Some(main) = main else {
        return Ok(without_face(width, height, timings));
    };
    let pyr = Pyramid::new(std::mem::replace(
        &mut prep.image,
        image::RgbImage::new(0, 0),
    ));
    let t = Instant::now();
    let (mesh, roi, pyr) = fit_mesh(b, pyr, &main).await?;
    timings.insert("face_mesh", ms(t));
    let pts3 = mesh_to_image(&mesh, &roi);
    let pts = xy(&pts3);
    let t = Instant::now();
    let (iris_px, age, pyr) = eyes_and_age(b, pyr, &pts).await?;
    timings.insert("iris_and_age", ms(t));
    let t = Instant::now();
    let faces_for_mask = faces.clone();
    let masker = b.detector.masker().clone();
    let measured =
        blocking(move || measure_face(pyr, &pts, want, &faces_for_mask, &masker)).await??;
    timings.insert("measure", ms(t));
    let iod = measured.iod;
    let pose = pose(&pts3);
    gate(&mut issues, &params, mesh.presence, iod, &pose, &measured);
    let metrics_out = metrics_of(&measured.colour, age);
    let (metrics, withheld) = withhold(metrics_out, &issues);
    Ok(Analysis {
        width,
        height,
        face: Some(FaceGeometry {
            bbox: [main.x1, main.y1, main.x2, main.y2],
            detector_score: main.score,
            presence: mesh.presence,
            iod_px: iod,
            pose,
            iris_diameter_px: iris_px,
            mm_per_px: iris_px.map(|d| IRIS_DIAMETER_MM / d),
            landmarks: pts3,
        }),
        quality: Quality {
            passed: issues.is_empty(),
            issues: issue_list(&issues),
            faces_found: faces.len(),
            sharpness: Some(measured.sharpness),
            exposure: Some(measured.exposure),
        },
        metrics,
        white_balance: measured.white_balance,
        withheld,
        masks: measured.masks,
        timings_ms: timings,
        images: measured.images,
    })
}

/// The metrics of one face's colour measures, with its perceived age.
fn metrics_of(colour: &Colour, age: Option<AgeMetric>) -> Metrics {
    Metrics {
        ita: colour.ita_face.as_ref().map(|c| ItaMetric {
            value: c.ita,
            class: c.ita_class.name(),
            l: c.l,
            a: c.a,
            b: c.b,
            areas: [Area::Forehead, Area::LeftCheek, Area::RightCheek]
                .iter()
                .filter_map(|a| Some((*a, colour.areas.get(a)?.clone())))
                .collect(),
        }),
        skintone: colour.ita_face.as_ref().map(|c| Skintone {
            value: c.ita_class.name(),
            ita: c.ita,
        }),
        redness: redness(colour),
        dark_circles: dark_circles(colour),
        age,
    }
}

/// The face detector's result: the faces, largest first, and the issue
/// detection alone decides (`no_face`, else the first of `issues`).
fn detected(width: u32, height: u32, faces: &[Face], issues: &[Reason]) -> Detected {
    let decided = if faces.is_empty() {
        vec![Reason::NoFace]
    } else {
        issues.to_vec()
    };
    Detected {
        width,
        height,
        faces: faces
            .iter()
            .map(|f| DetectedFace {
                bbox: [f.x1, f.y1, f.x2, f.y2],
                score: f.score,
            })
            .collect(),
        issue: issue_list(&decided).into_iter().next(),
    }
}

fn issue_list(issues: &[Reason]) -> Vec<Issue> {
    issues
        .iter()
        .map(|&r| Issue {
            code: r.code(),
            message: r.advice(),
            reason: r,
        })
        .collect()
}

/// The analysis of a photo in which the detector found no face.
fn without_face(width: u32, height: u32, timings_ms: BTreeMap<&'static str, f64>) -> Analysis {
    let (metrics, withheld) = withhold(Metrics::default(), &[Reason::NoFace]);
    Analysis {
        width,
        height,
        face: None,
        quality: Quality {
            passed: false,
            issues: issue_list(&[Reason::NoFace]),
            faces_found: 0,
            sharpness: None,
            exposure: None,
        },
        metrics,
        white_balance: None,
        withheld,
        masks: BTreeMap::new(),
        timings_ms,
        images: None,
    }
}

/// The metrics the appliance computes, by their API names.
pub const COMPUTED: [&str; 5] = ["ita", "skintone", "redness", "dark_circles", "age"];

/// Drop every metric a failed gate blocks, and say which and why.
fn withhold(
    mut m: Metrics,
    issues: &[Reason],
) -> (Metrics, BTreeMap<&'static str, Vec<&'static str>>) {
    let mut withheld = BTreeMap::new();
    for name in COMPUTED {
        let why: Vec<&'static str> = quality::blocking(name)
            .iter()
            .filter(|r| issues.contains(r))
            .map(|r| r.code())
            .collect();
        if why.is_empty() {
            continue;
        }
        match name {
            "ita" => m.ita = None,
            "skintone" => m.skintone = None,
            "redness" => m.redness = None,
            "dark_circles" => m.dark_circles = None,
            _ => m.age = None,
        }
        withheld.insert(name, why);
    }
    (m, withheld)
}

fn gate(
    issues: &mut Vec<Reason>,
    p: &SkinParams,
    presence: f32,
    iod: f32,
    pose: &Pose,
    m: &Measured,
) {
    let mut add = |r: Reason, failed: bool| {
        if failed && !issues.contains(&r) {
            issues.push(r);
        }
    };
    add(Reason::Occluded, presence < p.min_presence);
    add(Reason::FaceTooSmall, iod < p.min_iod_px);
    add(
        Reason::PoseOutOfRange,
        pose.yaw.abs() > p.max_yaw_deg
            || pose.pitch.abs() > p.max_pitch_deg
            || pose.roll.abs() > p.max_roll_deg,
    );
    add(Reason::Blurred, m.sharpness < p.min_sharpness);
    add(
        Reason::Underexposed,
        m.exposure.underexposed_share > p.max_underexposed_share
            || m.exposure.mean_luma < p.min_mean_luma,
    );
    add(
        Reason::Overexposed,
        m.exposure.overexposed_share > p.max_overexposed_share,
    );
    add(Reason::Monochrome, m.chroma < p.min_skin_chroma);
    issues.sort();
}

fn redness(c: &Colour) -> Option<Redness> {
    let skin = c.skin.as_ref()?;
    Some(Redness {
        a_mean: skin.a,
        erythema_index: skin.erythema_index,
        areas: c
            .areas
            .iter()
            .map(|(area, s)| {
                (
                    *area,
                    RednessArea {
                        a_mean: s.a,
                        a_p90: s.a_p90,
                        erythema_index: s.erythema_index,
                    },
                )
            })
            .collect(),
        note: "colorimetric: a* (CIE L*a*b*, D65) and the erythema index of the camera's \
               sRGB output; device- and light-dependent, so compare photos taken the same way",
    })
}

fn dark_circles(c: &Colour) -> Option<DarkCircles> {
    let left = measure::dark_circle(c, Area::LeftUnderEye, Area::LeftMalar);
    let right = measure::dark_circle(c, Area::RightUnderEye, Area::RightMalar);
    let both: Vec<&DarkCircle> = left.iter().chain(right.iter()).collect();
    if both.is_empty() {
        return None;
    }
    let n = both.len() as f32;
    Some(DarkCircles {
        delta_l: both.iter().map(|d| d.delta_l).sum::<f32>() / n,
        delta_e: both.iter().map(|d| d.delta_e).sum::<f32>() / n,
        left,
        right,
    })
}

/// Two passes of the face mesh: from the detector's box, then from the
/// first pass's own points. Returns the second pass and its ROI.
async fn fit_mesh(
    b: &SkinBatchers,
    pyr: Pyramid,
    face: &Face,
) -> Result<(MeshPoints, Affine, Pyramid), AnalyzeError> {
    let size = face_mesh::INPUT_SIZE;
    let mut roi = roi_from_detection(face);
    let mut pyr = pyr;
    let mut mesh = None;
    for _ in 0..2 {
        if let Some(m) = &mesh {
            roi = roi_from_mesh(&xy(&mesh_to_image(m, &roi)));
        }
        let r = roi;
        let (crop, back) = blocking(move || {
            let c = pyr.warp(&r, size, size, Border::Replicate);
            (c, pyr)
        })
        .await?;
        pyr = back;
        mesh = Some(infer(&b.mesh, crop).await?);
    }
    Ok((mesh.expect("two passes ran"), roi, pyr))
}

/// The iris diameter (pixels, both eyes' mean) and the age, from crops of
/// the photo the mesh places.
async fn eyes_and_age(
    b: &SkinBatchers,
    mut pyr: Pyramid,
    pts: &[[f32; 2]],
) -> Result<(Option<f32>, Option<AgeMetric>, Pyramid), AnalyzeError> {
    let rois = eye_rois(pts);
    let (w, h) = pyr.base().dimensions();
    let (face, keep) = age_crop(pts, w, h);
    let s = iris::INPUT_SIZE;
    let (crops, face_px, pyr) = blocking(move || {
        let c: Vec<Vec<u8>> = rois
            .iter()
            .map(|(m, _)| pyr.warp(m, s, s, Border::Replicate))
            .collect();
        let mut a = pyr.warp(&face, age::INPUT_SIZE, age::INPUT_SIZE, Border::Zero);
        black_outside(&mut a, age::INPUT_SIZE, &face, keep);
        (c, a, pyr)
    })
    .await?;
    let mut crops = crops.into_iter();
    // The crop and its mirror image: their mean is blind to a front
    // camera's mirroring and measured closer (models/skin/age_graph.md).
    let face_mirrored = mirrored(&face_px, age::INPUT_SIZE);
    let (r, l, age_a, age_b) = tokio::join!(
        infer(&b.eyes, crops.next().unwrap_or_default()),
        infer(&b.eyes, crops.next().unwrap_or_default()),
        infer(&b.age, face_px),
        infer(&b.age, face_mirrored),
    );
    let iod = dist(mid(pts[33], pts[133]), mid(pts[263], pts[362]));
    let mut diameters = Vec::new();
    for (eye, (m, _)) in [r?, l?].iter().zip(&rois) {
        let p = &eye.iris;
        let d = (dist([p[1][0], p[1][1]], [p[3][0], p[3][1]])
            + dist([p[2][0], p[2][1]], [p[4][0], p[4][1]]))
            / 2.0
            * m.scale();
        // An iris is ~0.19 IOD across (11.7 of ~63 mm); far off means the
        // eye was shut or hidden.
        if (0.12..0.27).contains(&(d / iod)) {
            diameters.push(d);
        }
    }
    let iris_px =
        (!diameters.is_empty()).then(|| diameters.iter().sum::<f32>() / diameters.len() as f32);
    let value = (age_a? + age_b?) / 2.0;
    Ok((
        iris_px,
        Some(AgeMetric {
            value: (value * 10.0).round() / 10.0,
        }),
        pyr,
    ))
}

/// What the aligned crop gives.
struct Measured {
    iod: f32,
    white_balance: Option<measure::WhiteBalance>,
    colour: Colour,
    exposure: Exposure,
    /// [`measure::chroma`] of the skin before white balance.
    chroma: f32,
    sharpness: f32,
    masks: BTreeMap<Area, String>,
    images: Option<Images>,
}

fn measure_face(
    mut pyr: Pyramid,
    pts: &[[f32; 2]],
    want: Want,
    faces: &[Face],
    masker: &crate::backend::masker::Masker,
) -> Result<Measured, AnalyzeError> {
    let image_areas = regions::areas(pts);
    let iod = image_areas.iod;
    let (map, w, h) = aligned_map(pts, iod);
    let crop = pyr.warp(&map, w, h, Border::Replicate);
    let inv = map
        .inverse()
        .ok_or_else(|| AnalyzeError::Inference("the face mesh collapsed to a point".into()))?;
    let crop_pts: Vec<[f32; 2]> = pts.iter().map(|&p| inv.apply(p)).collect();
    let areas = regions::areas(&crop_pts);
    let img = Rgb {
        width: w,
        height: h,
        data: &crop,
    };
    let white_balance = measure::sclera_balance(&img, &areas);
    let balanced = white_balance.map(|wb| measure::apply_balance(&crop, wb.matrix));
    let colour_img = Rgb {
        width: w,
        height: h,
        data: balanced.as_deref().unwrap_or(&crop),
    };
    let (colour, skin) = measure::colour(&colour_img, &areas);
    let exposure = measure::exposure(&img, &skin);
    let chroma = measure::chroma(&img, &skin);
    let oval = regions::Mask::polygon(w, h, &areas.polygons[&Area::FaceOval]);
    let sharpness = measure::sharpness(&img, &oval, true);
    let masks = image_areas
        .polygons
        .iter()
        .map(|(a, p)| (*a, svg_path(p)))
        .collect();
    let images = if want.images {
        let aligned =
            image::RgbImage::from_raw(w as u32, h as u32, crop.clone()).expect("sized buffer");
        let mut photo = pyr.into_base();
        let anonymised = crate::backend::masker::mask_and_encode(
            masker,
            &mut photo,
            None,
            faces,
            crate::imaging::MaskParams {
                method: crate::imaging::MaskMethod::Gaussian,
                strength: 199,
                padding: 0.15,
            },
            crate::backend::masker::Encoding::opaque(crate::imaging::OutputFormat::Jpeg, 90),
        )?;
        Some(Images {
            aligned_face_jpeg: crate::imaging::encode::encode(
                &aligned,
                crate::imaging::OutputFormat::Jpeg,
                92,
            )?,
            redness_png: measure::redness_png(&colour_img, &skin)
                .map_err(|e| AnalyzeError::Inference(format!("heat map: {e}")))?,
            anonymised_jpeg: anonymised.bytes,
        })
    } else {
        None
    };
    Ok(Measured {
        iod,
        white_balance,
        colour,
        exposure,
        chroma,
        sharpness,
        masks,
        images,
    })
}
