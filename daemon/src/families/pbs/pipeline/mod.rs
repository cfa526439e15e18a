//! Blood-smear analysis: red-cell size of the photo -> scale normalisation
//! -> CLAHE -> tiles through the three cell UNets (batched) -> counts from
//! the stitched maps -> white-cell windows through the differential's
//! classifier ([`super::differential`], batched) and red-cell crops through
//! the malaria classifier (batched).
//!
//! Scale: the nets were trained on red cells ~`rbc_diameter_px` (50 px)
//! across. Each photo's own red-cell diameter is measured from its colours
//! (Otsu mask of the green channel, holes filled, purple pixels removed;
//! the peak of its granulometric pattern spectrum, calibrated to BCCD's
//! boxes on its train split: [`crate::imaging::rbc_size`]),
//! and the photo is resampled by `rbc_diameter_px / diameter`, so the same
//! smear gives the same counts at any magnification. When the photo gives
//! no usable measure, the operator's size is used instead, with a warning
//! ([`super::scale`]).
//!
//! Gross errors: a photo whose red cells have wide pale centres can leave
//! the colour mask only the cells' rims, open where they are pale, and
//! measure their width (BCCD val 00352: 44 px against boxes of 106). The
//! first analysis's red-cell mask fills those cells whole; where its size
//! is more than `scale_gross_above` (1.3) times what the nets' scale gives
//! ([`MASK_PER_D`]), the photo is looked at again at a scale moved down by
//! the excess ([`gross_scale`]), before the outline refines it. A large
//! photo's probe shows no outline when its cells are that far off, and
//! the whole photo is looked at instead.
//!
//! Refinement: the colour measure scatters by about +-10% from photo to
//! photo. The first analysis's boundary map shows the red cells' outline,
//! whose radius ([`crate::imaging::circles::outline_radius`]) follows the
//! cells the nets see; when it is more than `scale_refine_above` from
//! `rbc_outline_radius`, the photo is analysed again at a scale moved
//! towards it by the gap less that margin, so the scale follows the
//! outline without a step ([`refined_scale`]). One look's outline scatters
//! by 5-15% with a few per cent of scale, so it is the mean over
//! `outline_looks` (3) looks at x1/1.04, x1 and x1.04 ([`outline_look_scales`],
//! [`mean_outline`]; over five, the extremes dropped), where most of them
//! show one.
//!
//! Scale samples: a field's red-cell count moves by a cell or two when its
//! scale moves by 2%, which is over 10% of a small field. A photo whose
//! first (or refined) analysis counts fewer than `scale_samples_below_rbc`
//! red cells is analysed again at its scale x0.97, x0.985, x1.015 and x1.03
//! (`scale_samples`, `scale_spread`), and the analysis with the median red-cell count is
//! kept, boxes and all ([`sample_scales`], [`median_index`]).
//!
//! Counting (all sizes relative to the expected red-cell diameter `d` the
//! image is resampled to):
//! - red cells: the boundary map outlines each red cell, faintly where
//!   cells overlap. The cell mask (`mask > t`) less every boundary pixel of
//!   at least `rbc_edge_cut` falls apart into the cells' insides, joined
//!   only through gaps in faint outlines; each peak of its distance
//!   transform at least `rbc_min_depth * d` deep and `rbc_min_separation *
//!   d` from a deeper one marks a cell, and a part of the insides with no
//!   such peak but at least `rbc_min_area * d^2` (a cell cut by the photo's
//!   edge) is a marker whole. Every pixel of the mask is given to a marker
//!   by watershed over that distance, so borders follow the drawn outlines;
//!   regions under `rbc_min_cell_area * d^2` are not counted. (With
//!   `rbc_edge_cut` 0, as before 2026-12-05: markers are the parts of
//!   `mask - edge > t`, each split at the centres of circles of the
//!   red-cell size in the boundary map.) Circles of the red-cell size
//!   (a circular Hough transform, [`crate::imaging::circles`], support
//!   `rbc_circle_support`) give the cells' outline radius, which refines
//!   the scale;
//! - white cells and platelets: connected components of `mask > t` with
//!   minimum areas; a white cell whose box holds under `wbc_min_nucleus *
//!   d^2` purple (nuclear) pixels of the photo is dropped
//!   ([`drop_anucleate_white_cells`]).

