//! The red-cell mask of a stained smear photo, the first step of the
//! red-cell size measure ([`super::rbc_size`], whose module docs give the
//! method and its sources): Otsu's level of green, the purple (basophilic)
//! pixels left out, holes filled, and in a photo taken through the
//! eyepiece only the field of view ([`super::field`]).

use image::RgbImage;

use super::{field, segment};

/// Otsu's threshold of a 256-bin histogram: the level `t` maximising the
/// between-class variance of `< t` and `>= t`.
pub fn otsu(hist: &[u64; 256]) -> u8 {
    let total: u64 = hist.iter().sum();
    let sum: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &n)| i as f64 * n as f64)
        .sum();
    let (mut w0, mut sum0) = (0u64, 0f64);
    let (mut best, mut best_t) = (-1f64, 0u8);
    for t in 1..256 {
        w0 += hist[t - 1];
        sum0 += (t - 1) as f64 * hist[t - 1] as f64;
        let w1 = total - w0;
        if w0 == 0 || w1 == 0 {
            continue;
        }
        let m0 = sum0 / w0 as f64;
        let m1 = (sum - sum0) / w1 as f64;
        let between = w0 as f64 * w1 as f64 * (m0 - m1) * (m0 - m1);
        if between > best {
            best = between;
            best_t = t as u8;
        }
    }
    best_t
}

/// How much bluer than red, relative to the background, a pixel must be to
/// be nuclear or platelet stain rather than a red cell (fractions of the
/// background's transmission).
pub const PURPLE_MARGIN: f32 = 0.05;

/// Largest share of the pixels below Otsu's level that may be purple for
/// the level to be the red cells'. Above it the level has split the dark
/// purple of a white cell from everything else, red cells included, and is
/// taken again over the pixels that are not purple ([`cell_mask`]). On
/// BCCD's 292 photos the share is 6-40% but for one (val 00389, 62%: one
/// large, dark white cell and pale red cells, whose mask was then a few
/// dark rims and measured 36 px against boxes of 118); on PBC's
/// white-cell-centred CellaVision crops (another lab, May-Grünwald Giemsa)
/// it is over 50% on 71 of 120 photos and over 95% on 54, and 60 of the 120
/// gave no measure at all (models/cbc/MODEL_CARD.md, "A white cell that
/// takes Otsu's level"). Each resampled copy decides for itself, with no
/// margin around the threshold; the wide gap between the two groups of
/// shares is what keeps a photo from deciding differently at another
/// magnification. The pixels left out of the second level are those purple
/// against the first background, which then holds the pale red cells: a
/// field of strongly pink red cells covering most of it could make the
/// true background look purple too (not seen on BCCD or PBC).
pub const PURPLE_SHARE_MAX: f32 = 0.5;

/// The red-cell mask: green below Otsu's level, holes filled, less the
/// purple (basophilic) pixels of nuclei, white-cell cytoplasm and
/// platelets: those that pass more blue than red compared with the
/// background, `B / B_bg - R / R_bg > PURPLE_MARGIN`. Eosin-stained red
/// cells absorb blue more than red; azure/methylene-blue-stained nuclei
/// absorb red more than blue. Comparing with the background's own colour
/// leaves the camera's white balance and exposure out.
///
/// Where more than [`PURPLE_SHARE_MAX`] of the pixels below the level are
/// purple, the level is taken again over the pixels that are not, and the
/// background's colour and the purple pixels once more from it. Only
/// then: taken over every photo, the level moves by 1-12 grey levels on
/// BCCD, and with it every photo's measure (tried 2026-12-04, not kept).
pub fn cell_mask(img: &RgbImage) -> Vec<bool> {
    cell_mask_in(img, field::surround(img).as_deref())
}

/// [`cell_mask`] with the pixels outside a microscope's field of view
/// given (`surround`, row-major over `img`, [`field::surround`]): they
/// are left out of the mask and of what decides it ([`cells_split`]).
/// [`super::rbc_size::measure`] finds the surround once, on its coarse
/// copy, and hands it to every copy, so no copy decides differently
/// whether there is one.
pub fn cell_mask_in(img: &RgbImage, surround: Option<&[bool]>) -> Vec<bool> {
    let (fg, purple) = cells_split(img, surround);
    let mut mask = fill_holes(&fg, img.width() as usize, img.height() as usize);
    for (m, &p) in mask.iter_mut().zip(&purple) {
        *m &= !p;
    }
    mask
}

