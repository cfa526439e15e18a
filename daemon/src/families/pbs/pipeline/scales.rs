//! The scales one photo is analysed at (the colour measure's, refined by
//! the red cells' outline, and the scale samples around it whose median
//! red-cell count is kept; the reasons are in [`super`]'s docs), and the
//! sizes and tiles each gives.

use super::{CellError, CountParams, SmearAnalysis};
use crate::imaging::smear;
use crate::model::unet::TILE_OUT;

/// Red-cell diameter assumed when neither the photo nor the config gives
/// one: BCCD's (its red-cell boxes are ~100 px across in 640x480 photos).
pub const ASSUMED_NATIVE_RBC_PX: f32 = 100.0;

/// Smallest and largest resampling factor: a photo is reduced at most 10x
/// and enlarged at most 4x (beyond that, enlarging adds no detail).
pub const MIN_SCALE: f32 = 0.1;
pub const MAX_SCALE: f32 = 4.0;

/// The resampling factor that brings red cells to `params.rbc_diameter_px`.
/// `native_diameter_px`: the red-cell diameter in this image
/// ([`crate::families::pbs::scale::estimate`]); `None` or nonsense: BCCD's.
pub fn scale_for(native_diameter_px: Option<f32>, params: &CountParams) -> f32 {
    let native = match native_diameter_px {
        Some(d) if d.is_finite() && d > 1.0 => d,
        _ => ASSUMED_NATIVE_RBC_PX,
    };
    (params.rbc_diameter_px / native).clamp(MIN_SCALE, MAX_SCALE)
}

