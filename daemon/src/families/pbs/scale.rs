//! The red-cell size each smear photo is analysed at: measured from the
//! photo ([`crate::imaging::rbc_size`]), or, when the photo gives no
//! trustworthy measure, the operator's `pbs.native_rbc_diameter_px`, the
//! size `pbs.microns_per_px` implies (7.5 um cells), or BCCD's ~100 px, in
//! that order, with a warning saying so. The pipeline then resamples the
//! photo so red cells are `cells.rbc_diameter_px` across.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::pipeline::{self, CountParams};
use crate::config::PbsConfig;
use crate::imaging::rbc_size;

/// Typical diameter of a normal red cell, microns (normocytes are 6-9 um;
/// ~7.5 um in fixed, stained thin smears).
pub const TYPICAL_RBC_UM: f32 = 7.5;

/// Red cells narrower than this many pixels lose the detail the nets need
/// (the edge between touching cells, platelets next to them): counted, but
/// with a warning.
pub const SMALLEST_RELIABLE_PX: f32 = 15.0;

/// A measured diameter under this many pixels cannot be red cells (it is
/// stain debris or noise taken for cells): it is not used.
pub const SMALLEST_PLAUSIBLE_PX: f32 = 6.0;

/// Diameters, in microns, outside which a measure with a known
/// `microns_per_px` is worth a warning (beyond marked micro- and
/// macrocytosis: more likely a wrong `microns_per_px`).
pub const PLAUSIBLE_UM: (f32, f32) = (4.5, 12.0);

/// A photo where fewer than this share of the red cells counted show a
/// red cell's round outline at the size used ([`RbcScale::note_shape`]) is
/// marked `unlike_smear`. On 79 BCCD photos the share was 0.00-0.97: 0.00
/// on one (a thick area of cells in sheets, no outlines, rightly marked),
/// 0.14-0.30 on three (0.14 a malaria smear of overlapping cells), over 0.5
/// on the rest; on 11 of 12 photos of faces, a cat, a cup and an astronaut
/// with 11-83 "red cells" it was 0.00-0.08, on the twelfth (a composite
/// face) 0.16 (models/cbc/MODEL_CARD.md, "Photos unlike a smear").
pub const ROUND_SHARE_MIN: f32 = 0.10;

/// With fewer red cells counted than this the share says too little to
/// mark a photo `unlike_smear` (a sparse field, a photo with a few cells).
pub const ROUND_JUDGED_FROM: usize = 8;

/// How the red-cell size of the photos is decided.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScaleSettings {
    /// Red cells are this many pixels across: no estimate is made
    /// (`argusd pbs count --rbc-diameter-px`).
    pub given_px: Option<f32>,
    /// The operator's diameter for photos that give no estimate
    /// (`pbs.native_rbc_diameter_px`).
    pub fallback_px: Option<f32>,
    /// The camera's microns per pixel (`pbs.microns_per_px`).
    pub microns_per_px: Option<f32>,
}

impl ScaleSettings {
    /// The settings of the config's `[pbs]` section (0 means unset).
    pub fn from_config(pbs: &PbsConfig) -> Self {
        let set = |v: f32| (v.is_finite() && v > 0.0).then_some(v);
        Self {
            given_px: None,
            fallback_px: set(pbs.native_rbc_diameter_px),
            microns_per_px: set(pbs.microns_per_px),
        }
    }
}

/// Where the red-cell size a photo was analysed at came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = pbs::ScaleSource)]
pub enum ScaleSource {
    /// Measured from the photo's own red cells.
    Photo,
    /// Given for the run (`argusd pbs count --rbc-diameter-px`).
    Given,
    /// The photo gave no usable measure: `pbs.native_rbc_diameter_px`.
    Configured,
    /// The photo gave no usable measure: 7.5 um at `pbs.microns_per_px`.
    MicronsPerPx,
    /// The photo gave no usable measure and nothing is configured: BCCD's
    /// ~100 px.
    Assumed,
}

