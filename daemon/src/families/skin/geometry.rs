//! Plane geometry for the skin pipeline: affine maps, rotated crops sampled
//! through an image pyramid, and polygon rasterisation.
//!
//! Convention: pixel `i`'s centre is at `i` ("centre" coordinates). Model
//! outputs are in "edge" coordinates (pixel `i` spans `[i, i+1)`); subtract
//! 0.5 to get centre coordinates.

use image::RgbImage;

/// `x' = m[0] x + m[1] y + m[2]`, `y' = m[3] x + m[4] y + m[5]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub m: [f32; 6],
}

impl Affine {
    pub fn apply(&self, [x, y]: [f32; 2]) -> [f32; 2] {
        let m = &self.m;
        [m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]]
    }

    /// The inverse map; None when the map is singular.
    pub fn inverse(&self) -> Option<Affine> {
        let m = &self.m;
        let det = m[0] * m[4] - m[1] * m[3];
        if det.abs() < 1e-12 {
            return None;
        }
        let (a, b, c, d) = (m[4] / det, -m[1] / det, -m[3] / det, m[0] / det);
        Some(Affine {
            m: [a, b, -(a * m[2] + b * m[5]), c, d, -(c * m[2] + d * m[5])],
        })
    }

    /// The map's linear scale, `sqrt(|det|)`: source pixels per
    /// destination pixel for a crop-to-image map.
    pub fn scale(&self) -> f32 {
        (self.m[0] * self.m[4] - self.m[1] * self.m[3]).abs().sqrt()
    }

    /// A square crop of `size` pixels showing the `side`-pixel square
    /// centred on `center` and turned by `angle` radians: maps crop centre
    /// coordinates to image centre coordinates. As MediaPipe's
    /// ImageToTensorCalculator lays out its region of interest.
    pub fn square_roi(center: [f32; 2], side: f32, angle: f32, size: usize) -> Affine {
        let k = side / size as f32;
        let (s, c) = angle.sin_cos();
        // crop centre coords u -> edge (u + 0.5) -> offset from the crop's
        // middle, scaled, rotated, moved onto the centre.
        let off = 0.5 - size as f32 / 2.0;
        let (a, b, d, e) = (c * k, -s * k, s * k, c * k);
        Affine {
            m: [
                a,
                b,
                center[0] + a * off + b * off,
                d,
                e,
                center[1] + d * off + e * off,
            ],
        }
    }
}

/// What a sample outside the image reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Border {
    /// Black (as face-api pads a face crop that leaves the image).
    Zero,
    /// The nearest edge pixel (MediaPipe's OpenCV warp).
    Replicate,
}

/// An image and its 2x2-averaged halvings, so a crop that shrinks the face
/// a lot is sampled from a level near its own scale instead of aliasing
/// (as dlib's `extract_image_chip` does with its pyramid).
pub struct Pyramid {
    levels: Vec<RgbImage>,
}

impl Pyramid {
    pub fn new(image: RgbImage) -> Self {
        Self {
            levels: vec![image],
        }
    }

    pub fn base(&self) -> &RgbImage {
        &self.levels[0]
    }

    /// Take the base image back.
    pub fn into_base(mut self) -> RgbImage {
        self.levels.swap_remove(0)
    }

    fn level(&mut self, k: usize) -> &RgbImage {
        while self.levels.len() <= k {
            let prev = self.levels.last().expect("level 0 exists");
            let next = halve(prev);
            if next.width() == 0 || next.height() == 0 {
                break;
            }
            self.levels.push(next);
        }
        &self.levels[k.min(self.levels.len() - 1)]
    }

