//! A small field's red cells voted clump by clump over its scale samples.
//!
//! The median of whole counts ([`super::median_index`]) steadies a field
//! only when one sample is off: a field of 15 red cells whose clumps each
//! split differently in a different sample has every sample's total off by
//! one, and the median of those totals is off too. Here each clump of
//! overlapping cells (a connected part of the first sample's red-cell mask)
//! gets the median of the counts the samples give it, so that each clump's
//! cut is decided on its own.
//!
//! Tried on BCCD and not taken into [`super::analyse`]: it did not bring
//! rescaled copies nearer the native photo's count (models/cbc/MODEL_CARD.md,
//! "A vote clump by clump"); `bccd_scale --merges clumps` runs it.

use super::SmearAnalysis;
use crate::imaging::segment;

/// How far, as a fraction of d, a cell's centre may lie outside the first
/// sample's mask and still be taken as one of its clumps' (its mask moves
/// by a pixel or two between samples at the edge of a cell).
const SNAP: f32 = 0.15;

/// For each of `samples` (one photo's analyses at nearby scales, the first
/// the reference), the indices into its `rbc_regions` of the red cells the
/// vote keeps. Each counted cell goes to the clump of the first sample's
/// mask that holds its box's centre, or that is within `SNAP * d` of it,
/// else to one bucket of cells outside every clump; each clump's count is
/// the lower median of the samples' counts in it ([`super::median_index`]'s
/// rule), and its cells are those of the first sample, in order, that
/// gives it that count. Empty `samples`: empty.
pub fn clump_votes(samples: &[SmearAnalysis]) -> Vec<Vec<usize>> {
    let Some(first) = samples.first() else {
        return Vec::new();
    };
    let clumps = Clumps::of(first);
    // buckets[s][i]: the clump (0: none) of sample s's i-th red cell.
    let buckets: Vec<Vec<usize>> = samples
        .iter()
        .map(|a| {
            a.rbc_regions
                .iter()
                .map(|r| clumps.bucket(a, r, first.scale))
                .collect()
        })
        .collect();
    let mut per_sample = vec![vec![0usize; clumps.count + 1]; samples.len()];
    for (s, bs) in buckets.iter().enumerate() {
        for &b in bs {
            per_sample[s][b] += 1;
        }
    }
    let mut kept = vec![Vec::new(); samples.len()];
    for b in 0..=clumps.count {
        let counts: Vec<usize> = per_sample.iter().map(|c| c[b]).collect();
        let chosen = super::median_index(&counts);
        kept[chosen].extend(
            buckets[chosen]
                .iter()
                .enumerate()
                .filter(|&(_, &cb)| cb == b)
                .map(|(i, _)| i),
        );
    }
    for k in &mut kept {
        k.sort_unstable();
    }
    kept
}

/// The connected parts of a reference analysis's red-cell mask.
struct Clumps {
    labels: Vec<u32>,
    width: usize,
    height: usize,
    count: usize,
    snap: i64,
}

impl Clumps {
    fn of(a: &SmearAnalysis) -> Self {
        let width = a.scaled_w.max(1);
        let height = a.rbc_labels.len() / width;
        let fg: Vec<bool> = a.rbc_labels.iter().map(|&l| l != 0).collect();
        let (labels, regions) = segment::components(&fg, width, height);
        Self {
            labels,
            width,
            height,
            count: regions.len(),
            snap: (SNAP * a.rbc_diameter).round().max(1.0) as i64,
        }
    }

    /// The clump (1-based; 0: none) of a red cell `r` of analysis `a`,
    /// found at the reference's `scale`.
    fn bucket(&self, a: &SmearAnalysis, r: &segment::Region, scale: f32) -> usize {
        let to_ref = scale / a.scale;
        let cx = ((r.x0 + r.x1) as f32 * 0.5 * to_ref) as i64;
        let cy = ((r.y0 + r.y1) as f32 * 0.5 * to_ref) as i64;
        let at = |x: i64, y: i64| -> u32 {
            if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
                0
            } else {
                self.labels[y as usize * self.width + x as usize]
            }
        };
        if at(cx, cy) != 0 {
            return at(cx, cy) as usize;
        }
        let mut best = (i64::MAX, 0u32);
        for dy in -self.snap..=self.snap {
            for dx in -self.snap..=self.snap {
                let l = at(cx + dx, cy + dy);
                let d2 = dx * dx + dy * dy;
                if l != 0 && d2 <= self.snap * self.snap && d2 < best.0 {
                    best = (d2, l);
                }
            }
        }
        best.1 as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::pbs::pipeline::Counts;

