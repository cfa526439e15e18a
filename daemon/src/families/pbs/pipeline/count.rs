//! Counting cells from the stitched maps of the three UNets (the method is
//! in [`super`]'s docs), and the red cells' crops for the malaria
//! classifier.

use image::RgbImage;

use super::{CellBox, CellKind, CountParams, Counts, SmearAnalysis};
use crate::backend::TileMaps;
use crate::imaging::{circles, segment, smear};
use crate::model::malaria::CROP;

/// The three UNets' four maps of one analysis, stitched from its tiles at
/// the size the photo was resampled to: `width` x `height` probabilities
/// (0-1), row-major.
#[derive(Debug, Clone)]
pub struct StitchedMaps {
    pub width: usize,
    pub height: usize,
    pub rbc: Vec<f32>,
    pub rbc_edge: Vec<f32>,
    pub wbc: Vec<f32>,
    pub platelets: Vec<f32>,
}

impl StitchedMaps {
    /// The tiles' maps (`cols` tiles across, in row-major order) put back
    /// together into `width` x `height` maps.
    pub fn stitch(maps: &[TileMaps], cols: usize, width: usize, height: usize) -> Self {
        let stitch = |f: fn(&TileMaps) -> &[f32]| {
            let v: Vec<&[f32]> = maps.iter().map(f).collect();
            smear::stitch(&v, cols, width, height)
        };
        Self {
            width,
            height,
            rbc: stitch(|m| &m.rbc),
            rbc_edge: stitch(|m| &m.rbc_edge),
            wbc: stitch(|m| &m.wbc),
            platelets: stitch(|m| &m.platelets),
        }
    }

    /// The pixel-wise mean of the maps of several analyses of one photo at
    /// nearby scales, each first resampled (linear, `image`'s Triangle) to
    /// `width` x `height`, the grid of the scale the mean stands for, as
    /// test-time augmentation averages a net's outputs. An empty slice
    /// gives maps of zeros. Only `bccd_scale --merges mean-maps` counts such a
    /// mean: on BCCD it agreed less across rescaled copies than the sample
    /// with the median count, which the pipeline keeps
    /// (models/cbc/MODEL_CARD.md, "The mean of the samples' maps").
    pub fn mean(all: &[&StitchedMaps], width: usize, height: usize) -> Self {
        let n = width * height;
        let mut out = Self {
            width,
            height,
            rbc: vec![0.0; n],
            rbc_edge: vec![0.0; n],
            wbc: vec![0.0; n],
            platelets: vec![0.0; n],
        };
        let w = 1.0 / all.len().max(1) as f32;
        for m in all {
            for (acc, map) in [
                (&mut out.rbc, &m.rbc),
                (&mut out.rbc_edge, &m.rbc_edge),
                (&mut out.wbc, &m.wbc),
                (&mut out.platelets, &m.platelets),
            ] {
                let resampled = resample_map(map, (m.width, m.height), (width, height));
                for (a, v) in acc.iter_mut().zip(resampled.iter()) {
                    *a += w * v;
                }
            }
        }
        out
    }
}

/// A `from` map resampled to `to` (the same map when the sizes agree).
fn resample_map(
    map: &[f32],
    from: (usize, usize),
    to: (usize, usize),
) -> std::borrow::Cow<'_, [f32]> {
    if from == to {
        return std::borrow::Cow::Borrowed(map);
    }
    let buf =
        image::ImageBuffer::<image::Luma<f32>, &[f32]>::from_raw(from.0 as u32, from.1 as u32, map)
            .expect("a map holds width x height values");
    let out = image::imageops::resize(
        &buf,
        to.0 as u32,
        to.1 as u32,
        image::imageops::FilterType::Triangle,
    );
    std::borrow::Cow::Owned(out.into_raw())
}

