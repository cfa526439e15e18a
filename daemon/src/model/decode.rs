//! CenterFace output decoding and non-maximum suppression.

use super::Face;

/// One image's head outputs at stride 4, channel-major ([C, h, w] flattened).
pub struct HeadMaps<'a> {
    pub heatmap: &'a [f32],
    pub scale: &'a [f32],
    pub offset: &'a [f32],
    pub landmarks: &'a [f32],
    pub h: usize,
    pub w: usize,
}

/// Every heatmap cell above `threshold` as a face box in model-input pixels.
///
/// For cell (row, col): s_h = exp(scale0)*4, s_w = exp(scale1)*4, the box
/// centre is ((col + off_x + 0.5)*4, (row + off_y + 0.5)*4), and landmark j is
/// `(lm[2j+1]*s_w + x1, lm[2j]*s_h + y1)`. Boxes are clipped to the input.
pub fn candidates(m: &HeadMaps, threshold: f32, input_w: f32, input_h: f32) -> Vec<Face> {
    let plane = m.h * m.w;
    let mut out = Vec::new();
    for (i, &score) in m.heatmap[..plane].iter().enumerate() {
        if score <= threshold || !score.is_finite() {
            continue;
        }
        let (row, col) = ((i / m.w) as f32, (i % m.w) as f32);
        let s_h = m.scale[i].exp() * 4.0;
        let s_w = m.scale[plane + i].exp() * 4.0;
        let cy = (row + m.offset[i] + 0.5) * 4.0;
        let cx = (col + m.offset[plane + i] + 0.5) * 4.0;
        let (x1, y1) = (cx - s_w / 2.0, cy - s_h / 2.0);
        let mut landmarks = [[0f32; 2]; 5];
        for (j, lm) in landmarks.iter_mut().enumerate() {
            let ly = m.landmarks[2 * j * plane + i];
            let lx = m.landmarks[(2 * j + 1) * plane + i];
            *lm = [lx * s_w + x1, ly * s_h + y1];
        }
        out.push(Face {
            score,
            x1: x1.clamp(0.0, input_w),
            y1: y1.clamp(0.0, input_h),
            x2: (x1 + s_w).clamp(0.0, input_w),
            y2: (y1 + s_h).clamp(0.0, input_h),
            landmarks,
        });
    }
    out
}

/// Greedy NMS: highest score first; drop any box whose IoU with a kept box
/// is at or above `iou_threshold`. Returns the kept faces, best first.
pub fn nms(mut faces: Vec<Face>, iou_threshold: f32) -> Vec<Face> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<Face> = Vec::with_capacity(faces.len().min(64));
    for f in faces {
        if keep.iter().all(|k| k.iou(&f) < iou_threshold) {
            keep.push(f);
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(score: f32, x1: f32, y1: f32, x2: f32, y2: f32) -> Face {
        Face {
            score,
            x1,
            y1,
            x2,
            y2,
            landmarks: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn nms_keeps_best_of_overlapping_and_all_disjoint() {
        let kept = nms(
            vec![
                face(0.6, 0.0, 0.0, 10.0, 10.0),
                face(0.9, 1.0, 1.0, 11.0, 11.0),
                face(0.7, 50.0, 50.0, 60.0, 60.0),
            ],
            0.4,
        );
        let scores: Vec<f32> = kept.iter().map(|f| f.score).collect();
        assert_eq!(scores, vec![0.9, 0.7]);
    }

    #[test]
    fn decode_places_box_at_cell_centre() {
        // 2x3 map, one hot cell at row 1, col 2, scale log(2) => 8 px box.
        let (h, w) = (2, 3);
        let mut heat = vec![0.0; 6];
        heat[5] = 0.9;
        let scale = vec![2f32.ln(); 12];
        let offset = vec![0.0; 12];
        let mut lms = vec![0.0; 60];
        lms[5] = 0.5; // landmark 0 y
        lms[6 + 5] = 0.25; // landmark 0 x
        let m = HeadMaps {
            heatmap: &heat,
            scale: &scale,
            offset: &offset,
            landmarks: &lms,
            h,
            w,
        };
        let c = candidates(&m, 0.5, 100.0, 100.0);
        assert_eq!(c.len(), 1);
        let f = c[0];
        // centre x = (2 + 0.5) * 4 = 10, y = (1 + 0.5) * 4 = 6, size 8
        assert_eq!((f.x1, f.y1, f.x2, f.y2), (6.0, 2.0, 14.0, 10.0));
        assert_eq!(f.landmarks[0], [6.0 + 0.25 * 8.0, 2.0 + 0.5 * 8.0]);
    }
}
