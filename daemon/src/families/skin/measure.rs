//! The colour metrics and image-quality measures of one face, computed on
//! its aligned crop (upright, a fixed inter-ocular distance), so the
//! numbers do not depend on how far the camera was or how the head tilted.

use std::collections::BTreeMap;

use serde::Serialize;

use super::color::{self, ItaClass};
use super::regions::{grow, skin_mask, Area, Areas, Mask};

/// Fewest trimmed pixels an area needs to be measured.
const MIN_PIXELS: usize = 50;
/// Share of an area's pixels trimmed at each end of L*: shadows below,
/// specular highlights above.
const TRIM: f32 = 0.10;

/// An RGB image as HWC bytes.
pub struct Rgb<'a> {
    pub width: usize,
    pub height: usize,
    pub data: &'a [u8],
}

impl Rgb<'_> {
    fn px(&self, i: usize) -> [u8; 3] {
        [self.data[3 * i], self.data[3 * i + 1], self.data[3 * i + 2]]
    }
}

/// Colour statistics of an area's skin after trimming.
#[derive(Debug, Clone, Serialize)]
pub struct AreaColour {
    /// ITA° of the mean L* and b*.
    pub ita: f32,
    pub ita_class: ItaClass,
    /// Mean CIE L*a*b* (D65).
    pub l: f32,
    pub a: f32,
    pub b: f32,
    /// 90th percentile of a*.
    pub a_p90: f32,
    /// Mean erythema index (Diffey 1984), 100 log10(R/G) on linear light.
    pub erythema_index: f32,
    /// Pixels measured (after trimming), in aligned-crop pixels.
    pub pixels: usize,
}

/// Per-pixel values kept for pooling areas together.
#[derive(Default)]
struct Samples {
    lab: Vec<[f32; 3]>,
    ei: Vec<f32>,
}

/// The skin pixels of `mask`: clipped pixels (a channel >= 250 or all
/// <= 8) dropped, then the darkest and brightest `TRIM` of L*.
fn samples(img: &Rgb, mask: &Mask) -> Samples {
    let mut v: Vec<([f32; 3], f32)> = mask
        .bits
        .iter()
        .enumerate()
        .filter(|(_, &b)| b != 0)
        .map(|(i, _)| img.px(i))
        .filter(|p| p.iter().all(|&c| c < 250) && p.iter().any(|&c| c > 8))
        .map(|p| (color::lab(p), color::erythema_index(p)))
        .collect();
    v.sort_by(|x, y| x.0[0].total_cmp(&y.0[0]));
    let cut = (v.len() as f32 * TRIM) as usize;
    let kept = &v[cut..v.len() - cut];
    Samples {
        lab: kept.iter().map(|s| s.0).collect(),
        ei: kept.iter().map(|s| s.1).collect(),
    }
}

fn stats(s: &Samples) -> Option<AreaColour> {
    let n = s.lab.len();
    if n < MIN_PIXELS {
        return None;
    }
    let mean = |f: &dyn Fn(&[f32; 3]) -> f32| s.lab.iter().map(f).sum::<f32>() / n as f32;
    let (l, a, b) = (mean(&|p| p[0]), mean(&|p| p[1]), mean(&|p| p[2]));
    let mut av: Vec<f32> = s.lab.iter().map(|p| p[1]).collect();
    av.sort_by(f32::total_cmp);
    let ita = color::ita(l, b);
    Some(AreaColour {
        ita,
        ita_class: ItaClass::of(ita),
        l,
        a,
        b,
        a_p90: av[((n - 1) as f32 * 0.9) as usize],
        erythema_index: s.ei.iter().sum::<f32>() / n as f32,
        pixels: n,
    })
}

/// The skin of `area`: its polygon, within the face oval, off the features.
fn area_mask(areas: &Areas, skin: &Mask, area: Area) -> Mask {
    let mut m = Mask::polygon(skin.width, skin.height, &areas.polygons[&area]);
    m.and(skin);
    m
}