/// Count cells from the tiles' maps ([`StitchedMaps::stitch`], then
/// [`count_stitched`]). Blocking.
pub fn count(
    maps: &[TileMaps],
    cols: usize,
    sw: usize,
    sh: usize,
    scale: f32,
    orig: (u32, u32),
    params: &CountParams,
) -> SmearAnalysis {
    let stitched = StitchedMaps::stitch(maps, cols, sw, sh);
    count_stitched(&stitched, maps.len(), scale, orig, params)
}

/// Count cells from the stitched maps of a photo of `orig` size resampled
/// by `scale`; `tiles`: the tiles they took. Blocking.
pub fn count_stitched(
    m: &StitchedMaps,
    tiles: usize,
    scale: f32,
    orig: (u32, u32),
    params: &CountParams,
) -> SmearAnalysis {
    let (sw, sh) = (m.width, m.height);
    let (wbc, plt) = (&m.wbc, &m.platelets);
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

    let RedCells {
        labels: rbc_labels,
        regions: rbc_regions,
        outline: rbc_outline,
        dropped,
        round: rbc_round,
    } = red_cells(m, params);
    for r in &rbc_regions {
        cells.push(to_box(CellKind::Rbc, r));
    }

    for (map, kind, min) in [
        (wbc, CellKind::Wbc, params.wbc_min_area),
        (plt, CellKind::Platelet, params.platelet_min_area),
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
        tiles,
        rbc_size: None,
        rbc_outline,
        rbc_labels,
        rbc_regions,
        scaled_w: sw,
        rbc_diameter: params.rbc_diameter_px,
        dropped,
        rbc_round,
    }
}

/// What [`red_cells`] found.
struct RedCells {
    /// The label image, featureless patches removed.
    labels: Vec<u32>,
    /// The regions counted (those of at least `rbc_min_cell_area`).
    regions: Vec<segment::Region>,
    /// The outline radius of the strongest circles, a fraction of d.
    outline: Option<f32>,
    /// Regions not counted ([`featureless_labels`]).
    dropped: DroppedRegions,
    /// Counted regions holding a circle's centre ([`round_regions`]);
    /// `None` with the circles off.
    round: Option<usize>,
}

/// Regions of the red-cell mask, each at least `rbc_min_cell_area`, not
/// counted as red cells because no cell of the size used looks like them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DroppedRegions {
    /// Wider than any red cell ([`FEATURELESS_AREA`]).
    pub patches: usize,
    /// Spread thin ([`FEATURELESS_THIN`]).
    pub lattices: usize,
}

impl DroppedRegions {
    pub fn total(&self) -> usize {
        self.patches + self.lattices
    }
}