    /// An analysis at `scale` of a `w` x `h` map whose red cells are the
    /// given boxes `(x0, y0, x1, y1)`, each labelled on its own.
    fn analysis(
        w: usize,
        h: usize,
        scale: f32,
        cells: &[(usize, usize, usize, usize)],
    ) -> SmearAnalysis {
        let mut labels = vec![0u32; w * h];
        for (i, &(x0, y0, x1, y1)) in cells.iter().enumerate() {
            for y in y0..y1 {
                for x in x0..x1 {
                    labels[y * w + x] = i as u32 + 1;
                }
            }
        }
        let regions = segment::regions_of(&labels, w);
        SmearAnalysis {
            width: (w as f32 / scale) as u32,
            height: (h as f32 / scale) as u32,
            scale,
            counts: Counts {
                rbc: regions.len(),
                ..Counts::default()
            },
            cells: Vec::new(),
            tiles: 1,
            rbc_size: None,
            rbc_outline: None,
            rbc_labels: labels,
            rbc_regions: regions,
            scaled_w: w,
            rbc_diameter: 10.0,
            dropped: Default::default(),
            rbc_round: None,
        }
    }

    #[test]
    fn each_clump_takes_the_median_of_its_own_counts() {
        // Two clumps, 40 px apart. The reference counts one cell in each;
        // the second sample cuts the left clump in two, the third the
        // right one. Every other sample's total is 3, so the median of
        // the totals would be 3; clump by clump each is one cell.
        let left = (5, 5, 25, 15);
        let right = (45, 5, 65, 15);
        let halves = |(x0, y0, x1, y1): (usize, usize, usize, usize)| {
            let xm = (x0 + x1) / 2;
            [(x0, y0, xm, y1), (xm, y0, x1, y1)]
        };
        let [l0, l1] = halves(left);
        let [r0, r1] = halves(right);
        let samples = [
            analysis(70, 20, 1.0, &[left, right]),
            analysis(70, 20, 1.0, &[l0, l1, right]),
            analysis(70, 20, 1.0, &[left, r0, r1]),
        ];
        let totals: Vec<usize> = samples.iter().map(|a| a.counts.rbc).collect();
        assert_eq!(totals[super::super::median_index(&totals)], 3);
        let kept = clump_votes(&samples);
        assert_eq!(kept, vec![vec![0, 1], vec![], vec![]]);
        // When most samples cut a clump, the cut is kept, from the first
        // sample that makes it.
        let samples = [
            analysis(70, 20, 1.0, &[left, right]),
            analysis(70, 20, 1.0, &[l0, l1, right]),
            analysis(70, 20, 1.0, &[l0, l1, right]),
        ];
        assert_eq!(clump_votes(&samples), vec![vec![1], vec![0, 1], vec![]]);
    }

    #[test]
    fn cells_are_matched_across_scales_and_a_stray_cell_is_voted_out() {
        // The second sample is at 1.5x the reference's scale; its cells'
        // centres land in the reference's clumps. A cell only it sees,
        // away from every clump, is outvoted by the two that do not.
        let reference = analysis(60, 20, 1.0, &[(5, 5, 15, 15), (30, 5, 40, 15)]);
        let bigger = analysis(
            90,
            30,
            1.5,
            &[(8, 8, 22, 22), (45, 8, 60, 22), (75, 2, 85, 12)],
        );
        let third = analysis(60, 20, 1.0, &[(5, 5, 15, 15), (31, 5, 41, 15)]);
        let kept = clump_votes(&[reference, bigger, third]);
        assert_eq!(kept, vec![vec![0, 1], vec![], vec![]]);
        assert!(clump_votes(&[]).is_empty());
    }

    #[test]
    fn a_centre_just_outside_the_mask_snaps_to_the_nearest_clump() {
        // d 10 px: a centre up to 1.5 px (rounded to 2) off the mask joins
        // the clump; one 6 px off does not.
        let reference = analysis(60, 20, 1.0, &[(10, 5, 20, 15)]);
        let clumps = Clumps::of(&reference);
        let near = segment::Region {
            label: 1,
            area: 1,
            x0: 20,
            y0: 9,
            x1: 22,
            y1: 11,
        };
        let far = segment::Region {
            label: 1,
            area: 1,
            x0: 24,
            y0: 9,
            x1: 26,
            y1: 11,
        };
        assert_eq!(clumps.bucket(&reference, &near, 1.0), 1);
        assert_eq!(clumps.bucket(&reference, &far, 1.0), 0);
    }
}
