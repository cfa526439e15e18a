//! The skin family: selfie skin analysis (`../shared/reference/000_*.txt`
//! to `002_*.txt`, endpoint table in `skin-api.md`). This folder holds the
//! analysis itself (library code and the `argusd skin analyze` command)
//! and its HTTP surface ([`service`]: accounts, datasets, subjects,
//! batches, uploads, results, history, websockets, webhooks, retention)
//! and its pages in the operator console ([`console`]).
//!
//! What is computed, and from what (each metric's formula and source is on
//! its item):
//! - `ita` and `skintone`: CIE L*a*b* of the forehead and cheeks
//!   ([`measure`], [`color`]);
//! - `redness`: a* and the erythema index per area, with a heat map;
//! - `dark_circles`: under-eye against malar skin, ΔL* and ΔE*ab;
//! - `age`: face-api's age net on an upright face crop ([`crate::model::age`]).
//!
//! The face is found by CenterFace, fitted with MediaPipe's face mesh and
//! iris models ([`crate::model::face_mesh`], [`crate::model::iris`]), and
//! every metric is gated by the photo's quality ([`quality`]).

pub mod accounts;
pub mod analyze;
pub mod catalog;
pub mod chart;
pub mod cli;
pub mod color;
pub mod console;
mod crops;
pub mod error;
pub mod geometry;
pub mod hooks;
pub mod intake;
pub mod lenient;
pub mod measure;
pub mod paging;
pub mod present;
pub mod quality;
pub mod records;
pub mod regions;
pub mod report;
pub mod retention;
pub mod runner;
pub mod service;
pub mod smoothing;
pub mod streams;
pub mod v1;
pub mod v3;
pub mod views;
pub mod work;

pub use service::{start, Skin};

/// The reference service's other parameters, which the appliance does not
/// compute, each with the reason. They are reported as unavailable, never
/// with a made-up value.
pub const UNAVAILABLE: [(&str, &str); 22] = [
    ("puffiness", NO_MODEL),
    ("sagging", NO_MODEL),
    ("jowls", NO_MODEL),
    ("nasolabial_wrinkles", NO_WRINKLES),
    ("marionette_lines", NO_WRINKLES),
    ("deep_lines", NO_WRINKLES),
    ("fine_lines", NO_WRINKLES),
    ("lines", NO_WRINKLES),
    ("lacrimal_grooves", NO_MODEL),
    ("eyes_age", NO_MODEL),
    ("pores", NO_PORES),
    ("enlarged_pores", NO_PORES),
    ("pimples", NO_LESIONS),
    ("breakouts", NO_LESIONS),
    ("inflammation", NO_LESIONS),
    ("irritation", NO_LESIONS),
    ("moles", NO_LESIONS),
    ("freckles", NO_SPOTS),
    ("melasma", NO_SPOTS),
    ("sun_spots", NO_SPOTS),
    ("pigmentation", NO_SPOTS),
    ("skin_type", NO_MODEL),
];

const NO_MODEL: &str =
    "no validated model with a licence the appliance can ship; not estimated rather than guessed";
const NO_WRINKLES: &str = "needs a wrinkle-segmentation model trained on labelled faces; none with a usable licence is available";
const NO_PORES: &str = "needs close-up, evenly lit, high-resolution skin; a selfie's resolution does not resolve pores reliably";
const NO_LESIONS: &str = "needs a lesion detector trained on labelled dermatology photos; none with a usable licence is available";
const NO_SPOTS: &str = "spot-like metrics need shading compensation and a check per skin-tone band before they can be reported";
