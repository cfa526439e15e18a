//! The red-cell diameter of a stained thin blood smear, measured from the
//! photo itself, so the cell counter can bring any magnification to the
//! scale its nets were trained at.
//!
//! Method: granulometry (Matheron 1975; Serra 1982, ch. 10), the classical
//! size measure of mathematical morphology, which needs no separated cells,
//! so crowded smears where red cells touch and overlap measure too:
//!
//! 1. a red-cell mask: the green channel (where haemoglobin and eosin
//!    absorb most, so Giemsa/Wright-stained cells stand out from the pale
//!    background) below Otsu's threshold (Otsu 1979; taken again without
//!    the purple pixels where they are most of those below it, see
//!    [`PURPLE_SHARE_MAX`]); holes filled, so a
//!    cell's central pallor counts as cell; purple pixels (nuclei,
//!    white-cell cytoplasm, platelets: bluer than red relative to the
//!    background) removed ([`cell_mask`]);
//! 2. its granulometry: the area left by openings with discs of growing
//!    radius `r` (an opening keeps the union of all discs of radius `r`
//!    that fit in the mask, so a cell in a clump keeps its own size while
//!    its disc fits), computed exactly with two Euclidean distance
//!    transforms per radius ([`granulometry`]);
//! 3. the pattern spectrum, the area lost per step of `ln r`, peaks at the
//!    radius of the commonest object by area: the red cells, which cover
//!    most of a smear (purple objects are gone, debris is small). The
//!    spectrum is smoothed by a Gaussian of [`SPECTRUM_SIGMA`] in `ln r`,
//!    so the close peaks of a crowded field's clumps count as one. The peak
//!    is found on the photo resampled to at most [`COARSE_PIXELS`] over all
//!    radii, then refined at 4% steps around it on the photo resampled so
//!    that cells are [`FINE_RADIUS_PX`] in radius, each copy with its own
//!    mask, and on four more copies a little larger and smaller
//!    ([`FINE_RESAMPLINGS`]), whose peaks are averaged in `ln r`; the
//!    diameter is twice that radius times [`BOX_PER_MASK`], which
//!    expresses it as BCCD's annotators drew boxes (the size the nets were
//!    trained at).
//!
//! A photo taken through the eyepiece (a round field in a dark surround) is
//! measured inside its field only: the surround ([`field::surround`]) takes
//! no part in the threshold or the background's colour, the field's
//! darkening towards its rim is divided out first ([`field::flatten`]), and
//! the openings may reach into the surround as past the photo's edge, so a
//! cell the field's edge cuts keeps its size. Until 2026-12-08 the
//! threshold split the surround from the field: of 40 such views of 8
//! BCCD photos, 20 fell back to the configured size and 17 of the others
//! measured over 10% off; now 35 are within 10% and none falls back
//! (`models/cbc/MODEL_CARD.md`, "Photos through the eyepiece").
//!
//! Every step follows a resampling of the photo (a histogram threshold,
//! colour ratios, Euclidean distances, radii on a geometric scale), and
//! both passes work on copies brought to a fixed size (the fine one to a
//! fixed cell size), so the measure scales with the magnification; until
//! 2026-12-01 the mask was made at the photo's own resolution and binned
//! by whole pixels, which let the same field's estimate move by 5-19%
//! between magnifications. `tests/pbs_scale.rs` checks that
//! on rescaled copies of a real smear, and the `bccd_scale` example
//! measures it against BCCD's boxes.

use image::RgbImage;
use rayon::prelude::*;

use super::{field, segment};

pub use super::rbc_mask::{
    cell_mask, cell_mask_in, fill_holes, otsu, purple_pixels, PURPLE_MARGIN, PURPLE_SHARE_MAX,
};

/// Sizes within this factor of the peak radius count as the peak's cells.
pub const BAND: (f32, f32) = (0.8, 1.25);

/// Width (standard deviation, in `ln r`) of the Gaussian the pattern
/// spectrum is smoothed with before its peak is taken. A crowded field's
/// Otsu mask is one merged blob whose spectrum has several peaks 1.2-1.3x
/// apart (`ln` 0.18-0.26), and which of them is highest flips with the
/// resampling; a Gaussian this wide merges them into one whose place moves
/// little when their heights swap. Until 2026-12-02 a three-tap filter
/// (about 0.03 in `ln r` in the fine pass) kept them apart. On BCCD train's
/// 205 photos rescaled by 0.5-2x, copies measured within 10% of the native
/// measure times the factor went from 82-87% to 98-100%
/// (`bccd_scale --size-consistency`); the sweep it was chosen by, on the
/// first 100 photos, and what it costs against the boxes are in
/// `models/cbc/MODEL_CARD.md` ("Crowded fields").
pub const SPECTRUM_SIGMA: f32 = 0.25;