/// The red cells of stitched maps: markers at the cells' centres in the
/// cell mask less the boundary map ([`centre_markers`]; with
/// `rbc_edge_cut` 0, the parts of `mask - edge > t` split at the centres of
/// circles of the red-cell size), grown by a watershed over the cell mask.
/// Featureless patches ([`FEATURELESS_AREA`]) are not counted.
fn red_cells(m: &StitchedMaps, params: &CountParams) -> RedCells {
    let (sw, sh) = (m.width, m.height);
    let (rbc, edge) = (&m.rbc, &m.rbc_edge);
    let d2 = params.rbc_diameter_px * params.rbc_diameter_px;
    let t = params.threshold;
    let body: Vec<bool> = rbc.iter().map(|&p| p > t).collect();
    let mut rbc_outline = None;
    let mut found = Vec::new();
    if params.rbc_circle_support > 0.0 {
        let d = params.rbc_diameter_px;
        found = circles::find(
            edge,
            &body,
            sw,
            sh,
            (
                (CIRCLE_RADII.0 * d).floor() as usize,
                (CIRCLE_RADII.1 * d).ceil() as usize,
            ),
            params.rbc_circle_support,
            params.rbc_min_separation * d,
        );
        // The strongest circles are enough for the common outline, and
        // they bound its cost on a field of thousands of cells.
        let strongest = &found[..found.len().min(OUTLINE_CENTRES)];
        let radii = (OUTLINE_RADII.0 * d, OUTLINE_RADII.1 * d);
        rbc_outline = circles::outline_radius(edge, sw, sh, strongest, radii, 3).map(|r| r / d);
    }
    let mut rbc_labels = if params.rbc_edge_cut > 0.0 {
        let (markers, depth) = centre_markers(&body, edge, sw, sh, params);
        segment::watershed(&markers, &depth, &body, sw, sh)
    } else {
        let inner: Vec<bool> = rbc
            .iter()
            .zip(edge.iter())
            .map(|(&p, &e)| p - e > t)
            .collect();
        let mut markers = threshold_markers(&inner, sw, sh, params);
        if !found.is_empty() {
            markers = circle_markers(&markers, &found, &body, sw, sh, params);
        }
        let dist = segment::distance_transform(&body, sw, sh);
        segment::watershed(&markers, &dist, &body, sw, sh)
    };
    let mut rbc_regions = segment::regions_of(&rbc_labels, sw);
    // What the watershed leaves under a fifth of a cell is a corner of a
    // clump or a sliver at the photo's edge, and it comes and goes with the
    // resampling: counted, it moved the count of the same field by a cell
    // or two between rescaled copies (models/cbc/MODEL_CARD.md).
    let min_cell = (params.rbc_min_cell_area * d2) as usize;
    rbc_regions.retain(|r| r.area >= min_cell);
    let (featureless, dropped) =
        featureless_labels(&rbc_labels, &rbc_regions, sw, sh, params.rbc_diameter_px);
    if !featureless.is_empty() {
        rbc_regions.retain(|r| featureless.binary_search(&r.label).is_err());
        for l in rbc_labels.iter_mut() {
            if featureless.binary_search(l).is_ok() {
                *l = 0;
            }
        }
    }
    let round = (params.rbc_circle_support > 0.0)
        .then(|| round_regions(&rbc_labels, &rbc_regions, &found, sw));
    tracing::debug!(
        counted = rbc_regions.len(),
        round = ?round,
        "red cells with a red cell's outline"
    );
    RedCells {
        labels: rbc_labels,
        regions: rbc_regions,
        outline: rbc_outline,
        dropped,
        round,
    }
}

/// How many of `regions` (of the label image `labels`, `width` wide) hold
/// the centre of one of `circles`: red cells whose outline the boundary
/// map shows as a circle of the size used. On a stained thin smear at the
/// right size most do; see [`crate::families::pbs::scale::ROUND_SHARE_MIN`].
fn round_regions(
    labels: &[u32],
    regions: &[segment::Region],
    found: &[circles::Circle],
    width: usize,
) -> usize {
    let mut hit: Vec<u32> = found
        .iter()
        .map(|c| labels[c.y * width + c.x])
        .filter(|&l| l != 0)
        .collect();
    hit.sort_unstable();
    hit.dedup();
    regions
        .iter()
        .filter(|r| hit.binary_search(&r.label).is_ok())
        .count()
}

/// A red cell's region of the watershed (one cell's share of the mask) is
/// about 0.8 d^2 and holds a disc of about d/2: on the fixture and 11 of
/// BCCD's val photos, at every scale sample, the widest disc any region
/// held was 0.40-0.63 d in radius, and on 40 of them no region's box was
/// over 2.94 d^2. A region larger than [`FEATURELESS_AREA`] `* d^2` that
/// also holds a disc of radius over [`FEATURELESS_RADIUS`] `* d` (1.4 d
/// across) is a
/// featureless patch the net calls red cell: a uniformly pink photo gave
/// one of 5.5-6.4 d^2 holding discs of 0.72-0.92 d, counted as one red
/// cell, and its malaria report read "not detected", a negative that
/// nothing was examined for. Both bounds hold a margin for a measured d
/// some 15-20% small; a real clump that large would need no outline
/// across 1.4 d. A thin lattice ([`FEATURELESS_THIN`]) is not counted
/// either.
pub const FEATURELESS_AREA: f32 = 4.0;