/// The purple (basophilic) pixels of a smear photo, row-major, as
/// [`cell_mask`] judges them: nuclei, white-cell cytoplasm, platelets. A
/// white cell always holds them (its nucleus); a red cell does not.
pub fn purple_pixels(img: &RgbImage) -> Vec<bool> {
    cells_split(img, field::surround(img).as_deref()).1
}

/// The foreground (below Otsu's level of green) and the purple pixels:
/// the level over every pixel, or over the pixels not purple where those
/// are most of the ones below it ([`PURPLE_SHARE_MAX`]).
///
/// Pixels in `surround` (outside a microscope's field of view) are neither
/// foreground nor background: they take no part in the level or the
/// background's colour, and where there are any, the field's illumination
/// is evened out first ([`field::flatten`]). A photo the field fills is
/// split as it is.
fn cells_split(img: &RgbImage, surround: Option<&[bool]>) -> (Vec<bool>, Vec<bool>) {
    let flat;
    let img = match surround {
        Some(s) => {
            flat = field::flatten(img, s);
            &flat
        }
        None => img,
    };
    let (fg, purple) = split(img, otsu(&green_histogram(img, surround)), surround);
    if purple_share(&fg, &purple) <= PURPLE_SHARE_MAX {
        return (fg, purple);
    }
    let skip: Vec<bool> = match surround {
        Some(s) => purple.iter().zip(s).map(|(&p, &s)| p || s).collect(),
        None => purple,
    };
    split(img, otsu(&green_histogram(img, Some(&skip))), surround)
}

/// The green channel's histogram, of the pixels not in `skip` where given.
pub(crate) fn green_histogram(img: &RgbImage, skip: Option<&[bool]>) -> [u64; 256] {
    let mut hist = [0u64; 256];
    for (i, p) in img.pixels().enumerate() {
        if !skip.is_some_and(|s| s[i]) {
            hist[p.0[1] as usize] += 1;
        }
    }
    hist
}

/// Purple pixels' share of the foreground (0 when it is empty).
fn purple_share(fg: &[bool], purple: &[bool]) -> f32 {
    let (mut n, mut p) = (0usize, 0usize);
    for (&f, &q) in fg.iter().zip(purple) {
        n += f as usize;
        p += (f && q) as usize;
    }
    if n == 0 {
        0.0
    } else {
        p as f32 / n as f32
    }
}

/// The pixels below green level `t`, and the purple pixels against the
/// mean colour of the rest; pixels in `surround` are neither.
fn split(img: &RgbImage, t: u8, surround: Option<&[bool]>) -> (Vec<bool>, Vec<bool>) {
    let out = |i: usize| surround.is_some_and(|s| s[i]);
    let fg: Vec<bool> = img
        .pixels()
        .enumerate()
        .map(|(i, p)| p.0[1] < t && !out(i))
        .collect();
    let (mut sum_r, mut sum_b, mut n) = (0f64, 0f64, 0f64);
    for (i, (p, &f)) in img.pixels().zip(&fg).enumerate() {
        if !f && !out(i) {
            sum_r += p.0[0] as f64;
            sum_b += p.0[2] as f64;
            n += 1.0;
        }
    }
    let (r_bg, b_bg) = (
        (sum_r / n.max(1.0)).max(1.0) as f32,
        (sum_b / n.max(1.0)).max(1.0) as f32,
    );
    let purple = img
        .pixels()
        .enumerate()
        .map(|(i, p)| !out(i) && p.0[2] as f32 / b_bg - p.0[0] as f32 / r_bg > PURPLE_MARGIN)
        .collect();
    (fg, purple)
}

/// Background pixels not 4-connected to the border become foreground.
pub fn fill_holes(fg: &[bool], width: usize, height: usize) -> Vec<bool> {
    let background: Vec<bool> = fg.iter().map(|&f| !f).collect();
    segment::joined_to_border(&background, width, height)
        .iter()
        .map(|&o| !o)
        .collect()
}

/// Purple pixels' share of the pixels below the first Otsu level of `img`
/// (no surround): what decides whether the level is taken again. For
/// tests.
#[cfg(test)]
pub(crate) fn purple_share_of(img: &RgbImage) -> f32 {
    let (fg, purple) = split(img, otsu(&green_histogram(img, None)), None);
    purple_share(&fg, &purple)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otsu_splits_two_levels() {
        let mut h = [0u64; 256];
        h[40] = 100;
        h[200] = 300;
        let t = otsu(&h);
        assert!(t > 40 && t <= 200, "{t}");
    }
}
