//! The microscope's field of view in a photo taken through the eyepiece
//! (a phone held to it, a camera on a trinocular port without a relay
//! lens): a bright round field in a dark surround, often with the field's
//! edge shaded. Measures made over the whole photo take the surround for
//! something it is not: an Otsu level then splits dark surround from the
//! bright field instead of red cells from the background, and a shaded rim
//! reads as stained cells in a ring that encloses the field.
//!
//! [`surround`] finds the dark part (`None` where the field fills the
//! photo); [`flatten`] evens the field's illumination, and callers use it
//! only where there is a surround, so a smear photographed through a camera
//! port (the field filling the frame) is measured exactly as before.

use image::RgbImage;

use super::segment;

/// How dark, against the field's bright background, a pixel must be to be
/// surround: its brightest channel under this share of the photo's
/// [`BRIGHT_QUANTILE`] of brightest channels. A smear's darkest parts,
/// nuclei, keep their red or blue well above it: on BCCD's 292 photos no
/// pixel is under 0.3 of the background, on 397 PBC crops (every 43rd of
/// the set) at most 0.1% of a photo, none joined to its border. The
/// surround behind an eyepiece's field stop is black but for sensor noise
/// and glare.
pub const SURROUND_LEVEL: f32 = 0.3;

/// The quantile of the brightest channel taken as the field's background
/// brightness: a bright-field smear's background is the brightest thing in
/// it, and this holds while the surround covers under 95% of the photo.
pub const BRIGHT_QUANTILE: f32 = 0.95;

/// Least share of the photo the dark pixels joined to its border must
/// cover to be a surround: a dark speck or a nucleus the photo's edge cuts
/// is not one.
pub const SURROUND_MIN_SHARE: f32 = 0.02;

/// The surround is widened by this share of the photo's short side, so the
/// field's blurred edge (the field stop out of focus, JPEG ringing) goes
/// with it rather than reading as a dark ring of cells.
pub const SURROUND_MARGIN: f32 = 0.01;

/// Pixels outside the field of view, row-major: those darker than
/// [`SURROUND_LEVEL`] of the background joined (4-connected) to the photo's
/// border, widened by [`SURROUND_MARGIN`]. `None` where they cover under
/// [`SURROUND_MIN_SHARE`] of the photo (no surround: the field fills it).
pub fn surround(img: &RgbImage) -> Option<Vec<bool>> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < 3 || h < 3 {
        return None;
    }
    let bright: Vec<u8> = img
        .pixels()
        .map(|p| p.0[0].max(p.0[1]).max(p.0[2]))
        .collect();
    let background = quantile(&bright, BRIGHT_QUANTILE);
    let level = SURROUND_LEVEL * background as f32;
    let dark: Vec<bool> = bright.iter().map(|&b| (b as f32) < level).collect();
    let joined = segment::joined_to_border(&dark, w, h);
    let n = joined.iter().filter(|&&j| j).count();
    if (n as f32) < SURROUND_MIN_SHARE * (w * h) as f32 {
        return None;
    }
    let margin = (SURROUND_MARGIN * w.min(h) as f32).max(1.5);
    let reach = segment::squared_distance_to(&joined, w, h);
    Some(reach.iter().map(|&d| d < margin * margin).collect())
}

/// `mask` (row-major, `from` = (width, height)) resampled to `to` by
/// nearest neighbour: each pixel takes the value under its centre. How a
/// surround found on one copy of a photo is carried to another.
pub fn resample(mask: &[bool], from: (usize, usize), to: (usize, usize)) -> Vec<bool> {
    let ((fw, fh), (tw, th)) = (from, to);
    let src = |t: usize, tn: usize, fnn: usize| {
        (((t as f32 + 0.5) * fnn as f32 / tn as f32) as usize).min(fnn - 1)
    };
    let cols: Vec<usize> = (0..tw).map(|x| src(x, tw, fw)).collect();
    (0..th)
        .flat_map(|y| {
            let row = src(y, th, fh) * fw;
            cols.iter().map(move |&x| mask[row + x])
        })
        .collect()
}

/// Side of the blocks [`flatten`] samples the background in, as a share of
/// the photo's short side: a dozen across the field, each large enough to
/// hold some background between cells in all but the most crowded fields.
pub const FLAT_BLOCK: f32 = 1.0 / 12.0;

