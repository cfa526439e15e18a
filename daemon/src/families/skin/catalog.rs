//! What the skin family offers, as its dictionaries say: the image types
//! (`/api/v1/dicts/image_types/`), the algorithms (`/api/v1/dicts/algorithms/`)
//! and the one application that runs them. Ids follow the reference where
//! it fixes them (face detector 40, `selfie_v2.redness` 30, image type 1 =
//! selfie, sides 1 front / 2 right / 3 left, light 1 regular); the others
//! are the appliance's own and stable.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// The appliance's application ("argus Skin Metrics").
pub const APPLICATION_ID: Uuid = Uuid::from_u128(0x6172_6775_732d_4000_8000_736b_696e_0001);
/// The reference's Face Metrics 2.0 application id, accepted as an alias
/// so a client written for the cloud service attaches unchanged.
pub const FACE_METRICS_2_ID: Uuid = Uuid::from_u128(0x8b5b3acc_480b_4412_8d2c_ebe6ab4384d7);
pub const APPLICATION_NAME: &str = "argus Skin Metrics";
pub const APPLICATION_DESCRIPTION: &str = "Face detection and mesh, ITA and skin-tone class, redness (a*, erythema index), dark circles (ΔL*, ΔE*ab) and perceived age, computed on the appliance; see /api/v1/dicts/algorithms/ for each";

/// The face detector, always enabled.
pub const FACE_DETECTOR: u32 = 40;

/// One algorithm of the dictionary.
#[derive(Debug, Clone, Copy)]
pub struct Algorithm {
    pub id: u32,
    /// The v3 parameter it fills (none for the detector).
    pub parameter: Option<&'static str>,
    pub tech_name: &'static str,
    pub family: &'static str,
    pub description: &'static str,
    /// Why the appliance does not compute it; None when it does.
    pub unavailable: Option<&'static str>,
}

pub const VERSION: &str = "1.0.0";

const COMPUTED: [Algorithm; 6] = [
    Algorithm {
        id: FACE_DETECTOR,
        parameter: None,
        tech_name: "selfie_v2.face_detector",
        family: "Face Detector",
        description: "CenterFace boxes, MediaPipe face mesh (468 points) and iris; the face every other algorithm reads",
        unavailable: None,
    },
    Algorithm {
        id: 30,
        parameter: Some("redness"),
        tech_name: "selfie_v2.redness",
        family: "Redness",
        description: "Mean CIE a* and Diffey erythema index (100 log10 R/G, linear light) over the face's skin and per area",
        unavailable: None,
    },
    Algorithm {
        id: 31,
        parameter: Some("ita"),
        tech_name: "selfie_v2.ita",
        family: "ITA",
        description: "Individual typology angle, atan((L*-50)/b*) in degrees (Chardon 1991), with L*, a*, b* of forehead and cheeks",
        unavailable: None,
    },
    Algorithm {
        id: 32,
        parameter: Some("skintone"),
        tech_name: "selfie_v2.skin_tone",
        family: "Skin tone",
        description: "The ITA class (Del Bino 2006): very light, light, intermediate, tan, brown, dark; not a Fitzpatrick phototype",
        unavailable: None,
    },
    Algorithm {
        id: 33,
        parameter: Some("dark_circles"),
        tech_name: "selfie_v2.dark_circles",
        family: "Dark circles",
        description: "Under-eye skin against the malar skin below it: ΔL* and ΔE*ab per side",
        unavailable: None,
    },
    Algorithm {
        id: 34,
        parameter: Some("age"),
        tech_name: "selfie_v2.perceived_age",
        family: "Perceived age",
        description: "Apparent age in years from face-api's age net (TinyXception) on an upright face crop and its mirror image",
        unavailable: None,
    },
];

/// First id of the algorithms the appliance lists but does not compute.
const UNAVAILABLE_BASE: u32 = 101;