/// The red-cell size one photo was analysed at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = pbs::RbcSize)]
pub struct RbcScale {
    /// Red-cell diameter in the photo, pixels: the one the photo was
    /// resampled from (to `cells.rbc_diameter_px`), or within
    /// `cells.scale_spread` of it when another scale sample's counts were
    /// kept (the result's `scale` says which). With `source` `photo`, the
    /// colour measure (`measured_px`) as corrected by the red-cell net's
    /// mask when that was grossly off (`pipeline::gross_scale`), and
    /// refined by the red cells' outline in a first analysis, when that was
    /// more than `cells.scale_refine_above` off (`pipeline::refined_scale`).
    pub rbc_diameter_px: f32,
    /// The same in microns, when `pbs.microns_per_px` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbc_diameter_um: Option<f32>,
    /// Where `rbc_diameter_px` came from.
    pub source: ScaleSource,
    /// The photo's own colour measure, pixels, when it gave one (also when
    /// it was not used), before any correction by the red-cell net's mask
    /// or refinement by the red cells' outline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_px: Option<f32>,
    /// Clean single red cells the measure is the median of.
    pub cells_measured: usize,
    /// Why the counts of this photo may be off (its cells too small for
    /// the nets, no usable measure, a size no red cell has); absent when
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Red cells counted whose outline the boundary net shows as a circle
    /// of `rbc_diameter_px` (absent for results from before it was
    /// measured, or with `cells.rbc_circle_support` 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cells_round: Option<usize>,
    /// Too few of the red cells counted have a red cell's round outline at
    /// this size ([`ROUND_SHARE_MIN`]): the photo may not be a stained thin
    /// smear's monolayer (a photo of something else, a thick film), or its
    /// red cells are far from `rbc_diameter_px`. Its counts and malaria
    /// result are not to be relied on before a person has looked at it, and
    /// FHIR reports that include it are `preliminary`. Absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unlike_smear: bool,
}

/// The diameter when the photo's own measure is not used, and its source.
fn fallback(s: &ScaleSettings) -> (f32, ScaleSource) {
    if let Some(d) = s.fallback_px {
        (d, ScaleSource::Configured)
    } else if let Some(um) = s.microns_per_px {
        (TYPICAL_RBC_UM / um, ScaleSource::MicronsPerPx)
    } else {
        (pipeline::ASSUMED_NATIVE_RBC_PX, ScaleSource::Assumed)
    }
}

fn describe(source: ScaleSource) -> &'static str {
    match source {
        ScaleSource::Configured => "pbs.native_rbc_diameter_px",
        ScaleSource::MicronsPerPx => "7.5 um at pbs.microns_per_px",
        _ => "BCCD's size; set pbs.native_rbc_diameter_px or pbs.microns_per_px",
    }
}

/// Decide the red-cell size of a photo of `dims` from its measure.
pub fn decide(
    measured: rbc_size::RbcSize,
    dims: (u32, u32),
    settings: &ScaleSettings,
    params: &CountParams,
) -> RbcScale {
    let mut warnings = Vec::new();
    let (diameter, source) = match (settings.given_px, measured.diameter_px) {
        (Some(d), _) => (d, ScaleSource::Given),
        (None, Some(d)) if d < SMALLEST_PLAUSIBLE_PX || d > 0.5 * dims.0.min(dims.1) as f32 => {
            let (f, src) = fallback(settings);
            warnings.push(format!(
                "the photo's red cells measured {d:.1} px across, which cannot be right; \
                 analysed at {f:.1} px ({})",
                describe(src)
            ));
            (f, src)
        }
        (None, Some(d)) => (d, ScaleSource::Photo),
        (None, None) => {
            let (f, src) = fallback(settings);
            warnings.push(format!(
                "too few clean single red cells to measure their size ({} found, {} needed); \
                 analysed at {f:.1} px ({})",
                measured.cells,
                rbc_size::MIN_CELLS,
                describe(src)
            ));
            (f, src)
        }
    };
    warnings.extend(size_warnings(diameter, source, settings, params));
    let um = settings.microns_per_px.map(|m| diameter * m);
    RbcScale {
        rbc_diameter_px: diameter,
        rbc_diameter_um: um,
        source,
        measured_px: measured.diameter_px,
        cells_measured: measured.cells,
        warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
        cells_round: None,
        unlike_smear: false,
    }
}

/// What is wrong with red cells `diameter` px across from `source`, for
/// the nets: too small to resolve, too large to reduce to their size, or,
/// with `settings.microns_per_px` and a measure from the photo, a size in
/// microns no red cell has. Empty when nothing is.
fn size_warnings(
    diameter: f32,
    source: ScaleSource,
    settings: &ScaleSettings,
    params: &CountParams,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let (smallest, largest) = (
        params.rbc_diameter_px / pipeline::MAX_SCALE,
        params.rbc_diameter_px / pipeline::MIN_SCALE,
    );
    if diameter < SMALLEST_RELIABLE_PX {
        warnings.push(format!(
            "red cells are {diameter:.1} px across, under the {SMALLEST_RELIABLE_PX} px the \
             nets resolve reliably{}; take the photo at a higher magnification",
            if diameter < smallest {
                format!(" (and enlarged at most {}x)", pipeline::MAX_SCALE)
            } else {
                String::new()
            }
        ));
    } else if diameter > largest {
        warnings.push(format!(
            "red cells are {diameter:.0} px across, over the {largest:.0} px the photo can be \
             reduced from; take the photo at a lower magnification"
        ));
    }
    let um = settings.microns_per_px.map(|m| diameter * m);
    if let (Some(um), ScaleSource::Photo) = (um, source) {
        if um < PLAUSIBLE_UM.0 || um > PLAUSIBLE_UM.1 {
            warnings.push(format!(
                "red cells measured {um:.1} um across (normal 6-9 um): check pbs.microns_per_px"
            ));
        }
    }
    warnings
}