/// A block whose background level lies this far (a share) under the fitted
/// illumination is taken to be covered by cells, and left out of the next
/// fit ([`flatten`]).
pub const FLAT_REJECT: f32 = 0.06;

/// Fewest blocks inside the field [`flatten`] fits a surface to: 2.5 per
/// coefficient, so one block covered by cells cannot bend the surface far.
pub const FLAT_MIN_BLOCKS: usize = 15;

/// Least and most [`flatten`] may multiply a pixel by: a rim a phone's
/// photo darkens by half is brightened back; a fit gone wrong cannot black
/// the field out or blow it up past this.
pub const FLAT_GAIN: (f32, f32) = (0.5, 2.0);

/// The field of `img` evened out. An eyepiece's field darkens towards its
/// rim (vignetting), by a quarter or more in a phone's photo, and a
/// threshold made for the middle then reads the rim as stain: a ring of
/// "cells" enclosing the field.
///
/// The illumination is a quadratic surface in x and y fitted by least
/// squares to the background's level (the 90th percentile of green, which
/// stained cells absorb) in blocks of [`FLAT_BLOCK`] at least half inside
/// the field; fitted three times, each time without the blocks more than
/// [`FLAT_REJECT`] under the last fit (blocks that cells cover). Each pixel
/// inside the field is multiplied by the brightest fitted background over
/// the fit there, within [`FLAT_GAIN`]; pixels in `outside` are left as
/// they are. A quadratic follows a falloff like `1 - s r^2` exactly and a
/// steeper one (`r^4`, nearer a real lens's) only roughly (see the tests).
/// With fewer than [`FLAT_MIN_BLOCKS`] blocks, or no fit, `img` is returned
/// unchanged.
pub fn flatten(img: &RgbImage, outside: &[bool]) -> RgbImage {
    let blocks = block_levels(img, outside);
    if blocks.len() < FLAT_MIN_BLOCKS {
        return img.clone();
    }
    let mut kept = blocks.clone();
    let mut fit = None;
    for _ in 0..3 {
        let Some(c) = fit_quadratic(&kept) else {
            break;
        };
        fit = Some(c);
        kept = blocks
            .iter()
            .copied()
            .filter(|&(x, y, v)| v >= (1.0 - FLAT_REJECT) * quadratic(&c, x, y))
            .collect();
    }
    let Some(c) = fit else {
        return img.clone();
    };
    let top = kept
        .iter()
        .map(|&(x, y, _)| quadratic(&c, x, y))
        .fold(0.0f32, f32::max);
    if top <= 0.0 {
        return img.clone();
    }
    let (w, h) = (img.width() as f32, img.height() as f32);
    let mut flat = img.clone();
    for (x, y, p) in flat.enumerate_pixels_mut() {
        if outside[(y * img.width() + x) as usize] {
            continue;
        }
        let (u, v) = (
            2.0 * (x as f32 + 0.5) / w - 1.0,
            2.0 * (y as f32 + 0.5) / h - 1.0,
        );
        let light = quadratic(&c, u, v);
        let gain = if light > 0.0 {
            (top / light).clamp(FLAT_GAIN.0, FLAT_GAIN.1)
        } else {
            1.0
        };
        for ch in p.0.iter_mut() {
            *ch = (*ch as f32 * gain).round().min(255.0) as u8;
        }
    }
    flat
}

/// The background level of each block of [`FLAT_BLOCK`] at least half
/// inside the field: `(x, y, level)`, the block's middle in [-1, 1] across
/// the photo and the 90th percentile of green over its pixels in the field.
fn block_levels(img: &RgbImage, outside: &[bool]) -> Vec<(f32, f32, f32)> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let k = ((FLAT_BLOCK * w.min(h) as f32).round() as usize).max(4);
    let mut blocks = Vec::new();
    let mut greens = Vec::with_capacity(k * k);
    for by in (0..h.saturating_sub(k - 1)).step_by(k) {
        for bx in (0..w.saturating_sub(k - 1)).step_by(k) {
            greens.clear();
            for y in by..by + k {
                for x in bx..bx + k {
                    if !outside[y * w + x] {
                        greens.push(img.get_pixel(x as u32, y as u32).0[1]);
                    }
                }
            }
            if 2 * greens.len() >= k * k {
                blocks.push((
                    2.0 * (bx as f32 + k as f32 / 2.0) / w as f32 - 1.0,
                    2.0 * (by as f32 + k as f32 / 2.0) / h as f32 - 1.0,
                    quantile(&greens, 0.9) as f32,
                ));
            }
        }
    }
    blocks
}