/// Skin colour per area, and pooled for ITA (forehead and cheeks) and for
/// the whole face.
#[derive(Debug, Clone, Serialize)]
pub struct Colour {
    pub areas: BTreeMap<Area, AreaColour>,
    /// Forehead and both cheeks pooled: the face's ITA.
    pub ita_face: Option<AreaColour>,
    /// All the face's skin pooled (redness).
    pub skin: Option<AreaColour>,
}

/// The areas whose colour is measured.
pub const COLOUR_AREAS: [Area; 9] = [
    Area::Forehead,
    Area::LeftCheek,
    Area::RightCheek,
    Area::LeftUnderEye,
    Area::RightUnderEye,
    Area::LeftMalar,
    Area::RightMalar,
    Area::Nose,
    Area::Chin,
];

pub fn colour(img: &Rgb, areas: &Areas) -> (Colour, Mask) {
    let skin = skin_mask(areas, img.width, img.height);
    let mut out = BTreeMap::new();
    let mut pooled = Samples::default();
    for area in COLOUR_AREAS {
        let s = samples(img, &area_mask(areas, &skin, area));
        if matches!(area, Area::Forehead | Area::LeftCheek | Area::RightCheek) {
            pooled.lab.extend_from_slice(&s.lab);
            pooled.ei.extend_from_slice(&s.ei);
        }
        if let Some(c) = stats(&s) {
            out.insert(area, c);
        }
    }
    let face_skin = stats(&samples(img, &skin));
    (
        Colour {
            areas: out,
            ita_face: stats(&pooled),
            skin: face_skin,
        },
        skin,
    )
}

/// Dark-circle contrast of one eye: the under-eye skin against the malar
/// patch just below it (Matsui et al. 2015; Lim et al. 2021).
#[derive(Debug, Clone, Serialize)]
pub struct DarkCircle {
    /// L*(malar) - L*(under-eye): how much darker the under-eye is.
    pub delta_l: f32,
    /// ΔE*ab between the two areas' mean colours.
    pub delta_e: f32,
}

pub fn dark_circle(c: &Colour, under: Area, malar: Area) -> Option<DarkCircle> {
    let (u, m) = (c.areas.get(&under)?, c.areas.get(&malar)?);
    Some(DarkCircle {
        delta_l: m.l - u.l,
        delta_e: color::delta_e([u.l, u.a, u.b], [m.l, m.a, m.b]),
    })
}

/// The erythema-index heat map over the face's skin, as an RGBA PNG the
/// size of the aligned crop: transparent off the skin, clear where a pixel
/// is no redder than the face's median, then yellow to red up to 20 EI
/// units above it.
pub fn redness_png(img: &Rgb, skin: &Mask) -> Result<Vec<u8>, image::ImageError> {
    let mut ei: Vec<f32> = Vec::new();
    let mut vals = vec![f32::NAN; img.width * img.height];
    for (i, &b) in skin.bits.iter().enumerate() {
        if b != 0 {
            let p = img.px(i);
            if p.iter().all(|&c| c < 250) {
                vals[i] = color::erythema_index(p);
                ei.push(vals[i]);
            }
        }
    }
    ei.sort_by(f32::total_cmp);
    let median = ei.get(ei.len() / 2).copied().unwrap_or(0.0);
    let mut rgba = vec![0u8; img.width * img.height * 4];
    for (i, v) in vals.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        let t = ((v - median) / 20.0).clamp(0.0, 1.0);
        if t <= 0.0 {
            continue;
        }
        rgba[4 * i..4 * i + 4].copy_from_slice(&[
            255,
            (220.0 * (1.0 - t)) as u8,
            0,
            (60.0 + 180.0 * t) as u8,
        ]);
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png).write_image(
        &rgba,
        img.width as u32,
        img.height as u32,
        image::ExtendedColorType::Rgba8,
    )?;
    Ok(png)
}