use std::time::Instant;

use image::RgbImage;

use crate::backend::{Batch, BatchOutput, TileMaps};
use crate::batch::{Batcher, SubmitError, Workload};
use crate::imaging::{segment, smear};
use crate::model::malaria::CROP;
use crate::model::unet::TILE_IN;

mod count;
mod nucleus;
mod scales;
mod vote;

pub use count::{
    count, count_stitched, rbc_crops, DroppedRegions, StitchedMaps, FEATURELESS_AREA,
    FEATURELESS_SPAN, FEATURELESS_THIN,
};
pub use nucleus::drop_anucleate_white_cells;
use scales::keep_median;
pub use scales::{
    gross_scale, look_rect, mean_outline, median_index, min_analysable_side, outline_look_scales,
    probe_rect, refined_scale, refines, sample_plan, sample_scales, scale_for, scaled_size,
    tiles_at, tiles_bound, wants_more_samples, ASSUMED_NATIVE_RBC_PX, MASK_PER_D, MAX_GROSS_MOVES,
    MAX_REFINE, MAX_SCALE, MIN_SCALE, PROBE_ABOVE_TILES, PROBE_TILES,
};
pub use vote::clump_votes;

/// Smear tiles through the three UNets.
#[derive(Debug, Clone, Copy, Default)]
pub struct TileWork;

impl Workload for TileWork {
    type Item = Vec<f32>;
    type Output = TileMaps;

    fn model(&self) -> &'static str {
        "cbc_unet"
    }

    fn check(&self, item: &Self::Item) -> Result<(), SubmitError> {
        let want = 3 * TILE_IN * TILE_IN;
        if item.len() != want {
            return Err(SubmitError::WrongSize {
                got: item.len(),
                want,
            });
        }
        Ok(())
    }

    fn warm_item(&self) -> Self::Item {
        vec![0.0; 3 * TILE_IN * TILE_IN]
    }

    fn pack(&self, items: Vec<Self::Item>) -> Batch {
        let count = items.len();
        Batch::CellTiles {
            data: items.concat(),
            count,
        }
    }

    fn unpack(&self, out: BatchOutput) -> Option<Vec<Self::Output>> {
        match out {
            BatchOutput::CellTiles(v) => Some(v),
            _ => None,
        }
    }
}

/// Red-cell crops through the malaria classifier.
#[derive(Debug, Clone, Copy, Default)]
pub struct CropWork;

impl Workload for CropWork {
    type Item = Vec<u8>;
    type Output = f32;

    fn model(&self) -> &'static str {
        "malaria_cnn"
    }

    fn check(&self, item: &Self::Item) -> Result<(), SubmitError> {
        if item.len() != CROP * CROP {
            return Err(SubmitError::WrongSize {
                got: item.len(),
                want: CROP * CROP,
            });
        }
        Ok(())
    }

    fn warm_item(&self) -> Self::Item {
        vec![0; CROP * CROP]
    }

    fn pack(&self, items: Vec<Self::Item>) -> Batch {
        let count = items.len();
        Batch::Crops {
            data: items.concat(),
            count,
        }
    }

    fn unpack(&self, out: BatchOutput) -> Option<Vec<Self::Output>> {
        match out {
            BatchOutput::Parasitized(v) => Some(v),
            _ => None,
        }
    }
}

pub use super::scale::{RbcScale, ScaleSettings};
pub use crate::config::CountParams;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    Rbc,
    Wbc,
    Platelet,
}

