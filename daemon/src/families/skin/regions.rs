//! Facial areas as polygons over MediaPipe face-mesh points, and their
//! rasterisation into pixel masks.
//!
//! Left and right are the subject's own (anatomical) sides: in an
//! unmirrored photo the subject's left cheek is on the image's right.
//! Mesh indices follow MediaPipe's canonical face mesh (the same numbering
//! as its `face_mesh_connections`); areas that the mesh does not outline
//! (forehead, cheeks, under-eyes, malar patches, chin) are built from its
//! eye, brow, nose and mouth points in units of the inter-ocular distance.

use std::collections::BTreeMap;

use super::geometry::{dist, lerp, mid};

/// Face silhouette, clockwise from the top of the forehead.
pub const FACE_OVAL: [usize; 36] = [
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
    148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
];
/// Outer lip line.
pub const LIPS: [usize; 20] = [
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
];
/// The subject's right eye (image left): lower lid from the outer corner
/// (33) to the inner (133), then the upper lid back.
pub const RIGHT_EYE: [usize; 16] = [
    33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
];
/// The subject's left eye: outer corner 263, inner 362.
pub const LEFT_EYE: [usize; 16] = [
    263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466,
];
/// Brows: upper edge outer -> inner, then the lower edge inner -> outer.
pub const RIGHT_BROW: [usize; 10] = [70, 63, 105, 66, 107, 55, 65, 52, 53, 46];
pub const LEFT_BROW: [usize; 10] = [300, 293, 334, 296, 336, 285, 295, 282, 283, 276];

const RIGHT_EYE_OUTER: usize = 33;
const RIGHT_EYE_INNER: usize = 133;
const LEFT_EYE_OUTER: usize = 263;
const LEFT_EYE_INNER: usize = 362;
const NOSE_TIP: usize = 1;
const SUBNASALE: usize = 2;
const GLABELLA: usize = 168;
const LOWER_LIP_BOTTOM: usize = 17;
const MOUTH_RIGHT: usize = 61;
const MOUTH_LEFT: usize = 291;

/// A named facial area.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    FaceOval,
    Forehead,
    LeftCheek,
    RightCheek,
    /// Infraorbital skin, just below the lower lid.
    LeftUnderEye,
    RightUnderEye,
    /// The malar patch just below the under-eye area (dark-circle contrast).
    LeftMalar,
    RightMalar,
    Nose,
    Chin,
    Lips,
    LeftEye,
    RightEye,
}

impl Area {
    pub const ALL: [Area; 13] = [
        Area::FaceOval,
        Area::Forehead,
        Area::LeftCheek,
        Area::RightCheek,
        Area::LeftUnderEye,
        Area::RightUnderEye,
        Area::LeftMalar,
        Area::RightMalar,
        Area::Nose,
        Area::Chin,
        Area::Lips,
        Area::LeftEye,
        Area::RightEye,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Area::FaceOval => "face_oval",
            Area::Forehead => "forehead",
            Area::LeftCheek => "left_cheek",
            Area::RightCheek => "right_cheek",
            Area::LeftUnderEye => "left_under_eye",
            Area::RightUnderEye => "right_under_eye",
            Area::LeftMalar => "left_malar",
            Area::RightMalar => "right_malar",
            Area::Nose => "nose",
            Area::Chin => "chin",
            Area::Lips => "lips",
            Area::LeftEye => "left_eye",
            Area::RightEye => "right_eye",
        }
    }
}

/// Every area's polygon, plus the features no skin measurement may read
/// (eyes, brows, lips, nostrils, each slightly enlarged).
#[derive(Debug, Clone)]
pub struct Areas {
    pub polygons: BTreeMap<Area, Vec<[f32; 2]>>,
    pub features: Vec<Vec<[f32; 2]>>,
    /// Inter-ocular distance (between the eyes' corner midpoints), pixels.
    pub iod: f32,
}

/// The outline of `idx` in `pts`.
fn outline(pts: &[[f32; 2]], idx: &[usize]) -> Vec<[f32; 2]> {
    idx.iter().map(|&i| pts[i]).collect()
}

/// `poly` scaled by `k` about its centroid.
pub fn grow(poly: &[[f32; 2]], k: f32) -> Vec<[f32; 2]> {
    let n = poly.len().max(1) as f32;
    let c = poly
        .iter()
        .fold([0.0, 0.0], |a, p| [a[0] + p[0] / n, a[1] + p[1] / n]);
    poly.iter().map(|&p| lerp(c, p, k)).collect()
}