use image::ImageEncoder;

/// The correction for the camera's white balance, from the sclera: the
/// whites of the eyes are close to neutral, so their colour in the photo
/// is the light's and the camera's cast. A von Kries adaptation in the
/// CAT16 cone space ([`color::cat16_to_d65`]) takes the sclera to D65
/// white at its own luminance.
///
/// Cameras re-balance as the framing changes (the same face read b* 8 to
/// 17.5 from 15 to 60 cm in the `zoom` set, and its sclera drifted by as
/// much); the correction takes that drift out. A pigmented sclera is
/// corrected towards neutral too, so absolute values carry that bias.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WhiteBalance {
    /// The sclera's mean CIE L*a*b* as the camera recorded it.
    pub sclera_lab: [f32; 3],
    /// The adaptation's gains on the three CAT16 cone responses.
    pub gains: [f32; 3],
    /// The same adaptation as a 3x3 matrix on linear sRGB (rows R, G, B).
    pub matrix: [[f32; 3]; 3],
    /// Sclera pixels measured (aligned-crop pixels).
    pub pixels: usize,
}

/// A sclera for which the mean of its linear R, G and B over any one of
/// them falls outside this range (one channel under 0.625 or over 1.67
/// times the mean) is coloured light or a misread eye, not a camera's
/// cast: no correction then.
const CAST_RANGE: std::ops::RangeInclusive<f32> = 0.6..=1.6;
const SCLERA_SHRINK: f32 = 0.8;

/// Measure the sclera: the brightest 30% (by luma) of the unclipped pixels
/// inside both eye outlines. None when the eyes show too little of it.
pub fn sclera_balance(img: &Rgb, areas: &Areas) -> Option<WhiteBalance> {
    // Shrunk off the lid margins, whose skin would tint the sample.
    let mut eyes = Mask::polygon(
        img.width,
        img.height,
        &grow(&areas.polygons[&Area::LeftEye], SCLERA_SHRINK),
    );
    eyes.fill(&grow(&areas.polygons[&Area::RightEye], SCLERA_SHRINK), 1);
    let mut px: Vec<[u8; 3]> = eyes
        .bits
        .iter()
        .enumerate()
        .filter(|(_, &b)| b != 0)
        .map(|(i, _)| img.px(i))
        .filter(|p| p.iter().all(|&c| c < 250))
        .collect();
    px.sort_by(|a, b| color::luma(*a).total_cmp(&color::luma(*b)));
    let top = &px[px.len() * 7 / 10..];
    if top.len() < 30 {
        return None;
    }
    let mut lin = [0f64; 3];
    for p in top {
        for c in 0..3 {
            lin[c] += color::linear(p[c]) as f64 / top.len() as f64;
        }
    }
    if lin.iter().any(|&v| v <= 1e-4) {
        return None;
    }
    let mean = (lin[0] + lin[1] + lin[2]) / 3.0;
    if !lin
        .iter()
        .all(|&v| CAST_RANGE.contains(&((mean / v) as f32)))
    {
        return None;
    }
    let (matrix, gains) = color::cat16_to_d65(lin);
    let srgb = lin.map(|v| color::encode(v as f32));
    Some(WhiteBalance {
        sclera_lab: color::lab(srgb),
        gains,
        matrix,
        pixels: top.len(),
    })
}

/// `data` (RGB bytes) through the white balance's matrix in linear light.
pub fn apply_balance(data: &[u8], m: [[f32; 3]; 3]) -> Vec<u8> {
    let mut out = vec![0u8; data.len()];
    for (o, p) in out.chunks_exact_mut(3).zip(data.chunks_exact(3)) {
        let l = [
            color::linear(p[0]),
            color::linear(p[1]),
            color::linear(p[2]),
        ];
        for c in 0..3 {
            let v = m[c][0] * l[0] + m[c][1] * l[1] + m[c][2] * l[2];
            o[c] = color::encode_fast(v);
        }
    }
    out
}

