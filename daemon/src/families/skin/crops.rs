//! Where each model's crop comes from: the maps from crop pixels to the
//! photo for the face mesh (MediaPipe's ROI from a detection or from the
//! mesh itself), the iris model's eye squares, the age net's face square and
//! the aligned face the colour metrics read. All maps take crop centre
//! coordinates to photo centre coordinates (`geometry`'s convention).

use super::geometry::{dist, mid, Affine};
use super::regions;
use crate::frame::MeshPoints;
use crate::model::{age, face_mesh, iris, Face};

/// Pixels between the eyes in the aligned face crop the metrics read.
pub const ALIGNED_IOD_PX: f32 = 160.0;

/// The face mesh's points in image pixels (centre coordinates), z scaled
/// like x and y.
pub(super) fn mesh_to_image(m: &MeshPoints, roi: &Affine) -> Vec<[f32; 3]> {
    let k = roi.scale();
    m.points
        .iter()
        .map(|p| {
            let [x, y] = roi.apply([p[0] - 0.5, p[1] - 0.5]);
            [x, y, p[2] * k]
        })
        .collect()
}

/// MediaPipe's face ROI: the square 1.5x the box's long side, turned by
/// `angle`, around the box's centre.
pub(super) fn face_roi(center: [f32; 2], long_side: f32, angle: f32) -> Affine {
    Affine::square_roi(center, long_side * 1.5, angle, face_mesh::INPUT_SIZE)
}

/// The ROI from a detection: its box, turned so its eyes are level.
pub(super) fn roi_from_detection(f: &Face) -> Affine {
    let (mut a, mut b) = (f.landmarks[0], f.landmarks[1]);
    if a[0] > b[0] {
        std::mem::swap(&mut a, &mut b);
    }
    let angle = (b[1] - a[1]).atan2(b[0] - a[0]);
    let c = [(f.x1 + f.x2) / 2.0 - 0.5, (f.y1 + f.y2) / 2.0 - 0.5];
    face_roi(c, (f.x2 - f.x1).max(f.y2 - f.y1), angle)
}