/// A frame on the face: `at(origin, u, v)` is `origin + u*IOD` along the
/// eye line (towards the subject's left) `+ v*IOD` down the face.
struct Frame {
    e: [f32; 2],
    d: [f32; 2],
    iod: f32,
}

impl Frame {
    fn at(&self, o: [f32; 2], u: f32, v: f32) -> [f32; 2] {
        [
            o[0] + (u * self.e[0] + v * self.d[0]) * self.iod,
            o[1] + (u * self.e[1] + v * self.d[1]) * self.iod,
        ]
    }
}

/// The areas of a face from its 468 mesh points (any 2-D frame: image
/// pixels or an aligned crop's).
pub fn areas(pts: &[[f32; 2]]) -> Areas {
    let right_eye = mid(pts[RIGHT_EYE_OUTER], pts[RIGHT_EYE_INNER]);
    let left_eye = mid(pts[LEFT_EYE_OUTER], pts[LEFT_EYE_INNER]);
    let iod = dist(right_eye, left_eye).max(1.0);
    let e = [
        (left_eye[0] - right_eye[0]) / iod,
        (left_eye[1] - right_eye[1]) / iod,
    ];
    // Down the face: perpendicular to the eye line, towards the mouth.
    let eyes = mid(right_eye, left_eye);
    let mouth = mid(pts[MOUTH_RIGHT], pts[MOUTH_LEFT]);
    let mut d = [-e[1], e[0]];
    if d[0] * (mouth[0] - eyes[0]) + d[1] * (mouth[1] - eyes[1]) < 0.0 {
        d = [e[1], -e[0]];
    }
    let f = Frame { e, d, iod };
    let mut polygons = BTreeMap::new();
    polygons.insert(Area::FaceOval, outline(pts, &FACE_OVAL));
    polygons.insert(Area::Lips, outline(pts, &LIPS));
    polygons.insert(Area::RightEye, outline(pts, &RIGHT_EYE));
    polygons.insert(Area::LeftEye, outline(pts, &LEFT_EYE));

    // Under-eye and malar bands follow the lower lid (corners left out).
    for (lid, under, malar) in [
        (&RIGHT_EYE[2..7], Area::RightUnderEye, Area::RightMalar),
        (&LEFT_EYE[2..7], Area::LeftUnderEye, Area::LeftMalar),
    ] {
        let lid: Vec<[f32; 2]> = lid.iter().map(|&i| pts[i]).collect();
        let band = |top: f32, bottom: f32| {
            let mut p: Vec<[f32; 2]> = lid.iter().map(|&q| f.at(q, 0.0, top)).collect();
            p.extend(lid.iter().rev().map(|&q| f.at(q, 0.0, bottom)));
            p
        };
        polygons.insert(under, band(0.06, 0.22));
        polygons.insert(malar, band(0.30, 0.46));
    }
    // Cheeks: from the pupil line outwards, between the malar patch and the
    // mouth's level, clear of the nose and the nasolabial fold.
    for (s, eye, area) in [
        (-1.0, right_eye, Area::RightCheek),
        (1.0, left_eye, Area::LeftCheek),
    ] {
        polygons.insert(
            area,
            vec![
                f.at(eye, -0.02 * s, 0.52),
                f.at(eye, 0.30 * s, 0.52),
                f.at(eye, 0.36 * s, 0.88),
                f.at(eye, 0.02 * s, 0.88),
            ],
        );
    }
    // Forehead: a band above the inner three quarters of the brows.
    let upper_brows: Vec<[f32; 2]> = [63, 105, 66, 107, 336, 296, 334, 293]
        .iter()
        .map(|&i| pts[i])
        .collect();
    let mut forehead: Vec<[f32; 2]> = upper_brows.iter().map(|&q| f.at(q, 0.0, -0.10)).collect();
    forehead.extend(upper_brows.iter().rev().map(|&q| f.at(q, 0.0, -0.50)));
    polygons.insert(Area::Forehead, forehead);
    // Nose: bridge to the alae and the subnasale.
    let (tip, sub, top) = (pts[NOSE_TIP], pts[SUBNASALE], pts[GLABELLA]);
    polygons.insert(
        Area::Nose,
        vec![
            f.at(top, -0.10, 0.0),
            f.at(top, 0.10, 0.0),
            f.at(tip, 0.24, 0.0),
            f.at(sub, 0.14, 0.0),
            f.at(sub, -0.14, 0.0),
            f.at(tip, -0.24, 0.0),
        ],
    );
    // Chin: the silhouette below the lower lip.
    let lip = pts[LOWER_LIP_BOTTOM];
    let chin_top = lerp(lip, pts[152], 0.25);
    let mut chin = outline(pts, &[149, 176, 148, 152, 377, 400, 378]);
    chin.push(f.at(chin_top, 0.32, 0.0));
    chin.push(f.at(chin_top, -0.32, 0.0));
    polygons.insert(Area::Chin, chin);

    let features = vec![
        grow(&outline(pts, &RIGHT_EYE), 1.4),
        grow(&outline(pts, &LEFT_EYE), 1.4),
        grow(&outline(pts, &RIGHT_BROW), 1.3),
        grow(&outline(pts, &LEFT_BROW), 1.3),
        grow(&outline(pts, &LIPS), 1.15),
        vec![
            f.at(sub, -0.2, 0.02),
            f.at(tip, 0.0, 0.0),
            f.at(sub, 0.2, 0.02),
        ],
    ];
    Areas {
        polygons,
        features,
        iod,
    }
}