impl RbcScale {
    /// The photo's measure as refined by the red cells' outline
    /// (`pipeline::refined_scale`): `diameter_px` becomes the size the
    /// photo is analysed at, in pixels and microns, and the warnings are
    /// those of that size, not of the colour measure's (`measured_px`
    /// keeps it). Only a measure from the photo is refined; for any other
    /// `source` nothing changes.
    pub fn refine(&mut self, diameter_px: f32, settings: &ScaleSettings, params: &CountParams) {
        if self.source != ScaleSource::Photo {
            return;
        }
        self.rbc_diameter_px = diameter_px;
        self.rbc_diameter_um = settings.microns_per_px.map(|m| diameter_px * m);
        // A photo measure carries no warning about where its size came
        // from, only about the size itself.
        let warnings = size_warnings(diameter_px, self.source, settings, params);
        self.warning = (!warnings.is_empty()).then(|| warnings.join("; "));
    }

    /// Say which regions of the red-cell mask were not counted as being
    /// like no red cell of the size used ([`pipeline::DroppedRegions`]):
    /// patches wider than any ([`pipeline::FEATURELESS_AREA`]) and strands
    /// thinner than any ([`pipeline::FEATURELESS_THIN`]). On a smear at
    /// the right size there are none; where the photo's cells are far
    /// larger (or smaller) than the size used, real cells can look like
    /// them, so the warning says what sets the size. Nothing when none.
    pub fn note_dropped(&mut self, dropped: pipeline::DroppedRegions) {
        if dropped.total() == 0 {
            return;
        }
        let fix = self.size_fix();
        let d = self.rbc_diameter_px;
        let mut kinds = Vec::new();
        if dropped.patches > 0 {
            kinds.push(format!(
                "{} patch(es) over {} d^2 wider than any red cell",
                dropped.patches,
                pipeline::FEATURELESS_AREA
            ));
        }
        if dropped.lattices > 0 {
            kinds.push(format!(
                "{} strand(s) over {} d long thinner than any red cell",
                dropped.lattices,
                pipeline::FEATURELESS_SPAN
            ));
        }
        let w = format!(
            "regions of the red-cell mask not counted, as no red cell of d = {d:.1} px looks \
             like them: {}; if this photo's red cells are far from {d:.1} px, {fix}",
            kinds.join(", ")
        );
        self.warning = Some(match self.warning.take() {
            Some(old) => format!("{old}; {w}"),
            None => w,
        });
    }

    /// What to do when the size used may be far from the photo's red
    /// cells, by where it came from.
    fn size_fix(&self) -> &'static str {
        match self.source {
            ScaleSource::Photo => "the photo's measure of its red cells may be wrong",
            ScaleSource::Given => "check the size given",
            _ => "set pbs.native_rbc_diameter_px or pbs.microns_per_px for this camera",
        }
    }

    /// Record that `round` of the `counted` red cells have a red cell's
    /// round outline at the size used (`None`: the circles are off), and
    /// mark the photo `unlike_smear`, with a warning, when fewer than
    /// [`ROUND_SHARE_MIN`] of at least [`ROUND_JUDGED_FROM`] do. The red
    /// cell net takes much for red cells that is not (skin, a face, a
    /// coffee cup), and the malaria classifier then calls some of it
    /// parasitized, so without this a photo of anything could read as a
    /// positive screen. A warning and a mark rather than a refusal: stains
    /// and cameras the project has not seen may show fewer outlines.
    pub fn note_shape(&mut self, counted: usize, round: Option<usize>) {
        self.cells_round = round;
        let Some(round) = round else { return };
        if counted < ROUND_JUDGED_FROM || round as f32 >= ROUND_SHARE_MIN * counted as f32 {
            return;
        }
        self.unlike_smear = true;
        let d = self.rbc_diameter_px;
        let w = format!(
            "only {round} of the {counted} red cells counted have a red cell's round outline at \
             d = {d:.1} px: this may not be a stained thin blood smear's monolayer, or its red \
             cells are far from {d:.1} px ({}); review the photo before relying on its counts \
             or malaria result",
            self.size_fix()
        );
        self.warning = Some(match self.warning.take() {
            Some(old) => format!("{old}; {w}"),
            None => w,
        });
    }
}