/// See [`FEATURELESS_AREA`].
pub const FEATURELESS_RADIUS: f32 = 0.7;

/// A region whose box is over [`FEATURELESS_SPAN`] `* d` on a side and
/// whose widest disc is under this radius `* d` is a thin lattice, not
/// cells: flat pink photos of 640 x 480 and larger gave regions of 1.8-4.6
/// d^2 spread over boxes of 5.5 x 3.9 to 9.9 x 6.9 d, holding no disc over
/// 0.16 d, and one was counted as a red cell. A red cell's region holds a
/// disc of 0.40-0.63 d; a sickle cell, as thin, spans at most about 2 d.
pub const FEATURELESS_THIN: f32 = 0.25;

/// See [`FEATURELESS_THIN`].
pub const FEATURELESS_SPAN: f32 = 3.0;

/// The labels, sorted, of `regions` of `labels` (the red cells' watershed
/// on a `sw` x `sh` map, 0 background) that are featureless patches
/// ([`FEATURELESS_AREA`]) or thin lattices ([`FEATURELESS_THIN`]), and how
/// many of each. A disc's radius is the distance to the nearest pixel of
/// another label, the background or the map's edge; so a region touching
/// the edge, whose cells may be cut in half there, is never a lattice.
fn featureless_labels(
    labels: &[u32],
    regions: &[segment::Region],
    sw: usize,
    sh: usize,
    d: f32,
) -> (Vec<u32>, DroppedRegions) {
    let span = |r: &segment::Region| (r.x1 - r.x0).max(r.y1 - r.y0) as f32;
    let big: Vec<u32> = regions
        .iter()
        .filter(|r| r.area as f32 > FEATURELESS_AREA * d * d || span(r) > FEATURELESS_SPAN * d)
        .map(|r| r.label)
        .collect();
    let mut dropped = DroppedRegions::default();
    if big.is_empty() {
        return (big, dropped);
    }
    // A pixel is inside its region when its four neighbours share its label.
    let inside: Vec<bool> = (0..labels.len())
        .map(|i| {
            let (x, y, l) = (i % sw, i / sw, labels[i]);
            l != 0
                && x > 0
                && y > 0
                && x + 1 < sw
                && y + 1 < sh
                && labels[i - 1] == l
                && labels[i + 1] == l
                && labels[i - sw] == l
                && labels[i + sw] == l
        })
        .collect();
    let depth = segment::distance_transform(&inside, sw, sh);
    let mut widest: std::collections::HashMap<u32, f32> = big.iter().map(|&l| (l, 0.0)).collect();
    for (l, &z) in labels.iter().zip(&depth) {
        if let Some(w) = widest.get_mut(l) {
            *w = w.max(z);
        }
    }
    let (thin, wide) = (FEATURELESS_THIN * d, FEATURELESS_RADIUS * d);
    let mut out = Vec::new();
    for r in regions.iter().filter(|r| widest.contains_key(&r.label)) {
        let w = widest[&r.label];
        tracing::debug!(
            area_d2 = r.area as f32 / (d * d),
            box_d = ?((r.x1 - r.x0) as f32 / d, (r.y1 - r.y0) as f32 / d),
            widest_disc_radius_d = w / d,
            "large red-cell region"
        );
        let at_edge = r.x0 == 0 || r.y0 == 0 || r.x1 == sw || r.y1 == sh;
        if r.area as f32 > FEATURELESS_AREA * d * d && w > wide {
            dropped.patches += 1;
        } else if span(r) > FEATURELESS_SPAN * d && w < thin && !at_edge {
            dropped.lattices += 1;
        } else {
            continue;
        }
        out.push(r.label);
    }
    out.sort_unstable();
    (out, dropped)
}

