//! Quality gates: why a metric is withheld from a photo. Each failure has
//! a stable reason code a client can show, and each metric lists the
//! failures that would falsify it.

use serde::Serialize;

/// A reason a photo cannot give some metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    NoFace,
    MultipleFaces,
    /// The eyes are closer than `skin.min_iod_px`.
    FaceTooSmall,
    /// Yaw, pitch or roll beyond the configured limits.
    PoseOutOfRange,
    Blurred,
    Underexposed,
    Overexposed,
    /// The face mesh's presence score is low: the face is covered or cut off.
    Occluded,
    /// The face's skin has no colour: a black-and-white photo or a filter
    /// that removed it, so every colour measure would read the grey.
    Monochrome,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::NoFace => "no_face",
            Reason::MultipleFaces => "multiple_faces",
            Reason::FaceTooSmall => "face_too_small",
            Reason::PoseOutOfRange => "pose_out_of_range",
            Reason::Blurred => "blurred",
            Reason::Underexposed => "underexposed",
            Reason::Overexposed => "overexposed",
            Reason::Occluded => "occluded",
            Reason::Monochrome => "monochrome",
        }
    }

    /// What the person taking the photo can do about it.
    pub fn advice(self) -> &'static str {
        match self {
            Reason::NoFace => "no face was found: take a photo of one face, facing the camera",
            Reason::MultipleFaces => "more than one face: take a photo with only one person",
            Reason::FaceTooSmall => "the face is too small: move closer to the camera",
            Reason::PoseOutOfRange => "the head is turned or tilted: face the camera straight on",
            Reason::Blurred => "the photo is blurred: hold the camera still and let it focus",
            Reason::Underexposed => "the face is too dark: take the photo in brighter, even light",
            Reason::Overexposed => {
                "the face is overexposed: avoid direct light or flash on the face"
            }
            Reason::Occluded => {
                "the face is covered or cut off: remove what hides it and keep it in frame"
            }
            Reason::Monochrome => {
                "the photo has no colour: take a colour photo, without black-and-white filters"
            }
        }
    }
}

/// The failures that withhold `metric`. Every metric needs one clear,
/// unhidden face; the colour metrics need it in colour, evenly exposed
/// and, as they compare areas, facing the camera; age needs a sharp face
/// (its net reads a grey face as well as a coloured one), dark circles a
/// sharp one in colour (their delta E is a colour difference).
pub fn blocking(metric: &str) -> &'static [Reason] {
    use Reason::*;
    const DARK_CIRCLES: &[Reason] = &[
        NoFace,
        MultipleFaces,
        FaceTooSmall,
        PoseOutOfRange,
        Blurred,
        Underexposed,
        Overexposed,
        Occluded,
        Monochrome,
    ];
    const AGE: &[Reason] = &[
        NoFace,
        MultipleFaces,
        FaceTooSmall,
        PoseOutOfRange,
        Blurred,
        Underexposed,
        Overexposed,
        Occluded,
    ];
    const COLOUR: &[Reason] = &[
        NoFace,
        MultipleFaces,
        FaceTooSmall,
        PoseOutOfRange,
        Underexposed,
        Overexposed,
        Occluded,
        Monochrome,
    ];
    match metric {
        "ita" | "skintone" | "redness" => COLOUR,
        "dark_circles" => DARK_CIRCLES,
        _ => AGE,
    }
}