/// Exposure of the face's skin (OFIQ-style, ISO/IEC 29794-5): the shares
/// of pixels in the under- (luma <= 25) and over-exposed (>= 247) ranges,
/// and the mean luma.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Exposure {
    pub underexposed_share: f32,
    pub overexposed_share: f32,
    pub mean_luma: f32,
}

/// Mean chroma of the skin as the camera recorded it: per pixel, its
/// largest channel minus its smallest (0-255), averaged over `skin`.
/// Skin of any tone under any usual light reads tens of levels; a
/// black-and-white photo reads 0, plus a level or two of JPEG chroma noise.
pub fn chroma(img: &Rgb, skin: &Mask) -> f32 {
    let (mut n, mut sum) = (0usize, 0u64);
    for (i, &b) in skin.bits.iter().enumerate() {
        if b == 0 {
            continue;
        }
        let [r, g, b] = img.px(i);
        n += 1;
        sum += (r.max(g).max(b) - r.min(g).min(b)) as u64;
    }
    sum as f32 / n.max(1) as f32
}

pub fn exposure(img: &Rgb, skin: &Mask) -> Exposure {
    let (mut n, mut under, mut over, mut sum) = (0usize, 0usize, 0usize, 0f64);
    for (i, &b) in skin.bits.iter().enumerate() {
        if b == 0 {
            continue;
        }
        let y = color::luma(img.px(i));
        n += 1;
        sum += y as f64;
        under += (y <= 25.0) as usize;
        over += (y >= 247.0) as usize;
    }
    let n_f = n.max(1) as f32;
    Exposure {
        underexposed_share: under as f32 / n_f,
        overexposed_share: over as f32 / n_f,
        mean_luma: (sum / n.max(1) as f64) as f32,
    }
}