/// `c0 + c1 x + c2 y + c3 x^2 + c4 x y + c5 y^2`.
fn quadratic(c: &[f32; 6], x: f32, y: f32) -> f32 {
    c[0] + c[1] * x + c[2] * y + c[3] * x * x + c[4] * x * y + c[5] * y * y
}

/// Least-squares [`quadratic`] through `(x, y, value)` points: the normal
/// equations solved by Gaussian elimination with partial pivoting. `None`
/// under six points or for a singular system (points on one line).
fn fit_quadratic(points: &[(f32, f32, f32)]) -> Option<[f32; 6]> {
    if points.len() < 6 {
        return None;
    }
    let mut a = [[0f64; 7]; 6];
    for &(x, y, v) in points {
        let (x, y) = (x as f64, y as f64);
        let terms = [1.0, x, y, x * x, x * y, y * y];
        for (row, ti) in a.iter_mut().zip(terms) {
            for (cell, tj) in row.iter_mut().zip(terms) {
                *cell += ti * tj;
            }
            row[6] += ti * v as f64;
        }
    }
    for col in 0..6 {
        let pivot = (col..6).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-9 {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col];
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (cell, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                    *cell -= f * p;
                }
            }
        }
    }
    Some(std::array::from_fn(|i| (a[i][6] / a[i][i]) as f32))
}

/// The value at quantile `q` (0-1) of a set of bytes; 255 for none.
fn quantile(values: &[u8], q: f32) -> u8 {
    let mut hist = [0usize; 256];
    for &v in values {
        hist[v as usize] += 1;
    }
    let want = (q * values.len() as f32).ceil() as usize;
    let mut seen = 0;
    for (v, &n) in hist.iter().enumerate() {
        seen += n;
        if seen >= want.max(1) {
            return v as u8;
        }
    }
    255
}