/// One counted cell, in the original image's pixels.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CellBox {
    pub kind: CellKind,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    /// For red cells once classified: P(parasitized).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_parasitized: Option<f32>,
    /// For white cells once classified: the differential classifier's
    /// probabilities, in the order of `model::wbc::CLASSES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wbc_probabilities: Option<[f32; 9]>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Counts {
    pub rbc: usize,
    pub wbc: usize,
    pub platelets: usize,
}

/// Everything one smear photo gave.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SmearAnalysis {
    pub width: u32,
    pub height: u32,
    /// Factor the image was resampled by before the nets: that of the kept
    /// scale sample, within `cells.scale_spread` of the measured size's as
    /// refined by the red cells' outline ([`refined_scale`]).
    pub scale: f32,
    pub counts: Counts,
    pub cells: Vec<CellBox>,
    /// Tiles run through the UNets over every analysis of the photo: a
    /// probe or a first analysis the refinement set aside, and every scale
    /// sample.
    pub tiles: usize,
    /// The red-cell size the photo was analysed at and how it was found
    /// (`None` when counted from maps alone, as the evaluation tools do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbc_size: Option<RbcScale>,
    /// Radius of the red cells' outline in the boundary map at `scale`,
    /// as a fraction of `cells.rbc_diameter_px`
    /// ([`crate::imaging::circles::outline_radius`]); `None` with the
    /// circles off, fewer than 3 of them, or a profile that peaks at either
    /// end of 0.3-0.7 d.
    #[serde(skip)]
    pub rbc_outline: Option<f32>,
    #[serde(skip)]
    rbc_labels: Vec<u32>,
    /// The counted watershed regions of `rbc_labels` (those of at least
    /// `rbc_min_cell_area`; the labels keep the others), in the order of
    /// the Rbc entries of `cells`.
    #[serde(skip)]
    rbc_regions: Vec<segment::Region>,
    #[serde(skip)]
    scaled_w: usize,
    #[serde(skip)]
    rbc_diameter: f32,
    /// Regions of the red-cell mask not counted, being like no red cell of
    /// the size used (count::featureless_labels).
    #[serde(skip)]
    pub dropped: DroppedRegions,
    /// Counted red cells whose outline the boundary map shows as a circle
    /// of the size used (`count::round_regions`); `None` with the circles
    /// off (`cells.rbc_circle_support` 0).
    #[serde(skip)]
    pub rbc_round: Option<usize>,
}

impl SmearAnalysis {
    /// The counted red cells' watershed regions, at the nets' scale.
    pub fn rbc_regions(&self) -> &[segment::Region] {
        &self.rbc_regions
    }