/// Sharpness: the variance of the 4-neighbour Laplacian of luma over the
/// face oval (features included: their edges are what blur removes), on an
/// image where the eyes are `iod_px` apart; the crop given here is halved
/// first when `halve` (the aligned crop has 160 px between the eyes, the
/// measure is defined at 80).
pub fn sharpness(img: &Rgb, oval: &Mask, halve: bool) -> f32 {
    let (w, h, grey): (usize, usize, Vec<f32>) = if halve {
        let (w, h) = (img.width / 2, img.height / 2);
        let mut g = vec![0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                let at = |yy: usize, xx: usize| color::luma(img.px(yy * img.width + xx));
                g[y * w + x] = (at(2 * y, 2 * x)
                    + at(2 * y, 2 * x + 1)
                    + at(2 * y + 1, 2 * x)
                    + at(2 * y + 1, 2 * x + 1))
                    / 4.0;
            }
        }
        (w, h, g)
    } else {
        let g = (0..img.width * img.height)
            .map(|i| color::luma(img.px(i)))
            .collect();
        (img.width, img.height, g)
    };
    let inside = |x: usize, y: usize| {
        let (ox, oy) = if halve { (2 * x, 2 * y) } else { (x, y) };
        oval.bits[oy * oval.width + ox] != 0
    };
    let (mut n, mut s, mut s2) = (0f64, 0f64, 0f64);
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            if !inside(x, y) {
                continue;
            }
            let c = grey[y * w + x];
            let l = grey[y * w + x - 1]
                + grey[y * w + x + 1]
                + grey[(y - 1) * w + x]
                + grey[(y + 1) * w + x]
                - 4.0 * c;
            n += 1.0;
            s += l as f64;
            s2 += (l * l) as f64;
        }
    }
    if n < 2.0 {
        return 0.0;
    }
    let mean = s / n;
    (s2 / n - mean * mean) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(w: usize, h: usize, p: [u8; 3]) -> Vec<u8> {
        (0..w * h).flat_map(|_| p).collect()
    }

    #[test]
    fn balance_takes_a_cast_sclera_to_neutral_and_keeps_its_order() {
        // A bluish "white" (a camera balanced for warmer light) and a skin
        // tone under the same cast.
        let sclera = [200u8, 214, 236];
        let skin = [214u8, 176, 160];
        let lin = sclera.map(|v| color::linear(v) as f64);
        let (m, _) = color::cat16_to_d65(lin);
        let out = apply_balance(&[sclera, skin].concat(), m);
        let s = color::lab([out[0], out[1], out[2]]);
        assert!(s[1].abs() < 0.7 && s[2].abs() < 0.7, "{s:?}");
        let (before, after) = (color::lab(skin), color::lab([out[3], out[4], out[5]]));
        // Warmer after, lightness nearly kept.
        assert!(after[2] > before[2] + 3.0, "{before:?} -> {after:?}");
        assert!(
            (after[0] - before[0]).abs() < 2.0,
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn trimmed_stats_of_a_flat_patch_are_its_colour() {
        let data = flat(40, 40, [224, 172, 140]);
        let img = Rgb {
            width: 40,
            height: 40,
            data: &data,
        };
        let m = Mask::polygon(
            40,
            40,
            &[[0.0, 0.0], [40.0, 0.0], [40.0, 40.0], [0.0, 40.0]],
        );
        let c = stats(&samples(&img, &m)).unwrap();
        let lab = color::lab([224, 172, 140]);
        assert!((c.l - lab[0]).abs() < 1e-3 && (c.b - lab[2]).abs() < 1e-3);
        assert_eq!(c.ita_class, ItaClass::of(color::ita(lab[0], lab[2])));
        // Specular pixels and deep shadows do not move the mean.
        let mut data2 = data.clone();
        for i in 0..100 {
            data2[3 * i..3 * i + 3].copy_from_slice(&[255, 255, 255]);
            data2[3 * (800 + i)..3 * (800 + i) + 3].copy_from_slice(&[30, 20, 15]);
        }
        let img2 = Rgb {
            width: 40,
            height: 40,
            data: &data2,
        };
        let c2 = stats(&samples(&img2, &m)).unwrap();
        assert!((c2.l - c.l).abs() < 1e-3, "{} vs {}", c2.l, c.l);
    }

    #[test]
    fn sharpness_falls_with_blur_and_exposure_counts_ranges() {
        let sharp: Vec<u8> = (0..64 * 64)
            .flat_map(|i| {
                let v = if ((i % 64) / 4 + (i / 64) / 4) % 2 == 0 {
                    200
                } else {
                    60
                };
                [v, v, v]
            })
            .collect();
        let blurred: Vec<u8> = (0..64 * 64)
            .flat_map(|i| {
                let x = (i % 64) as f32;
                let v = (130.0 + 70.0 * (x / 4.0 * std::f32::consts::PI).sin() * 0.2) as u8;
                [v, v, v]
            })
            .collect();
        let all = Mask::polygon(
            64,
            64,
            &[[0.0, 0.0], [64.0, 0.0], [64.0, 64.0], [0.0, 64.0]],
        );
        let s = sharpness(
            &Rgb {
                width: 64,
                height: 64,
                data: &sharp,
            },
            &all,
            false,
        );
        let b = sharpness(
            &Rgb {
                width: 64,
                height: 64,
                data: &blurred,
            },
            &all,
            false,
        );
        assert!(s > 10.0 * b, "{s} vs {b}");
        let dark = flat(10, 10, [10, 10, 10]);
        let e = exposure(
            &Rgb {
                width: 10,
                height: 10,
                data: &dark,
            },
            &Mask::polygon(
                10,
                10,
                &[[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]],
            ),
        );
        assert_eq!(e.underexposed_share, 1.0);
        assert_eq!(e.overexposed_share, 0.0);
    }
}
