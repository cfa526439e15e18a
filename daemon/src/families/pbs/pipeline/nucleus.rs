//! White cells without a nucleus are not white cells: the white-cell net,
//! trained on BCCD's Wright-stained photos, takes some denser red cells of
//! other labs' photos for white cells (PBC's May-Grünwald Giemsa crops: 12
//! of 120 photos), and every white cell has a nucleus, which Romanowsky
//! stains (Wright, Giemsa, May-Grünwald Giemsa) turn purple, while a red
//! cell has none. So a white cell whose box holds too little purple of the
//! photo, in red-cell areas, is dropped (models/cbc/MODEL_CARD.md, "White
//! cells without a nucleus"). An area, not a share of the box: where the
//! net's white cell spreads over the red cells around it (photos with a
//! blue-grey cast), its box is mostly red cells but still holds the whole
//! nucleus.

use image::RgbImage;

use super::{CellKind, SmearAnalysis};
use crate::imaging::rbc_size;

/// How many of a box's pixels are purple: `purple` is row-major, `width`
/// wide; the box is clipped to it.
pub fn purple_in_box(purple: &[bool], width: u32, x: u32, y: u32, w: u32, h: u32) -> usize {
    let width = width as usize;
    let height = purple.len() / width.max(1);
    let (x0, y0) = ((x as usize).min(width), (y as usize).min(height));
    let (x1, y1) = (
        (x as usize + w as usize).min(width),
        (y as usize + h as usize).min(height),
    );
    (y0..y1)
        .map(|r| {
            purple[r * width + x0..r * width + x1]
                .iter()
                .filter(|&&p| p)
                .count()
        })
        .sum()
}

/// Drops the white cells of `a` (an analysis of `photo`) whose box holds
/// less than `min_area` purple pixels ([`rbc_size::purple_pixels`], judged
/// against the photo's own background), in units of d^2 (d the red-cell
/// diameter in the photo at `a`'s scale, as the other minimum areas), and
/// counts the rest. Nothing happens when `min_area` is 0 or no white cell
/// was found, so the photo is only looked at when there is something to
/// check. Blocking; linear in the photo's pixels.
pub fn drop_anucleate_white_cells(a: &mut SmearAnalysis, photo: &RgbImage, min_area: f32) {
    if min_area <= 0.0 || a.counts.wbc == 0 || a.scale <= 0.0 {
        return;
    }
    let d = a.rbc_diameter / a.scale;
    let min = min_area * d * d;
    let purple = rbc_size::purple_pixels(photo);
    let width = photo.width();
    a.cells.retain(|c| {
        c.kind != CellKind::Wbc
            || purple_in_box(&purple, width, c.x, c.y, c.width, c.height) as f32 >= min
    });
    a.counts.wbc = a.cells.iter().filter(|c| c.kind == CellKind::Wbc).count();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::pbs::pipeline::{CellBox, Counts};

    fn cell(kind: CellKind, x: u32, y: u32, side: u32) -> CellBox {
        CellBox {
            kind,
            x,
            y,
            width: side,
            height: side,
            p_parasitized: None,
            wbc_probabilities: None,
        }
    }

    #[test]
    fn a_box_is_clipped_to_the_photo() {
        let purple: Vec<bool> = (0..100).map(|i| i % 10 < 5).collect();
        assert_eq!(purple_in_box(&purple, 10, 0, 0, 10, 10), 50);
        assert_eq!(purple_in_box(&purple, 10, 5, 5, 20, 20), 0);
        assert_eq!(purple_in_box(&purple, 10, 0, 0, 5, 20), 50);
        assert_eq!(purple_in_box(&purple, 10, 12, 0, 5, 5), 0);
    }

    #[test]
    fn a_white_cell_without_purple_is_dropped_and_one_with_a_nucleus_kept() {
        // Pale background, two pink red cells, a purple white cell in one
        // "white cell" box; another holds a red cell; a third spreads over
        // the white cell and the background around it (most of its box is
        // not purple, but the whole nucleus is in it).
        let mut photo = RgbImage::from_pixel(200, 100, image::Rgb([225, 220, 215]));
        for (x, y, p) in photo.enumerate_pixels_mut() {
            let d = |cx: f32, cy: f32| ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
            if d(50.0, 50.0) < 15.0 {
                *p = image::Rgb([120, 70, 170]);
            } else if d(50.0, 50.0) < 25.0 {
                *p = image::Rgb([200, 190, 215]);
            } else if d(150.0, 50.0) < 20.0 || d(110.0, 20.0) < 12.0 {
                *p = image::Rgb([200, 130, 130]);
            }
        }
        let cells = vec![
            cell(CellKind::Wbc, 25, 25, 50),
            cell(CellKind::Wbc, 130, 30, 40),
            cell(CellKind::Wbc, 0, 0, 100),
            cell(CellKind::Rbc, 130, 30, 40),
            cell(CellKind::Rbc, 98, 8, 24),
        ];
        let mut a = SmearAnalysis {
            width: 200,
            height: 100,
            scale: 1.0,
            counts: Counts {
                rbc: 2,
                wbc: 3,
                platelets: 0,
            },
            cells,
            tiles: 1,
            rbc_size: None,
            rbc_outline: None,
            rbc_labels: Vec::new(),
            rbc_regions: Vec::new(),
            scaled_w: 200,
            rbc_diameter: 50.0,
            dropped: Default::default(),
            rbc_round: None,
        };
        let mut kept = a.clone();
        drop_anucleate_white_cells(&mut kept, &photo, 0.0);
        assert_eq!(kept.counts.wbc, 3, "0 turns the test off");
        // The white cell is 0.79 d^2 of purple (d = 50 px), 20% of the
        // spread box.
        drop_anucleate_white_cells(&mut a, &photo, 0.25);
        assert_eq!((a.counts.rbc, a.counts.wbc), (2, 2));
        assert_eq!(a.cells.len(), 4);
        assert!(!a
            .cells
            .iter()
            .any(|c| c.kind == CellKind::Wbc && (c.x, c.y) == (130, 30)));
    }
}
