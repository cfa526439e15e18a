//! What one analysed selfie gives: geometry, quality verdicts and metrics
//! (serialised into the v1 and v3 answers and `argusd skin`'s JSON), and the
//! pictures made on request.

use std::collections::BTreeMap;

use serde::Serialize;

use super::super::measure::{self, DarkCircle, Exposure};
use super::super::quality::Reason;
use super::super::regions::Area;

/// Head pose from the mesh, degrees: yaw (turn), pitch (nod), roll (tilt
/// of the eye line from the horizontal).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Pose {
    pub yaw: f32,
    pub pitch: f32,
    pub roll: f32,
}

/// Where the face is and how it sits, in original-image pixels.
#[derive(Debug, Clone, Serialize)]
pub struct FaceGeometry {
    /// Detector box `[x1, y1, x2, y2]` and confidence.
    pub bbox: [f32; 4],
    pub detector_score: f32,
    /// Face-mesh presence probability.
    pub presence: f32,
    /// Eye centre to eye centre, pixels.
    pub iod_px: f32,
    pub pose: Pose,
    /// Iris diameter (mean of both eyes), pixels, and the scale it gives.
    pub iris_diameter_px: Option<f32>,
    pub mm_per_px: Option<f32>,
    /// The 468 mesh points (x, y in pixels; z relative depth, same scale).
    pub landmarks: Vec<[f32; 3]>,
}

/// The measures behind the gates, and the gates that failed.
#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    pub passed: bool,
    pub issues: Vec<Issue>,
    pub faces_found: usize,
    pub sharpness: Option<f32>,
    pub exposure: Option<Exposure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Issue {
    pub code: &'static str,
    pub message: &'static str,
    #[serde(skip)]
    pub reason: Reason,
}

/// Skin colour by the ITA scale, per area and for the face.
#[derive(Debug, Clone, Serialize)]
pub struct ItaMetric {
    pub value: f32,
    pub class: &'static str,
    pub l: f32,
    pub a: f32,
    pub b: f32,
    pub areas: BTreeMap<Area, measure::AreaColour>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Redness {
    /// Mean a* and erythema index over all the face's skin.
    pub a_mean: f32,
    pub erythema_index: f32,
    /// Per area: mean and 90th-percentile a*, mean erythema index.
    pub areas: BTreeMap<Area, RednessArea>,
    pub note: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct RednessArea {
    pub a_mean: f32,
    pub a_p90: f32,
    pub erythema_index: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct DarkCircles {
    /// Mean of both sides.
    pub delta_l: f32,
    pub delta_e: f32,
    pub left: Option<DarkCircle>,
    pub right: Option<DarkCircle>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgeMetric {
    /// Apparent age, years (one decimal): the age net's mean over the face
    /// crop and its mirror image. The net is a regression and gives no
    /// confidence.
    pub value: f32,
}

/// The metrics computed for a photo; a metric withheld by a gate is absent
/// here and listed in [`Analysis::withheld`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ita: Option<ItaMetric>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skintone: Option<Skintone>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redness: Option<Redness>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dark_circles: Option<DarkCircles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age: Option<AgeMetric>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skintone {
    /// The ITA class of the face: very_light, light, intermediate, tan,
    /// brown or dark. Not a Fitzpatrick phototype.
    pub value: &'static str,
    pub ita: f32,
}

/// Everything one photo gives.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub width: u32,
    pub height: u32,
    pub face: Option<FaceGeometry>,
    pub quality: Quality,
    pub metrics: Metrics,
    /// The sclera-referenced white balance the colour metrics were read
    /// through; null when the eyes did not show enough sclera (the colour
    /// metrics are then the camera's own).
    pub white_balance: Option<measure::WhiteBalance>,
    /// Computed-for metrics withheld by a gate, with the reason codes.
    pub withheld: BTreeMap<&'static str, Vec<&'static str>>,
    /// Area outlines as SVG path data, original-image pixels.
    pub masks: BTreeMap<Area, String>,
    pub timings_ms: BTreeMap<&'static str, f64>,
    #[serde(skip)]
    pub images: Option<Images>,
}

/// Pictures made on request: the aligned face, the redness heat map over
/// it, and an anonymised copy of the photo.
#[derive(Debug, Clone)]
pub struct Images {
    pub aligned_face_jpeg: Vec<u8>,
    pub redness_png: Vec<u8>,
    pub anonymised_jpeg: Vec<u8>,
}