/// Fewest red cells' worth of area at the peak the estimate needs. It was
/// 5 until 2026-12-01: BCCD fields (5-16 counted cells) then fell back in
/// 18 of train's 205 photos, and a rescaled copy that falls back is
/// analysed at a size off by its factor. At 3, 9 fall back; on train the
/// estimate agrees with the boxes as before (median 1.000 against 0.998 of
/// the isolated boxes), white cells are exact as often on train and val,
/// and platelet MAE goes from 0.64 to 0.66 on both. Since the spectrum is
/// smoothed by [`SPECTRUM_SIGMA`], none of train's or val's native photos
/// falls back. Part of that is the smoothing's smaller peak radius: the
/// same area then counts about 12% more cells' worth (`area / (pi r^2)`),
/// so the threshold is in effect a little looser than before.
pub const MIN_CELLS: usize = 3;

/// BCCD's box side of an isolated red cell over this measure's raw
/// diameter (twice the spectrum's peak radius): the median of the ratio
/// over the 42 photos of BCCD's **train** split that have 3 or more
/// isolated red-cell boxes (`bccd_scale` example). The measure falls short
/// of the boxes because the Otsu mask sits inside a cell's drawn outline
/// and the peak is the size of the commonest inscribed disc, which a
/// deformed or crowded cell is wider than. Refitted from 1.22 to 1.29 by
/// this rule when the spectrum's smoothing widened ([`SPECTRUM_SIGMA`]):
/// the smoothed peak sits about 5% lower, probably because a Gaussian
/// this wide draws it toward the long tail of small sizes (fragments,
/// the narrow necks of clumps) that a smear's spectrum has.
pub const BOX_PER_MASK: f32 = 1.29;

/// What the photo gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RbcSize {
    /// Red-cell diameter in the photo's pixels; `None` when the photo
    /// holds under [`MIN_CELLS`] red cells' worth of area at one size.
    pub diameter_px: Option<f32>,
    /// Red cells' worth of mask area (area / (pi r^2)) within [`BAND`] of
    /// the measured size: about the number of cells measured.
    pub cells: usize,
}

/// The granulometry of `mask`: for each radius, the area left by an
/// opening with a disc of that radius (the union of all discs of that
/// radius that fit inside the mask). Discs may reach past the photo's
/// edge, and into the `unseen` pixels where given (outside a microscope's
/// field of view, [`field::surround`]), so a cell either cuts keeps its
/// own size while its centre is in view; only the mask's pixels are
/// counted.
pub fn granulometry(
    mask: &[bool],
    unseen: Option<&[bool]>,
    width: usize,
    height: usize,
    radii: &[f32],
) -> Vec<usize> {
    let background: Vec<bool> = match unseen {
        Some(u) => mask.iter().zip(u).map(|(&m, &u)| !m && !u).collect(),
        None => mask.iter().map(|&m| !m).collect(),
    };
    let inside = segment::squared_distance_to(&background, width, height);
    let mut areas = Vec::with_capacity(radii.len());
    for &r in radii {
        let r2 = r * r;
        // Far from any background, unseen pixels would hold discs of
        // every size: centres lie in the mask.
        let centres: Vec<bool> = inside
            .iter()
            .zip(mask)
            .map(|(&d, &m)| m && d >= r2)
            .collect();
        if !centres.contains(&true) {
            areas.resize(radii.len(), 0);
            break;
        }
        let reach = segment::squared_distance_to(&centres, width, height);
        areas.push(
            reach
                .iter()
                .zip(mask)
                .filter(|&(&d, &m)| m && d < r2)
                .count(),
        );
    }
    areas
}

/// Radii from `lo` to `hi` in steps of `q` (geometric).
fn radii(lo: f32, hi: f32, q: f32) -> Vec<f32> {
    let mut v = vec![lo];
    while *v.last().expect("non-empty") * q <= hi {
        let next = v.last().expect("non-empty") * q;
        v.push(next);
    }
    v
}

