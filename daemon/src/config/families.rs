//! The families' sections of the configuration: `[pbs]`, `[cells]`,
//! `[skin]`, `[skin_api]` and `[audit]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PbsConfig {
    /// The appliance's public host name: client tokens' `aud` must equal it.
    pub public_host: String,
    /// Lifetime of `/auth/login` session tokens, in seconds.
    pub session_ttl_secs: u64,
    /// Largest accepted smear photo upload, in bytes.
    pub max_file_bytes: usize,
    /// Most files one study may hold.
    pub max_files_per_study: usize,
    /// Days a study (its record, photos and the cells found) is kept; older
    /// ones are deleted by an hourly sweep, as `DELETE /pbs/{id}` does. 0
    /// keeps them until deleted.
    pub retention_days: u32,
    /// Red-cell diameter in the clinic's photos, in pixels, used only for a
    /// photo whose own red cells cannot be measured (too few clean single
    /// cells, or a measure no red cell has; the photo's result then carries
    /// a warning). Every other photo is analysed at the size measured from
    /// it (`imaging::rbc_size`), so photos at any magnification count
    /// alike. 0: use 7.5 um at `microns_per_px` if that is set, else BCCD's
    /// ~100 px.
    pub native_rbc_diameter_px: f32,
    /// The camera's microns per pixel at the sample. When set, each photo's
    /// red-cell diameter is also reported in microns (with a warning when
    /// it is outside what red cells measure), and 7.5 um at this scale is
    /// the fallback size when `native_rbc_diameter_px` is 0. 0: unknown.
    pub microns_per_px: f32,
    /// Extra PEM root certificates trusted for callback URLs (besides the
    /// public web roots), e.g. a clinic's own CA. Empty: none.
    pub callback_ca_file: PathBuf,
    /// Delivery attempts per callback before it is given up.
    pub callback_max_attempts: u32,
    /// First retry delay in milliseconds; doubles per attempt (max 10 min).
    pub callback_retry_base_ms: u64,
    /// Timeout of one callback POST, in seconds.
    pub callback_timeout_secs: u64,
}

impl Default for PbsConfig {
    fn default() -> Self {
        Self {
            public_host: "argus.local".into(),
            session_ttl_secs: 43_200,
            max_file_bytes: 30 * 1024 * 1024,
            max_files_per_study: 200,
            retention_days: 0,
            native_rbc_diameter_px: 0.0,
            microns_per_px: 0.0,
            callback_ca_file: PathBuf::new(),
            callback_max_attempts: 12,
            callback_retry_base_ms: 2000,
            callback_timeout_secs: 10,
        }
    }
}

