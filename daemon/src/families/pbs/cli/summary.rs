//! The figures of `argusd pbs differential --labelled` over a lab's labelled
//! cells: accuracy, review rate, confident errors and the confusion matrix,
//! over every white cell and over the five normal types.

use std::collections::BTreeMap;

use serde::Serialize;

use super::labels::NAMES_TAKEN;
use crate::model::wbc::figures::{argmax, lineage, other_lab, OtherLab};
use crate::model::wbc::PLATELET;

/// What the labelled images gave, for the summary.
#[derive(Default)]
pub(super) struct Tally {
    probs: Vec<[f32; 9]>,
    truth: Vec<usize>,
    failed: usize,
    /// Images labelled platelet, and how many of them are likeliest one.
    platelets: (usize, usize),
    /// Labelled images classified at the run's median size, their own red
    /// cells not measurable (counted by the caller, which knows the size's
    /// source).
    pub(super) at_run_median: usize,
}

impl Tally {
    /// Count one image's result: a white cell's probabilities under its
    /// label, a platelet apart (not a white cell), or a failure.
    pub(super) fn add(&mut self, label: Option<usize>, p: Option<&[f32; 9]>) {
        match (label, p) {
            (_, None) => self.failed += 1,
            (Some(PLATELET), Some(p)) => {
                self.platelets.0 += 1;
                self.platelets.1 += (argmax(p) == PLATELET) as usize;
            }
            (Some(t), Some(p)) => {
                self.probs.push(*p);
                self.truth.push(t);
            }
            (None, Some(_)) => {}
        }
    }

    /// Images that could not be classified.
    pub(super) fn failed(&self) -> usize {
        self.failed
    }

    /// The figures over what was counted, at `min_confidence`; `unknown`:
    /// the images left out, by folder; `one_magnification`: the set's size.
    pub(super) fn summary(
        &self,
        min_confidence: f32,
        unknown: BTreeMap<String, usize>,
        one_magnification: Option<SetSize>,
    ) -> Summary {
        let mut s = Summary::new(
            &self.probs,
            &self.truth,
            min_confidence,
            self.failed,
            unknown,
        );
        (s.platelets, s.platelets_likeliest_platelet) = self.platelets;
        s.one_magnification = one_magnification;
        s.at_run_median = self.at_run_median;
        s
    }
}

/// The figures over a labelled set: over every labelled class but
/// platelets (the white cells and erythroblasts), and over the five normal
/// types alone (neutrophil, lymphocyte, monocyte, eosinophil, basophil),
/// the figures an independent check asks for.
#[derive(Debug, Serialize)]
pub(super) struct Summary {
    /// Every labelled image classified, platelets apart.
    pub all: OtherLab,
    /// Those labelled with one of the five normal types.
    pub five_normal_types: OtherLab,
    /// Share of the cells given a class that were given the right one
    /// (over `all`); `None` when none was given one.
    pub accuracy_of_called: Option<f64>,
    /// `cells.wbc_min_confidence`: a cell whose top class is under it is
    /// left for review (as written in the config: 0.7, not the f32's
    /// 0.699999988).
    pub min_confidence: f64,
    /// Labelled images that could not be classified (unreadable, or their
    /// red cells not measurable and no other image of the run measured).
    pub not_classified: usize,
    /// Labelled images whose red cells could not be measured, classified
    /// (and counted in the figures) at the median size of the run's images
    /// that were measured.
    pub at_run_median: usize,
    /// Images left out because their folder names no class, by folder.
    pub unlabelled_folders: BTreeMap<String, usize>,
    /// Images labelled platelet, kept out of the figures: a platelet is
    /// not a white cell, and the differential leaves a cell it takes for
    /// one for review.
    pub platelets: usize,
    /// Of those, how many the classifier found likeliest a platelet.
    pub platelets_likeliest_platelet: usize,
    /// With `--one-magnification`: the size every image was classified at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_magnification: Option<SetSize>,
}

/// The red-cell size of a set at one magnification (`single_cells::set_median_size`).
#[derive(Debug, Clone, Serialize)]
pub(super) struct SetSize {
    /// The median of the images' measures, pixels.
    pub rbc_diameter_px: f32,
    /// Images whose red cells gave a measure.
    pub images_measured: usize,
    /// Images that gave none (unreadable, or too few clean red cells);
    /// they are classified at the median too, if they can be read.
    pub not_measured: Vec<String>,
}

/// Lineage indices (of `lineages()`) of the five normal types.
const NORMAL: std::ops::Range<usize> = 0..5;

impl Summary {
    /// The figures of probabilities `p` (in the order of `CLASSES`) for
    /// cells labelled `truth` (indices into `CLASSES`), decided at
    /// `min_confidence`; the platelets and the size are set by the caller.
    pub fn new(
        p: &[[f32; 9]],
        truth: &[usize],
        min_confidence: f32,
        not_classified: usize,
        unlabelled_folders: BTreeMap<String, usize>,
    ) -> Self {
        let all = other_lab(p, truth, min_confidence);
        let (np, nt): (Vec<[f32; 9]>, Vec<usize>) = p
            .iter()
            .zip(truth)
            .filter(|(_, &t)| NORMAL.contains(&lineage(t)))
            .map(|(p, &t)| (*p, t))
            .unzip();
        let five_normal_types = other_lab(&np, &nt, min_confidence);
        let review = all.lineages.len();
        let right: usize = (0..review).map(|i| all.confusion[i][i]).sum();
        let reviewed: usize = all.confusion.iter().map(|r| r[review]).sum();
        let called = all.cells - reviewed;
        Self {
            accuracy_of_called: (called > 0).then(|| right as f64 / called as f64),
            all,
            five_normal_types,
            min_confidence: min_confidence.to_string().parse().unwrap_or(0.0),
            not_classified,
            unlabelled_folders,
            platelets: 0,
            platelets_likeliest_platelet: 0,
            one_magnification: None,
            at_run_median: 0,
        }
    }