/// The radius at the peak of the pattern spectrum (area lost per step of
/// `ln r`, smoothed by a Gaussian of [`SPECTRUM_SIGMA`] in `ln r`, the peak
/// placed by a parabola through it and its neighbours), and the area whose
/// size is within `BAND` of it. `None` when the spectrum is empty, or its
/// smoothed peak lies at its ends or outside `accept` (radii, same units).
///
/// The smoothing is a sum over the spectrum's own bins, so near the ends of
/// `radii` it sees only half a kernel, and a spectrum still rising at an
/// end would peak inside. At the upper end callers pass `radii` reaching
/// 2 sigma beyond `accept`, so a peak past it is refused, not pulled in;
/// at the lower end a spectrum losing most area at the first step is
/// refused. (Padding the lower end as well takes in the area of debris
/// and fragments under 0.6 of the guess, which pulls the peak: on BCCD
/// train's 0.5x copies, measures within 5% of native x factor fell from
/// 95% to 86%.)
fn spectrum_peak(radii: &[f32], areas: &[usize], accept: (f32, f32)) -> Option<(f32, usize)> {
    let n = radii.len();
    if n < 4 {
        return None;
    }
    // An opening's area falls with the radius; pixel rounding can break
    // that by a few pixels, which the running minimum irons out.
    let areas: Vec<usize> = areas
        .iter()
        .scan(usize::MAX, |m, &a| {
            *m = (*m).min(a);
            Some(*m)
        })
        .collect();
    let lost: Vec<f32> = (0..n - 1)
        .map(|k| (areas[k] - areas[k + 1]) as f32)
        .collect();
    // Bin k holds sizes in [r_k, r_k+1): its centre in ln r.
    let centres: Vec<f32> = (0..n - 1)
        .map(|i| 0.5 * (radii[i].ln() + radii[i + 1].ln()))
        .collect();
    let smooth: Vec<f32> = centres
        .iter()
        .map(|ck| {
            lost.iter()
                .zip(&centres)
                .map(|(l, cj)| {
                    let z = (cj - ck) / SPECTRUM_SIGMA;
                    l * (-0.5 * z * z).exp()
                })
                .sum()
        })
        .collect();
    // Sizes below the first radius are not measured, so a spectrum whose
    // most area is lost at the first step may peak below it: refused, as
    // the smoothing there sees half a kernel and would place it inside.
    let raw_top = (0..lost.len()).max_by(|&a, &b| lost[a].total_cmp(&lost[b]))?;
    if raw_top == 0 {
        return None;
    }
    let k = (0..smooth.len()).max_by(|&a, &b| smooth[a].total_cmp(&smooth[b]))?;
    if smooth[k] <= 0.0 || k == 0 || k + 1 >= smooth.len() {
        return None;
    }
    let shift = super::peak_offset(smooth[k - 1], smooth[k], smooth[k + 1]);
    let step = centres[k + 1] - centres[k];
    let r = (centres[k] + shift * step).exp();
    if r < accept.0 || r > accept.1 {
        return None;
    }
    let area_at = |x: f32| {
        // Area left by an opening of radius x, read off the nearest radius.
        let i = radii.partition_point(|&ri| ri < x).min(n - 1);
        areas[i]
    };
    let band = area_at(r * BAND.0).saturating_sub(area_at(r * BAND.1));
    Some((r, band))
}

/// The fine pass's radii around the coarse guess `r0` (pixels of the fine
/// copy), at 4% steps, and the radii it accepts a peak within: 0.6-1.7
/// `r0`. Sizes 2 sigma past 1.7 `r0` are measured as well, so the
/// smoothing near that end sees whole kernels ([`spectrum_peak`]).
fn fine_radii(r0: f32) -> (Vec<f32>, (f32, f32)) {
    let pad = (2.0 * SPECTRUM_SIGMA).exp();
    (radii(r0 * 0.6, r0 * 1.7 * pad, 1.04), (r0 * 0.6, r0 * 1.7))
}

/// Pixels a photo is measured in at most, for the first, coarse pass.
pub const COARSE_PIXELS: usize = 320 * 240;

/// Radius, in pixels, the fine pass wants the cells to have.
pub const FINE_RADIUS_PX: f32 = 24.0;

/// The fine pass's resamplings, as multiples of the one that makes the
/// coarse size [`FINE_RADIUS_PX`]: the first also gives the cell count and
/// must find a peak; the estimate is the geometric mean of every peak
/// found. One resampling's peak moves by a few per cent with where the
/// cells' edges fall on the pixel grid and with the Otsu level of that
/// copy, so a photo and a rescaled copy of it, resampled to nearly the
/// same size by different kernels, were measured apart; the mean of five
/// averages that out. On BCCD's rescaled copies (0.5-2x, CatmullRom;
/// `bccd_scale --size-consistency`), copies measured more than 4% from
/// the native photo's measure times the factor went from 50 of 819 to 21
/// on train and from 34 of 348 to 13 on val, while the measure against
/// the boxes stayed as it was (train's uncut-box ratio median 0.942 to
/// 0.945, IQR 0.84-1.04 both). The median of the five gave 35 on train,
/// steps of 6 and 12% 25 (`models/cbc/MODEL_CARD.md`, "One colour measure
/// over five resamplings", with what the counts gained). They run in
/// parallel: on 2 threads the measure takes 1.9-2.3 times one pass's time
/// (`BENCHMARKS.md`, `rbc_size_measure`).
pub const FINE_RESAMPLINGS: [f32; 5] = [1.0, 1.04, 1.0 / 1.04, 1.08, 1.0 / 1.08];