/// `img` as seen through an eyepiece: enlarged by `scale`, and of that only
/// a round field of radius `radius` (share of the short side) in the
/// middle, whose edge is blurred over `edge` px and whose brightness falls
/// as `1 - depth (r / R)^power` for `shading = (depth, power)`, in a
/// near-black surround with a little noise. For tests.
#[cfg(test)]
pub(crate) fn eyepiece_view(
    img: &RgbImage,
    scale: f32,
    radius: f32,
    edge: f32,
    shading: (f32, i32),
) -> RgbImage {
    let (w, h) = (
        (img.width() as f32 * scale).round() as u32,
        (img.height() as f32 * scale).round() as u32,
    );
    let mut view = image::imageops::resize(img, w, h, image::imageops::FilterType::CatmullRom);
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    let r_field = radius * w.min(h) as f32;
    for (x, y, p) in view.enumerate_pixels_mut() {
        let r = (x as f32 + 0.5 - cx).hypot(y as f32 + 0.5 - cy);
        let inside = ((r_field - r) / edge + 0.5).clamp(0.0, 1.0);
        let shade = 1.0 - shading.0 * (r / r_field).min(1.0).powi(shading.1);
        // Sensor noise in the dark: a cheap hash of the position, 0-15.
        let noise = ((x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)) % 16) as f32;
        for c in p.0.iter_mut() {
            *c = (*c as f32 * shade * inside + (4.0 + noise) * (1.0 - inside)).round() as u8;
        }
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smear() -> RgbImage {
        image::open(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/smear_cbc.jpg"
        ))
        .expect("the fixture")
        .to_rgb8()
    }

    #[test]
    fn a_smear_filling_the_photo_has_no_surround() {
        let photo = smear();
        assert!(surround(&photo).is_none());
        // A dark speck at the edge is no surround either.
        let mut specked = photo.clone();
        for y in 0..12 {
            for x in 0..12 {
                specked.put_pixel(x, y, image::Rgb([5, 5, 5]));
            }
        }
        assert!(surround(&specked).is_none());
    }

    #[test]
    fn the_dark_surround_of_an_eyepiece_view_is_found_with_its_blurred_edge() {
        let view = eyepiece_view(&smear(), 1.5, 0.45, 6.0, (0.2, 2));
        let out = surround(&view).expect("a surround");
        let (w, h) = (view.width(), view.height());
        let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
        let r_field = 0.45 * w.min(h) as f32;
        let margin = SURROUND_MARGIN * w.min(h) as f32;
        let mut wrong = 0usize;
        for (x, y, _) in view.enumerate_pixels() {
            let r = (x as f32 + 0.5 - cx).hypot(y as f32 + 0.5 - cy);
            let is_out = out[(y * w + x) as usize];
            // Well inside the field: never surround; past its blurred
            // edge: always.
            if (r < r_field - 3.0 - margin && is_out) || (r > r_field + 3.0 && !is_out) {
                wrong += 1;
            }
        }
        assert_eq!(wrong, 0, "of {} px", w * h);
    }

    /// The 90th percentile of green over the pixels at `lo..hi` of the
    /// field's radius from the middle of `view`.
    fn background_at(view: &RgbImage, radius: f32, lo: f32, hi: f32) -> u8 {
        let (cx, cy) = (view.width() as f32 / 2.0, view.height() as f32 / 2.0);
        let r_field = radius * view.width().min(view.height()) as f32;
        let greens: Vec<u8> = view
            .enumerate_pixels()
            .filter(|&(x, y, _)| {
                let r = (x as f32 + 0.5 - cx).hypot(y as f32 + 0.5 - cy) / r_field;
                (lo..hi).contains(&r)
            })
            .map(|(_, _, p)| p.0[1])
            .collect();
        quantile(&greens, 0.9)
    }

    #[test]
    fn a_field_darker_at_its_rim_is_evened_out_and_an_even_one_left_alone() {
        let photo = smear();
        // (depth at the rim, power of r, rim / middle after flattening
        // within): a falloff in r^2 is a quadratic's own shape; one in r^4,
        // steeper at the rim like a real lens's, is followed less closely.
        for (shading, within) in [((0.0f32, 2), 0.04), ((0.3, 2), 0.04), ((0.4, 4), 0.08)] {
            let view = eyepiece_view(&photo, 1.5, 0.45, 6.0, shading);
            let out = surround(&view).expect("a surround");
            let flat = flatten(&view, &out);
            let rim_over_middle = |img: &RgbImage| {
                background_at(img, 0.45, 0.75, 0.9) as f32
                    / background_at(img, 0.45, 0.0, 0.3) as f32
            };
            let (before, after) = (rim_over_middle(&view), rim_over_middle(&flat));
            assert!(
                (after - 1.0).abs() < within,
                "shading {shading:?}: rim / middle {before:.3} before, {after:.3} after"
            );
            let middle = |img: &RgbImage| background_at(img, 0.45, 0.0, 0.3) as f32;
            assert!(
                (middle(&flat) / middle(&view) - 1.0).abs() < 0.04,
                "shading {shading:?}: the middle moved"
            );
            // The surround is left as it was.
            for (i, (a, b)) in view.pixels().zip(flat.pixels()).enumerate() {
                if out[i] {
                    assert_eq!(a, b);
                }
            }
        }
    }

    #[test]
    fn a_quadratic_is_fitted_exactly() {
        let c = [100.0, 3.0, -2.0, -20.0, 1.5, -12.0];
        let points: Vec<(f32, f32, f32)> = (0..25)
            .map(|i| {
                let (x, y) = ((i % 5) as f32 / 2.0 - 1.0, (i / 5) as f32 / 2.0 - 1.0);
                (x, y, quadratic(&c, x, y))
            })
            .collect();
        let fit = fit_quadratic(&points).expect("a fit");
        for (a, b) in fit.iter().zip(&c) {
            assert!((a - b).abs() < 1e-3, "{fit:?}");
        }
        // Points on one line fix no surface.
        let line: Vec<_> = (0..8).map(|i| (i as f32 / 8.0, 0.0, 1.0)).collect();
        assert!(fit_quadratic(&line).is_none());
    }
}
