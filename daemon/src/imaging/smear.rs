//! Pre-processing of blood-smear photos for the cell UNets: contrast
//! equalisation of lightness (CLAHE on L of CIE L*a*b*, as the nets were
//! trained with OpenCV's `createCLAHE(2.0, (8, 8))`), then 188-px tiles every
//! 100 px over the zero-padded image, in BGR scaled to [-1, 1].
//!
//! The colour conversion and CLAHE follow OpenCV's documented 8-bit
//! behaviour (sRGB companding, D65 white, L scaled to 0..255, a/b offset by
//! 128; CLAHE tiles over a reflect-101-padded image, clip limit
//! `clip * tile_area / 256`, excess spread evenly, bilinear blend of the tile
//! maps); a test checks the result against OpenCV's own output.

use crate::model::unet::{MARGIN, TILE_IN, TILE_OUT};

fn srgb_to_linear(c: f32) -> f32 {
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

fn linear_to_srgb(c: f32) -> f32 {
    if c <= 0.0031308 {
        12.92 * c
    } else {
        1.055 * c.powf(1.0 / 2.4) - 0.055
    }
}

const WHITE_X: f32 = 0.950456;
const WHITE_Z: f32 = 1.088754;
const EPS: f32 = 0.008856;

/// OpenCV's 8-bit RGB -> L*a*b* is fixed-point: a gamma table with 3 extra
/// bits, a 12-bit XYZ matrix and a 15-bit cube-root table. Float maths
/// differs from it by one level in ~10% of pixels, which CLAHE's steep maps
/// then amplify, so the forward conversion follows the same integer steps.
struct LabTables {
    gamma: [i64; 256],
    cbrt: Vec<i64>,
    coeffs: [[i64; 3]; 3],
}

const GAMMA_SHIFT: u32 = 3;
const LAB_SHIFT: u32 = 12;
const LAB_SHIFT2: u32 = 15;

fn lab_tables() -> &'static LabTables {
    static T: std::sync::OnceLock<LabTables> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut gamma = [0i64; 256];
        for (i, g) in gamma.iter_mut().enumerate() {
            let v = 255.0 * (1 << GAMMA_SHIFT) as f64 * srgb_to_linear(i as f32 / 255.0) as f64;
            *g = v.round_ties_even().min(65535.0) as i64;
        }
        let n = 256 * 3 / 2 * (1 << GAMMA_SHIFT);
        let cbrt = (0..n)
            .map(|i| {
                let x = i as f64 / (255.0 * (1 << GAMMA_SHIFT) as f64);
                let f = if x < EPS as f64 {
                    x * 7.787 + 16.0 / 116.0
                } else {
                    x.cbrt()
                };
                ((1 << LAB_SHIFT2) as f64 * f)
                    .round_ties_even()
                    .min(65535.0) as i64
            })
            .collect();
        let m = [
            [0.412453, 0.357580, 0.180423],
            [0.212671, 0.715160, 0.072169],
            [0.019334, 0.119193, 0.950227],
        ];
        let white = [WHITE_X as f64, 1.0, WHITE_Z as f64];
        let mut coeffs = [[0i64; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                coeffs[i][j] =
                    ((1 << LAB_SHIFT) as f64 * m[i][j] / white[i]).round_ties_even() as i64;
            }
        }
        LabTables {
            gamma,
            cbrt,
            coeffs,
        }
    })
}

fn descale(x: i64, n: u32) -> i64 {
    (x + (1 << (n - 1))) >> n
}