/// Pixels the fine pass may resample a photo to at most (a photo whose
/// cells are tiny is not blown up past this).
pub const FINE_MAX_PIXELS: usize = 4_000_000;

/// Measure the red-cell diameter of a smear photo. Blocking; linear in
/// the pixels (a photo of cells under [`FINE_RADIUS_PX`] in radius is
/// enlarged for the fine pass, to [`FINE_MAX_PIXELS`] at most).
///
/// Both passes measure a resampled copy of the photo, not of its mask:
/// the coarse pass a copy of at most [`COARSE_PIXELS`] (a smaller photo as
/// it is), the fine pass a copy in which the coarse size is
/// [`FINE_RADIUS_PX`] in radius (where [`FINE_MAX_PIXELS`] allows), and each
/// copy gets its own cell mask. The same smear photographed at another
/// magnification thus gives nearly the same copies, and so the same
/// measure, rather than masks of different detail binned by whole pixels.
pub fn measure(img: &RgbImage) -> RbcSize {
    let none = RbcSize {
        diameter_px: None,
        cells: 0,
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < 3 || h < 3 {
        return none;
    }
    let resized = |s: f32| {
        let (rw, rh) = (
            ((w as f32 * s).round() as u32).max(1),
            ((h as f32 * s).round() as u32).max(1),
        );
        if (rw as usize, rh as usize) == (w, h) {
            return std::borrow::Cow::Borrowed(img);
        }
        std::borrow::Cow::Owned(image::imageops::resize(
            img,
            rw,
            rh,
            image::imageops::FilterType::Triangle,
        ))
    };
    // Coarse: the whole range of sizes on a small copy.
    let s = (COARSE_PIXELS as f32 / (w * h) as f32).sqrt().min(1.0);
    let small = resized(s);
    let (sw, sh) = (small.width() as usize, small.height() as usize);
    if sw < 8 || sh < 8 {
        return none;
    }
    let rs = radii(1.5, sw.min(sh) as f32 / 3.0, 1.12);
    let surround = field::surround(&small);
    let mask = cell_mask_in(&small, surround.as_deref());
    let g = granulometry(&mask, surround.as_deref(), sw, sh, &rs);
    // Every size the small copy holds is measured, so only the ends are
    // refused (by spectrum_peak itself).
    let Some((coarse, _)) = spectrum_peak(&rs, &g, (0.0, f32::INFINITY)) else {
        return none;
    };
    let coarse = coarse * w as f32 / sw as f32;
    // Fine: around the coarse peak, with cells ~FINE_RADIUS_PX in radius;
    // a photo of small cells is enlarged to FINE_MAX_PIXELS at most.
    let most = (FINE_MAX_PIXELS as f32 / (w * h) as f32).sqrt().max(1.0);
    let passes: Vec<Option<(f32, usize)>> = FINE_RESAMPLINGS
        .par_iter()
        .map(|&m| {
            let s = m * FINE_RADIUS_PX / coarse;
            let fine = resized(if s > 1.0 { s.min(most) } else { s });
            let (fw, fh) = (fine.width() as usize, fine.height() as usize);
            let surround = surround
                .as_ref()
                .map(|s| field::resample(s, (sw, sh), (fw, fh)));
            fine_peak(&fine, surround.as_deref(), coarse * fw as f32 / w as f32)
                .map(|(r, cells)| (r * w as f32 / fine.width() as f32, cells))
        })
        .collect();
    // The first resampling is the one the cell count is read at.
    let Some((_, cells)) = passes[0] else {
        return none;
    };
    let found: Vec<f32> = passes.iter().flatten().map(|&(r, _)| r.ln()).collect();
    let r = (found.iter().sum::<f32>() / found.len() as f32).exp();
    RbcSize {
        diameter_px: (cells >= MIN_CELLS).then_some(2.0 * r * BOX_PER_MASK),
        cells,
    }
}

/// One fine pass: the peak radius of `fine`'s pattern spectrum around the
/// coarse radius `r0` (both in `fine`'s pixels) and the red cells' worth
/// of area within [`BAND`] of it; `surround` is the coarse copy's,
/// resampled to `fine`. `None` for a copy under 8 px a side or a
/// spectrum with no peak within [`fine_radii`]'s range.
fn fine_peak(fine: &RgbImage, surround: Option<&[bool]>, r0: f32) -> Option<(f32, usize)> {
    let (fw, fh) = (fine.width() as usize, fine.height() as usize);
    if fw < 8 || fh < 8 {
        return None;
    }
    let (rs, accept) = fine_radii(r0);
    let mask = cell_mask_in(fine, surround);
    let g = granulometry(&mask, surround, fw, fh, &rs);
    let (r, band) = spectrum_peak(&rs, &g, accept)?;
    Some((
        r,
        (band as f32 / (std::f32::consts::PI * r * r)).floor() as usize,
    ))
}

/// The diameter, in `mask`'s pixels, of the commonest object of a cell
/// mask given by other means than colour (the red-cell net's mask, whose
/// cells are whole discs whatever their central pallor): twice the peak
/// radius of its pattern spectrum (`spectrum_peak`, radii 1.5 px to a
/// third of the short side in 12% steps), measured on the mask reduced by
/// whole blocks (a block is set when most of it is) to at most
/// [`COARSE_PIXELS`]. No [`BOX_PER_MASK`]: the caller calibrates it.
/// Coarse (the reduction and the 12% steps leave a few per cent), for a
/// check of gross errors. `None` for a mask under 8 px a side or one whose
/// spectrum peaks at either end, or under [`MIN_CELLS`] objects' worth of
/// area within [`BAND`] of the peak.
pub fn mask_diameter(mask: &[bool], width: usize, height: usize) -> Option<f32> {
    let k = ((width * height) as f32 / COARSE_PIXELS as f32)
        .sqrt()
        .ceil()
        .max(1.0) as usize;
    let (sw, sh) = (width / k, height / k);
    if sw < 8 || sh < 8 {
        return None;
    }
    let small: Vec<bool> = (0..sw * sh)
        .map(|i| {
            let (x0, y0) = ((i % sw) * k, (i / sw) * k);
            let set: usize = (y0..y0 + k)
                .map(|y| {
                    mask[y * width + x0..y * width + x0 + k]
                        .iter()
                        .filter(|&&m| m)
                        .count()
                })
                .sum();
            2 * set > k * k
        })
        .collect();
    let rs = radii(1.5, sw.min(sh) as f32 / 2.0, 1.12);
    let g = granulometry(&small, None, sw, sh, &rs);
    let (r, band) = spectrum_peak(&rs, &g, (0.0, f32::INFINITY))?;
    let cells = (band as f32 / (std::f32::consts::PI * r * r)).floor() as usize;
    (cells >= MIN_CELLS).then_some(2.0 * r * k as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pale background with pink discs (a pale centre each) of `d` px.
    fn synthetic(w: u32, h: u32, d: f32, centres: &[(f32, f32)]) -> RgbImage {
        let mut img = RgbImage::from_pixel(w, h, image::Rgb([225, 220, 215]));
        for (x, y, p) in img.enumerate_pixels_mut() {
            for &(cx, cy) in centres {
                let r = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
                if r < 0.25 * d {
                    *p = image::Rgb([215, 200, 200]);
                } else if r < 0.5 * d {
                    *p = image::Rgb([200, 130, 130]);
                }
            }
        }
        img
    }

    fn grid(n: usize, step: f32) -> Vec<(f32, f32)> {
        (0..n * n)
            .map(|i| {
                let (i, j) = (i % n, i / n);
                (step * (i as f32 + 1.0), step * (j as f32 + 1.0))
            })
            .collect()
    }

    #[test]
    fn a_masks_diameter_is_its_discs_at_any_size_and_none_without_enough() {
        for d in [12.0f32, 30.0, 60.0] {
            let step = 1.3 * d;
            let side = (step * 7.0) as usize;
            let centres = grid(6, step);
            let mask: Vec<bool> = (0..side * side)
                .map(|i| {
                    let (x, y) = ((i % side) as f32 + 0.5, (i / side) as f32 + 0.5);
                    centres
                        .iter()
                        .any(|&(cx, cy)| (x - cx).powi(2) + (y - cy).powi(2) < 0.25 * d * d)
                })
                .collect();
            let got = mask_diameter(&mask, side, side).expect("a diameter");
            // Coarse: 12% radius steps, blocks of up to 3 px at d 60.
            assert!((got / d - 1.0).abs() < 0.12, "d {d}: {got}");
        }
        // Two discs are not enough to size, nor is an empty mask.
        let side = 120;
        let two: Vec<bool> = (0..side * side)
            .map(|i| {
                let (x, y) = ((i % side) as f32, (i / side) as f32);
                [(30.0, 60.0), (90.0, 60.0)]
                    .iter()
                    .any(|&(cx, cy): &(f32, f32)| (x - cx).powi(2) + (y - cy).powi(2) < 400.0)
            })
            .collect();
        assert_eq!(mask_diameter(&two, side, side), None);
        assert_eq!(mask_diameter(&vec![false; side * side], side, side), None);
        assert_eq!(mask_diameter(&[true; 49], 7, 7), None);
    }

    #[test]
    fn measures_discs_with_pale_centres_at_any_size() {
        for d in [16.0f32, 40.0, 90.0] {
            let step = 1.5 * d;
            let side = (step * 7.0) as u32;
            let img = synthetic(side, side, d, &grid(6, step));
            let m = measure(&img);
            assert!((30..=40).contains(&m.cells), "d {d}: {m:?}");
            let got = m.diameter_px.expect("an estimate") / BOX_PER_MASK;
            assert!((got / d - 1.0).abs() < 0.08, "d {d}: {got}");
        }
    }

    /// A real smear (the fixture) and its left 40% (a field of about 25 red
    /// cells), rescaled in small and large steps: each copy's measure is
    /// within 2% of the photo's times its factor (all within 1% here; the
    /// single fine pass before [`FINE_RESAMPLINGS`] was within 1.5% on
    /// this photo, and BCCD's small fields are where it was not).
    #[test]
    fn rescaled_copies_of_a_real_smear_measure_in_proportion() {
        let photo = image::open(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/smear_cbc.jpg"
        ))
        .expect("the fixture")
        .to_rgb8();
        let left = image::imageops::crop_imm(&photo, 0, 0, 2 * photo.width() / 5, photo.height());
        let mut off = Vec::new();
        for (name, img) in [("whole", photo.clone()), ("left 40%", left.to_image())] {
            let native = measure(&img).diameter_px.expect("a measure");
            for f in [0.5f32, 0.6, 0.7, 0.8, 0.9, 1.1, 1.25, 1.5, 1.75, 2.0] {
                let (w, h) = (img.width() as f32 * f, img.height() as f32 * f);
                let copy = image::imageops::resize(
                    &img,
                    w.round() as u32,
                    h.round() as u32,
                    image::imageops::FilterType::CatmullRom,
                );
                let d = measure(&copy).diameter_px.expect("a measure");
                let ratio = d / (native * f);
                if (ratio - 1.0).abs() > 0.02 {
                    off.push(format!("{name} x{f}: {ratio:.3} (native {native:.1} px)"));
                }
            }
        }
        assert!(off.is_empty(), "{off:?}");
    }

    #[test]
    fn a_smear_seen_through_an_eyepiece_measures_as_the_smear_itself() {
        let photo = image::open(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/smear_cbc.jpg"
        ))
        .expect("the fixture")
        .to_rgb8();
        let native = measure(&photo).diameter_px.expect("a measure");
        let mut seen = Vec::new();
        // (enlargement, field radius over the short side, edge blur px,
        // rim shading: depth, power of r)
        for (scale, radius, edge, shading) in [
            (1.0, 0.48, 3.0, (0.0, 2)),
            (1.5, 0.45, 8.0, (0.15, 2)),
            (2.0, 0.5, 12.0, (0.25, 2)),
            (2.0, 0.6, 6.0, (0.1, 2)),
            (1.5, 0.5, 8.0, (0.35, 4)),
        ] {
            let view = field::eyepiece_view(&photo, scale, radius, edge, shading);
            let d = measure(&view).diameter_px;
            seen.push((scale, radius, d.map(|d| d / (native * scale))));
        }
        assert!(
            seen.iter()
                .all(|&(_, _, ratio)| ratio.is_some_and(|r| (r - 1.0).abs() < 0.04)),
            "native {native:.1} px; (scale, radius, measure / expected): {seen:?}"
        );
    }

    #[test]
    fn overlaps_cut_cells_and_purple_cells_leave_the_size_alone() {
        let d = 40.0;
        let mut centres = grid(5, 60.0);
        // A pair overlapping, a cell cut by the edge, all pink.
        centres.extend([(340.0, 80.0), (365.0, 80.0), (5.0, 340.0)]);
        let mut img = synthetic(400, 400, d, &centres);
        // A big purple "white cell" and purple platelet specks.
        for (x, y, p) in img.enumerate_pixels_mut() {
            let (dx, dy) = (x as f32 - 330.0, y as f32 - 300.0);
            if dx * dx + dy * dy < 40.0 * 40.0 || (x % 97 < 5 && y % 89 < 5 && x > 320) {
                *p = image::Rgb([120, 70, 170]);
            }
        }
        let m = measure(&img);
        let got = m.diameter_px.expect("an estimate") / BOX_PER_MASK;
        assert!((got / d - 1.0).abs() < 0.08, "{got} {m:?}");
    }

    #[test]
    fn a_white_cell_darker_than_everything_else_leaves_the_red_cells_measured() {
        // Pale red cells and one large, dark white cell: Otsu's level over
        // every pixel falls between the white cell and the rest (PBC's
        // crops, BCCD val 00389), so the first foreground is nearly all
        // purple and holds no red cell.
        let d = 40.0;
        let mut img = synthetic(400, 400, d, &grid(5, 60.0));
        for (x, y, p) in img.enumerate_pixels_mut() {
            let (dx, dy) = (x as f32 - 300.0, y as f32 - 300.0);
            if dx * dx + dy * dy < 95.0 * 95.0 {
                *p = image::Rgb([110, 60, 170]);
            } else if p.0 == [200, 130, 130] {
                *p = image::Rgb([212, 188, 190]);
            }
        }
        let share = super::super::rbc_mask::purple_share_of(&img);
        assert!(share > PURPLE_SHARE_MAX, "{share}");
        let m = measure(&img);
        let got = m.diameter_px.expect("an estimate") / BOX_PER_MASK;
        assert!((got / d - 1.0).abs() < 0.08, "{got} {m:?}");
    }

    #[test]
    fn too_few_cells_give_no_estimate() {
        let img = synthetic(200, 200, 40.0, &[(60.0, 60.0), (140.0, 140.0)]);
        let m = measure(&img);
        assert_eq!(m.diameter_px, None, "{m:?}");
        assert!(m.cells < MIN_CELLS);
        let blank = RgbImage::from_pixel(100, 100, image::Rgb([200, 200, 200]));
        assert_eq!(measure(&blank).diameter_px, None);
        // Slivers and specks are too small to measure, not stretched.
        for (w, h) in [(3, 3), (7, 7), (5, 300), (2000, 6)] {
            let img = synthetic(w, h, 40.0, &grid(3, 60.0));
            assert_eq!(measure(&img).diameter_px, None, "{w}x{h}");
        }
    }

    #[test]
    fn a_disc_cut_by_unseen_pixels_keeps_its_size_while_its_centre_is_in_view() {
        let (w, h) = (100usize, 100usize);
        let disc = |cx: f32| -> Vec<bool> {
            (0..w * h)
                .map(|i| {
                    let (x, y) = ((i % w) as f32 + 0.5, (i / w) as f32 + 0.5);
                    (x - cx).hypot(y - 50.0) < 20.0 && x >= 20.0
                })
                .collect()
        };
        let unseen: Vec<bool> = (0..w * h).map(|i| i % w < 20).collect();
        let radii = [5.0f32, 18.0];
        // Centre 10 px into the field: an 18 px disc fits only where the
        // unseen side is no boundary.
        let cut = disc(30.0);
        assert_eq!(granulometry(&cut, None, w, h, &radii)[1], 0);
        assert!(granulometry(&cut, Some(&unseen), w, h, &radii)[1] > 0);
        // Centre out of view: what is left is a sliver either way.
        let sliver = disc(5.0);
        assert_eq!(granulometry(&sliver, Some(&unseen), w, h, &radii)[1], 0);
        // No unseen pixels is no surround at all.
        let none = vec![false; w * h];
        assert_eq!(
            granulometry(&cut, None, w, h, &radii),
            granulometry(&cut, Some(&none), w, h, &radii)
        );
    }

    #[test]
    fn degenerate_photos_give_no_measure_and_no_panic() {
        for img in [
            RgbImage::from_pixel(3, 3, image::Rgb([200, 120, 120])),
            RgbImage::from_pixel(1, 10, image::Rgb([200, 120, 120])),
            RgbImage::from_pixel(60, 60, image::Rgb([0, 0, 0])),
            RgbImage::from_pixel(60, 60, image::Rgb([255, 255, 255])),
        ] {
            assert_eq!(measure(&img).diameter_px, None, "{:?}", img.dimensions());
            assert_eq!(purple_pixels(&img).len(), img.len() / 3);
            let everything = vec![true; img.len() / 3];
            assert_eq!(field::flatten(&img, &everything), img);
        }
    }

    #[test]
    fn an_opening_keeps_what_discs_of_the_radius_cover() {
        // A 21x21 square: discs of radius 5 fit (minus the corners' rounding),
        // discs of radius 12 do not. (Distances run between pixel centres,
        // so a disc of radius r covers pixels closer than r to its centre:
        // a 21-px side holds r = 11.)
        let (w, h) = (41, 41);
        let mask: Vec<bool> = (0..w * h)
            .map(|i| (10..31).contains(&(i % w)) && (10..31).contains(&(i / w)))
            .collect();
        let areas = granulometry(&mask, None, w, h, &[1.0, 5.0, 12.0]);
        assert_eq!(areas[0], 441);
        assert!(areas[1] > 400 && areas[1] < 441, "{areas:?}");
        assert_eq!(areas[2], 0);
    }

    /// Openings' areas of a spectrum made of Gaussian bumps in `ln r`
    /// (`(radius, weight, width in ln r)`), at `rs`.
    fn areas_of(rs: &[f32], bumps: &[(f32, f32, f32)]) -> Vec<usize> {
        let lost: Vec<f32> = (0..rs.len() - 1)
            .map(|k| {
                let c = 0.5 * (rs[k].ln() + rs[k + 1].ln());
                bumps
                    .iter()
                    .map(|&(r, w, s)| 1000.0 * w * (-0.5 * ((c - r.ln()) / s).powi(2)).exp())
                    .sum()
            })
            .collect();
        // The area left at radius k is all that is lost beyond it.
        (0..rs.len())
            .map(|k| lost[k..].iter().sum::<f32>().round() as usize)
            .collect()
    }

    #[test]
    fn close_sizes_of_swapping_weight_move_the_peak_little() {
        // A crowded field's spectrum: area lost at two sizes 1.25x apart
        // whose weights swap between magnifications. The peak must stay
        // between them, nearer the heavier, and move little (three-step
        // smoothing jumped 25%, from one bump to the other).
        let rs = radii(6.0, 30.0, 1.04);
        let all = (0.0, f32::INFINITY);
        let (r1, _) = spectrum_peak(
            &rs,
            &areas_of(&rs, &[(11.0, 1.0, 0.03), (13.75, 0.8, 0.03)]),
            all,
        )
        .expect("peak");
        let (r2, _) = spectrum_peak(
            &rs,
            &areas_of(&rs, &[(11.0, 0.8, 0.03), (13.75, 1.0, 0.03)]),
            all,
        )
        .expect("peak");
        assert!(11.0 < r1 && r1 < r2 && r2 < 13.75, "{r1} {r2}");
        assert!(r2 / r1 - 1.0 < 0.06, "{r1} vs {r2}");
    }

    #[test]
    fn the_fine_window_finds_an_off_centre_peak_and_refuses_one_past_it() {
        // The radii `measure` takes around a coarse guess of 24 px.
        let r0 = 24.0;
        let (rs, window) = fine_radii(r0);
        // Cells 20% off the guess: the window's ends must not pull them.
        // Over a broad tail of small debris holding about as much area
        // as the cells, the smoothing pulls them toward it by a few per
        // cent (which BOX_PER_MASK's calibration takes up), no more.
        for true_r in [r0 * 0.8, r0 * 1.2] {
            let areas = areas_of(&rs, &[(true_r, 1.0, 0.08)]);
            let (r, _) = spectrum_peak(&rs, &areas, window).expect("peak");
            assert!((r / true_r - 1.0).abs() < 0.015, "{r} for {true_r}");
            let areas = areas_of(&rs, &[(true_r, 1.0, 0.08), (r0 * 0.5, 0.15, 0.5)]);
            let (r, _) = spectrum_peak(&rs, &areas, window).expect("peak");
            assert!(
                r < true_r && r / true_r > 0.95,
                "{r} for {true_r} over debris"
            );
        }
        // Cells twice the guess are past the window: no measure, rather
        // than one at the window's end.
        let areas = areas_of(&rs, &[(r0 * 2.0, 1.0, 0.08)]);
        assert_eq!(spectrum_peak(&rs, &areas, window), None);
        // Nor cells under half the guess.
        let areas = areas_of(&rs, &[(r0 * 0.45, 1.0, 0.08)]);
        assert_eq!(spectrum_peak(&rs, &areas, window), None);
    }
}