/// Tunables of the counter (config `[cells]`), sizes relative to the red-cell
/// diameter `rbc_diameter_px` that images are resampled to.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CountParams {
    /// Red-cell diameter, in pixels, the nets see after resampling.
    pub rbc_diameter_px: f32,
    /// Probability above which a map pixel belongs to a cell.
    pub threshold: f32,
    /// Minimum marker area of a red cell, as a fraction of d^2.
    pub rbc_min_area: f32,
    /// Support (mean boundary-map value along the outline, 0-1) a circle
    /// 0.4-0.6 d in radius needs to count ([`crate::imaging::circles`]).
    /// The strongest circles give the red cells' outline radius, which
    /// refines the photo's scale (`rbc_outline_radius`); with
    /// `rbc_edge_cut` 0 they also mark red cells, splitting clumps whose
    /// shared boundaries are too faint for the threshold (as from
    /// 2026-12-02 to 2026-12-05). 0 turns circles off (no refinement).
    /// 0.25 was chosen on BCCD train (models/cbc/MODEL_CARD.md).
    pub rbc_circle_support: f32,
    /// Smallest distance between two circles' centres (above), and between
    /// two red cells' centres (below), as a fraction of d; of two nearer
    /// ones the better supported (deeper) is kept.
    pub rbc_min_separation: f32,
    /// Boundary-map value from which a pixel is a red cell's outline when
    /// the cells' centres are looked for: the cell mask less such pixels
    /// falls apart into the cells' insides, and each inside's centre marks
    /// a cell (`pipeline::count`, `centre_markers`). 0 turns this off: the
    /// markers are then the mask less the boundary map over `threshold`,
    /// split by the circles above, as before 2026-12-05. 0.05, chosen on
    /// BCCD train, counts crowded fields' overlapping cells that the
    /// threshold left merged (models/cbc/MODEL_CARD.md, "Cells' centres").
    pub rbc_edge_cut: f32,
    /// Least distance, as a fraction of d, from a red cell's centre to the
    /// nearest outline or background (above): a red cell's inside is about
    /// 0.4 d in radius, and the necks through gaps in faint outlines are
    /// narrower than 0.2 d.
    pub rbc_min_depth: f32,
    /// Minimum red-cell area (the watershed region, not its marker), as a
    /// fraction of d^2; a whole red cell is about pi/4.
    pub rbc_min_cell_area: f32,
    /// Minimum white-cell area, as a fraction of d^2.
    pub wbc_min_area: f32,
    /// Smallest purple (nuclear) area a white cell's box must hold, as a
    /// fraction of d^2 (`pipeline::nucleus`); 0 turns the test off. 0.25 is
    /// half the least a white cell the nets found held on BCCD's train split
    /// (0.51; val 0.63), and above 20 of the 21 red cells they took for
    /// white cells on PBC's crops (0-0.38) (models/cbc/MODEL_CARD.md, "White
    /// cells without a nucleus").
    pub wbc_min_nucleus: f32,
    /// Minimum platelet area, as a fraction of d^2.
    pub platelet_min_area: f32,
    /// Classifier probability from which a red cell counts as parasitized.
    pub parasite_threshold: f32,
    /// White-cell classifier probability below which a cell of the
    /// differential is left for review instead of given a class
    /// (`model::wbc::decide`). 0.7 left 4.9% of PBC's held-out cells for
    /// review, and 98.7% of the rest were right (models/wbc/MODEL_CARD.md).
    pub wbc_min_confidence: f32,
    /// Radius of the red cells' outline in the boundary map, as a fraction
    /// of d, that a photo analysed at the right scale shows
    /// (`imaging::circles::outline_radius`). The photo's colour measure
    /// scatters by about +-10% from photo to photo; the outline, measured
    /// on a first analysis, follows the cells the nets see. When it is more
    /// than `scale_refine_above` from this, the photo is analysed again at
    /// a scale nearer the one that brings it here. 0.467 is the median of BCCD train's
    /// photos at their colour measure (201 of 205 showed an outline), so
    /// the counting parameters tuned there keep their meaning; the outline
    /// agreed with the photos' boxes within 10% on 84-90% of them, the
    /// colour measure on 50% (models/cbc/MODEL_CARD.md). 0 turns the
    /// refinement off.
    pub rbc_outline_radius: f32,
    /// Margin, in `ln` of the scale (about a fraction of it), between the
    /// first analysis's outline radius and `rbc_outline_radius`: within it
    /// the first analysis stands; beyond it the photo is analysed again at
    /// the outline's correction less the margin (a dead zone, so the scale
    /// follows the outline continuously; `pipeline::refined_scale`).
    pub scale_refine_above: f32,
    /// Looks at a photo that its red cells' outline is measured over: at the
    /// scale the photo is first analysed at (after any move by the mask,
    /// `scale_gross_above`) and at that scale times `(1 +
    /// outline_look_step)^k` for k = +-1 .. +-(n - 1) / 2 (odd, 1 to 5; 1:
    /// the first analysis alone, as before 2026-12-06). The outline taken is
    /// the geometric mean of the looks that show one, less the largest and
    /// the smallest when four or more do, and only when more than half of
    /// them show one (`pipeline::mean_outline`). One look's outline can move
    /// by 5-15% with a few per cent of scale (BCCD train 00050: 0.42-0.49 d
    /// over x0.92-1.08, where it should move by 8%), and a rescaled copy's
    /// look lands on another point of that noise than the native photo's;
    /// three looks cut BCCD's rescaled copies off by more than 10% of the
    /// native red-cell count from 19 to 13 of 588. Five, the extremes
    /// dropped, cut the copies whose scale lies more than 5% from the native
    /// photo's from 8 to 3 but left 16 copies off, for about a fifth more
    /// time, so three stay the default (models/cbc/MODEL_CARD.md, "The
    /// outline over three looks" and "Five looks, the extremes dropped").
    /// Each look costs a pass of the nets over the probe
    /// (`pipeline::probe_rect`) or the whole photo.
    pub outline_looks: u32,
    /// Step between the looks above, a fraction of the scale.
    pub outline_look_step: f32,
    /// Factor by which the red-cell net's mask may size the cells larger
    /// than the nets' scale in a first analysis before the colour measure
    /// is taken as grossly wrong and the photo is looked at again at a
    /// scale moved down by the excess (`pipeline::gross_scale`; twice at
    /// most, `pipeline::MAX_GROSS_MOVES`), before the outline refines it.
    /// A colour mask of pale-centred cells can hold only their rims (BCCD
    /// val 00352: 44 px against boxes of 106, 53 red cells counted for
    /// about 20); the net fills them. BCCD train's first
    /// 60 photos lie under 1.18 of the expected size at their colour
    /// measure (models/cbc/MODEL_CARD.md). 0 turns the check off.
    pub scale_gross_above: f32,
    /// Analyses per photo, at its measured scale times multipliers spread
    /// evenly over `1 +- scale_spread` (odd, 1..=9; 1 turns it off), when
    /// the first counts fewer than `scale_samples_below_rbc` red cells. The
    /// counts come from the analysis whose red-cell count is the median.
    /// A field's red-cell count moves by a cell or two when its scale moves
    /// by 2%, which is 10% of a small field; the median of three at +-2%
    /// cut BCCD val's rescaled copies off by more than 10% of the native
    /// count from 8-14% to 5-10% per factor, and five at +-3% (since
    /// 2026-12-04) cut BCCD train's first 60 from 8-15% to 5-12% with val
    /// as before (models/cbc/MODEL_CARD.md, "Five scale samples").
    pub scale_samples: u32,
    /// Half the range of the multipliers above, as a fraction of the scale.
    pub scale_spread: f32,
    /// The other samples are analysed only when the first (at the measured
    /// scale) counts fewer red cells than this: a cell or two is 5-15% of a
    /// field of 15-40, and under 5% of a larger one. 0 turns sampling off.
    pub scale_samples_below_rbc: usize,
    /// Photos that need more tiles than this at their measured scale are
    /// analysed once whatever `scale_samples` says: each extra sample costs
    /// as much as the first, and this bounds what a sparse but large photo
    /// costs. 0 turns sampling off.
    pub scale_samples_max_tiles: usize,
}