/// Every algorithm: the computed ones, then one per parameter the
/// appliance does not compute, with the reason (`super::UNAVAILABLE`).
pub fn algorithms() -> Vec<Algorithm> {
    let mut v = COMPUTED.to_vec();
    for (i, (name, why)) in super::UNAVAILABLE.iter().enumerate() {
        v.push(Algorithm {
            id: UNAVAILABLE_BASE + i as u32,
            parameter: Some(name),
            tech_name: unavailable_tech_name(name),
            family: name,
            description: "listed for completeness; not computed by this appliance",
            unavailable: Some(why),
        });
    }
    v
}

fn unavailable_tech_name(name: &str) -> &'static str {
    // Leaked once per name at most: the list is fixed and small.
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let mut m = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    m.entry(name.to_string())
        .or_insert_with(|| Box::leak(format!("selfie_v2.{name}").into_boxed_str()))
}

/// The algorithm with id `id`.
pub fn algorithm(id: u32) -> Option<Algorithm> {
    algorithms().into_iter().find(|a| a.id == id)
}

/// Ids of the algorithms the appliance computes.
pub fn computed_ids() -> Vec<u32> {
    COMPUTED.iter().map(|a| a.id).collect()
}

/// The algorithm that fills parameter `name`.
pub fn for_parameter(name: &str) -> Option<Algorithm> {
    COMPUTED.iter().copied().find(|a| a.parameter == Some(name))
}

/// One dictionary entry, as `/api/v1/dicts/algorithms/` lists it.
/// An algorithm as the dictionary and the application list show it.
/// (Fields in alphabetical order: the order its JSON has always had.)
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"algorithm_family": {"name": "Redness", "tech_name": "redness"},
    "description": "Mean CIE a* and Diffey erythema index (100 log10 R/G, linear light) over the face's skin and per area", "id": 30,
    "is_available": true, "parameter": "redness", "tech_name": "selfie_v2.redness",
    "unavailable_reason": null, "version": "1.0.0"}))]
pub struct AlgorithmView {
    /// The metric family (`tech_name` is the v3 parameter it fills, or
    /// `face_detector`).
    pub algorithm_family: NameView,
    pub description: String,
    pub id: u32,
    /// False for the reference's algorithms the appliance does not compute.
    pub is_available: bool,
    /// The v3 parameter it fills; null for the face detector.
    pub parameter: Option<String>,
    pub tech_name: String,
    /// Why it is not available; null when it is.
    pub unavailable_reason: Option<String>,
    pub version: String,
}

/// A display name and its machine name.
#[derive(Debug, Serialize, ToSchema)]
pub struct NameView {
    pub name: String,
    pub tech_name: String,
}

pub fn algorithm_json(a: &Algorithm) -> AlgorithmView {
    AlgorithmView {
        algorithm_family: NameView {
            name: a.family.into(),
            tech_name: a.parameter.unwrap_or("face_detector").into(),
        },
        description: a.description.into(),
        id: a.id,
        is_available: a.unavailable.is_none(),
        parameter: a.parameter.map(Into::into),
        tech_name: a.tech_name.into(),
        unavailable_reason: a.unavailable.map(Into::into),
        version: VERSION.into(),
    }
}

/// A side of a selfie batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    pub id: u32,
    pub name: &'static str,
    pub tech_name: &'static str,
}

pub const SIDES: [Side; 3] = [
    Side {
        id: 1,
        name: "Front",
        tech_name: "front",
    },
    Side {
        id: 2,
        name: "Right",
        tech_name: "right",
    },
    Side {
        id: 3,
        name: "Left",
        tech_name: "left",
    },
];

pub fn side(id: u32) -> Option<Side> {
    SIDES.iter().copied().find(|s| s.id == id)
}

pub fn side_by_name(name: &str) -> Option<Side> {
    SIDES.iter().copied().find(|s| s.tech_name == name)
}

/// The one light the selfie type has.
pub const LIGHT_REGULAR: u32 = 1;

/// Image type 1 (selfie), the only one the appliance analyses.
pub const SELFIE: u32 = 1;

/// A dictionary entry with an id: a side, a light, a sex, an image type.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Named {
    pub id: u32,
    pub name: String,
    pub tech_name: String,
}

impl From<Side> for Named {
    fn from(s: Side) -> Self {
        Named {
            id: s.id,
            name: s.name.into(),
            tech_name: s.tech_name.into(),
        }
    }
}

