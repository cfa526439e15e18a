//! Centres of round cells from a boundary map, by a circular Hough
//! transform over a known range of radii (Duda and Hart, "Use of the Hough
//! transformation to detect lines and curves in pictures", CACM 15(1),
//! 1972). Red cells overlap in clumps where no threshold of the boundary map
//! separates them, but each one's outline is still mostly there: voting
//! along whole circles of the expected size finds the centre of each cell
//! from whatever part of its outline shows, and the vote moves little when
//! the photo is resampled, unlike a threshold on a faint boundary.

/// A circle found: centre in map pixels, its radius in pixels and its
/// support (the mean boundary value along the circle, 0-1, values under
/// [`MIN_VOTE`] counted as 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circle {
    pub x: usize,
    pub y: usize,
    pub radius: f32,
    pub support: f32,
}

/// Boundary values under this do not vote (they are the net's background
/// noise, and skipping them makes the transform cheap).
pub const MIN_VOTE: f32 = 0.1;

/// Circles of radius `radii.0..=radii.1` px (whole pixels) in `boundary`
/// (`width` x `height`, values 0-1, row-major) whose support is at least
/// `min_support`, whose centre lies where `inside` is true, and no two
/// closer than `min_separation` px (the stronger is kept). Strongest first.
///
/// Cost: about 2 pi r adds per boundary pixel over `MIN_VOTE` and radius
/// (at the counter's d = 50 px and radii 20-30 px, about 1,650 per such
/// pixel), and 12 bytes per map pixel.
///
/// # Panics
/// When `boundary` or `inside` is not `width * height` long.
pub fn find(
    boundary: &[f32],
    inside: &[bool],
    width: usize,
    height: usize,
    radii: (usize, usize),
    min_support: f32,
    min_separation: f32,
) -> Vec<Circle> {
    let n = width * height;
    assert_eq!(boundary.len(), n, "boundary map is not width x height");
    assert_eq!(inside.len(), n, "inside mask is not width x height");
    assert!(n <= u32::MAX as usize, "map of {n} pixels");
    let (r0, r1) = (radii.0.max(1), radii.1.max(radii.0.max(1)));
    let mut best = vec![0f32; n];
    let mut best_r = vec![0f32; n];
    let voters: Vec<(u32, f32)> = boundary
        .iter()
        .enumerate()
        .filter(|(_, &v)| v >= MIN_VOTE)
        .map(|(i, &v)| (i as u32, v))
        .collect();
    // Votes land in a copy padded by the largest radius on every side, so
    // the inner loop is a bare add at a fixed offset per ring point.
    let pad = r1;
    let pw = width + 2 * pad;
    let mut acc = vec![0f32; pw * (height + 2 * pad)];
    for r in r0..=r1 {
        let offsets: Vec<isize> = ring(r)
            .iter()
            .map(|&(dx, dy)| dy as isize * pw as isize + dx as isize)
            .collect();
        let norm = 1.0 / offsets.len() as f32;
        acc.iter_mut().for_each(|a| *a = 0.0);
        for &(i, v) in &voters {
            let (x, y) = (i as usize % width, i as usize / width);
            let at = ((y + pad) * pw + x + pad) as isize;
            for &o in &offsets {
                acc[(at + o) as usize] += v;
            }
        }
        for y in 0..height {
            let row = &acc[(y + pad) * pw + pad..][..width];
            for (x, &a) in row.iter().enumerate() {
                let i = y * width + x;
                let s = a * norm;
                if s > best[i] {
                    best[i] = s;
                    best_r[i] = r as f32;
                }
            }
        }
    }
    let mut candidates: Vec<usize> = (0..n)
        .filter(|&i| inside[i] && best[i] >= min_support)
        .collect();
    candidates.sort_by(|&a, &b| best[b].total_cmp(&best[a]).then(a.cmp(&b)));
    // Each accepted centre blocks the disc around it, so the greedy pass is
    // linear in the candidates whatever the number of cells.
    let mut blocked = vec![false; n];
    let sep = min_separation.max(0.0);
    let reach = sep.ceil() as i64;
    let mut out: Vec<Circle> = Vec::new();
    for i in candidates {
        if blocked[i] {
            continue;
        }
        let (x, y) = (i % width, i / width);
        out.push(Circle {
            x,
            y,
            radius: best_r[i],
            support: best[i],
        });
        for dy in -reach..=reach {
            for dx in -reach..=reach {
                let (bx, by) = (x as i64 + dx, y as i64 + dy);
                if bx >= 0
                    && by >= 0
                    && (bx as usize) < width
                    && (by as usize) < height
                    && ((dx * dx + dy * dy) as f32) < sep * sep
                {
                    blocked[by as usize * width + bx as usize] = true;
                }
            }
        }
    }
    out
}

/// Samples per ring of [`outline_radius`]'s radial profile.
const PROFILE_ANGLES: usize = 64;

/// Step of [`outline_radius`]'s radial profile, pixels.
const PROFILE_STEP: f32 = 0.25;