/// One RGB pixel -> 8-bit (L, a, b) as OpenCV's `COLOR_RGB2Lab` gives it.
fn rgb_to_lab8(rgb: [u8; 3], t: &LabTables) -> [u8; 3] {
    let c = [
        t.gamma[rgb[0] as usize],
        t.gamma[rgb[1] as usize],
        t.gamma[rgb[2] as usize],
    ];
    let f = |row: &[i64; 3]| {
        let v = descale(row[0] * c[0] + row[1] * c[1] + row[2] * c[2], LAB_SHIFT);
        t.cbrt[v.clamp(0, t.cbrt.len() as i64 - 1) as usize]
    };
    let (fx, fy, fz) = (f(&t.coeffs[0]), f(&t.coeffs[1]), f(&t.coeffs[2]));
    let l_scale = (116 * 255 + 50) / 100;
    let l_shift = -((16 * 255 * (1i64 << LAB_SHIFT2) + 50) / 100);
    let q = |v: i64| v.clamp(0, 255) as u8;
    [
        q(descale(l_scale * fy + l_shift, LAB_SHIFT2)),
        q(descale(
            500 * (fx - fy) + 128 * (1 << LAB_SHIFT2),
            LAB_SHIFT2,
        )),
        q(descale(
            200 * (fy - fz) + 128 * (1 << LAB_SHIFT2),
            LAB_SHIFT2,
        )),
    ]
}

fn lab_to_rgb(l: f32, a: f32, b: f32) -> [u8; 3] {
    let fy = (l + 16.0) / 116.0;
    let y = if l > 903.3 * EPS {
        fy * fy * fy
    } else {
        l / 903.3
    };
    let inv = |f: f32| {
        let t = f * f * f;
        if t > EPS {
            t
        } else {
            (f - 16.0 / 116.0) / 7.787
        }
    };
    let x = inv(fy + a / 500.0) * WHITE_X;
    let z = inv(fy - b / 200.0) * WHITE_Z;
    let r = 3.240479 * x - 1.53715 * y - 0.498535 * z;
    let g = -0.969256 * x + 1.875991 * y + 0.041556 * z;
    let bb = 0.055648 * x - 0.204043 * y + 1.057311 * z;
    let q = |c: f32| (linear_to_srgb(c.clamp(0.0, 1.0)) * 255.0).round() as u8;
    [q(r), q(g), q(bb)]
}

