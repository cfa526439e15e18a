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
//! Scale samples: a field's red-cell count moves by a cell or two when its
//! scale moves by 2%, which is over 10% of a small field. A photo whose
//! first analysis counts fewer than `scale_samples_below_rbc` red cells is
//! analysed again at its scale x0.98 and x1.02 (`scale_samples`,
//! `scale_spread`), and the analysis with the median red-cell count is
//! kept, boxes and all ([`sample_scales`], [`median_index`]).
//!
//! Counting (all sizes relative to the expected red-cell diameter `d` the
//! image is resampled to):
//! - red cells: markers are the connected parts of `mask - edge > t` at
//!   least `rbc_min_area * d^2` large. Where overlapping cells share a
//!   boundary too faint for that threshold, one marker would cover a whole
//!   clump, so each marker that holds the centre of a circle of the
//!   red-cell size in the boundary map (a circular Hough transform,
//!   [`crate::imaging::circles`], support `rbc_circle_support`) is replaced
//!   by a small disc at each such centre. Every pixel of `mask > t` is
//!   given to a marker by watershed on the distance transform; regions
//!   under `rbc_min_cell_area * d^2` are not counted;
//! - white cells and platelets: connected components of `mask > t` with
//!   minimum areas.

use std::time::Instant;

use image::RgbImage;

use crate::backend::{Batch, BatchOutput, TileMaps};
use crate::batch::{Batcher, SubmitError, Workload};
use crate::imaging::{circles, segment, smear};
use crate::model::malaria::CROP;
use crate::model::unet::TILE_IN;

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
    /// scale sample, within `cells.scale_spread` of the measured size's.
    pub scale: f32,
    pub counts: Counts,
    pub cells: Vec<CellBox>,
    /// Tiles run through the UNets, over every scale sample.
    pub tiles: usize,
    /// The red-cell size the photo was analysed at and how it was found
    /// (`None` when counted from maps alone, as the evaluation tools do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbc_size: Option<RbcScale>,
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
    /// Called with (tiles done, tiles in the photo) as each tile's maps arrive.
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

/// Red-cell diameter assumed when neither the photo nor the config gives
/// one: BCCD's (its red-cell boxes are ~100 px across in 640x480 photos).
pub const ASSUMED_NATIVE_RBC_PX: f32 = 100.0;

/// Smallest and largest resampling factor: a photo is reduced at most 10x
/// and enlarged at most 4x (beyond that, enlarging adds no detail).
pub const MIN_SCALE: f32 = 0.1;
pub const MAX_SCALE: f32 = 4.0;

/// The resampling factor that brings red cells to `params.rbc_diameter_px`.
/// `native_diameter_px`: the red-cell diameter in this image
/// ([`super::scale::estimate`]); `None` or nonsense: BCCD's.
pub fn scale_for(native_diameter_px: Option<f32>, params: &CountParams) -> f32 {
    let native = match native_diameter_px {
        Some(d) if d.is_finite() && d > 1.0 => d,
        _ => ASSUMED_NATIVE_RBC_PX,
    };
    (params.rbc_diameter_px / native).clamp(MIN_SCALE, MAX_SCALE)
}

/// Width and height of a `w0 x h0` image resampled by `scale`;
/// [`CellError::TooSmall`] when a side would be under 8 px.
pub fn scaled_size((w0, h0): (u32, u32), scale: f32) -> Result<(usize, usize), CellError> {
    let sw = ((w0 as f32 * scale).round() as usize).max(1);
    let sh = ((h0 as f32 * scale).round() as usize).max(1);
    if sw < 8 || sh < 8 {
        return Err(CellError::TooSmall(w0, h0));
    }
    Ok((sw, sh))
}