/// An image type with its sides and lights (`/api/v1/dicts/image_types/`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"id": 1, "lights": [{"id": 1, "name": "Regular", "tech_name": "regular"}],
    "name": "Selfie", "sides": [{"id": 1, "name": "Front", "tech_name": "front"}], "tech_name": "selfie"}))]
pub struct ImageType {
    pub id: u32,
    pub lights: Vec<Named>,
    pub name: String,
    pub sides: Vec<Named>,
    pub tech_name: String,
}

impl ImageType {
    /// Without its sides and lights, as an image names its type.
    pub fn named(&self) -> Named {
        Named {
            id: self.id,
            name: self.name.clone(),
            tech_name: self.tech_name.clone(),
        }
    }
}

pub fn image_type_json() -> ImageType {
    ImageType {
        id: SELFIE,
        lights: vec![Named {
            id: LIGHT_REGULAR,
            name: "Regular".into(),
            tech_name: "regular".into(),
        }],
        name: "Selfie".into(),
        sides: SIDES.iter().copied().map(Named::from).collect(),
        tech_name: "selfie".into(),
    }
}

/// The application (`GET .../applications/`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationView {
    /// The computed algorithms.
    pub algorithms: Vec<AlgorithmView>,
    /// Other ids accepted for it (the reference's Face Metrics 2.0).
    pub aliases: Vec<Uuid>,
    pub default_enabled_algorithms: Vec<u32>,
    pub description: String,
    pub id: Uuid,
    pub image_type_ids: Vec<u32>,
    pub name: String,
}

/// The application, as `GET .../applications/` lists it.
pub fn application_json() -> ApplicationView {
    ApplicationView {
        algorithms: COMPUTED.iter().map(algorithm_json).collect(),
        aliases: vec![FACE_METRICS_2_ID],
        default_enabled_algorithms: computed_ids(),
        description: APPLICATION_DESCRIPTION.into(),
        id: APPLICATION_ID,
        image_type_ids: vec![SELFIE],
        name: APPLICATION_NAME.into(),
    }
}

/// Whether `id` names the appliance's application.
pub fn is_application(id: Uuid) -> bool {
    id == APPLICATION_ID || id == FACE_METRICS_2_ID
}

/// Names of the reference's application that a client may filter results
/// by, as it does on the cloud service ("Face Skin Metrics" in its guide,
/// "Face Metrics 2.0" the product): the appliance's runs answer to them.
pub const APPLICATION_NAME_ALIASES: [&str; 2] = ["Face Skin Metrics", "Face Metrics 2.0"];

/// Whether `name` names the appliance's application (its own name or one
/// of [`APPLICATION_NAME_ALIASES`]; case and surrounding spaces aside).
pub fn is_application_name(name: &str) -> bool {
    let n = name.trim();
    std::iter::once(APPLICATION_NAME)
        .chain(APPLICATION_NAME_ALIASES)
        .any(|a| a.eq_ignore_ascii_case(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_names_of_the_application_are_accepted() {
        for n in [
            "argus Skin Metrics",
            "Face Skin Metrics",
            " face metrics 2.0 ",
        ] {
            assert!(is_application_name(n), "{n}");
        }
        for n in ["Face Metrics 1.0", "", "Skin"] {
            assert!(!is_application_name(n), "{n}");
        }
    }

    #[test]
    fn dictionary_covers_all_27_parameters_once() {
        let all = algorithms();
        let params: Vec<&str> = all.iter().filter_map(|a| a.parameter).collect();
        assert_eq!(params.len(), 27);
        let mut uniq = params.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 27);
        let mut ids: Vec<u32> = all.iter().map(|a| a.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
        assert_eq!(algorithm(30).unwrap().tech_name, "selfie_v2.redness");
        assert!(algorithm(FACE_DETECTOR).unwrap().unavailable.is_none());
        assert!(for_parameter("pores").is_none());
        assert!(all
            .iter()
            .filter(|a| a.unavailable.is_some())
            .all(|a| a.tech_name.starts_with("selfie_v2.")));
    }
}