/// CLAHE on one 8-bit plane, with OpenCV's tiling and rounding.
pub fn clahe(src: &[u8], width: usize, height: usize, clip: f32, tiles: usize) -> Vec<u8> {
    assert_eq!(src.len(), width * height);
    if width == 0 || height == 0 {
        return Vec::new();
    }
    // OpenCV pads right/bottom (reflect-101) whenever either side does not divide.
    let (ew, eh) = if width.is_multiple_of(tiles) && height.is_multiple_of(tiles) {
        (width, height)
    } else {
        (
            width + tiles - width % tiles,
            height + tiles - height % tiles,
        )
    };
    let reflect = |i: usize, n: usize| -> usize {
        if i < n {
            i
        } else if n == 1 {
            0
        } else {
            let p = 2 * (n - 1);
            let m = i % p;
            if m < n {
                m
            } else {
                p - m
            }
        }
    };
    let (tw, th) = (ew / tiles, eh / tiles);
    let area = tw * th;
    let clip_limit = ((clip * area as f32 / 256.0) as i64).max(1);
    let lut_scale = 255.0 / area as f32;
    let mut luts = vec![[0u8; 256]; tiles * tiles];
    for ty in 0..tiles {
        for tx in 0..tiles {
            let mut hist = [0i64; 256];
            for y in ty * th..(ty + 1) * th {
                let row = reflect(y, height) * width;
                for x in tx * tw..(tx + 1) * tw {
                    hist[src[row + reflect(x, width)] as usize] += 1;
                }
            }
            let mut clipped = 0;
            for h in hist.iter_mut() {
                if *h > clip_limit {
                    clipped += *h - clip_limit;
                    *h = clip_limit;
                }
            }
            let batch = clipped / 256;
            let mut residual = clipped - batch * 256;
            for h in hist.iter_mut() {
                *h += batch;
            }
            if residual != 0 {
                let step = (256 / residual).max(1) as usize;
                let mut i = 0;
                while i < 256 && residual > 0 {
                    hist[i] += 1;
                    i += step;
                    residual -= 1;
                }
            }
            let lut = &mut luts[ty * tiles + tx];
            let mut sum = 0i64;
            for (i, h) in hist.iter().enumerate() {
                sum += h;
                lut[i] = (sum as f32 * lut_scale).round_ties_even().clamp(0.0, 255.0) as u8;
            }
        }
    }
    let mut out = vec![0u8; width * height];
    let last = tiles as i64 - 1;
    let span = |pos: usize, size: usize| -> (usize, usize, f32) {
        let f = pos as f32 / size as f32 - 0.5;
        let t1 = f.floor() as i64;
        let a = f - t1 as f32;
        (
            t1.clamp(0, last) as usize,
            (t1 + 1).clamp(0, last) as usize,
            a,
        )
    };
    for y in 0..height {
        let (ty1, ty2, ya) = span(y, th);
        for x in 0..width {
            let (tx1, tx2, xa) = span(x, tw);
            let v = src[y * width + x] as usize;
            let l = |ty: usize, tx: usize| luts[ty * tiles + tx][v] as f32;
            let res = (l(ty1, tx1) * (1.0 - xa) + l(ty1, tx2) * xa) * (1.0 - ya)
                + (l(ty2, tx1) * (1.0 - xa) + l(ty2, tx2) * xa) * ya;
            out[y * width + x] = res.round_ties_even().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// CLAHE on the lightness of an RGB image (clip 2, 8x8 tiles), returned as RGB.
pub fn equalise(rgb: &[u8], width: usize, height: usize) -> Vec<u8> {
    let t = lab_tables();
    let n = width * height;
    let mut l8 = Vec::with_capacity(n);
    let mut ab = Vec::with_capacity(n);
    for px in rgb.chunks_exact(3) {
        let [l, a, b] = rgb_to_lab8([px[0], px[1], px[2]], t);
        l8.push(l);
        ab.push((a, b));
    }
    let l_eq = clahe(&l8, width, height, 2.0, 8);
    let mut out = Vec::with_capacity(n * 3);
    for (l, (a, b)) in l_eq.iter().zip(ab) {
        out.extend(lab_to_rgb(
            *l as f32 * 100.0 / 255.0,
            a as f32 - 128.0,
            b as f32 - 128.0,
        ));
    }
    out
}

/// Tiles of one equalised image, ready for the UNets.
#[derive(Debug, Clone)]
pub struct Tiles {
    /// `count` tiles, each [3, 188, 188] BGR in [-1, 1].
    pub data: Vec<f32>,
    pub count: usize,
    pub cols: usize,
    pub rows: usize,
}

impl Tiles {
    pub fn tile(&self, i: usize) -> &[f32] {
        let n = 3 * TILE_IN * TILE_IN;
        &self.data[i * n..(i + 1) * n]
    }
}

/// Columns and rows of the tiles [`tile`] cuts from a width x height image.
pub fn tile_grid(width: usize, height: usize) -> (usize, usize) {
    (
        width.div_ceil(TILE_OUT).max(1),
        height.div_ceil(TILE_OUT).max(1),
    )
}

/// Cut 188-px tiles every 100 px so that their 100-px centres cover the
/// image exactly (zero padding around it, as the nets were trained).
pub fn tile(rgb: &[u8], width: usize, height: usize) -> Tiles {
    let (cols, rows) = tile_grid(width, height);
    let plane = TILE_IN * TILE_IN;
    let mut data = vec![0f32; cols * rows * 3 * plane];
    // Zero pixels map to -1 after scaling.
    for (i, chunk) in data.chunks_exact_mut(3 * plane).enumerate() {
        let (ty, tx) = (i / cols, i % cols);
        chunk.fill(-1.0);
        for y in 0..TILE_IN {
            let sy = (ty * TILE_OUT + y) as i64 - MARGIN as i64;
            if sy < 0 || sy >= height as i64 {
                continue;
            }
            for x in 0..TILE_IN {
                let sx = (tx * TILE_OUT + x) as i64 - MARGIN as i64;
                if sx < 0 || sx >= width as i64 {
                    continue;
                }
                let p = (sy as usize * width + sx as usize) * 3;
                for (c, src_c) in [2usize, 1, 0].into_iter().enumerate() {
                    chunk[c * plane + y * TILE_IN + x] = rgb[p + src_c] as f32 * 2.0 / 255.0 - 1.0;
                }
            }
        }
    }
    Tiles {
        data,
        count: cols * rows,
        cols,
        rows,
    }
}

/// Put 100x100 tile outputs back together into a width x height map.
pub fn stitch(maps: &[&[f32]], cols: usize, width: usize, height: usize) -> Vec<f32> {
    let mut out = vec![0f32; width * height];
    for (i, m) in maps.iter().enumerate() {
        let (ty, tx) = (i / cols, i % cols);
        for y in 0..TILE_OUT {
            let oy = ty * TILE_OUT + y;
            if oy >= height {
                break;
            }
            for x in 0..TILE_OUT {
                let ox = tx * TILE_OUT + x;
                if ox >= width {
                    break;
                }
                out[oy * width + ox] = m[y * TILE_OUT + x];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

    /// Against OpenCV 5.0 (models/tools/make_cbc_golden.py) on a real smear:
    /// OpenCV's 8-bit colour conversions are fixed-point approximations, so
    /// equality is not expected; tolerance: mean absolute difference below
    /// 1 grey level and 99% of values within 3.
    #[test]
    fn equalise_matches_opencv_on_a_real_smear() {
        let img = image::open(format!("{ROOT}/tests/fixtures/smear_cbc_crop.png"))
            .unwrap()
            .into_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let ours = equalise(img.as_raw(), w, h);
        let golden = candle_core::safetensors::load(
            format!("{ROOT}/tests/fixtures/golden/cbc_smear.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let cv: Vec<u8> = golden["clahe_bgr"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let (mut sum, mut far, mut n) = (0u64, 0usize, 0usize);
        for y in 0..192 {
            for x in 0..256 {
                for c in 0..3 {
                    let a = ours[(y * w + x) * 3 + c] as i32;
                    assert_eq!((w, h), (256, 192));
                    let b = cv[(y * 256 + x) * 3 + (2 - c)] as i32;
                    sum += (a - b).unsigned_abs() as u64;
                    far += ((a - b).abs() > 3) as usize;
                    n += 1;
                }
            }
        }
        let mean = sum as f64 / n as f64;
        assert!(mean < 1.0, "mean abs difference {mean}");
        assert!(
            (far as f64) < 0.01 * n as f64,
            "{far} of {n} values differ by more than 3"
        );
    }

    #[test]
    fn clahe_leaves_a_flat_image_flat() {
        let out = clahe(&vec![77u8; 64 * 48], 64, 48, 2.0, 8);
        assert!(out.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn tiles_cover_the_image_and_stitch_back() {
        let (w, h) = (250, 130);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
        let t = tile(&rgb, w, h);
        assert_eq!((t.cols, t.rows, t.count), (3, 2, 6));
        // Each tile's centre holds the pixels its output covers (B plane).
        let maps: Vec<Vec<f32>> = (0..t.count)
            .map(|i| {
                let tile = t.tile(i);
                let mut m = vec![0f32; TILE_OUT * TILE_OUT];
                for y in 0..TILE_OUT {
                    for x in 0..TILE_OUT {
                        m[y * TILE_OUT + x] = tile[(y + MARGIN) * TILE_IN + x + MARGIN];
                    }
                }
                m
            })
            .collect();
        let maps: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
        let back = stitch(&maps, t.cols, w, h);
        for (i, v) in back.iter().enumerate() {
            let want = rgb[i * 3 + 2] as f32 * 2.0 / 255.0 - 1.0;
            assert!((v - want).abs() < 1e-6);
        }
    }
}