/// The connected parts of `inner` of at least `rbc_min_area * d^2`, as
/// markers (labels from 1; the rest 0).
fn threshold_markers(inner: &[bool], sw: usize, sh: usize, params: &CountParams) -> Vec<u32> {
    let d2 = params.rbc_diameter_px * params.rbc_diameter_px;
    let (labels, regions) = segment::components(inner, sw, sh);
    let min_marker = (params.rbc_min_area * d2) as usize;
    let keep: Vec<bool> = std::iter::once(false)
        .chain(regions.iter().map(|r| r.area >= min_marker))
        .collect();
    labels
        .iter()
        .map(|&l| if keep[l as usize] { l } else { 0 })
        .collect()
}

/// Markers of red cells at their centres, and the height the watershed
/// floods from them. The boundary map outlines each cell, faintly where
/// cells overlap, so the cell mask less every pixel of the boundary map of
/// at least `rbc_edge_cut` falls apart into the cells' insides, joined
/// only through gaps in faint outlines. Its distance transform peaks at
/// each inside's centre and dips at those gaps: every peak at least
/// `rbc_min_depth * d` deep (an inside at least that far from any outline)
/// and `rbc_min_separation * d` from a higher one marks a cell. A part of
/// the insides with no such peak but at least `rbc_min_area * d^2` (a cell
/// the photo's edge cuts, a small or pale one) is a marker as a whole.
/// The watershed then floods the cell mask over the same distance, so the
/// cells' borders follow the outlines the net drew.
///
/// Returns the markers (labels from 1) and the distance (px).
fn centre_markers(
    body: &[bool],
    edge: &[f32],
    sw: usize,
    sh: usize,
    params: &CountParams,
) -> (Vec<u32>, Vec<f32>) {
    let d = params.rbc_diameter_px;
    let inside: Vec<bool> = body
        .iter()
        .zip(edge.iter())
        .map(|(&b, &e)| b && e < params.rbc_edge_cut)
        .collect();
    let depth = segment::distance_transform(&inside, sw, sh);
    // At least a pixel deep: a depth of 0 would make peaks of the
    // background and of every outline pixel.
    let centres = segment::peaks(
        &depth,
        sw,
        sh,
        (params.rbc_min_depth * d).max(1.0),
        params.rbc_min_separation * d,
    );
    let mut markers = threshold_markers(&inside, sw, sh, params);
    let max = markers.iter().copied().max().unwrap_or(0) as usize;
    let mut has_centre = vec![false; max + 1];
    for &i in &centres {
        has_centre[markers[i] as usize] = true;
    }
    for m in markers.iter_mut() {
        if has_centre[*m as usize] {
            *m = 0;
        }
    }
    for (k, &i) in centres.iter().enumerate() {
        markers[i] = (max + 1 + k) as u32;
    }
    (markers, depth)
}

/// Radii, as fractions of d, of the circles of the red-cell size (the
/// outline; markers too with `rbc_edge_cut` 0): a red cell is d across,
/// and the size measure is good to about 10-20%.
const CIRCLE_RADII: (f32, f32) = (0.4, 0.6);

/// Radius, as a fraction of d, of the marker disc put at a circle's centre:
/// the discs of centres 0.4 d or more apart never touch (nearer ones, with
/// `rbc_min_separation` under 0.4, keep their own labels all the same).
const CENTRE_DISC: f32 = 0.2;

/// Radii, as fractions of d, over which the red cells' common outline is
/// looked for ([`circles::outline_radius`]): wider than [`CIRCLE_RADII`],
/// so that an outline at either end of those still shows as a peak.
const OUTLINE_RADII: (f32, f32) = (0.3, 0.7);

/// At most this many circles, the strongest, give the common outline.
const OUTLINE_CENTRES: usize = 256;