/// The shortest side, in px, a photo needs so that [`scaled_size`] at any
/// scale the analysis may pick (down to [`MIN_SCALE`]) keeps 8 px: 75.
pub fn min_analysable_side() -> u32 {
    (7.5 / MIN_SCALE).ceil() as u32
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

/// Tiles [`super::prepare`] cuts from a `w0 x h0` image at `scale`.
pub fn tiles_at(dims: (u32, u32), scale: f32) -> Result<usize, CellError> {
    let (sw, sh) = scaled_size(dims, scale)?;
    let (cols, rows) = smear::tile_grid(sw, sh);
    Ok(cols * rows)
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

/// Largest gap, as a fraction of the scale (`target / outline - 1`), the
/// red cells' outline may ask the colour measure's scale to close
/// ([`refined_scale`]; less the margin, the scale moves by at most +20% or
/// -22%): the full corrections of BCCD train's photos ran from -23% to +14%
/// (5-95%), and an outline further off is more likely something else's
/// (the circles are looked for within 0.4-0.6 d only). A photo beyond it
/// keeps its colour measure: the one step left in the refinement.
pub const MAX_REFINE: f32 = 0.25;

/// The red-cell net's mask diameter ([`super::SmearAnalysis::rbc_mask_diameter`],
/// a fraction of d) of a photo analysed at the nets' scale: the median over
/// BCCD **train**'s first 60 photos at their colour measure (0.786; 5-95%
/// 0.64-0.88), as [`refined_scale`]'s outline target was chosen. It is
/// under 1 as the colour measure's own spectrum peak is under the boxes
/// ([`crate::imaging::rbc_size::BOX_PER_MASK`]): the commonest inscribed
/// disc of touching, deformed cells is smaller than their boxes.
pub const MASK_PER_D: f32 = 0.79;

/// The scale a photo first analysed at `scale` is analysed at again when
/// the red-cell net's mask says its cells are more than `g =
/// params.scale_gross_above` times larger than the nets' size (`q =
/// mask_diameter / MASK_PER_D` over `g`): `scale * g / q`, moved by the
/// excess only, so that the outline can refine it from there
/// ([`refined_scale`]; within 1.3, the default, the outline's gap is within
/// [`MAX_REFINE`], as the outline grows as about the 0.6th power of the
/// scale, once the mask agrees: [`MAX_GROSS_MOVES`]). `None` up to that
/// factor, with no mask diameter, with `g` 0 (off), or when the move is
/// under 1%.
///
/// Why: the colour measure sizes the mask of stained pixels, and a photo
/// of cells with wide pale centres whose rims the threshold leaves open
/// (BCCD val 00352) measures the rims' width: 44 px against boxes of 106.
/// Analysed at 2.4 times the nets' size, each cell was counted two or
/// three times, and the outline's refinement (at most [`MAX_REFINE`])
/// cannot close that. The net's mask fills those cells whole at any of
/// these scales (its size grows as about the 0.9th power of the scale on
/// BCCD train's first 60, 0.72-1.10 for 80% of them), so its size
/// catches the gross error. Moving by the excess only, not to the mask's
/// own size, keeps the scale a continuous function of the mask, and as the
/// mask follows the scale nearly in proportion, copies of one photo at
/// other magnifications land near the same scale.
///
/// Only cells too large are corrected: where cells are small or pale at
/// the nets' scale the net's mask can come out patchy, rims and fragments,
/// and its size then falls by a third or more with a few per cent of
/// scale (BCCD val 00028: 0.43-0.45 d in three copies, over 0.61 in the
/// native photo), which moved copies of one photo apart, where a patchy
/// mask cannot make cells look larger than they are. Tried both ways on
/// BCCD (models/cbc/MODEL_CARD.md, "Sizes grossly off").
pub fn gross_scale(scale: f32, mask_diameter: Option<f32>, params: &CountParams) -> Option<f32> {
    let g = params.scale_gross_above;
    if g <= 1.0 {
        return None;
    }
    let q = mask_diameter.filter(|m| *m > 0.0)? / MASK_PER_D;
    if q <= g {
        return None;
    }
    let s = (scale * g / q).max(MIN_SCALE);
    ((s / scale).ln().abs() > 0.01).then_some(s)
}

/// How many times in a row [`gross_scale`] may move one photo's scale, each
/// move read from the mask of a first look at the scale the last one gave.
/// The move assumes that the mask's size follows the scale in proportion;
/// it follows a little less (the 0.9th power), so after a gross move the
/// mask can still say the cells are too large, and the outline's gap from
/// there can be past [`MAX_REFINE`], where nothing refines it. BCCD val
/// 00352's 1.5x copy, measured 0.78 of the nets' scale by colour: the mask
/// (1.74 d) moved it to 0.459, where the mask still read 1.10 d (over 1.3
/// times [`MASK_PER_D`]) and the outline was 25.2% off, so the copy was
/// analysed a third too large and counted 21 red cells against the native
/// photo's 17. A second move closes that; more than two gives the mask's
/// own noise a say.
pub const MAX_GROSS_MOVES: usize = 2;

/// Whether `params` refine a measured scale by the red cells' outline: it
/// needs a target and the circles the outline is measured around.
pub fn refines(params: &CountParams) -> bool {
    params.rbc_outline_radius > 0.0 && params.rbc_circle_support > 0.0
}

/// The scales a photo at `scale` is looked at for its red cells' outline:
/// `scale` first, then `scale * (1 + params.outline_look_step)^(+-k)` for
/// k = 1 .. (`params.outline_looks` - 1) / 2, larger first. Only `scale`
/// when one of the others would fall outside [`MIN_SCALE`], [`MAX_SCALE`]
/// (the looks must straddle `scale` evenly for their mean to stand for
/// it: [`mean_outline`]).
pub fn outline_look_scales(scale: f32, params: &CountParams) -> Vec<f32> {
    let mut out = vec![scale];
    let m = 1.0 + params.outline_look_step;
    for k in 1..=params.outline_looks.max(1) as i32 / 2 {
        out.extend([scale * m.powi(k), scale * m.powi(-k)]);
    }
    if m <= 1.0 || out.iter().any(|s| !(MIN_SCALE..=MAX_SCALE).contains(s)) {
        out.truncate(1);
    }
    out
}

/// The red cells' outline radius over several looks
/// ([`outline_look_scales`]; each a fraction of d, `None` where a look
/// showed none): the geometric mean of those that show one, less the
/// largest and the smallest when four or more do; `None` unless more than
/// half of the looks show one.
///
/// Why a majority: in a sparse field (BCCD train 00091, 6 cells in the
/// colour mask) one look of three can show an outline where the others and
/// most of the photo's rescaled copies show none, and that one look moved
/// the native photo's scale by 6% and left its copies where they were.
///
/// Why the mean of the radii as measured, not each brought back to the
/// middle scale first: the outline grows as about the 0.6th power of the
/// scale, not in proportion (see [`refined_scale`]), and over looks that
/// straddle the middle scale evenly in `ln` the mean in `ln` stands for
/// the middle whatever the power. Why a mean, not the median: one look's
/// outline scatters by 5-15% about its trend, and a median keeps one
/// look's noise. Why the extremes dropped: now and then one look reads a
/// second, larger ring (BCCD val 00030: one look of each rescaled copy at
/// 0.47-0.50 d where the others read 0.41-0.43), which moved a mean of
/// three by 5-7%; of five, the middle three hold (models/cbc/MODEL_CARD.md,
/// "Five looks, the extremes dropped").
pub fn mean_outline(outlines: &[Option<f32>]) -> Option<f32> {
    let mut ln: Vec<f32> = outlines.iter().flatten().map(|r| r.ln()).collect();
    if 2 * ln.len() <= outlines.len() {
        return None;
    }
    if ln.len() >= 4 {
        ln.sort_by(f32::total_cmp);
        ln.pop();
        ln.remove(0);
    }
    Some((ln.iter().sum::<f32>() / ln.len() as f32).exp())
}

/// The scale the red cells' outline, `outline` (a fraction of d) at
/// `scale`, asks for: the correction that would bring it to
/// `params.rbc_outline_radius`, less `params.scale_refine_above`, both in
/// `ln` of the scale (a dead zone, not a step). `None` when the gap is
/// within that margin, more than [`MAX_REFINE`], or the refined scale
/// would fall outside [`MIN_SCALE`], [`MAX_SCALE`] (and with the
/// refinement off or no outline).
///
/// Why a dead zone: with a step (the full correction beyond the margin,
/// none within, until 2026-12-04) a photo whose outline was 3.4% off kept
/// its scale while a rescaled copy of it, its outline 7.7% off, moved by
/// 8%, and the two counted 21 and 26 red cells (BCCD train 00001; at a
/// scale 4% off since, they still count 25-26). Within [`MAX_REFINE`] the
/// scale is a continuous function of the outline that moves no faster
/// than it, so a copy's outline a few per cent off the native photo's
/// moves its scale by no more than that. The outline grows with the scale
/// less than in proportion (the fixture: +3.3% for +5.7%), so one
/// refinement closes part of a gap; what is left is at least the margin.
pub fn refined_scale(scale: f32, outline: Option<f32>, params: &CountParams) -> Option<f32> {
    if params.rbc_outline_radius <= 0.0 {
        return None;
    }
    let f = params.rbc_outline_radius / outline.filter(|r| *r > 0.0)?;
    if (f - 1.0).abs() > MAX_REFINE {
        return None;
    }
    let gap = f.ln();
    let beyond = gap.abs() - params.scale_refine_above;
    let refined = scale * beyond.copysign(gap).exp();
    (beyond > 0.0 && (MIN_SCALE..=MAX_SCALE).contains(&refined)).then_some(refined)
}

/// Tiles, across and down, of the probe a large photo's outline is
/// measured on ([`probe_rect`]): 300x200 px at the nets' scale, about 24
/// red cells' worth, nearly as many as a whole 640x480 BCCD photo holds.
pub const PROBE_TILES: (usize, usize) = (3, 2);

/// A photo that needs more tiles than this at its measured scale has its
/// outline measured on a probe instead of a whole first analysis. Up to
/// here a whole first analysis costs at most 14 tiles more than a probe
/// and sees every cell: with 12, the BCCD val photos of 16 tiles were
/// probed, and their outline, from part of the photo, moved their refined
/// scale and with it their counts (models/cbc/MODEL_CARD.md).
pub const PROBE_ABOVE_TILES: usize = 20;

/// The centre part of a photo of `dims` whose outline stands for the
/// whole one's at `scale`, as `(x, y, width, height)` in the photo's
/// pixels: [`PROBE_TILES`] at the nets' scale (turned to the photo's
/// orientation). `None` when the whole photo needs at most
/// [`PROBE_ABOVE_TILES`] tiles: then its first analysis is whole, and is
/// kept when the scale is not refined. A large photo's whole first
/// analysis would be thrown away whenever the scale is (70% of BCCD's
/// photos), nearly doubling its cost; a probe costs 6 tiles.
pub fn probe_rect(dims: (u32, u32), scale: f32) -> Option<(u32, u32, u32, u32)> {
    if tiles_at(dims, scale).ok()? <= PROBE_ABOVE_TILES {
        return None;
    }
    let (long, short) = (
        (PROBE_TILES.0 * TILE_OUT) as f32,
        (PROBE_TILES.1 * TILE_OUT) as f32,
    );
    let (pw, ph) = if dims.0 >= dims.1 {
        (long, short)
    } else {
        (short, long)
    };
    // Whole photo pixels whose scaled size stays within the probe's tiles.
    let w = ((pw / scale).floor() as u32).min(dims.0);
    let h = ((ph / scale).floor() as u32).min(dims.1);
    Some(((dims.0 - w) / 2, (dims.1 - h) / 2, w, h))
}

/// At most how many tiles a photo of `dims` at `scale` is run through over
/// all its analyses: the first (or the probe, [`probe_rect`]) and the
/// outline's other looks ([`outline_look_scales`]), a refined
/// one when `refine` (at most [`MAX_REFINE`] larger) and the other scale
/// samples around the larger of them. It is the progress total known
/// before the first analysis, which decides the rest. Two cases run past
/// it, and their progress total then grows: a photo whose colour measure
/// the red-cell net's mask corrects ([`gross_scale`]: none of BCCD train's
/// first 60), and a large photo whose probe shows no outline (its whole
/// first analysis is kept when the scale stands, as it would have been).
/// Errors: [`CellError::TooSmall`] for `scale`.
pub fn tiles_bound(
    dims: (u32, u32),
    scale: f32,
    refine: bool,
    params: &CountParams,
) -> Result<usize, CellError> {
    let plan = sample_plan(dims, scale, params)?;
    let unrefined: usize = plan.iter().map(|&(_, n)| n).sum();
    if !refine || !refines(params) {
        return Ok(unrefined);
    }
    let top = (scale * (1.0 + MAX_REFINE)).min(MAX_SCALE);
    let sampled = params.scale_samples > 1
        && params.scale_spread > 0.0
        && params.scale_samples_below_rbc > 0
        && params.scale_samples_max_tiles > 0;
    let others = if sampled {
        let widest = (top * (1.0 + params.scale_spread)).min(MAX_SCALE);
        (params.scale_samples as usize - 1) * tiles_at(dims, widest)?
    } else {
        0
    };
    // A first analysis at a refined scale, with its samples.
    let refined = tiles_at(dims, top)? + others;
    let probe = probe_rect(dims, scale);
    let mut looks = 0;
    for &s in &outline_look_scales(scale, params)[1..] {
        looks += match look_rect(dims, s, probe.is_some()) {
            Some((_, _, w, h)) => tiles_at((w, h), s)?,
            None => tiles_at(dims, s)?,
        };
    }
    match probe {
        // The probe and the other looks, then the analyses at the measured
        // or a refined scale.
        Some((_, _, w, h)) => Ok(tiles_at((w, h), scale)? + looks + unrefined.max(refined)),
        // The whole first analysis and the other looks, then its samples or
        // the refined ones.
        None => Ok(looks + unrefined.max(plan[0].1 + refined)),
    }
}

/// The part of a photo of `dims` that a look at `scale` after the first
/// ([`outline_look_scales`]) sees: its probe ([`probe_rect`]) when the
/// first look was `probed`, else (or when the photo needs no probe at
/// `scale`) the whole photo (`None`).
pub fn look_rect(dims: (u32, u32), scale: f32, probed: bool) -> Option<(u32, u32, u32, u32)> {
    probed.then(|| probe_rect(dims, scale)).flatten()
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

/// The analysis, of one per scale sample, whose red-cell count is the
/// median ([`median_index`]); its `tiles` become `tiles`, those run over
/// all analyses.
pub(super) fn keep_median(mut samples: Vec<SmearAnalysis>, tiles: usize) -> SmearAnalysis {
    let rbc: Vec<usize> = samples.iter().map(|a| a.counts.rbc).collect();
    let mut kept = samples.swap_remove(median_index(&rbc));
    kept.tiles = tiles;
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_samples_straddle_the_measured_scale_and_start_with_it() {
        let mut p = CountParams {
            scale_samples: 3,
            scale_spread: 0.02,
            ..CountParams::default()
        };
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
        // 7.6 -> 8 px at the scale, 7.37 -> 7 at x0.97: no samples, the
        // first still runs.
        p = CountParams::default();
        assert_eq!(sample_plan((38, 38), 0.2, &p).unwrap(), vec![(0.2, 1)]);
        assert!(matches!(
            sample_plan((8, 8), 0.5, &p),
            Err(CellError::TooSmall(8, 8))
        ));
        assert!(wants_more_samples(39, &p) && !wants_more_samples(40, &p));
    }

    #[test]
    fn the_outline_is_looked_at_evenly_around_the_scale_and_averaged_in_ln() {
        let p = CountParams::default();
        let looks = outline_look_scales(0.5, &p);
        assert_eq!(looks.len(), p.outline_looks as usize);
        assert_eq!(looks[0], 0.5);
        // Each pair straddles the scale evenly in ln, larger first.
        for pair in looks[1..].chunks(2) {
            assert!(pair[0] > 0.5 && pair[1] < 0.5, "{looks:?}");
            assert!((pair[0] * pair[1] / 0.25 - 1.0).abs() < 1e-5, "{looks:?}");
        }
        let step = (looks[1] / 0.5 - 1.0 - p.outline_look_step).abs();
        assert!(step < 1e-5, "{looks:?}");
        let five = CountParams {
            outline_looks: 5,
            ..p
        };
        let l5 = outline_look_scales(1.0, &five);
        assert_eq!(l5.len(), 5);
        assert!((l5[3] - (1.0 + p.outline_look_step).powi(2)).abs() < 1e-5);
        let one = CountParams {
            outline_looks: 1,
            ..p
        };
        assert_eq!(outline_look_scales(0.5, &one), vec![0.5]);
        // A look past the scale's limits would make them uneven: one look.
        assert_eq!(outline_look_scales(MAX_SCALE, &p), vec![MAX_SCALE]);
        assert_eq!(outline_look_scales(MIN_SCALE, &p), vec![MIN_SCALE]);

        // The geometric mean of those that show an outline, when most do.
        let r = mean_outline(&[Some(0.4), Some(0.5), Some(0.45)]).unwrap();
        assert!((r - (0.4f32 * 0.5 * 0.45).cbrt()).abs() < 1e-5, "{r}");
        let two = mean_outline(&[None, Some(0.4), Some(0.5)]).unwrap();
        assert!((two - 0.2f32.sqrt()).abs() < 1e-5, "{two}");
        assert_eq!(mean_outline(&[Some(0.42)]), Some(0.42));
        assert_eq!(mean_outline(&[None, Some(0.42), None]), None);
        assert_eq!(
            mean_outline(&[Some(0.4), Some(0.42), None, None, None]),
            None
        );
        // Three of five: a mean of three, nothing dropped (that would be a median).
        let three = mean_outline(&[Some(0.4), Some(0.42), None, Some(0.41), None]).unwrap();
        assert!(
            (three - (0.4f32 * 0.42 * 0.41).cbrt()).abs() < 1e-5,
            "{three}"
        );
        // Of four or more, one look's second ring (or a missed ring) is dropped.
        let five = [Some(0.42), Some(0.5), Some(0.41), Some(0.43), Some(0.3)];
        let r = mean_outline(&five).unwrap();
        assert!((r - (0.42f32 * 0.41 * 0.43).cbrt()).abs() < 1e-5, "{r}");
        let four = mean_outline(&[Some(0.42), None, Some(0.5), Some(0.41), Some(0.43)]).unwrap();
        assert!((four - (0.42f32 * 0.43).sqrt()).abs() < 1e-5, "{four}");
        assert_eq!(mean_outline(&[None]), None);
        assert_eq!(mean_outline(&[]), None);
    }

    #[test]
    fn the_outline_refines_the_scale_by_its_gap_less_the_margin_within_reach() {
        let p = CountParams::default();
        let r = p.rbc_outline_radius;
        let a = p.scale_refine_above;
        // Cells 10% small in the nets' view: enlarge by 10% less the margin.
        let s = refined_scale(0.5, Some(r / 1.1), &p).unwrap();
        let want = 0.5 * (1.1f32.ln() - a).exp();
        assert!((s - want).abs() < 1e-5, "{s} {want}");
        let s = refined_scale(0.5, Some(r / 0.9), &p).unwrap();
        let want = 0.5 * (0.9f32.ln() + a).exp();
        assert!((s - want).abs() < 1e-5, "{s} {want}");
        // Continuous at the margin: just past it, the scale barely moves.
        let s = refined_scale(0.5, Some(r / (a + 0.002).exp()), &p).unwrap();
        assert!((s / 0.5 - 1.0).abs() < 0.0025, "{s}");
        // Within the margin, beyond reach, no outline, off, or out of range.
        assert_eq!(refined_scale(0.5, Some(r * 1.03), &p), None);
        assert_eq!(refined_scale(0.5, Some(r / (a - 0.002).exp()), &p), None);
        assert_eq!(refined_scale(0.5, Some(r / 1.3), &p), None);
        assert_eq!(refined_scale(0.5, None, &p), None);
        assert_eq!(refined_scale(0.5, Some(0.0), &p), None);
        let off = CountParams {
            rbc_outline_radius: 0.0,
            ..p
        };
        assert_eq!(refined_scale(0.5, Some(r / 1.1), &off), None);
        assert_eq!(refined_scale(MAX_SCALE, Some(r / 1.1), &p), None);
    }

    #[test]
    fn the_nets_mask_moves_a_grossly_large_scale_down_by_its_excess_only() {
        let p = CountParams::default();
        let g = p.scale_gross_above;
        let m = |q: f32| Some(q * MASK_PER_D);
        // Up to the factor, cells too small however far, or no mask: the
        // colour measure stands.
        for q in [1.0, 1.25, 0.8, 0.5, 0.2, g - 0.01] {
            assert_eq!(gross_scale(0.5, m(q), &p), None, "{q}");
        }
        assert_eq!(gross_scale(0.5, None, &p), None);
        assert_eq!(gross_scale(0.5, Some(0.0), &p), None);
        // Cells twice too large: down by 2 / g.
        let down = gross_scale(0.5, m(2.0), &p).unwrap();
        assert!((down - 0.5 * g / 2.0).abs() < 1e-6, "{down}");
        // Continuous across the limit: no step, only moves of at least 1%.
        assert_eq!(gross_scale(0.5, m(g * 1.005), &p), None);
        let just = gross_scale(0.5, m(g * 1.02), &p).unwrap();
        assert!((just / 0.5 - 1.0 / 1.02).abs() < 1e-4, "{just}");
        // Copies of one photo: the mask grows with the scale, so each lands
        // on the same scale per unit of its magnification.
        let (a, b) = (
            gross_scale(0.6, m(2.0), &p).unwrap(),
            gross_scale(1.2, m(4.0), &p).unwrap(),
        );
        assert!((b / a - 1.0).abs() < 1e-5, "{a} {b}");
        // Never under the scale's limit; off with 0.
        assert_eq!(gross_scale(MIN_SCALE * 1.1, m(10.0), &p), Some(MIN_SCALE));
        let off = CountParams {
            scale_gross_above: 0.0,
            ..p
        };
        assert_eq!(gross_scale(0.5, m(3.0), &off), None);
    }

    #[test]
    fn the_tiles_bound_covers_a_refined_analysis_and_its_samples() {
        let p = CountParams::default();
        let dims = (640, 480);
        let plan: usize = sample_plan(dims, 0.5, &p)
            .unwrap()
            .iter()
            .map(|x| x.1)
            .sum();
        assert_eq!(tiles_bound(dims, 0.5, false, &p).unwrap(), plan);
        let bound = tiles_bound(dims, 0.5, true, &p).unwrap();
        // Every refined scale within reach, with its samples, fits.
        for k in 0..=50 {
            let s = 0.5 * (1.0 - MAX_REFINE + 2.0 * MAX_REFINE * k as f32 / 50.0);
            let refined: usize = sample_plan(dims, s, &p).unwrap().iter().map(|x| x.1).sum();
            assert!(12 + refined <= bound, "{s}: {refined} + 12 > {bound}");
        }
        // The outline's other looks, whole as the first.
        let one_look = CountParams {
            outline_looks: 1,
            ..p
        };
        let looks: usize = outline_look_scales(0.5, &p)[1..]
            .iter()
            .map(|&s| tiles_at(dims, s).unwrap())
            .sum();
        assert!(looks >= 2 * 12, "{looks}");
        assert_eq!(
            bound,
            tiles_bound(dims, 0.5, true, &one_look).unwrap() + looks
        );
        let off = CountParams {
            rbc_outline_radius: 0.0,
            ..p
        };
        assert_eq!(tiles_bound(dims, 0.5, true, &off).unwrap(), plan);
        // Without circles there is no outline to refine by.
        let no_circles = CountParams {
            rbc_circle_support: 0.0,
            ..p
        };
        assert!(refines(&p) && !refines(&off) && !refines(&no_circles));
        assert_eq!(tiles_bound(dims, 0.5, true, &no_circles).unwrap(), plan);
        // A large photo: a probe of 6 tiles, then a full analysis within
        // reach with its samples (here none: over the samples' tile limit).
        let big = (1226, 652);
        let (_, _, w, h) = probe_rect(big, 0.48).unwrap();
        let probe = tiles_at((w, h), 0.48).unwrap();
        let bound = tiles_bound(big, 0.48, true, &p).unwrap();
        for k in 0..=50 {
            let s = 0.48 * (1.0 - MAX_REFINE + 2.0 * MAX_REFINE * k as f32 / 50.0);
            let refined: usize = sample_plan(big, s, &p).unwrap().iter().map(|x| x.1).sum();
            assert!(
                probe + refined <= bound,
                "{s}: {probe} + {refined} > {bound}"
            );
        }
        // Each other look of a probed photo is of its own scale's probe.
        let probes: usize = outline_look_scales(0.48, &p)[1..]
            .iter()
            .map(|&s| {
                let (_, _, w, h) = look_rect(big, s, true).unwrap();
                tiles_at((w, h), s).unwrap()
            })
            .sum();
        assert_eq!(probes, 2 * PROBE_TILES.0 * PROBE_TILES.1);
        let one_look = CountParams {
            outline_looks: 1,
            ..p
        };
        assert_eq!(
            bound,
            tiles_bound(big, 0.48, true, &one_look).unwrap() + probes
        );
        assert_eq!(look_rect(big, 0.48, false), None);
    }

    #[test]
    fn a_large_photo_is_probed_at_its_centre_in_six_tiles() {
        // 640x480 at 0.5: 12 tiles, at 0.7: 20, no probe; at 0.8, 24: a probe.
        assert_eq!(probe_rect((640, 480), 0.5), None);
        assert_eq!(probe_rect((640, 480), 0.7), None);
        let (x, y, w, h) = probe_rect((640, 480), 0.8).unwrap();
        assert_eq!((w, h), (375, 250));
        assert_eq!((x, y), ((640 - 375) / 2, (480 - 250) / 2));
        assert_eq!(tiles_at((w, h), 0.8).unwrap(), 6);
        // Portrait photos get a portrait probe.
        let (_, _, w, h) = probe_rect((652, 1226), 0.48).unwrap();
        assert!(h > w, "{w}x{h}");
        assert_eq!(tiles_at((w, h), 0.48).unwrap(), 6);
        // Never larger than the photo.
        let (x, y, w, h) = probe_rect((5000, 150), 0.5).unwrap();
        assert_eq!((x, y, h), ((5000 - 600) / 2, 0, 150));
        assert_eq!(w, 600);
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
}