impl Default for CountParams {
    fn default() -> Self {
        Self {
            rbc_diameter_px: 50.0,
            threshold: 0.4,
            rbc_min_area: 0.02,
            rbc_circle_support: 0.25,
            rbc_min_separation: 0.5,
            rbc_edge_cut: 0.05,
            rbc_min_depth: 0.2,
            rbc_min_cell_area: 0.15,
            wbc_min_area: 0.3,
            wbc_min_nucleus: 0.25,
            platelet_min_area: 0.02,
            parasite_threshold: 0.5,
            wbc_min_confidence: 0.7,
            rbc_outline_radius: 0.467,
            scale_refine_above: 0.04,
            scale_gross_above: 1.3,
            outline_looks: 3,
            outline_look_step: 0.04,
            scale_samples: 5,
            scale_spread: 0.03,
            scale_samples_below_rbc: 40,
            scale_samples_max_tiles: 64,
        }
    }
}

/// The quality gates of skin analysis (config `[skin]`). A photo that
/// fails one gets no metric that the failure would falsify; each failure
/// has a reason code (`families::skin::quality`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SkinParams {
    /// Side of the square the skin family letterboxes photos into for face
    /// detection (a multiple of 32). A selfie's face is large, so a small
    /// input finds it, at a quarter of the default detector's cost.
    pub detector_input: u32,
    /// Detector confidence from which a face counts.
    pub face_confidence: f32,
    /// A second face at least this share of the main face's box area makes
    /// the photo ambiguous (`multiple_faces`).
    pub second_face_area_ratio: f32,
    /// Smallest inter-ocular distance (eye centre to eye centre), pixels.
    pub min_iod_px: f32,
    /// Largest head turn (yaw), nod (pitch) and tilt (roll), degrees.
    pub max_yaw_deg: f32,
    pub max_pitch_deg: f32,
    pub max_roll_deg: f32,
    /// Smallest variance of the Laplacian of the face, at 80 px between the eyes.
    pub min_sharpness: f32,
    /// Largest share of face pixels at luma <= 25 (OFIQ's under-exposure range).
    pub max_underexposed_share: f32,
    /// Largest share of face pixels at luma >= 247 (OFIQ's over-exposure range).
    pub max_overexposed_share: f32,
    /// Smallest mean luma (0-255) of the face's skin.
    pub min_mean_luma: f32,
    /// Smallest face-mesh presence score; below it the face is occluded or
    /// not a face.
    pub min_presence: f32,
    /// Smallest mean chroma of the skin (largest minus smallest channel,
    /// 0-255); below it the photo has no colour (`monochrome`).
    pub min_skin_chroma: f32,
}