/// A pixel mask over a `width` x `height` image (row-major, 0 or 1).
#[derive(Debug, Clone)]
pub struct Mask {
    pub width: usize,
    pub height: usize,
    pub bits: Vec<u8>,
}

impl Mask {
    pub fn empty(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            bits: vec![0; width * height],
        }
    }

    /// Pixels whose centres lie inside `poly` (even-odd rule), by scanline.
    pub fn polygon(width: usize, height: usize, poly: &[[f32; 2]]) -> Self {
        let mut m = Self::empty(width, height);
        m.fill(poly, 1);
        m
    }

    /// Set (`v = 1`) or clear (`v = 0`) the pixels inside `poly`.
    pub fn fill(&mut self, poly: &[[f32; 2]], v: u8) {
        let n = poly.len();
        if n < 3 {
            return;
        }
        let mut xs = Vec::with_capacity(n);
        for y in 0..self.height {
            let yc = y as f32;
            xs.clear();
            for i in 0..n {
                let (a, b) = (poly[i], poly[(i + 1) % n]);
                if (a[1] > yc) != (b[1] > yc) {
                    xs.push(a[0] + (yc - a[1]) / (b[1] - a[1]) * (b[0] - a[0]));
                }
            }
            xs.sort_by(f32::total_cmp);
            for pair in xs.chunks_exact(2) {
                let x0 = pair[0].ceil().max(0.0) as usize;
                let x1 = (pair[1].ceil().max(0.0) as usize).min(self.width);
                if x0 < x1 {
                    let row = y * self.width;
                    self.bits[row + x0..row + x1].fill(v);
                }
            }
        }
    }

    /// Keep only pixels also set in `other`.
    pub fn and(&mut self, other: &Mask) {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a &= *b;
        }
    }

    pub fn count(&self) -> usize {
        self.bits.iter().filter(|&&b| b != 0).count()
    }
}

/// The skin of the face: inside the face oval, outside every feature.
pub fn skin_mask(a: &Areas, width: usize, height: usize) -> Mask {
    let mut m = Mask::polygon(width, height, &a.polygons[&Area::FaceOval]);
    for f in &a.features {
        m.fill(f, 0);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanline_fill_matches_point_tests() {
        let poly = [
            [2.2, 1.0],
            [17.5, 3.0],
            [12.0, 14.7],
            [4.0, 11.0],
            [8.0, 6.0],
        ];
        let m = Mask::polygon(20, 16, &poly);
        for y in 0..16 {
            for x in 0..20 {
                let inside = super::super::geometry::contains(&poly, [x as f32, y as f32]);
                assert_eq!(m.bits[y * 20 + x] == 1, inside, "({x}, {y})");
            }
        }
        let mut n = m.clone();
        n.fill(&[[0.0, 0.0], [20.0, 0.0], [20.0, 6.5], [0.0, 6.5]], 0);
        assert!(n.count() < m.count() && n.bits[..7 * 20].iter().all(|&b| b == 0));
    }

    #[test]
    fn mesh_indices_are_in_range_and_distinct() {
        for list in [
            &FACE_OVAL[..],
            &LIPS[..],
            &RIGHT_EYE[..],
            &LEFT_EYE[..],
            &RIGHT_BROW[..],
            &LEFT_BROW[..],
        ] {
            assert!(list
                .iter()
                .all(|&i| i < crate::model::face_mesh::NUM_LANDMARKS));
            let set: std::collections::BTreeSet<_> = list.iter().collect();
            assert_eq!(set.len(), list.len());
        }
    }
}