    /// Sample a `w` x `h` RGB crop (HWC bytes): destination pixel `(u, v)`
    /// reads the base image at `map((u, v))` (centre coordinates),
    /// bilinearly, from the deepest level that still has at least one
    /// pixel per destination pixel.
    pub fn warp(&mut self, map: &Affine, w: usize, h: usize, border: Border) -> Vec<u8> {
        let scale = map.scale().max(1e-6);
        let k = if scale >= 2.0 {
            scale.log2().floor() as usize
        } else {
            0
        };
        let img = self.level(k);
        let f = (1u32 << k) as f32;
        let (iw, ih) = (img.width() as i64, img.height() as i64);
        let raw = img.as_raw();
        let mut out = vec![0u8; w * h * 3];
        let px = |x: i64, y: i64| -> Option<[f32; 3]> {
            let (x, y) = match border {
                Border::Zero if x < 0 || y < 0 || x >= iw || y >= ih => return None,
                Border::Zero => (x, y),
                Border::Replicate => (x.clamp(0, iw - 1), y.clamp(0, ih - 1)),
            };
            let i = ((y * iw + x) * 3) as usize;
            Some([raw[i] as f32, raw[i + 1] as f32, raw[i + 2] as f32])
        };
        for v in 0..h {
            for u in 0..w {
                let [x0, y0] = map.apply([u as f32, v as f32]);
                // base centre coords -> level centre coords
                let (x, y) = ((x0 + 0.5) / f - 0.5, (y0 + 0.5) / f - 0.5);
                let (fx, fy) = (x.floor(), y.floor());
                let (tx, ty) = (x - fx, y - fy);
                let (xi, yi) = (fx as i64, fy as i64);
                let mut acc = [0f32; 3];
                for (dx, dy, wgt) in [
                    (0, 0, (1.0 - tx) * (1.0 - ty)),
                    (1, 0, tx * (1.0 - ty)),
                    (0, 1, (1.0 - tx) * ty),
                    (1, 1, tx * ty),
                ] {
                    if let Some(p) = px(xi + dx, yi + dy) {
                        for c in 0..3 {
                            acc[c] += p[c] * wgt;
                        }
                    }
                }
                let o = (v * w + u) * 3;
                for c in 0..3 {
                    out[o + c] = acc[c].round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        out
    }
}

/// 2x2 box average (odd last row/column dropped).
fn halve(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width() / 2, img.height() / 2);
    let src = img.as_raw();
    let sw = img.width() as usize;
    let mut out = vec![0u8; (w * h * 3) as usize];
    for y in 0..h as usize {
        for x in 0..w as usize {
            for c in 0..3 {
                let at = |yy: usize, xx: usize| src[(yy * sw + xx) * 3 + c] as u32;
                let s = at(2 * y, 2 * x)
                    + at(2 * y, 2 * x + 1)
                    + at(2 * y + 1, 2 * x)
                    + at(2 * y + 1, 2 * x + 1);
                out[(y * w as usize + x) * 3 + c] = ((s + 2) / 4) as u8;
            }
        }
    }
    RgbImage::from_raw(w, h, out).expect("sized buffer")
}

/// Whether `p` is inside the polygon (even-odd rule).
pub fn contains(poly: &[[f32; 2]], p: [f32; 2]) -> bool {
    let mut inside = false;
    let n = poly.len();
    for i in 0..n {
        let (a, b) = (poly[i], poly[(i + n - 1) % n]);
        if (a[1] > p[1]) != (b[1] > p[1]) {
            let x = a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
            if p[0] < x {
                inside = !inside;
            }
        }
    }
    inside
}

/// Polygon area (shoelace), in square pixels.
pub fn area(poly: &[[f32; 2]]) -> f32 {
    let n = poly.len();
    (0..n)
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum::<f32>()
        .abs()
        / 2.0
}

pub fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

pub fn lerp(a: [f32; 2], b: [f32; 2], t: f32) -> [f32; 2] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t]
}

pub fn mid(a: [f32; 2], b: [f32; 2]) -> [f32; 2] {
    lerp(a, b, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_undoes_the_map() {
        let m = Affine {
            m: [0.8, -0.6, 10.0, 0.6, 0.8, -5.0],
        };
        let p = m.inverse().unwrap().apply(m.apply([3.0, 4.0]));
        assert!((p[0] - 3.0).abs() < 1e-4 && (p[1] - 4.0).abs() < 1e-4);
        assert!(Affine {
            m: [1.0, 2.0, 0.0, 2.0, 4.0, 0.0]
        }
        .inverse()
        .is_none());
    }

    #[test]
    fn square_roi_centres_and_turns() {
        let m = Affine::square_roi([100.0, 50.0], 40.0, std::f32::consts::FRAC_PI_2, 4);
        // The crop's middle (edge coordinate 2, centre 1.5) is the centre.
        let c = m.apply([1.5, 1.5]);
        assert!((c[0] - 100.0).abs() < 1e-4 && (c[1] - 50.0).abs() < 1e-4);
        // Turned 90 degrees: the crop's x axis runs along the image's y.
        let a = m.apply([2.5, 1.5]);
        assert!(
            (a[0] - 100.0).abs() < 1e-3 && (a[1] - 60.0).abs() < 1e-3,
            "{a:?}"
        );
        assert!((m.scale() - 10.0).abs() < 1e-4);
    }

    #[test]
    fn warp_of_identity_is_the_image_and_a_shrink_averages() {
        let img = RgbImage::from_fn(8, 8, |x, y| image::Rgb([(x * 30) as u8, (y * 30) as u8, 7]));
        let mut p = Pyramid::new(img.clone());
        let id = Affine {
            m: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        };
        assert_eq!(p.warp(&id, 8, 8, Border::Zero), img.as_raw().clone());
        // A 4x shrink of a checkerboard reads its mean, not one square.
        let checker = RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([if (x + y) % 2 == 0 { 255 } else { 0 }; 3])
        });
        let mut p = Pyramid::new(checker);
        let shrink = Affine {
            m: [4.0, 0.0, 1.5, 0.0, 4.0, 1.5],
        };
        let out = p.warp(&shrink, 16, 16, Border::Replicate);
        assert!(
            out.iter().all(|&v| (120..=135).contains(&v)),
            "{:?}",
            &out[..12]
        );
    }

    #[test]
    fn polygon_tests() {
        let sq = [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]];
        assert!(contains(&sq, [5.0, 5.0]));
        assert!(!contains(&sq, [15.0, 5.0]));
        assert_eq!(area(&sq), 100.0);
    }
}