impl Default for SkinParams {
    fn default() -> Self {
        Self {
            detector_input: 320,
            face_confidence: 0.5,
            second_face_area_ratio: 0.4,
            min_iod_px: 80.0,
            max_yaw_deg: 20.0,
            max_pitch_deg: 20.0,
            max_roll_deg: 30.0,
            min_sharpness: 40.0,
            max_underexposed_share: 0.25,
            max_overexposed_share: 0.10,
            min_mean_luma: 40.0,
            min_presence: 0.5,
            min_skin_chroma: 4.0,
        }
    }
}

/// The skin family's API (config `[skin_api]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SkinApiConfig {
    /// Lifetime of a login's `access_token`, seconds (the reference: 1 h).
    pub access_token_secs: u64,
    /// Lifetime of a login's `refresh_token`, seconds.
    pub refresh_token_secs: u64,
    /// Lifetime of a v3 signed upload URL, seconds.
    pub upload_url_secs: u64,
    /// Largest image upload (b64 decoded, or a signed PUT), bytes (the
    /// reference: 30 MiB).
    pub max_image_bytes: usize,
    /// Delivery attempts per webhook before it is given up.
    pub webhook_max_attempts: u32,
    /// First webhook retry delay, ms; doubles per attempt (max 10 min).
    pub webhook_retry_base_ms: u64,
    /// Largest webhook payload for one image, bytes (the reference: 1 MB);
    /// a payload over it is sent without its parameters, which the
    /// receiver then reads from the results endpoint.
    pub webhook_max_payload_bytes: usize,
    /// Seconds between retention sweeps.
    pub retention_sweep_secs: u64,
}

impl Default for SkinApiConfig {
    fn default() -> Self {
        Self {
            access_token_secs: 3600,
            refresh_token_secs: 30 * 86_400,
            upload_url_secs: 900,
            max_image_bytes: 30 * 1024 * 1024,
            webhook_max_attempts: 12,
            webhook_retry_base_ms: 2000,
            webhook_max_payload_bytes: 1_000_000,
            retention_sweep_secs: 3600,
        }
    }
}

/// The audit log (config `[audit]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Size at which `audit.log` rotates to `audit.log.1`, bytes.
    pub max_file_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep_files: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 10 * 1024 * 1024,
            keep_files: 20,
        }
    }
}