/// Tiles [`prepare`] cuts from a `w0 x h0` image at `scale`.
pub fn tiles_at(dims: (u32, u32), scale: f32) -> Result<usize, CellError> {
    let (sw, sh) = scaled_size(dims, scale)?;
    let (cols, rows) = smear::tile_grid(sw, sh);
    Ok(cols * rows)
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

/// Count cells from the stitched maps. Blocking.
pub fn count(
    maps: &[TileMaps],
    cols: usize,
    sw: usize,
    sh: usize,
    scale: f32,
    orig: (u32, u32),
    params: &CountParams,
) -> SmearAnalysis {
    let stitch = |f: fn(&TileMaps) -> &[f32]| {
        let v: Vec<&[f32]> = maps.iter().map(f).collect();
        smear::stitch(&v, cols, sw, sh)
    };
    let rbc = stitch(|m| &m.rbc);
    let edge = stitch(|m| &m.rbc_edge);
    let wbc = stitch(|m| &m.wbc);
    let plt = stitch(|m| &m.platelets);
    let d2 = params.rbc_diameter_px * params.rbc_diameter_px;
    let t = params.threshold;
    let inv = 1.0 / scale;
    let to_box = |kind, r: &segment::Region| CellBox {
        kind,
        x: (r.x0 as f32 * inv).floor() as u32,
        y: (r.y0 as f32 * inv).floor() as u32,
        width: (((r.x1 - r.x0) as f32 * inv).ceil() as u32).min(orig.0),
        height: (((r.y1 - r.y0) as f32 * inv).ceil() as u32).min(orig.1),
        p_parasitized: None,
        wbc_probabilities: None,
    };
    let mut cells = Vec::new();

    // Red cells: markers from mask minus boundary, then watershed.
    let body: Vec<bool> = rbc.iter().map(|&p| p > t).collect();
    let inner: Vec<bool> = rbc.iter().zip(&edge).map(|(&m, &e)| m - e > t).collect();
    let (marker_labels, marker_regions) = segment::components(&inner, sw, sh);
    let min_marker = (params.rbc_min_area * d2) as usize;
    let keep: Vec<bool> = std::iter::once(false)
        .chain(marker_regions.iter().map(|r| r.area >= min_marker))
        .collect();
    let mut markers: Vec<u32> = marker_labels
        .iter()
        .map(|&l| if keep[l as usize] { l } else { 0 })
        .collect();
    if params.rbc_circle_support > 0.0 {
        markers = circle_markers(&markers, &edge, &body, sw, sh, params);
    }
    let dist = segment::distance_transform(&body, sw, sh);
    let rbc_labels = segment::watershed(&markers, &dist, &body, sw, sh);
    let mut rbc_regions = segment::regions_of(&rbc_labels, sw);
    // What the watershed leaves under a fifth of a cell is a corner of a
    // clump or a sliver at the photo's edge, and it comes and goes with the
    // resampling: counted, it moved the count of the same field by a cell
    // or two between rescaled copies (models/cbc/MODEL_CARD.md).
    let min_cell = (params.rbc_min_cell_area * d2) as usize;
    rbc_regions.retain(|r| r.area >= min_cell);
    for r in &rbc_regions {
        cells.push(to_box(CellKind::Rbc, r));
    }

    for (map, kind, min) in [
        (&wbc, CellKind::Wbc, params.wbc_min_area),
        (&plt, CellKind::Platelet, params.platelet_min_area),
    ] {
        let fg: Vec<bool> = map.iter().map(|&p| p > t).collect();
        let (_, regions) = segment::components(&fg, sw, sh);
        let min = (min * d2) as usize;
        for r in regions.iter().filter(|r| r.area >= min) {
            cells.push(to_box(kind, r));
        }
    }
    let n = |k| cells.iter().filter(|c| c.kind == k).count();
    SmearAnalysis {
        width: orig.0,
        height: orig.1,
        scale,
        counts: Counts {
            rbc: n(CellKind::Rbc),
            wbc: n(CellKind::Wbc),
            platelets: n(CellKind::Platelet),
        },
        cells,
        tiles: maps.len(),
        rbc_size: None,
        rbc_labels,
        rbc_regions,
        scaled_w: sw,
        rbc_diameter: params.rbc_diameter_px,
    }
}

/// Radii, as fractions of d, of the circles that mark red cells: a red
/// cell is d across, and the size measure is good to about 10-20%.
const CIRCLE_RADII: (f32, f32) = (0.4, 0.6);

/// Radius, as a fraction of d, of the marker disc put at a circle's centre:
/// the discs of centres 0.4 d or more apart never touch (nearer ones, with
/// `rbc_min_separation` under 0.4, keep their own labels all the same).
const CENTRE_DISC: f32 = 0.2;

/// Markers of red cells from circles of the red-cell size in the boundary
/// map: a disc around each circle's centre, plus every threshold marker
/// (`markers`, labels from 1) that holds no circle's centre, such as a cell
/// the photo's edge cuts, which shows too little outline to vote. Returns
/// a label image of the same shape, labels from 1.
fn circle_markers(
    markers: &[u32],
    edge: &[f32],
    body: &[bool],
    sw: usize,
    sh: usize,
    params: &CountParams,
) -> Vec<u32> {
    let d = params.rbc_diameter_px;
    let found = circles::find(
        edge,
        body,
        sw,
        sh,
        (
            (CIRCLE_RADII.0 * d).floor() as usize,
            (CIRCLE_RADII.1 * d).ceil() as usize,
        ),
        params.rbc_circle_support,
        params.rbc_min_separation * d,
    );
    let max = markers.iter().copied().max().unwrap_or(0) as usize;
    let mut replaced = vec![false; max + 1];
    for c in &found {
        replaced[markers[c.y * sw + c.x] as usize] = true;
    }
    replaced[0] = true;
    let mut out: Vec<u32> = markers
        .iter()
        .map(|&m| if replaced[m as usize] { 0 } else { m })
        .collect();
    let r = CENTRE_DISC * d;
    let reach = r.ceil() as i64;
    for (k, c) in found.iter().enumerate() {
        let label = (max + 1 + k) as u32;
        for dy in -reach..=reach {
            for dx in -reach..=reach {
                let (x, y) = (c.x as i64 + dx, c.y as i64 + dy);
                if x < 0 || y < 0 || x >= sw as i64 || y >= sh as i64 {
                    continue;
                }
                let i = y as usize * sw + x as usize;
                if ((dx * dx + dy * dy) as f32) <= r * r && body[i] && out[i] == 0 {
                    out[i] = label;
                }
            }
        }
    }
    out
}

/// Whether a red cell is whole enough to classify: not cut by the photo's
/// edge and not a sliver the watershed left (under a quarter of a typical
/// cell). The classifier was trained on whole cells only.
fn classifiable(r: &segment::Region, sw: usize, sh: usize, d: f32) -> bool {
    r.x0 > 0 && r.y0 > 0 && r.x1 < sw && r.y1 < sh && r.area as f32 >= 0.25 * 0.785 * d * d
}

/// Each classifiable red cell as the classifier wants it: its bounding box
/// from the original photo, pixels outside the cell black, grayscale,
/// stretched to 50x50 (the form of the NIH crops). The cell's outline is
/// the watershed region, interpolated bilinearly so the resampled label map
/// does not leave a staircase edge. Returns (index into `analysis.cells`,
/// crop) pairs.
pub fn rbc_crops(img: &RgbImage, analysis: &SmearAnalysis) -> Vec<(usize, Vec<u8>)> {
    let sw = analysis.scaled_w;
    let sh = analysis.rbc_labels.len() / sw.max(1);
    let scale = analysis.scale;
    let regions = &analysis.rbc_regions;
    let rbc_indices: Vec<usize> = analysis
        .cells
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind == CellKind::Rbc)
        .map(|(i, _)| i)
        .collect();
    let labels = &analysis.rbc_labels;
    let mut out = Vec::with_capacity(regions.len());
    for (r, &cell_index) in regions.iter().zip(&rbc_indices) {
        if !classifiable(r, sw, sh, analysis.rbc_diameter) {
            continue;
        }
        let (bw, bh) = ((r.x1 - r.x0) as f32, (r.y1 - r.y0) as f32);
        let inside = |x: i64, y: i64| -> f32 {
            if x < 0 || y < 0 || x >= sw as i64 || y >= sh as i64 {
                0.0
            } else {
                (labels[y as usize * sw + x as usize] == r.label) as u8 as f32
            }
        };
        let mut crop = vec![0u8; CROP * CROP];
        for cy in 0..CROP {
            for cx in 0..CROP {
                // Sample position in scaled-map pixels (centres at +0.5).
                let mx = r.x0 as f32 + (cx as f32 + 0.5) * bw / CROP as f32 - 0.5;
                let my = r.y0 as f32 + (cy as f32 + 0.5) * bh / CROP as f32 - 0.5;
                let (fx, fy) = (mx.floor(), my.floor());
                let (ax, ay) = (mx - fx, my - fy);
                let (ix, iy) = (fx as i64, fy as i64);
                let m = (inside(ix, iy) * (1.0 - ax) + inside(ix + 1, iy) * ax) * (1.0 - ay)
                    + (inside(ix, iy + 1) * (1.0 - ax) + inside(ix + 1, iy + 1) * ax) * ay;
                if m < 0.5 {
                    continue;
                }
                let ox = (((mx + 0.5) / scale) as u32).min(img.width() - 1);
                let oy = (((my + 0.5) / scale) as u32).min(img.height() - 1);
                let p = img.get_pixel(ox, oy).0;
                let g = 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
                // Keep cell pixels above the classifier's background cut-off.
                crop[cy * CROP + cx] = (g.round() as u8).max(9);
            }
        }
        out.push((cell_index, crop));
    }
    out
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
const TILES_IN_FLIGHT: usize = 64;

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

/// The scales one photo is analysed at: `scale` (first) and, with
/// `params.scale_samples` (odd) above 1, multipliers spread evenly over
/// `1 +- params.scale_spread`. Only `scale` when a multiplied one would
/// fall outside [`MIN_SCALE`], [`MAX_SCALE`]: a clamped sample would repeat
/// another and fix the median in advance.
pub fn sample_scales(scale: f32, params: &CountParams) -> Vec<f32> {
    let n = params.scale_samples.max(1) as usize;
    debug_assert!(n % 2 == 1, "scale_samples must be odd, got {n}");
    let mut out = vec![scale];
    if n == 1 || params.scale_spread <= 0.0 {
        return out;
    }
    let step = 2.0 * params.scale_spread / (n - 1) as f32;
    for i in (0..n).filter(|&i| 2 * i + 1 != n) {
        out.push(scale * (1.0 - params.scale_spread + step * i as f32));
    }
    if out.iter().any(|s| !(MIN_SCALE..=MAX_SCALE).contains(s)) {
        out.truncate(1);
    }
    out
}

/// The scales a photo at `scale` is analysed at, each with the tiles it
/// needs, the measured one first ([`sample_scales`]). More than one only
/// when none of them is too small and the first needs at most
/// `scale_samples_max_tiles` tiles; whether the others are taken then
/// depends on the first count ([`wants_more_samples`]).
/// Errors: [`CellError::TooSmall`] for `scale` itself.
pub fn sample_plan(
    dims: (u32, u32),
    scale: f32,
    params: &CountParams,
) -> Result<Vec<(f32, usize)>, CellError> {
    let first = (scale, tiles_at(dims, scale)?);
    let plan: Option<Vec<(f32, usize)>> = sample_scales(scale, params)
        .into_iter()
        .map(|s| tiles_at(dims, s).ok().map(|n| (s, n)))
        .collect();
    match plan {
        Some(plan) if plan.len() > 1 && first.1 <= params.scale_samples_max_tiles => Ok(plan),
        _ => Ok(vec![first]),
    }
}

/// Whether a first analysis of `first_rbc` red cells is a small field,
/// whose count the other scale samples steady.
pub fn wants_more_samples(first_rbc: usize, params: &CountParams) -> bool {
    first_rbc < params.scale_samples_below_rbc
}

/// Which of several scale samples' red-cell counts to keep: the first
/// (in sample order) whose count is the median (the lower median of an
/// even number). 0 for an empty slice.
pub fn median_index(rbc_counts: &[usize]) -> usize {
    let mut sorted = rbc_counts.to_vec();
    sorted.sort_unstable();
    let Some(&median) = sorted.get(sorted.len().saturating_sub(1) / 2) else {
        return 0;
    };
    rbc_counts.iter().position(|&c| c == median).unwrap_or(0)
}

/// Where one photo's tiles stand, for [`Watch::on_tile`]: `done` tiles of
/// earlier scale samples are finished, of `total` over all samples.
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

/// The analysis, of one per scale sample, whose red-cell count is the
/// median ([`median_index`]); its `tiles` become the tiles run over all.
fn keep_median(mut samples: Vec<SmearAnalysis>) -> SmearAnalysis {
    let tiles = samples.iter().map(|a| a.tiles).sum();
    let rbc: Vec<usize> = samples.iter().map(|a| a.counts.rbc).collect();
    let mut kept = samples.swap_remove(median_index(&rbc));
    kept.tiles = tiles;
    kept
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
    let (rbc_size, scale) = {
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
    // Sampling is decided by the first count, but the progress total must
    // be known before it: the tiles of every sample that would be taken.
    let plan = sample_plan(img.dimensions(), scale, &params)?;
    let total = plan.iter().map(|&(_, n)| n).sum();
    let mut progress = Progress { done: 0, total };
    let first = analyse_at(b, &img, scale, &params, watch, progress, &mut timings).await?;
    let sampling = plan.len() > 1;
    let mut samples = vec![first];
    if sampling && wants_more_samples(samples[0].counts.rbc, &params) {
        for &(s, n) in &plan[1..] {
            progress.done += samples.last().map_or(0, |a| a.tiles);
            if watch.stopped() {
                return Err(CellError::Stopped {
                    done: progress.done,
                    total,
                });
            }
            let a = analyse_at(b, &img, s, &params, watch, progress, &mut timings).await?;
            debug_assert_eq!(a.tiles, n);
            samples.push(a);
        }
        tracing::debug!(
            samples = ?samples.iter().map(|a| (a.scale, a.counts.rbc)).collect::<Vec<_>>(),
            "red cells per scale sample"
        );
    } else if let (true, Some(f)) = (sampling, watch.on_tile) {
        // The total counted samples not taken: this photo is done.
        f(plan[0].1, plan[0].1);
    }
    let t = Instant::now();
    let native_d = rbc_size.rbc_diameter_px;
    let (mut analysis, crops, windows) = {
        let img = img.clone();
        tokio::task::spawn_blocking(move || {
            let a = keep_median(samples);
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
    analysis.rbc_size = Some(rbc_size);
    if !windows.is_empty() {
        let t = Instant::now();
        let (indices, windows): (Vec<usize>, Vec<Vec<f32>>) = windows.into_iter().unzip();
        let p = run_all(&b.wbc, windows).await?;
        timings.inference_ms += ms(t);
        for (i, p) in indices.into_iter().zip(p) {
            analysis.cells[i].wbc_probabilities = Some(p);
        }
    }
    if malaria && !crops.is_empty() {
        let t = Instant::now();
        let (indices, crops): (Vec<usize>, Vec<Vec<u8>>) = crops.into_iter().unzip();
        let p = classify(&b.crops, crops).await?;
        timings.inference_ms += ms(t);
        for (i, p) in indices.into_iter().zip(p) {
            analysis.cells[i].p_parasitized = Some(p);
        }
    }
    Ok((analysis, timings))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::unet::TILE_OUT;

    fn blank_maps(n: usize) -> Vec<TileMaps> {
        let z = vec![0f32; TILE_OUT * TILE_OUT];
        (0..n)
            .map(|_| TileMaps {
                rbc: z.clone(),
                rbc_edge: z.clone(),
                wbc: z.clone(),
                platelets: z.clone(),
            })
            .collect()
    }

    fn paint(m: &mut [f32], cx: f32, cy: f32, r: f32, v: f32) {
        for y in 0..TILE_OUT {
            for x in 0..TILE_OUT {
                if (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) <= r * r {
                    m[y * TILE_OUT + x] = v;
                }
            }
        }
    }

    #[test]
    fn counts_touching_red_cells_apart_and_ignores_specks_and_fragments() {
        let mut maps = blank_maps(1);
        let params = CountParams {
            rbc_diameter_px: 30.0,
            ..Default::default()
        };
        // Two touching red cells with a predicted boundary between them.
        paint(&mut maps[0].rbc, 30.0, 30.0, 15.0, 0.95);
        paint(&mut maps[0].rbc, 58.0, 30.0, 15.0, 0.95);
        for y in 0..TILE_OUT {
            for x in 42..46 {
                maps[0].rbc_edge[y * TILE_OUT + x] = 0.9;
            }
        }
        paint(&mut maps[0].wbc, 70.0, 75.0, 14.0, 0.9);
        // A speck, and fragments: a red one under a fifth of a cell
        // (0.09 d^2), a white one under the white-cell minimum (0.13 d^2).
        paint(&mut maps[0].wbc, 20.0, 80.0, 1.0, 0.9);
        paint(&mut maps[0].rbc, 85.0, 40.0, 5.0, 0.95);
        paint(&mut maps[0].wbc, 20.0, 60.0, 6.0, 0.9);
        paint(&mut maps[0].platelets, 85.0, 10.0, 3.0, 0.9);
        let a = count(&maps, 1, 100, 100, 1.0, (100, 100), &params);
        assert_eq!((a.counts.rbc, a.counts.wbc, a.counts.platelets), (2, 1, 1));
    }

    #[test]
    fn splits_a_clump_whose_shared_boundaries_are_too_faint_to_threshold() {
        // Three overlapping red cells in one blob of mask; their outlines
        // in the boundary map are at 0.35, so `mask - edge` stays above the
        // threshold everywhere and the threshold makes one marker of them.
        let mut maps = blank_maps(1);
        let d = 30.0;
        let cells = [(25.0, 50.0), (47.0, 50.0), (69.0, 52.0)];
        for &(cx, cy) in &cells {
            paint(&mut maps[0].rbc, cx, cy, d / 2.0, 0.95);
        }
        for y in 0..TILE_OUT {
            for x in 0..TILE_OUT {
                let on = cells
                    .iter()
                    .any(|&(cx, cy)| ((x as f32 - cx).hypot(y as f32 - cy) - d / 2.0).abs() < 1.0);
                if on {
                    maps[0].rbc_edge[y * TILE_OUT + x] = 0.35;
                }
            }
        }
        let with = CountParams {
            rbc_diameter_px: d,
            ..Default::default()
        };
        let without = CountParams {
            rbc_circle_support: 0.0,
            ..with
        };
        // A fourth cell apart, with no outline at all: no circle marks it,
        // so its threshold marker is kept, under a label of its own.
        paint(&mut maps[0].rbc, 50.0, 12.0, d / 2.0 - 3.0, 0.95);
        let a = count(&maps, 1, 100, 100, 1.0, (100, 100), &without);
        assert_eq!(a.counts.rbc, 2);
        let a = count(&maps, 1, 100, 100, 1.0, (100, 100), &with);
        assert_eq!(a.counts.rbc, 4);
        // Each region is one cell: about a cell's area, none a sliver.
        for r in &a.rbc_regions {
            let area = r.area as f32 / (d * d);
            assert!((0.3..=1.0).contains(&area), "{r:?}");
        }
    }

    #[test]
    fn scale_follows_the_known_cell_size() {
        let p = CountParams {
            rbc_diameter_px: 40.0,
            ..Default::default()
        };
        assert!((scale_for(None, &p) - 0.4).abs() < 1e-6);
        assert!((scale_for(Some(20.0), &p) - 2.0).abs() < 1e-6);
        assert!((scale_for(Some(f32::NAN), &p) - 0.4).abs() < 1e-6);
    }

    #[test]
    fn scale_samples_straddle_the_measured_scale_and_start_with_it() {
        let mut p = CountParams::default();
        let s = sample_scales(0.5, &p);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], 0.5);
        assert!((s[1] - 0.49).abs() < 1e-6 && (s[2] - 0.51).abs() < 1e-6);
        p.scale_samples = 5;
        let s = sample_scales(0.5, &p);
        let want = [0.5, 0.49, 0.495, 0.505, 0.51];
        assert!(
            s.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{s:?}"
        );
        p.scale_samples = 1;
        assert_eq!(sample_scales(0.5, &p), vec![0.5]);
        p.scale_samples = 3;
        p.scale_spread = 0.0;
        assert_eq!(sample_scales(0.5, &p), vec![0.5]);
        p.scale_spread = 0.02;
        // A sample past the limits would repeat another: none is taken.
        assert_eq!(sample_scales(MAX_SCALE, &p), vec![MAX_SCALE]);
        assert_eq!(sample_scales(MIN_SCALE * 1.01, &p), vec![MIN_SCALE * 1.01]);
    }

    #[test]
    fn the_kept_sample_has_the_median_count_and_ties_keep_the_earlier() {
        assert_eq!(median_index(&[14, 12, 14]), 0);
        assert_eq!(median_index(&[12, 15, 14]), 2);
        assert_eq!(median_index(&[15, 12, 13]), 2);
        assert_eq!(median_index(&[13, 13, 13]), 0);
        assert_eq!(median_index(&[9, 13, 13]), 1);
        assert_eq!(median_index(&[7]), 0);
        assert_eq!(median_index(&[]), 0);
    }

    #[test]
    fn the_sample_plan_gives_each_scale_its_tiles_or_only_the_first() {
        let mut p = CountParams::default();
        let plan = sample_plan((640, 480), 0.5, &p).unwrap();
        let scales: Vec<f32> = plan.iter().map(|&(s, _)| s).collect();
        assert_eq!(scales, sample_scales(0.5, &p));
        // 320x240 -> 4x3 tiles; 314x235 -> 4x3; 326x245 -> 4x3.
        assert!(plan.iter().all(|&(_, n)| n == 12), "{plan:?}");
        p.scale_samples_max_tiles = 11;
        assert_eq!(sample_plan((640, 480), 0.5, &p).unwrap(), vec![(0.5, 12)]);
        // 7.6 -> 8 px at the scale, 7.45 -> 7 at x0.98: no samples, the
        // first still runs.
        p = CountParams::default();
        assert_eq!(sample_plan((38, 38), 0.2, &p).unwrap(), vec![(0.2, 1)]);
        assert!(matches!(
            sample_plan((8, 8), 0.5, &p),
            Err(CellError::TooSmall(8, 8))
        ));
        assert!(wants_more_samples(39, &p) && !wants_more_samples(40, &p));
    }
}