/// The radius, in pixels to a fraction of one, at which `boundary` is
/// strongest around `centres` on average: the peak of its mean radial
/// profile over `radii.0..=radii.1` px (rings of 64 bilinear samples every
/// 0.25 px, samples off the map left out), refined by a parabola through
/// the peak and its neighbours. `None` for fewer than `min_centres`
/// centres or a peak at either end of the range (no outline in it).
///
/// The circles [`find`] returns carry whole-pixel radii, and each cell's
/// own best radius is noisy; the profile over every cell of a photo
/// measures their common outline to about 1%, and follows the photo's
/// magnification (BCCD: within 4% on 96-99% of rescaled copies where the
/// colour measure is within 4% on 83-92%, models/cbc/MODEL_CARD.md).
///
/// # Panics
/// When `boundary` is not `width * height` long.
pub fn outline_radius(
    boundary: &[f32],
    width: usize,
    height: usize,
    centres: &[Circle],
    radii: (f32, f32),
    min_centres: usize,
) -> Option<f32> {
    assert_eq!(
        boundary.len(),
        width * height,
        "boundary map is not width x height"
    );
    if centres.len() < min_centres.max(1) || width < 2 || height < 2 || radii.1 <= radii.0 {
        return None;
    }
    let at = |x: f32, y: f32| -> Option<f32> {
        if !(0.0..(width - 1) as f32).contains(&x) || !(0.0..(height - 1) as f32).contains(&y) {
            return None;
        }
        let (x0, y0) = (x as usize, y as usize);
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let v = |dx: usize, dy: usize| boundary[(y0 + dy) * width + x0 + dx];
        Some(
            (v(0, 0) * (1.0 - fx) + v(1, 0) * fx) * (1.0 - fy)
                + (v(0, 1) * (1.0 - fx) + v(1, 1) * fx) * fy,
        )
    };
    let ring: Vec<(f32, f32)> = (0..PROFILE_ANGLES)
        .map(|k| {
            let a = k as f32 * std::f32::consts::TAU / PROFILE_ANGLES as f32;
            (a.cos(), a.sin())
        })
        .collect();
    let steps = ((radii.1 - radii.0) / PROFILE_STEP).floor() as usize + 1;
    let profile: Vec<f32> = (0..steps)
        .map(|k| {
            let r = radii.0 + PROFILE_STEP * k as f32;
            let (mut sum, mut n) = (0.0, 0usize);
            for c in centres {
                for &(cos, sin) in &ring {
                    if let Some(v) = at(c.x as f32 + r * cos, c.y as f32 + r * sin) {
                        sum += v;
                        n += 1;
                    }
                }
            }
            if n == 0 {
                0.0
            } else {
                sum / n as f32
            }
        })
        .collect();
    let k = (0..steps).max_by(|&a, &b| profile[a].total_cmp(&profile[b]).then(b.cmp(&a)))?;
    if k == 0 || k + 1 == steps {
        return None;
    }
    let shift = super::peak_offset(profile[k - 1], profile[k], profile[k + 1]);
    Some(radii.0 + PROFILE_STEP * (k as f32 + shift))
}