    /// The summary as a table for the terminal.
    pub(super) fn text(&self) -> String {
        let line = |name: &str, f: &OtherLab| {
            let (Some(a), Some(r), Some(t)) = (f.accuracy, f.review_rate, f.top_class_accuracy)
            else {
                return format!("{name}: no cells\n");
            };
            let (n, e) = (f.cells, f.confident_errors);
            format!(
                "{name}: {n} cells, accuracy {a:.3}, left for review {r:.3}, confident errors \
                 {e}, top class right {t:.3}\n"
            )
        };
        if self.all.cells == 0 {
            return format!("\nno labelled white cell was classified\n{}", self.notes());
        }
        let mut out = format!(
            "\nlabelled cells at min confidence {}:\n",
            self.min_confidence
        );
        out.push_str(&line("all but platelets", &self.all));
        out.push_str(&line("five normal types", &self.five_normal_types));
        out.push_str(&match self.accuracy_of_called {
            Some(a) => format!("accuracy of the cells given a class: {a:.3}\n"),
            None => "accuracy of the cells given a class: none was given one\n".to_string(),
        });
        out.push_str(&self.notes());
        out.push_str(&self.confusion_table());
        out
    }

    /// What was not counted: failures, platelets, unlabelled folders.
    fn notes(&self) -> String {
        let mut out = String::new();
        if self.not_classified > 0 {
            out.push_str(&format!(
                "not classified (see the errors above): {}\n",
                self.not_classified
            ));
        }
        if self.at_run_median > 0 {
            out.push_str(&format!(
                "classified at the median size of the run's measured images (their own red cells \
                 could not be measured; see the warnings above): {}\n",
                self.at_run_median
            ));
        }
        if self.platelets > 0 {
            out.push_str(&format!(
                "platelets (not white cells; kept out of the figures): {}, of which {} likeliest \
                 a platelet\n",
                self.platelets, self.platelets_likeliest_platelet
            ));
        }
        for (folder, n) in &self.unlabelled_folders {
            out.push_str(&format!(
                "left out: {n} image{} in a folder named {folder:?}, which names no class \
                 ({NAMES_TAKEN})\n",
                if *n == 1 { "" } else { "s" }
            ));
        }
        out
    }

    fn confusion_table(&self) -> String {
        let names = &self.all.lineages;
        let mut out = String::from(
            "confusion (rows: labelled; columns: called; ig: immature_granulocyte):\n",
        );
        out.push_str(&format!("{:>22}", ""));
        for n in &self.all.columns {
            out.push_str(&format!(" {:>12}", short(n)));
        }
        out.push('\n');
        for (name, row) in names.iter().zip(&self.all.confusion) {
            if row.iter().sum::<usize>() == 0 {
                continue;
            }
            out.push_str(&format!("{name:>22}"));
            for v in row {
                out.push_str(&format!(" {v:>12}"));
            }
            out.push('\n');
        }
        out
    }
}

/// A column header short enough for the table.
fn short(name: &str) -> &str {
    match name {
        "immature_granulocyte" => "ig",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probabilities that put `c` first at `p`, the rest spread evenly.
    fn calling(c: usize, p: f32) -> [f32; 9] {
        let mut v = [(1.0 - p) / 8.0; 9];
        v[c] = p;
        v
    }

    #[test]
    fn the_summary_counts_review_errors_and_the_five_normal_types_apart() {
        // Labelled: 2 neutrophils (one band), a lymphocyte, a monocyte and
        // an erythroblast. Called: right, right (as segmented: one
        // lineage), review, wrong (eosinophil), right.
        let truth = [0, 1, 2, 3, 7];
        let p = [
            calling(0, 0.9),
            calling(0, 0.9),
            calling(2, 0.5),
            calling(4, 0.95),
            calling(7, 0.8),
        ];
        let s = Summary::new(&p, &truth, 0.7, 1, BTreeMap::new());
        assert_eq!(s.all.cells, 5);
        assert!((s.all.accuracy.unwrap() - 0.6).abs() < 1e-9);
        assert!((s.all.review_rate.unwrap() - 0.2).abs() < 1e-9);
        assert_eq!(s.all.confident_errors, 1);
        assert_eq!(s.accuracy_of_called, Some(0.75));
        assert_eq!(s.five_normal_types.cells, 4, "the erythroblast is not one");
        assert!((s.five_normal_types.accuracy.unwrap() - 0.5).abs() < 1e-9);
        let text = s.text();
        assert!(
            text.contains("not classified (see the errors above): 1"),
            "{text}"
        );
        assert!(
            !text.lines().any(|l| l.trim_start().starts_with("basophil")),
            "empty rows are left out: {text}"
        );
        let mono = text
            .lines()
            .find(|l| l.trim_start().starts_with("monocyte"))
            .unwrap();
        let cols: Vec<&str> = mono.split_whitespace().collect();
        assert_eq!(cols[4], "1", "monocyte called eosinophil: {mono}");
    }

    #[test]
    fn a_set_with_every_cell_in_review_has_no_accuracy_of_the_called() {
        let s = Summary::new(&[calling(2, 0.4)], &[2], 0.7, 0, BTreeMap::new());
        assert_eq!(s.accuracy_of_called, None);
        assert!(s.text().contains("none was given one"), "{}", s.text());
    }
}
