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

/// The ROI from a detection: its box, turned so its eyes are level and its
/// mouth below them, whichever way up the photo is. Ordering the eyes by
/// their x in the photo instead would keep every ROI within 90 degrees of
/// upright: an upside-down face was cropped upright, the mesh fitted to it
/// as if it were, and the pose read level.
pub(super) fn roi_from_detection(f: &Face) -> Affine {
    let (mut a, mut b) = (f.landmarks[0], f.landmarks[1]);
    let eyes = [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0];
    let (ml, mr) = (f.landmarks[3], f.landmarks[4]);
    let down = [
        (ml[0] + mr[0]) / 2.0 - eyes[0],
        (ml[1] + mr[1]) / 2.0 - eyes[1],
    ];
    // With y down, the mouth lies clockwise of the eye line's direction: a
    // positive cross product. A mirrored labelling of the eyes flips it.
    if (b[0] - a[0]) * down[1] - (b[1] - a[1]) * down[0] < 0.0 {
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

/// Mesh points standing for the 68-point scheme's outline as face-api's
/// box sees it: the brows (17-26, whose upper edge is the box's top), the jaw
/// from ear to ear (0-16, the sides and the chin at the bottom).
const LANDMARKS_68_OUTLINE: [usize; 41] = [
    // brows, upper and lower edges
    70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 300, 293, 334, 296, 336, 285, 295, 282, 283, 276,
    // jaw, the subject's right ear to left ear through the chin
    234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361,
    323, 454,
];

/// face-api's face crop for its age net (`FaceLandmarks.align()` with its
/// defaults, i.e. `alignMinBbox(0.2)`; `models/skin/age_graph.md`): the
/// landmarks' bounding box grown by 10% of its size on each side, clipped
/// to the image, centred in a square whose bars are black, that square
/// scaled to the net's input. Returns the map from crop pixels to the image
/// (centre coordinates) and the clipped box `[x0, y0, x1, y1]` in image
/// edge coordinates, outside which the crop must be black.
pub(super) fn age_crop(pts: &[[f32; 2]], width: u32, height: u32) -> (Affine, [f32; 4]) {
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for &i in LANDMARKS_68_OUTLINE.iter() {
        // Centre -> edge coordinates (face-api's pixel positions).
        let (x, y) = (pts[i][0] + 0.5, pts[i][1] + 0.5);
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let (pw, ph) = (0.1 * (x1 - x0), 0.1 * (y1 - y0));
    let b = [
        (x0 - pw).max(0.0),
        (y0 - ph).max(0.0),
        (x1 + pw).min(width as f32),
        (y1 + ph).min(height as f32),
    ];
    let side = (b[2] - b[0]).max(b[3] - b[1]).max(1.0);
    // The square's corner: the box centred in it.
    let (sx, sy) = ((b[0] + b[2] - side) / 2.0, (b[1] + b[3] - side) / 2.0);
    let k = side / age::INPUT_SIZE as f32;
    // Crop pixel u (centre u + 0.5 in edge units) -> image centre coordinates.
    let map = Affine {
        m: [k, 0.0, sx + 0.5 * k - 0.5, 0.0, k, sy + 0.5 * k - 0.5],
    };
    (map, b)
}

/// Black out the crop's pixels (HWC u8 RGB, `size` square) whose source,
/// through `map`, lies outside `keep` (image edge coordinates): face-api's
/// bars beside a face box that is not square.
pub(super) fn black_outside(crop: &mut [u8], size: usize, map: &Affine, keep: [f32; 4]) {
    for (v, row) in crop.chunks_exact_mut(size * 3).enumerate() {
        for (u, px) in row.chunks_exact_mut(3).enumerate() {
            let [x, y] = map.apply([u as f32, v as f32]);
            let (x, y) = (x + 0.5, y + 0.5);
            if x < keep[0] || x >= keep[2] || y < keep[1] || y >= keep[3] {
                px.fill(0);
            }
        }
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

    /// A face box 60 wide and 100 tall: face-api's box grown 10% a side,
    /// centred in a square with black bars left and right.
    #[test]
    fn age_crop_is_face_apis_padded_box_in_a_square() {
        let mut pts = vec![[0f32; 2]; 468];
        // Outline points on the box [100, 200] .. [160, 300] (centre coords).
        for (n, &i) in LANDMARKS_68_OUTLINE.iter().enumerate() {
            let t = n as f32 / (LANDMARKS_68_OUTLINE.len() - 1) as f32;
            pts[i] = [
                100.0 + 60.0 * t,
                200.0 + 100.0 * (1.0 - (2.0 * t - 1.0).abs()),
            ];
        }
        let (map, keep) = age_crop(&pts, 1000, 1000);
        // Edge box [100.5, 200.5, 160.5, 300.5] grown by 6 and 10.
        let want = [94.5, 190.5, 166.5, 310.5];
        for (k, w) in keep.iter().zip(want) {
            assert!((k - w).abs() < 1e-3, "{keep:?}");
        }
        let n = age::INPUT_SIZE as f32;
        // The square is the box's height (120) wide, centred on the box.
        assert!((map.scale() - 120.0 / n).abs() < 1e-4);
        let corner = map.apply([-0.5, -0.5]);
        assert!(
            (corner[0] + 0.5 - (130.5 - 60.0)).abs() < 1e-3,
            "{corner:?}"
        );
        assert!((corner[1] + 0.5 - 190.5).abs() < 1e-3, "{corner:?}");
        let mut crop = vec![200u8; age::INPUT_SIZE * age::INPUT_SIZE * 3];
        black_outside(&mut crop, age::INPUT_SIZE, &map, keep);
        let px = |u: usize, v: usize| crop[(v * age::INPUT_SIZE + u) * 3];
        // Bars of (120 - 72) / 2 = 24 image px = 22.4 crop px each side.
        assert_eq!((px(0, 50), px(21, 50)), (0, 0));
        assert_eq!((px(23, 50), px(88, 50)), (200, 200));
        assert_eq!((px(90, 50), px(111, 50)), (0, 0));
        assert_eq!((px(56, 0), px(56, 111)), (200, 200));
    }

    /// At the image's edge the box is clipped and the square holds it
    /// centred, bars on both sides (face-api's `padToSquare`).
    #[test]
    fn age_crop_clips_at_the_border() {
        let mut pts = vec![[0f32; 2]; 468];
        for (n, &i) in LANDMARKS_68_OUTLINE.iter().enumerate() {
            let t = n as f32 / (LANDMARKS_68_OUTLINE.len() - 1) as f32;
            pts[i] = [-20.0 + 80.0 * t, 10.0 + 80.0 * t];
        }
        let (_, keep) = age_crop(&pts, 640, 480);
        assert_eq!(keep[0], 0.0);
        assert_eq!(keep[1], 2.5);
    }

    #[test]
    fn mirrored_flips_rows_and_twice_is_the_crop() {
        let crop: Vec<u8> = (0..2 * 3 * 3).map(|v| v as u8).collect();
        let once = mirrored(&crop, 3);
        assert_eq!(&once[..9], &[6, 7, 8, 3, 4, 5, 0, 1, 2]);
        assert_eq!(mirrored(&once, 3), crop);
    }
}