/// The distinct whole-pixel offsets of a circle of radius `r`.
fn ring(r: usize) -> Vec<(i64, i64)> {
    let steps = ((2.0 * std::f32::consts::PI * r as f32).ceil() as usize).max(8);
    let mut v: Vec<(i64, i64)> = (0..steps)
        .map(|k| {
            let a = k as f32 * 2.0 * std::f32::consts::PI / steps as f32;
            (
                (r as f32 * a.cos()).round() as i64,
                (r as f32 * a.sin()).round() as i64,
            )
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = 120;
    const H: usize = 70;

    /// A boundary map with the outline (1 px wide, value `v`) of each
    /// circle, leaving out the arc of each that lies inside an earlier one,
    /// as the outline of a cell under another is hidden.
    fn outlines(circles: &[(f32, f32, f32)], v: f32) -> Vec<f32> {
        let mut m = vec![0f32; W * H];
        for (k, &(cx, cy, r)) in circles.iter().enumerate() {
            for y in 0..H {
                for x in 0..W {
                    let (fx, fy) = (x as f32, y as f32);
                    let on = ((fx - cx).hypot(fy - cy) - r).abs() < 0.5;
                    let hidden = circles[..k]
                        .iter()
                        .any(|&(ox, oy, or)| (fx - ox).hypot(fy - oy) < or - 0.5);
                    if on && !hidden {
                        m[y * W + x] = v;
                    }
                }
            }
        }
        m
    }

    #[test]
    fn finds_each_cell_of_an_overlapping_row_from_its_visible_arc() {
        let cells = [(25.0, 35.0, 14.0), (47.0, 35.0, 14.0), (69.0, 37.0, 14.0)];
        let map = outlines(&cells, 0.6);
        let found = find(&map, &vec![true; W * H], W, H, (11, 17), 0.2, 12.0);
        assert_eq!(found.len(), 3, "{found:?}");
        for &(cx, cy, r) in &cells {
            let c = found
                .iter()
                .find(|c| (c.x as f32 - cx).hypot(c.y as f32 - cy) <= 1.5)
                .unwrap_or_else(|| panic!("no circle at ({cx}, {cy}): {found:?}"));
            assert!((c.radius - r).abs() <= 1.0, "{c:?}");
            assert!(c.support > 0.2 && c.support <= 0.6, "{c:?}");
        }
    }

    #[test]
    fn a_blank_or_too_faint_map_and_centres_outside_give_nothing() {
        let inside = vec![true; W * H];
        assert!(find(&vec![0.0; W * H], &inside, W, H, (11, 17), 0.2, 12.0).is_empty());
        // Outlines under the voting floor do not count at all.
        let faint = outlines(&[(40.0, 35.0, 14.0)], 0.09);
        assert!(find(&faint, &inside, W, H, (11, 17), 0.01, 12.0).is_empty());
        // A centre where `inside` is false (e.g. background) is no cell.
        let one = outlines(&[(40.0, 35.0, 14.0)], 0.8);
        assert!(find(&one, &vec![false; W * H], W, H, (11, 17), 0.2, 12.0).is_empty());
        assert_eq!(find(&one, &inside, W, H, (11, 17), 0.2, 12.0).len(), 1);
    }

    #[test]
    fn only_centres_inside_count_and_the_border_cuts_no_circle_short() {
        // Two whole outlines, `inside` true only on the left half: the left
        // one. A third cut by the left border (half its outline in the
        // map) is still found at its centre.
        let map = outlines(
            &[(30.0, 35.0, 14.0), (85.0, 35.0, 14.0), (4.0, 35.0, 14.0)],
            0.8,
        );
        let left: Vec<bool> = (0..W * H).map(|i| i % W < 55).collect();
        let found = find(&map, &left, W, H, (11, 17), 0.3, 12.0);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found
            .iter()
            .any(|c| c.x.abs_diff(30) <= 1 && c.y.abs_diff(35) <= 1));
        assert!(found
            .iter()
            .any(|c| c.x.abs_diff(4) <= 1 && c.y.abs_diff(35) <= 1));
        // A map smaller than the radii: no panic, and no circle fits.
        let tiny = vec![0.8f32; 100];
        assert!(find(&tiny, &[true; 100], 10, 10, (11, 17), 0.3, 12.0).is_empty());
    }

    /// A boundary map of soft outlines (Gaussian across the outline, sigma
    /// 1.5 px) of radius `r` around each centre.
    fn soft_outlines(centres: &[(f32, f32)], r: f32) -> Vec<f32> {
        let mut m = vec![0f32; W * H];
        for (i, v) in m.iter_mut().enumerate() {
            let (x, y) = ((i % W) as f32, (i / W) as f32);
            for &(cx, cy) in centres {
                let off = (x - cx).hypot(y - cy) - r;
                *v = v.max(0.8 * (-off * off / (2.0 * 1.5 * 1.5)).exp());
            }
        }
        m
    }

    #[test]
    fn the_outline_radius_is_measured_to_a_fraction_of_a_pixel() {
        let centres = [(28.0, 35.0), (62.0, 30.0), (95.0, 38.0)];
        for r in [12.3f32, 13.0, 14.6] {
            let map = soft_outlines(&centres, r);
            let found = find(&map, &vec![true; W * H], W, H, (10, 18), 0.3, 12.0);
            assert_eq!(found.len(), 3, "{found:?}");
            let got = outline_radius(&map, W, H, &found, (9.0, 19.0), 3).unwrap();
            assert!((got - r).abs() <= 0.25, "radius {r}: measured {got}");
        }
    }

    #[test]
    fn no_outline_radius_from_too_few_centres_or_none_in_range() {
        let map = soft_outlines(&[(28.0, 35.0), (62.0, 30.0)], 13.0);
        let found = find(&map, &vec![true; W * H], W, H, (10, 18), 0.3, 12.0);
        assert_eq!(found.len(), 2);
        assert_eq!(outline_radius(&map, W, H, &found, (9.0, 19.0), 3), None);
        assert!(outline_radius(&map, W, H, &found, (9.0, 19.0), 2).is_some());
        // The outline lies beyond the range: the profile peaks at its end.
        assert_eq!(outline_radius(&map, W, H, &found, (5.0, 10.0), 2), None);
    }

    #[test]
    fn circles_closer_than_the_separation_keep_the_stronger() {
        // Two outlines 8 px apart: with a 12 px separation one centre,
        // the stronger (whole) one; with 6 px, both.
        let map = outlines(&[(40.0, 35.0, 14.0), (48.0, 35.0, 14.0)], 0.8);
        let inside = vec![true; W * H];
        let one = find(&map, &inside, W, H, (11, 17), 0.3, 12.0);
        assert_eq!(one.len(), 1, "{one:?}");
        assert!((one[0].x as f32 - 40.0).abs() <= 1.0, "{one:?}");
        assert_eq!(find(&map, &inside, W, H, (11, 17), 0.3, 6.0).len(), 2);
    }
}