/// The ROI from mesh points: their bounding box in the frame of the eye
/// line (outer eye corners 33 -> 263), as MediaPipe's landmarks-to-ROI.
pub(super) fn roi_from_mesh(pts: &[[f32; 2]]) -> Affine {
    let (a, b) = (pts[33], pts[263]);
    let angle = (b[1] - a[1]).atan2(b[0] - a[0]);
    let (s, c) = angle.sin_cos();
    let (mut u0, mut u1, mut v0, mut v1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for p in pts {
        let (u, v) = (c * p[0] + s * p[1], -s * p[0] + c * p[1]);
        u0 = u0.min(u);
        u1 = u1.max(u);
        v0 = v0.min(v);
        v1 = v1.max(v);
    }
    let (cu, cv) = ((u0 + u1) / 2.0, (v0 + v1) / 2.0);
    let center = [c * cu - s * cv, s * cu + c * cv];
    face_roi(center, (u1 - u0).max(v1 - v0), angle)
}

/// The two eye crops for the iris model: the square 2.3x the corner
/// distance, level with the corners; the subject's left eye mirrored (the
/// model knows only the image-left eye). Returns (crop-to-image map,
/// mirrored) per eye.
pub(super) fn eye_rois(pts: &[[f32; 2]]) -> [(Affine, bool); 2] {
    let roi = |a: [f32; 2], b: [f32; 2], mirror: bool| {
        let angle = (b[1] - a[1]).atan2(b[0] - a[0]);
        let mut m = Affine::square_roi(mid(a, b), dist(a, b) * 2.3, angle, iris::INPUT_SIZE);
        if mirror {
            // u -> (size - 1) - u before the map.
            let s = (iris::INPUT_SIZE - 1) as f32;
            m = Affine {
                m: [
                    -m.m[0],
                    m.m[1],
                    m.m[0] * s + m.m[2],
                    -m.m[3],
                    m.m[4],
                    m.m[3] * s + m.m[5],
                ],
            };
        }
        (m, mirror)
    };
    [roi(pts[33], pts[133], false), roi(pts[362], pts[263], true)]
}

/// Inner lip line: with `regions::LIPS` it stands for the 20 mouth points
/// of the 68-point scheme whose mean face-api takes as the mouth centre.
const INNER_LIPS: [usize; 20] = [
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191,
];

/// The map from age-crop pixels to the image: face-api's upright square
/// (`FaceLandmarks.align`, see `models/skin/age_graph.md`), side
/// `mean(|mouth - eye|) / 0.45`, corner at `centroid(eyes, mouth) - (0.5,
/// 0.43) x side`; eye and mouth centres are means of mesh contours.
pub(super) fn age_crop_map(pts: &[[f32; 2]]) -> Affine {
    let centre = |idx: &mut dyn Iterator<Item = usize>| {
        let (mut s, mut n) = ([0f32; 2], 0f32);
        for i in idx {
            s = [s[0] + pts[i][0], s[1] + pts[i][1]];
            n += 1.0;
        }
        [s[0] / n, s[1] / n]
    };
    let re = centre(&mut regions::RIGHT_EYE.iter().copied());
    let le = centre(&mut regions::LEFT_EYE.iter().copied());
    let mc = centre(&mut regions::LIPS.iter().chain(INNER_LIPS.iter()).copied());
    let side = (dist(mc, le) + dist(mc, re)) / 2.0 / 0.45;
    let c = [(re[0] + le[0] + mc[0]) / 3.0, (re[1] + le[1] + mc[1]) / 3.0];
    let s = side / age::INPUT_SIZE as f32;
    // Crop centre coordinates -> image centre coordinates.
    Affine {
        m: [
            s,
            0.0,
            c[0] - 0.5 * side + 0.5 * s - 0.5,
            0.0,
            s,
            c[1] - 0.43 * side + 0.5 * s - 0.5,
        ],
    }
}

/// A crop (HWC u8 RGB, `size` square) mirrored left to right.
pub(super) fn mirrored(crop: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(crop.len());
    for row in crop.chunks_exact(size * 3) {
        for px in row.chunks_exact(3).rev() {
            out.extend_from_slice(px);
        }
    }
    out
}

/// The aligned face crop: upright, `ALIGNED_IOD_PX` between the eyes, the
/// face oval plus a margin. Returns the crop-to-image map and its size.
pub(super) fn aligned_map(pts: &[[f32; 2]], iod: f32) -> (Affine, usize, usize) {
    let er = mid(pts[33], pts[133]);
    let el = mid(pts[263], pts[362]);
    let o = mid(er, el);
    let e = [(el[0] - er[0]) / iod, (el[1] - er[1]) / iod];
    let d = [-e[1], e[0]];
    let s = ALIGNED_IOD_PX / iod;
    let (mut u0, mut u1, mut v0, mut v1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for &i in regions::FACE_OVAL.iter() {
        let q = [pts[i][0] - o[0], pts[i][1] - o[1]];
        let (u, v) = (
            (q[0] * e[0] + q[1] * e[1]) * s,
            (q[0] * d[0] + q[1] * d[1]) * s,
        );
        u0 = u0.min(u);
        u1 = u1.max(u);
        v0 = v0.min(v);
        v1 = v1.max(v);
    }
    let margin = 0.08 * ALIGNED_IOD_PX;
    // Bounded whatever the mesh says: 8 x IOD each way.
    let cap = 8.0 * ALIGNED_IOD_PX;
    let (u0, v0) = ((u0 - margin).max(-cap / 2.0), (v0 - margin).max(-cap / 2.0));
    let w = ((u1 + margin - u0).ceil().clamp(8.0, cap)) as usize;
    let h = ((v1 + margin - v0).ceil().clamp(8.0, cap)) as usize;
    let t = [
        o[0] + (u0 * e[0] + v0 * d[0]) / s,
        o[1] + (u0 * e[1] + v0 * d[1]) / s,
    ];
    (
        Affine {
            m: [e[0] / s, d[0] / s, t[0], e[1] / s, d[1] / s, t[1]],
        },
        w,
        h,
    )
}

/// The points' x and y.
pub(super) fn xy(p: &[[f32; 3]]) -> Vec<[f32; 2]> {
    p.iter().map(|q| [q[0], q[1]]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mesh points with every eye point at one spot per eye and every lip
    /// point at the mouth: face-api's square then has a known place.
    fn points(re: [f32; 2], le: [f32; 2], mouth: [f32; 2]) -> Vec<[f32; 2]> {
        let mut pts = vec![[0f32; 2]; 468];
        for &i in regions::RIGHT_EYE.iter() {
            pts[i] = re;
        }
        for &i in regions::LEFT_EYE.iter() {
            pts[i] = le;
        }
        for &i in regions::LIPS.iter().chain(INNER_LIPS.iter()) {
            pts[i] = mouth;
        }
        pts
    }

    #[test]
    fn age_crop_is_face_apis_square() {
        let (re, le, mc) = ([100.0, 200.0], [160.0, 200.0], [130.0, 245.0]);
        let m = age_crop_map(&points(re, le, mc));
        // side = mean eye-to-mouth distance / 0.45
        let side = dist(mc, re) / 0.45;
        let n = age::INPUT_SIZE as f32;
        assert!((m.scale() - side / n).abs() < 1e-4);
        // The crop's top-left edge is centroid - (0.5, 0.43) x side.
        let c = [(re[0] + le[0] + mc[0]) / 3.0, (re[1] + le[1] + mc[1]) / 3.0];
        let corner = m.apply([-0.5, -0.5]);
        assert!(
            (corner[0] + 0.5 - (c[0] - 0.5 * side)).abs() < 1e-3,
            "{corner:?}"
        );
        assert!(
            (corner[1] + 0.5 - (c[1] - 0.43 * side)).abs() < 1e-3,
            "{corner:?}"
        );
        // Upright: no rotation whatever the face's roll (face-api's rect).
        assert_eq!((m.m[1], m.m[3]), (0.0, 0.0));
    }

    #[test]
    fn mirrored_flips_rows_and_twice_is_the_crop() {
        let crop: Vec<u8> = (0..2 * 3 * 3).map(|v| v as u8).collect();
        let once = mirrored(&crop, 3);
        assert_eq!(&once[..9], &[6, 7, 8, 3, 4, 5, 0, 1, 2]);
        assert_eq!(mirrored(&once, 3), crop);
    }
}