    /// The red cells' size in the net's mask (every pixel the watershed
    /// labelled), a fraction of `cells.rbc_diameter_px`
    /// ([`crate::imaging::rbc_size::mask_diameter`]); `None` as that gives
    /// none. The net fills a cell's central pallor, which the colour mask
    /// may leave open, so this catches a colour measure grossly off
    /// ([`gross_scale`]).
    pub fn rbc_mask_diameter(&self) -> Option<f32> {
        let w = self.scaled_w;
        if w == 0 || self.rbc_diameter <= 0.0 {
            return None;
        }
        let mask: Vec<bool> = self.rbc_labels.iter().map(|&l| l != 0).collect();
        let h = mask.len() / w;
        crate::imaging::rbc_size::mask_diameter(&mask, w, h).map(|px| px / self.rbc_diameter)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CellError {
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("the image is too small to analyse ({0}x{1})")]
    TooSmall(u32, u32),
    /// The caller's stop flag turned true (the daemon is shutting down).
    #[error("stopped after {done} of {total} tile(s)")]
    Stopped { done: usize, total: usize },
}

/// What the caller of [`analyse`] can watch and stop, checked as each tile
/// of the photo comes back from the UNets.
#[derive(Default, Clone)]
pub struct Watch<'a> {
    /// Called with (tiles done, at most the tiles the photo will take) as
    /// each tile's maps arrive, and once at the end with (tiles run, the
    /// same). The second never grows: it starts at [`tiles_bound`] and
    /// narrows once the photo's scale is settled.
    pub on_tile: Option<&'a (dyn Fn(usize, usize) + Send + Sync)>,
    /// When this turns true the analysis stops at once with
    /// [`CellError::Stopped`]; tiles already queued are left to the batcher.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Watch<'_> {
    fn stopped(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| *s.borrow())
    }

    /// Resolves when the stop flag turns true; never without one.
    async fn until_stopped(&self) {
        match self.stop.clone() {
            Some(mut s) => {
                let _ = s.wait_for(|v| *v).await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Timings of one analysis, in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CellTimings {
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    pub count_ms: f64,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Resample, equalise and tile. Blocking.
pub fn prepare(img: &RgbImage, scale: f32) -> Result<(smear::Tiles, usize, usize), CellError> {
    let (w0, h0) = img.dimensions();
    let (sw, sh) = scaled_size((w0, h0), scale)?;
    let scaled = if (sw, sh) == (w0 as usize, h0 as usize) {
        img.clone()
    } else {
        image::imageops::resize(
            img,
            sw as u32,
            sh as u32,
            image::imageops::FilterType::Triangle,
        )
    };
    let eq = smear::equalise(scaled.as_raw(), sw, sh);
    Ok((smear::tile(&eq, sw, sh), sw, sh))
}

/// Submit every item, then collect the outputs in order. All are queued
/// before the first is awaited, so they can share batches.
async fn run_all<W: Workload>(
    batcher: &Batcher<W>,
    items: impl IntoIterator<Item = W::Item>,
) -> Result<Vec<W::Output>, CellError> {
    let rxs = items
        .into_iter()
        .map(|item| batcher.submit_item(item))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(rxs.len());
    for rx in rxs {
        let r = rx
            .await
            .map_err(|_| CellError::Inference("the backend thread stopped".into()))?
            .map_err(CellError::Inference)?;
        out.push(r.output);
    }
    Ok(out)
}

/// Tiles one photo keeps queued at a time: a large photo (hundreds of
/// tiles) never fills the bounded queue by itself.
pub const TILES_IN_FLIGHT: usize = 64;

/// Run tiles through the UNet batcher, keeping their order; `watch` sees
/// each tile arrive and can stop the run between any two.
pub async fn run_tiles(
    batcher: &Batcher<TileWork>,
    tiles: &smear::Tiles,
    watch: &Watch<'_>,
) -> Result<Vec<TileMaps>, CellError> {
    let total = tiles.count;
    let mut out = Vec::with_capacity(total);
    for start in (0..total).step_by(TILES_IN_FLIGHT) {
        let end = (start + TILES_IN_FLIGHT).min(total);
        let rxs = (start..end)
            .map(|i| batcher.submit_item(tiles.tile(i).to_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        for rx in rxs {
            if watch.stopped() {
                return Err(CellError::Stopped {
                    done: out.len(),
                    total,
                });
            }
            let r = tokio::select! {
                r = rx => r,
                _ = watch.until_stopped() => {
                    return Err(CellError::Stopped { done: out.len(), total });
                }
            };
            let r = r
                .map_err(|_| CellError::Inference("the backend thread stopped".into()))?
                .map_err(CellError::Inference)?;
            out.push(r.output);
            if let Some(f) = watch.on_tile {
                f(out.len(), total);
            }
        }
    }
    Ok(out)
}

/// P(parasitized) of 50x50 grayscale crops, through the classifier batcher.
pub async fn classify(
    batcher: &Batcher<CropWork>,
    crops: Vec<Vec<u8>>,
) -> Result<Vec<f32>, CellError> {
    run_all(batcher, crops).await
}

/// The differential classifier's probabilities (in the order of
/// `model::wbc::CLASSES`) for white-cell windows of `CROP` x `CROP`
/// interleaved RGB, 0-255 ([`crate::model::wbc::sample_window`]).
pub async fn classify_wbc(
    batcher: &Batcher<super::differential::WbcWork>,
    windows: Vec<Vec<f32>>,
) -> Result<Vec<[f32; 9]>, CellError> {
    run_all(batcher, windows).await
}

/// The batchers the clinic path needs.
pub struct CellBatchers {
    pub tiles: Batcher<TileWork>,
    pub crops: Batcher<CropWork>,
    /// White-cell windows for the differential.
    pub wbc: Batcher<super::differential::WbcWork>,
}

impl CellBatchers {
    pub fn healthy(&self) -> bool {
        self.tiles.healthy() && self.crops.healthy() && self.wbc.healthy()
    }

    /// Stop every batcher (queued work is answered with an error).
    pub fn shutdown(&self) {
        self.tiles.shutdown();
        self.crops.shutdown();
        self.wbc.shutdown();
    }
}

/// Where one photo's tiles stand, for [`Watch::on_tile`]: `done` tiles of
/// earlier analyses (a probe, scale samples) are finished, of at most
/// `total` over all ([`tiles_bound`], narrowed once the scale is settled).
#[derive(Debug, Clone, Copy)]
struct Progress {
    done: usize,
    total: usize,
}

/// Resample, tile, run through the UNets and count one scale sample,
/// adding to `timings`; `watch` sees `(progress.done + this sample's tiles
/// done, progress.total)`. Errors: [`CellError::TooSmall`],
/// [`CellError::Stopped`] (counted over all samples), the batcher's.
async fn analyse_at(
    b: &CellBatchers,
    img: &std::sync::Arc<RgbImage>,
    scale: f32,
    params: &CountParams,
    watch: &Watch<'_>,
    progress: Progress,
    timings: &mut CellTimings,
) -> Result<SmearAnalysis, CellError> {
    let t = Instant::now();
    let prep_img = img.clone();
    let (tiles, sw, sh) = tokio::task::spawn_blocking(move || prepare(&prep_img, scale))
        .await
        .map_err(|e| CellError::Inference(e.to_string()))??;
    timings.preprocess_ms += ms(t);
    let t = Instant::now();
    let Progress { done, total } = progress;
    let total = total.max(done + tiles.count);
    let on_tile = |d: usize, _: usize| {
        if let Some(f) = watch.on_tile {
            f(done + d, total);
        }
    };
    let sample_watch = Watch {
        on_tile: Some(&on_tile),
        stop: watch.stop.clone(),
    };
    let maps = run_tiles(&b.tiles, &tiles, &sample_watch)
        .await
        .map_err(|e| match e {
            CellError::Stopped { done: d, .. } => CellError::Stopped {
                done: done + d,
                total,
            },
            e => e,
        })?;
    timings.inference_ms += ms(t);
    let t = Instant::now();
    let (orig, cols, params) = (img.dimensions(), tiles.cols, *params);
    let a = tokio::task::spawn_blocking(move || count(&maps, cols, sw, sh, scale, orig, &params))
        .await
        .map_err(|e| CellError::Inference(e.to_string()))?;
    timings.count_ms += ms(t);
    Ok(a)
}

/// What a first look at a photo (a probe of a large one, or a whole first
/// analysis) says of its scale.
struct FirstLook {
    /// The red cells' outline radius, a fraction of d.
    outline: Option<f32>,
    /// The red-cell net's mask diameter, a fraction of d.
    mask: Option<f32>,
    /// The whole analysis, when it was one (else it was of a probe).
    whole: Option<SmearAnalysis>,
}

impl FirstLook {
    /// What analysis `a` (of the whole photo when `whole`) says; the mask's
    /// size only where the check that reads it is on (`scale_gross_above`),
    /// its time counted as counting's.
    fn of(a: SmearAnalysis, whole: bool, params: &CountParams, timings: &mut CellTimings) -> Self {
        let t = Instant::now();
        let mask = (params.scale_gross_above > 0.0)
            .then(|| a.rbc_mask_diameter())
            .flatten();
        timings.count_ms += ms(t);
        Self {
            outline: a.rbc_outline,
            mask,
            whole: whole.then_some(a),
        }
    }
}

/// The first look at `img` at `scale`: a probe of a large photo
/// ([`probe_rect`]) or, when the photo is small or the probe shows no
/// outline, a whole analysis. Progress and errors as
/// [`analyse_at`]'s; `progress.done` counts the tiles run.
async fn first_look(
    b: &CellBatchers,
    img: &std::sync::Arc<RgbImage>,
    scale: f32,
    params: &CountParams,
    watch: &Watch<'_>,
    progress: &mut Progress,
    timings: &mut CellTimings,
) -> Result<FirstLook, CellError> {
    if let Some((x, y, w, h)) = probe_rect(img.dimensions(), scale) {
        let probe = image::imageops::crop_imm(img.as_ref(), x, y, w, h).to_image();
        let probe = std::sync::Arc::new(probe);
        let a = analyse_at(b, &probe, scale, params, watch, *progress, timings).await?;
        progress.done += a.tiles;
        // No outline in the probe: its cells are far from the nets' size
        // (or it holds none), and at 2-3 times that size a probe holds too
        // few whole cells for the mask's size either, so the whole photo
        // is looked at.
        if a.rbc_outline.is_some() {
            return Ok(FirstLook::of(a, false, params, timings));
        }
    }
    let a = analyse_at(b, img, scale, params, watch, *progress, timings).await?;
    progress.done += a.tiles;
    Ok(FirstLook::of(a, true, params, timings))
}

/// The scale a photo is analysed at, from the colour measure's `scale`:
/// when `refine`, first moved by the red-cell net's mask where that says
/// the colour measure is grossly off ([`gross_scale`], looking again at the
/// new scale, up to [`MAX_GROSS_MOVES`] times), then refined by the red
/// cells' outline over a few looks around that scale ([`look_around`],
/// [`refined_scale`]), each measured on a probe of a large photo
/// ([`probe_rect`]) or on a whole first analysis, which is returned too
/// when the scale stands. Progress and errors as [`analyse_at`]'s;
/// `progress.done` counts the tiles run.
#[allow(clippy::too_many_arguments)]
async fn settle_scale(
    b: &CellBatchers,
    img: &std::sync::Arc<RgbImage>,
    scale: f32,
    refine: bool,
    params: &CountParams,
    watch: &Watch<'_>,
    progress: &mut Progress,
    timings: &mut CellTimings,
) -> Result<(f32, Option<SmearAnalysis>), CellError> {
    if !refine || !refines(params) {
        return Ok((scale, None));
    }
    let mut scale = scale;
    let mut look = first_look(b, img, scale, params, watch, progress, timings).await?;
    for _ in 0..MAX_GROSS_MOVES {
        let Some(moved) = gross_scale(scale, look.mask, params) else {
            break;
        };
        tracing::debug!(
            from = scale,
            to = moved,
            mask = ?look.mask,
            "colour measure corrected by the red-cell net's mask"
        );
        scale = moved;
        look = first_look(b, img, scale, params, watch, progress, timings).await?;
    }
    let outline = look_around(b, img, scale, &look, params, watch, progress, timings).await?;
    match refined_scale(scale, outline, params) {
        Some(refined) => {
            tracing::debug!(
                from = scale,
                to = refined,
                outline = ?outline,
                "scale refined by the red cells' outline"
            );
            Ok((refined, None))
        }
        None => Ok((scale, look.whole)),
    }
}

/// The red cells' outline of a photo at `scale` over its looks
/// ([`outline_look_scales`]): `first`'s, and one more look at each other
/// scale, of that scale's probe when `first` was of a probe
/// ([`look_rect`]), combined by [`mean_outline`]. Progress and errors as
/// [`analyse_at`]'s; `progress.done` counts the tiles run.
#[allow(clippy::too_many_arguments)]
async fn look_around(
    b: &CellBatchers,
    img: &std::sync::Arc<RgbImage>,
    scale: f32,
    first: &FirstLook,
    params: &CountParams,
    watch: &Watch<'_>,
    progress: &mut Progress,
    timings: &mut CellTimings,
) -> Result<Option<f32>, CellError> {
    let mut outlines = vec![first.outline];
    for &s in &outline_look_scales(scale, params)[1..] {
        let a = match look_rect(img.dimensions(), s, first.whole.is_none()) {
            Some((x, y, w, h)) => {
                let probe = image::imageops::crop_imm(img.as_ref(), x, y, w, h).to_image();
                let probe = std::sync::Arc::new(probe);
                analyse_at(b, &probe, s, params, watch, *progress, timings).await?
            }
            None => analyse_at(b, img, s, params, watch, *progress, timings).await?,
        };
        progress.done += a.tiles;
        outlines.push(a.rbc_outline);
    }
    let outline = mean_outline(&outlines);
    if outlines.len() > 1 {
        tracing::debug!(scale, ?outlines, ?outline, "red cells' outline over looks");
    }
    Ok(outline)
}

/// The first analysis and, when `plan` (the photo's [`sample_plan`] at the
/// first's scale) has several scale samples and the first is a small
/// field, the others, in order.
async fn take_samples(
    b: &CellBatchers,
    img: &std::sync::Arc<RgbImage>,
    (first, plan): (SmearAnalysis, &[(f32, usize)]),
    params: &CountParams,
    watch: &Watch<'_>,
    progress: &mut Progress,
    timings: &mut CellTimings,
) -> Result<Vec<SmearAnalysis>, CellError> {
    let mut samples = vec![first];
    if plan.len() > 1 && wants_more_samples(samples[0].counts.rbc, params) {
        for &(s, n) in &plan[1..] {
            if watch.stopped() {
                return Err(CellError::Stopped {
                    done: progress.done,
                    total: progress.total,
                });
            }
            let a = analyse_at(b, img, s, params, watch, *progress, timings).await?;
            debug_assert_eq!(a.tiles, n);
            progress.done += a.tiles;
            samples.push(a);
        }
        tracing::debug!(
            samples = ?samples.iter().map(|a| (a.scale, a.counts.rbc)).collect::<Vec<_>>(),
            "red cells per scale sample"
        );
    }
    Ok(samples)
}

/// Analyse one decoded smear photo end to end: its red-cell size (measured
/// or as `sizes` says), counts, boxes, the differential classifier's
/// probabilities for every white cell and, when `malaria` is set,
/// P(parasitized) for every red cell. `watch` reports each tile and stops
/// the analysis between tiles ([`CellError::Stopped`]).
pub async fn analyse(
    b: &CellBatchers,
    img: std::sync::Arc<RgbImage>,
    sizes: &ScaleSettings,
    params: CountParams,
    malaria: bool,
    watch: &Watch<'_>,
) -> Result<(SmearAnalysis, CellTimings), CellError> {
    let mut timings = CellTimings::default();
    let t = Instant::now();
    let (mut rbc_size, scale) = {
        let img = img.clone();
        let sizes = *sizes;
        tokio::task::spawn_blocking(move || {
            let rbc_size = super::scale::estimate(&img, &sizes, &params);
            let scale = scale_for(Some(rbc_size.rbc_diameter_px), &params);
            (rbc_size, scale)
        })
        .await
        .map_err(|e| CellError::Inference(e.to_string()))?
    };
    timings.preprocess_ms = ms(t);
    let dims = img.dimensions();
    // A size given or configured is the operator's; only the photo's own
    // colour measure is refined by the cells' outline.
    let refine = rbc_size.source == super::scale::ScaleSource::Photo;
    let total = tiles_bound(dims, scale, refine, &params)?;
    let mut progress = Progress { done: 0, total };
    let measured = scale;
    let (scale, whole) = settle_scale(
        b,
        &img,
        scale,
        refine,
        &params,
        watch,
        &mut progress,
        &mut timings,
    )
    .await?;
    if scale != measured {
        rbc_size.refine(params.rbc_diameter_px / scale, sizes, &params);
    }
    // With the scale settled, what is left is known better than the bound
    // (which covers every scale the outline might have moved it to): the
    // first analysis, unless settling made it, and its scale samples.
    let plan = sample_plan(dims, scale, &params)?;
    let left = if whole.is_some() { 0 } else { plan[0].1 }
        + plan[1..].iter().map(|&(_, n)| n).sum::<usize>();
    progress.total = progress.total.min(progress.done + left);
    let first = match whole {
        Some(a) => a,
        None => {
            let a = analyse_at(b, &img, scale, &params, watch, progress, &mut timings).await?;
            progress.done += a.tiles;
            a
        }
    };
    let samples = take_samples(
        b,
        &img,
        (first, &plan),
        &params,
        watch,
        &mut progress,
        &mut timings,
    )
    .await?;
    if let Some(f) = watch.on_tile {
        // This photo is done: the bound's analyses not taken leave it.
        f(progress.done, progress.done);
    }
    let tiles_run = progress.done;
    let t = Instant::now();
    let native_d = rbc_size.rbc_diameter_px;
    let (mut analysis, crops, windows) = {
        let img = img.clone();
        tokio::task::spawn_blocking(move || {
            let mut a = keep_median(samples, tiles_run);
            // Once, on the kept analysis: the sample is chosen by its
            // red-cell count, which the nucleus test does not touch.
            drop_anucleate_white_cells(&mut a, &img, params.wbc_min_nucleus);
            let crops = if malaria {
                rbc_crops(&img, &a)
            } else {
                Vec::new()
            };
            let windows = super::differential::wbc_windows(&img, &a, native_d);
            (a, crops, windows)
        })
        .await
        .map_err(|e| CellError::Inference(e.to_string()))?
    };
    timings.count_ms += ms(t);
    rbc_size.note_dropped(analysis.dropped);
    rbc_size.note_shape(analysis.rbc_regions().len(), analysis.rbc_round);
    analysis.rbc_size = Some(rbc_size);
    classify_cells(b, &mut analysis, windows, crops, &mut timings).await?;
    Ok((analysis, timings))
}

/// Run the white cells' windows through the differential classifier and
/// the red cells' crops (empty unless malaria was asked for) through the
/// malaria classifier, setting each cell's probabilities.
async fn classify_cells(
    b: &CellBatchers,
    analysis: &mut SmearAnalysis,
    windows: Vec<(usize, Vec<f32>)>,
    crops: Vec<(usize, Vec<u8>)>,
    timings: &mut CellTimings,
) -> Result<(), CellError> {
    if !windows.is_empty() {
        let t = Instant::now();
        let (indices, windows): (Vec<usize>, Vec<Vec<f32>>) = windows.into_iter().unzip();
        let p = run_all(&b.wbc, windows).await?;
        timings.inference_ms += ms(t);
        for (i, p) in indices.into_iter().zip(p) {
            analysis.cells[i].wbc_probabilities = Some(p);
        }
    }
    if !crops.is_empty() {
        let t = Instant::now();
        let (indices, crops): (Vec<usize>, Vec<Vec<u8>>) = crops.into_iter().unzip();
        let p = classify(&b.crops, crops).await?;
        timings.inference_ms += ms(t);
        for (i, p) in indices.into_iter().zip(p) {
            analysis.cells[i].p_parasitized = Some(p);
        }
    }
    Ok(())
}

/// Parasitized / uninfected red cells of an analysed photo.
pub fn malaria_counts(a: &SmearAnalysis, params: &CountParams) -> (usize, usize) {
    let mut pos = 0;
    let mut neg = 0;
    for c in a.cells.iter().filter(|c| c.kind == CellKind::Rbc) {
        match c.p_parasitized {
            Some(p) if p >= params.parasite_threshold => pos += 1,
            Some(_) => neg += 1,
            None => {}
        }
    }
    (pos, neg)
}