/// Measure a photo's red cells (unless `settings.given_px`) and decide the
/// size it is analysed at. Blocking; linear in the pixels.
pub fn estimate(img: &image::RgbImage, settings: &ScaleSettings, params: &CountParams) -> RbcScale {
    let measured = match settings.given_px {
        Some(_) => rbc_size::RbcSize {
            diameter_px: None,
            cells: 0,
        },
        None => rbc_size::measure(img),
    };
    decide(measured, img.dimensions(), settings, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(d: Option<f32>, cells: usize) -> rbc_size::RbcSize {
        rbc_size::RbcSize {
            diameter_px: d,
            cells,
        }
    }

    const DIMS: (u32, u32) = (640, 480);

    #[test]
    fn the_photo_measure_is_used_when_plausible() {
        let p = CountParams::default();
        let s = decide(
            measured(Some(92.0), 20),
            DIMS,
            &ScaleSettings::default(),
            &p,
        );
        assert_eq!((s.rbc_diameter_px, s.source), (92.0, ScaleSource::Photo));
        assert_eq!((s.rbc_diameter_um, s.warning), (None, None));
        let with_um = ScaleSettings {
            microns_per_px: Some(0.08),
            fallback_px: Some(60.0),
            ..Default::default()
        };
        let s = decide(measured(Some(92.0), 20), DIMS, &with_um, &p);
        assert_eq!(s.source, ScaleSource::Photo);
        assert!((s.rbc_diameter_um.unwrap() - 7.36).abs() < 1e-3);
        assert_eq!(s.warning, None);
    }

    #[test]
    fn no_measure_falls_back_in_order_and_says_so() {
        let p = CountParams::default();
        let none = measured(None, 2);
        let s = decide(none, DIMS, &ScaleSettings::default(), &p);
        assert_eq!((s.rbc_diameter_px, s.source), (100.0, ScaleSource::Assumed));
        assert!(s.warning.unwrap().contains("2 found"));
        let um = ScaleSettings {
            microns_per_px: Some(0.1),
            ..Default::default()
        };
        let s = decide(none, DIMS, &um, &p);
        assert_eq!(
            (s.rbc_diameter_px, s.source),
            (75.0, ScaleSource::MicronsPerPx)
        );
        let both = ScaleSettings {
            fallback_px: Some(80.0),
            ..um
        };
        let s = decide(none, DIMS, &both, &p);
        assert_eq!(
            (s.rbc_diameter_px, s.source),
            (80.0, ScaleSource::Configured)
        );
        assert!(s.warning.unwrap().contains("native_rbc_diameter_px"));
    }

    #[test]
    fn absurd_or_small_measures_are_flagged() {
        let p = CountParams::default();
        let d = ScaleSettings::default();
        for absurd in [3.0, 300.0] {
            let s = decide(measured(Some(absurd), 9), DIMS, &d, &p);
            assert_eq!(s.source, ScaleSource::Assumed, "{absurd}");
            assert_eq!(s.measured_px, Some(absurd));
            assert!(s.warning.unwrap().contains("cannot be right"));
        }
        let s = decide(measured(Some(11.0), 40), DIMS, &d, &p);
        assert_eq!((s.rbc_diameter_px, s.source), (11.0, ScaleSource::Photo));
        assert!(s.warning.unwrap().contains("higher magnification"));
        let s = decide(measured(Some(900.0), 6), (4000, 3000), &d, &p);
        assert!(s.warning.unwrap().contains("lower magnification"));
        let um = ScaleSettings {
            microns_per_px: Some(0.5),
            ..d
        };
        let s = decide(measured(Some(50.0), 30), DIMS, &um, &p);
        assert!(s.warning.unwrap().contains("check pbs.microns_per_px"));
    }

    #[test]
    fn a_given_size_skips_the_measure() {
        let p = CountParams::default();
        let img = image::RgbImage::from_pixel(64, 64, image::Rgb([200, 200, 200]));
        let given = ScaleSettings {
            given_px: Some(70.0),
            ..Default::default()
        };
        let s = estimate(&img, &given, &p);
        assert_eq!((s.rbc_diameter_px, s.source), (70.0, ScaleSource::Given));
        assert_eq!(s.warning, None);
    }

    #[test]
    fn a_refined_size_carries_its_own_warnings() {
        let p = CountParams::default();
        let coarse = ScaleSettings {
            microns_per_px: Some(0.5),
            ..Default::default()
        };
        // 16 px measured (8 um, no warning) refined to 14 px: under the
        // nets' 15.
        let mut s = decide(measured(Some(16.0), 30), DIMS, &coarse, &p);
        assert_eq!(s.warning, None);
        s.refine(14.0, &coarse, &p);
        assert_eq!((s.rbc_diameter_px, s.measured_px), (14.0, Some(16.0)));
        assert!((s.rbc_diameter_um.unwrap() - 7.0).abs() < 1e-5);
        let w = s.warning.clone().unwrap();
        assert!(w.contains("14.0 px") && !w.contains("um across"), "{w}");
        // And back: 440 px measured (44 um, warned) refined to 70 px (7 um).
        let fine = ScaleSettings {
            microns_per_px: Some(0.1),
            ..Default::default()
        };
        let mut s = decide(measured(Some(440.0), 30), (4000, 3000), &fine, &p);
        assert!(s.warning.as_deref().unwrap().contains("44.0 um"));
        s.refine(70.0, &fine, &p);
        assert_eq!(s.warning, None);
        // Only the photo's own measure is refined.
        let mut s = decide(measured(None, 2), DIMS, &fine, &p);
        let before = s.clone();
        s.refine(70.0, &fine, &p);
        assert_eq!(s, before);
    }

    #[test]
    fn a_photo_whose_red_cells_are_seldom_round_is_marked_unlike_a_smear() {
        let p = CountParams::default();
        let size = || {
            decide(
                measured(Some(80.0), 30),
                DIMS,
                &ScaleSettings::default(),
                &p,
            )
        };
        // Most round, circles off, or too few cells to judge: no mark.
        for (counted, round) in [(40, Some(30)), (40, Some(4)), (40, None), (7, Some(0))] {
            let mut s = size();
            s.note_shape(counted, round);
            assert_eq!(
                (s.unlike_smear, &s.warning),
                (false, &None),
                "{round:?} of {counted}"
            );
            assert_eq!(s.cells_round, round);
        }
        // Under ROUND_SHARE_MIN of 40: marked, with a warning after any
        // other, pointing at what sets the size.
        let mut s = decide(measured(None, 2), DIMS, &ScaleSettings::default(), &p);
        let fallback = s.warning.clone().unwrap();
        s.note_shape(40, Some(3));
        assert!(s.unlike_smear);
        let w = s.warning.unwrap();
        assert!(w.starts_with(&fallback), "{w}");
        assert!(
            w.contains("only 3 of the 40 red cells counted have a red cell's round outline"),
            "{w}"
        );
        assert!(w.contains("set pbs.native_rbc_diameter_px"), "{w}");
        // Serialized only when set.
        let mut s = size();
        s.note_shape(40, Some(30));
        let j = serde_json::to_value(&s).unwrap();
        assert!(
            j.get("unlike_smear").is_none() && j["cells_round"] == 30,
            "{j}"
        );
    }

    #[test]
    fn regions_not_counted_are_told_with_the_fix_for_the_size_used() {
        use crate::families::pbs::pipeline::DroppedRegions;
        let p = CountParams::default();
        // A measured size: nothing to add for none, a note for some.
        let mut s = decide(
            measured(Some(80.0), 30),
            DIMS,
            &ScaleSettings::default(),
            &p,
        );
        s.note_dropped(DroppedRegions::default());
        assert_eq!(s.warning, None);
        s.note_dropped(DroppedRegions {
            patches: 2,
            lattices: 0,
        });
        let w = s.warning.clone().unwrap();
        assert!(
            w.contains(": 2 patch(es) over 4 d^2 wider") && !w.contains("strand"),
            "{w}"
        );
        assert!(w.contains("measure of its red cells may be wrong"), "{w}");
        // A size that fell back keeps its own warning first, then says
        // which setting would give the camera's.
        let mut s = decide(measured(None, 2), DIMS, &ScaleSettings::default(), &p);
        let fallback = s.warning.clone().unwrap();
        s.note_dropped(DroppedRegions {
            patches: 0,
            lattices: 1,
        });
        let w = s.warning.unwrap();
        assert!(
            w.starts_with(&format!("{fallback}; regions of the red-cell mask")),
            "{w}"
        );
        assert!(
            w.contains(": 1 strand(s) over 3 d long") && !w.contains("patch"),
            "{w}"
        );
        assert!(w.contains("set pbs.native_rbc_diameter_px"), "{w}");
    }
}
