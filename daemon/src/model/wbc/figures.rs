//! The white-cell classifier's figures on labelled cells: accuracies,
//! confusion matrices and review rates, for PBC's held-out images and for
//! another lab's cells ([`OtherLab`]).

use serde::Serialize;

use crate::model::wbc::{decide, CLASSES, PLATELET};

/// Band and segmented neutrophils as one class (PBC's 8 folders).
pub fn merged(c: usize) -> usize {
    if c == 1 {
        0
    } else {
        c
    }
}

/// The classifier on a second lab's labelled cells, as the differential
/// calls them ([`decide`] at the run's `min_confidence`).
#[derive(Debug, Serialize)]
pub struct OtherLab {
    pub cells: usize,
    /// Share of cells given their true lineage; `None` (JSON `null`) for
    /// no cells, as are the other shares.
    pub accuracy: Option<f64>,
    /// Share left for review.
    pub review_rate: Option<f64>,
    /// Cells given a wrong class.
    pub confident_errors: usize,
    /// Share of cells whose most probable class has their lineage,
    /// whatever its probability.
    pub top_class_accuracy: Option<f64>,
    /// Row names of `confusion`: the lineages.
    pub lineages: Vec<&'static str>,
    /// Column names of `confusion`: the lineages, then `review`.
    pub columns: Vec<&'static str>,
    /// `[true lineage][called lineage or review]`.
    pub confusion: Vec<Vec<usize>>,
}

pub fn argmax(p: &[f32; 9]) -> usize {
    p.iter()
        .enumerate()
        .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a })
        .0
}

/// Held-out accuracy over the nine classes and over the eight of the
/// differential (band and segmented neutrophils merged, [`merged`]).
pub fn accuracies(p: &[[f32; 9]], truth: &[usize]) -> (f64, f64) {
    let n = truth.len().max(1) as f64;
    let calls = || p.iter().zip(truth).map(|(p, &t)| (argmax(p), t));
    let acc9 = calls().filter(|&(c, t)| c == t).count() as f64 / n;
    let acc8 = calls().filter(|&(c, t)| merged(c) == merged(t)).count() as f64 / n;
    (acc9, acc8)
}

/// Rows: the true class; columns: the net's most probable one.
pub fn confusion(p: &[[f32; 9]], truth: &[usize]) -> Vec<Vec<usize>> {
    let mut confusion = vec![vec![0usize; CLASSES.len()]; CLASSES.len()];
    for (p, &t) in p.iter().zip(truth) {
        confusion[t][argmax(p)] += 1;
    }
    confusion
}

/// Of the held-out cells, how many are given a class at `min_confidence`
/// ([`decide`]) and how many of those are right over the eight classes.
/// Platelets are accepted as "platelet" here: `decide` leaves them for
/// review in a differential, but PBC holds them as a class of their own.
pub fn accepted_calls(p: &[[f32; 9]], truth: &[usize], min_confidence: f32) -> (usize, usize) {
    let (mut accepted, mut right) = (0usize, 0usize);
    for (p, &t) in p.iter().zip(truth) {
        let call = decide(p, min_confidence).or_else(|| {
            (argmax(p) == PLATELET && p[argmax(p)] >= min_confidence).then_some(PLATELET)
        });
        if let Some(c) = call {
            accepted += 1;
            right += (merged(c) == merged(t)) as usize;
        }
    }
    (accepted, right)
}

/// The lineages' names, the names of [`OtherLab::lineages`]: the classes
/// in order, band and segmented neutrophils as one `neutrophil`.
pub fn lineages() -> Vec<&'static str> {
    CLASSES[1..]
        .iter()
        .enumerate()
        .map(|(i, c)| if i == 0 { "neutrophil" } else { *c })
        .collect()
}

/// A class's index in [`lineages`] (the classes in order, the two
/// neutrophil forms as one).
pub fn lineage(c: usize) -> usize {
    c.saturating_sub(1)
}

/// [`OtherLab`] figures of probabilities `p` for cells whose classes are
/// `truth`.
pub fn other_lab(p: &[[f32; 9]], truth: &[usize], min_confidence: f32) -> OtherLab {
    let names = lineages();
    let review = names.len();
    let mut confusion = vec![vec![0usize; review + 1]; review];
    for (p, &t) in p.iter().zip(truth) {
        let col = decide(p, min_confidence).map_or(review, lineage);
        confusion[lineage(t)][col] += 1;
    }
    let share = |k: usize| (!truth.is_empty()).then(|| k as f64 / truth.len() as f64);
    let right: usize = (0..review).map(|i| confusion[i][i]).sum();
    let reviewed: usize = confusion.iter().map(|r| r[review]).sum();
    let top_right = p
        .iter()
        .zip(truth)
        .filter(|(p, &t)| lineage(argmax(p)) == lineage(t))
        .count();
    OtherLab {
        cells: truth.len(),
        accuracy: share(right),
        review_rate: share(reviewed),
        confident_errors: truth.len() - right - reviewed,
        top_class_accuracy: share(top_right),
        columns: names.iter().copied().chain(["review"]).collect(),
        lineages: names,
        confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_labs_figures_count_reviews_apart_from_errors() {
        let mut p = vec![[0.0f32; 9]; 4];
        p[0][1] = 0.9; // band, truly a neutrophil: right (one lineage)
        p[1][4] = 0.95; // eosinophil, truly a neutrophil: a confident error
        p[2][2] = 0.5; // lymphocyte at 0.5: review
        p[3][8] = 0.9; // platelet: review, not a white cell
        let o = other_lab(&p, &[0, 0, 2, 3], 0.7);
        assert_eq!(o.cells, 4);
        assert_eq!(
            (o.accuracy, o.review_rate, o.confident_errors),
            (Some(0.25), Some(0.5), 1)
        );
        // Top classes: band (a neutrophil: right), eosinophil, lymphocyte
        // (right), platelet.
        assert_eq!(o.top_class_accuracy, Some(0.5));
        assert_eq!(o.confusion[0], vec![1, 0, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(o.confusion[1][8] + o.confusion[2][8], 2);
        // No cells: no shares (not 0.0, which would read as all wrong).
        let none = other_lab(&[], &[], 0.7);
        assert_eq!(
            (none.cells, none.accuracy, none.top_class_accuracy),
            (0, None, None)
        );
        let json = serde_json::to_value(&none).unwrap();
        assert!(json["review_rate"].is_null(), "{json}");
    }

    #[test]
    fn lineages_follow_the_classes() {
        for (c, name) in CLASSES.iter().enumerate() {
            let want = if name.starts_with("neutrophil") {
                "neutrophil"
            } else {
                name
            };
            assert_eq!(lineages()[lineage(c)], want);
        }
        assert_eq!(lineages().len(), 8, "eight lineages, platelet last");
        assert_eq!(lineages()[7], "platelet");
    }
}