/// Markers of red cells from the circles of the red-cell size found in the
/// boundary map (`found`): a disc around each circle's centre, plus every threshold marker
/// (`markers`, labels from 1) that holds no circle's centre, such as a cell
/// the photo's edge cuts, which shows too little outline to vote. Returns
/// a label image of the same shape, labels from 1.
fn circle_markers(
    markers: &[u32],
    found: &[circles::Circle],
    body: &[bool],
    sw: usize,
    sh: usize,
    params: &CountParams,
) -> Vec<u32> {
    let d = params.rbc_diameter_px;
    let max = markers.iter().copied().max().unwrap_or(0) as usize;
    let mut replaced = vec![false; max + 1];
    for c in found {
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
    fn a_region_is_round_when_it_holds_a_circle_centre() {
        // Three regions in a row of 30 x 10; circles centred in the first
        // (twice), in the third, and on the background.
        let w = 30;
        let mut labels: Vec<u32> = (0..w * 10).map(|i| (i % w / 10) as u32 + 1).collect();
        labels[5 * w + 29] = 0;
        let regions = segment::regions_of(&labels, w);
        let at = |x, y| circles::Circle {
            x,
            y,
            radius: 4.0,
            support: 0.9,
        };
        let found = [at(4, 5), at(6, 5), at(25, 5), at(29, 5)];
        assert_eq!(round_regions(&labels, &regions, &found, w), 2);
        assert_eq!(round_regions(&labels, &regions, &[], w), 0);
        // Only counted regions count.
        let first: Vec<_> = regions.iter().filter(|r| r.label == 1).copied().collect();
        assert_eq!(round_regions(&labels, &first, &found, w), 1);
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
    fn a_featureless_patch_is_no_red_cell() {
        // A patch the net calls red cell 2.4 d across with no outline
        // inside (what a uniformly pink photo gives: trying the API counted
        // one red cell there and the malaria report read "not detected"),
        // and a cell beside it, as large as red cells come (1.4 d).
        let mut maps = blank_maps(1);
        let params = CountParams {
            rbc_diameter_px: 25.0,
            ..Default::default()
        };
        paint(&mut maps[0].rbc, 68.0, 68.0, 30.0, 0.95);
        paint(&mut maps[0].rbc, 20.0, 20.0, 17.5, 0.95);
        let a = count(&maps, 1, 100, 100, 1.0, (100, 100), &params);
        assert_eq!(a.counts.rbc, 1, "{:?}", a.cells);
        assert!(a.cells[0].x < 10 && a.cells[0].width < 40, "{:?}", a.cells);
        assert!(
            a.rbc_labels.iter().enumerate().all(|(i, &l)| {
                let (x, y) = ((i % 100) as f32 - 68.0, (i / 100) as f32 - 68.0);
                l == 0 || x * x + y * y > 30.0 * 30.0
            }),
            "the patch's labels are gone too"
        );
    }

    #[test]
    fn a_thin_lattice_of_red_cell_mask_is_no_red_cell() {
        // Flat pink photos of 640 x 480 and up gave regions spread thin over
        // most of the field (4.1 d^2 in a 5.7 x 4.2 d box, no disc over
        // 0.16 d), and one was counted as a red cell. Label 1: such a
        // lattice, 3 px lines every 20 px; 2: a red cell (d 15); 3: a flat
        // patch; 4: a clump of cells one marker grew over (over 4 d^2, 0.5 d
        // discs).
        let (w, d) = (100usize, 15.0f32);
        let mut labels = vec![0u32; w * w];
        for y in 4..64 {
            for x in 4..64 {
                if (x - 4) % 20 < 3 || (y - 4) % 20 < 3 {
                    labels[y * w + x] = 1;
                }
            }
        }
        let disc = |labels: &mut [u32], (cx, cy): (f32, f32), r: f32, l: u32| {
            for y in 0..w {
                for x in 0..w {
                    if (x as f32 - cx).hypot(y as f32 - cy) <= r {
                        labels[y * w + x] = l;
                    }
                }
            }
        };
        disc(&mut labels, (85.0, 15.0), 7.0, 2);
        disc(&mut labels, (78.0, 78.0), 20.0, 3);
        // 5: a sickle cell, as thin as the lattice, 2 d long: counted.
        for x in 68..98 {
            for y in 32..35 {
                labels[y * w + x] = 5;
            }
        }
        // 6: a lattice of under a cell's area, but spread 3.3 d wide.
        for x in 48..98 {
            labels[52 * w + x] = 6;
            labels[53 * w + x] = 6;
        }
        // 7: as thin and long, but along the map's edge, where cells cut in
        // half look thin: counted.
        for x in 0..60 {
            labels[97 * w + x] = 7;
            labels[98 * w + x] = 7;
        }
        for k in 0..6 {
            disc(&mut labels, (8.0 + 10.0 * k as f32, 85.0), 8.0, 4);
        }
        let regions = segment::regions_of(&labels, w);
        let area = |l| regions.iter().find(|r| r.label == l).unwrap().area as f32 / (d * d);
        assert!(area(1) > FEATURELESS_AREA && area(4) > FEATURELESS_AREA);
        let (out, dropped) = featureless_labels(&labels, &regions, w, w, d);
        assert_eq!(out, [1, 3, 6]);
        assert_eq!(
            dropped,
            DroppedRegions {
                patches: 1,
                lattices: 2
            }
        );
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
            rbc_edge_cut: 0.0,
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
        // The cells' centres (the default) split the same clump, with or
        // without the circles.
        for circles in [0.0, 0.25] {
            let centres = CountParams {
                rbc_edge_cut: 0.05,
                rbc_circle_support: circles,
                ..with
            };
            let a = count(&maps, 1, 100, 100, 1.0, (100, 100), &centres);
            assert_eq!(a.counts.rbc, 4, "circles at {circles}");
        }
    }

    #[test]
    fn cells_centres_split_a_clump_through_gaps_in_faint_outlines() {
        // Four overlapping red cells in a row, their outlines faint (0.12)
        // and drawn only where no other cell lies, so the insides are one
        // part, joined where the cells overlap: no threshold of the boundary
        // map or circle of the markers' support splits them, and only the
        // peaks of the insides' depth do. A pale half-cell cut by the map's
        // edge shows no centre deep enough and is counted all the same, as
        // a part of the insides of its own (a marker whole).
        let mut maps = blank_maps(1);
        let d = 24.0;
        let cells = [(16.0, 50.0), (36.0, 52.0), (56.0, 49.0), (76.0, 51.0)];
        for &(cx, cy) in &cells {
            paint(&mut maps[0].rbc, cx, cy, d / 2.0, 0.95);
        }
        paint(&mut maps[0].rbc, 50.0, 104.0, d / 2.0, 0.95);
        for (i, e) in maps[0].rbc_edge.iter_mut().enumerate() {
            let (x, y) = ((i % TILE_OUT) as f32, (i / TILE_OUT) as f32);
            let under = |&(cx, cy): &(f32, f32)| (x - cx).hypot(y - cy) <= d / 2.0 - 1.0;
            for &(cx, cy) in &cells {
                let on = ((x - cx).hypot(y - cy) - d / 2.0).abs() < 1.0;
                if on && !cells.iter().any(under) {
                    *e = 0.12;
                }
            }
        }
        let params = CountParams {
            rbc_diameter_px: d,
            ..Default::default()
        };
        let a = count(&maps, 1, 100, 100, 1.0, (100, 100), &params);
        assert_eq!(a.counts.rbc, 5, "{:?}", a.rbc_regions);
        for r in &a.rbc_regions {
            let area = r.area as f32 / (d * d);
            assert!((0.15..=1.0).contains(&area), "{r:?}");
        }
        let before = CountParams {
            rbc_edge_cut: 0.0,
            ..params
        };
        let b = count(&maps, 1, 100, 100, 1.0, (100, 100), &before);
        assert!(b.counts.rbc < 5, "{:?}", b.rbc_regions);
        // No peak deep enough: the insides' parts are markers whole, and
        // the clump is one.
        let shallow = CountParams {
            rbc_min_depth: 0.5,
            ..params
        };
        let c = count(&maps, 1, 100, 100, 1.0, (100, 100), &shallow);
        assert_eq!(c.counts.rbc, 2, "{:?}", c.rbc_regions);
    }

    /// Maps of one cell, a disc of `r` px at the centre of a `w` x `w` grid.
    fn disc_maps(w: usize, r: f32) -> StitchedMaps {
        let c = w as f32 / 2.0;
        let disc: Vec<f32> = (0..w * w)
            .map(|i| {
                let (x, y) = ((i % w) as f32 + 0.5, (i / w) as f32 + 0.5);
                ((x - c).hypot(y - c) <= r) as u8 as f32
            })
            .collect();
        StitchedMaps {
            width: w,
            height: w,
            rbc: disc.clone(),
            rbc_edge: vec![0.0; w * w],
            wbc: vec![0.0; w * w],
            platelets: disc,
        }
    }

    #[test]
    fn the_mean_of_maps_at_nearby_scales_lies_on_the_first_grid() {
        // One cell seen at three scales, 20 px in radius on the first grid.
        let maps = [
            disc_maps(100, 20.0),
            disc_maps(97, 19.4),
            disc_maps(103, 20.6),
        ];
        let refs: Vec<&StitchedMaps> = maps.iter().collect();
        let mean = StitchedMaps::mean(&refs, 100, 100);
        assert_eq!(
            (mean.width, mean.height, mean.rbc.len()),
            (100, 100, 10_000)
        );
        // The cell keeps its place and size: its area above one half is
        // within a few per cent of the first map's.
        let area = |m: &[f32]| m.iter().filter(|&&v| v > 0.5).count() as f32;
        let (a, a0) = (area(&mean.rbc), area(&maps[0].rbc));
        assert!((a / a0 - 1.0).abs() < 0.03, "{a} against {a0}");
        assert!(mean.rbc[50 * 100 + 50] > 0.99 && mean.rbc[0] < 0.01);
        assert_eq!(mean.rbc, mean.platelets);
        // One map alone on its own grid is itself.
        let one = StitchedMaps::mean(&refs[..1], 100, 100);
        assert_eq!(one.rbc, maps[0].rbc);
    }

    #[test]
    fn the_outline_of_the_counted_cells_is_measured() {
        // Four cells apart, outlines of radius 0.45 d in the boundary map.
        let mut maps = blank_maps(1);
        let d = 30.0;
        let cells = [(22.0, 22.0), (70.0, 24.0), (24.0, 72.0), (72.0, 74.0)];
        for &(cx, cy) in &cells {
            paint(&mut maps[0].rbc, cx, cy, 0.5 * d, 0.95);
        }
        for (i, e) in maps[0].rbc_edge.iter_mut().enumerate() {
            let (x, y) = ((i % TILE_OUT) as f32, (i / TILE_OUT) as f32);
            for &(cx, cy) in &cells {
                let off = (x - cx).hypot(y - cy) - 0.45 * d;
                *e = e.max(0.6 * (-off * off / 2.0).exp());
            }
        }
        let params = CountParams {
            rbc_diameter_px: d,
            ..Default::default()
        };
        let a = count(&maps, 1, 100, 100, 1.0, (100, 100), &params);
        assert_eq!(a.counts.rbc, 4);
        let r = a.rbc_outline.unwrap();
        assert!((r - 0.45).abs() < 0.01, "{r}");
        let off = CountParams {
            rbc_circle_support: 0.0,
            ..params
        };
        assert_eq!(
            count(&maps, 1, 100, 100, 1.0, (100, 100), &off).rbc_outline,
            None
        );
    }
}
