//! The white-cell differential: every white cell the counter found is
//! cropped from the original photo at the photo's own red-cell scale,
//! classified through the micro-batcher (`model::wbc`), and either given a
//! class or left for review; the cells then add up to counts and
//! percentages per file and per study.
//!
//! Percentages follow laboratory practice (ICSH/CLSI H20-A2): each
//! leukocyte class as a share of the leukocytes given a class, and
//! nucleated red cells (`erythroblast`) per 100 leukocytes, not among them.
//! Cells left for review are reported beside the percentages and never
//! counted into a class.

use image::RgbImage;

use super::pipeline::{CellKind, SmearAnalysis};
use super::schema::{DifferentialCell, DifferentialClass, DifferentialFile, WbcDifferential};
use crate::backend::{Batch, BatchOutput};
use crate::batch::{SubmitError, Workload};
use crate::model::wbc::{self, CLASSES, CROP, WINDOW_RBC};

/// The model named in differential reports, with its training data
/// (`models/wbc/MODEL_CARD.md`).
pub const WBC_MODEL: &str = "wbc_cnn (argus, trained on the PBC dataset, Acevedo et al. 2020, \
     CC BY 4.0, and the BCCD dataset's train split, MIT)";

/// White-cell windows through the differential classifier.
#[derive(Debug, Clone, Copy, Default)]
pub struct WbcWork;

impl Workload for WbcWork {
    /// One window, `CROP` x `CROP` interleaved RGB, 0-255 floats.
    type Item = Vec<f32>;
    /// Probabilities in the order of `model::wbc::CLASSES`.
    type Output = [f32; 9];

    fn model(&self) -> &'static str {
        "wbc_cnn"
    }

    fn check(&self, item: &Self::Item) -> Result<(), SubmitError> {
        let want = CROP * CROP * 3;
        if item.len() != want {
            return Err(SubmitError::WrongSize {
                got: item.len(),
                want,
            });
        }
        Ok(())
    }

    fn warm_item(&self) -> Self::Item {
        vec![200.0; CROP * CROP * 3]
    }

    fn pack(&self, items: Vec<Self::Item>) -> Batch {
        let count = items.len();
        Batch::WbcCrops {
            data: items.concat(),
            count,
        }
    }

    fn unpack(&self, out: BatchOutput) -> Option<Vec<Self::Output>> {
        match out {
            BatchOutput::WbcProbs(v) => Some(v),
            _ => None,
        }
    }
}

/// The classifier's window around each white cell of `analysis`: a square
/// [`WINDOW_RBC`] red-cell diameters wide (`rbc_diameter_px`, the photo's
/// own, in its pixels) centred on the cell's box, from the original photo.
/// The same window, in red-cell units, as the classifier was trained on, so
/// the crop does not depend on the microscope's magnification. Returns
/// (index into `analysis.cells`, window) pairs.
pub fn wbc_windows(
    img: &RgbImage,
    analysis: &SmearAnalysis,
    rbc_diameter_px: f32,
) -> Vec<(usize, Vec<f32>)> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let side = WINDOW_RBC * rbc_diameter_px;
    analysis
        .cells
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind == CellKind::Wbc)
        .map(|(i, c)| {
            let cx = c.x as f32 + c.width as f32 / 2.0;
            let cy = c.y as f32 + c.height as f32 / 2.0;
            (i, wbc::sample_window(img.as_raw(), w, h, cx, cy, side))
        })
        .collect()
}

/// One classified white cell as the report shows it: its box, the class
/// [`wbc::decide`] gives at `min_confidence` (none: left for review) and
/// every probability by class name.
pub fn cell(
    analysis: &SmearAnalysis,
    index: usize,
    p: &[f32; 9],
    min_confidence: f32,
) -> DifferentialCell {
    let c = &analysis.cells[index];
    DifferentialCell {
        x: c.x,
        y: c.y,
        width: c.width,
        height: c.height,
        class: wbc::decide(p, min_confidence).map(|k| CLASSES[k].to_string()),
        probabilities: CLASSES
            .iter()
            .zip(p)
            .map(|(name, &v)| (name.to_string(), v))
            .collect(),
    }
}

/// `cell` with its class decided again at `min_confidence` from its kept
/// probabilities (a cell without all nine is left as it was).
pub fn redecide(cell: &DifferentialCell, min_confidence: f32) -> DifferentialCell {
    let mut p = [0f32; 9];
    for (v, name) in p.iter_mut().zip(CLASSES) {
        match cell.probabilities.get(name) {
            Some(x) => *v = *x,
            None => return cell.clone(),
        }
    }
    DifferentialCell {
        class: wbc::decide(&p, min_confidence).map(|k| CLASSES[k].to_string()),
        ..cell.clone()
    }
}

/// Every classified white cell of `analysis`, in the order of its cells.
pub fn cells_of(analysis: &SmearAnalysis, min_confidence: f32) -> Vec<DifferentialCell> {
    analysis
        .cells
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let p = c.wbc_probabilities.as_ref()?;
            Some(cell(analysis, i, p, min_confidence))
        })
        .collect()
}

/// A one-line summary, e.g. `lymphocyte 2, monocyte 1, review 1`.
pub fn summary_text(cells: &[DifferentialCell]) -> String {
    let (classes, _, review) = tally(cells);
    let mut parts: Vec<String> = classes
        .iter()
        .filter(|c| c.count > 0)
        .map(|c| format!("{} {}", c.class, c.count))
        .collect();
    if review > 0 {
        parts.push(format!("review {review}"));
    }
    parts.join(", ")
}

/// Counts per class (every class of `DIFFERENTIAL_CLASSES`, in order, zeros
/// included), the leukocytes given a class and the cells left for review.
fn tally<'a>(
    cells: impl IntoIterator<Item = &'a DifferentialCell>,
) -> (Vec<DifferentialClass>, u64, u64) {
    let names = super::schema::DIFFERENTIAL_CLASSES;
    let mut counts = [0u64; 8];
    let mut review = 0;
    for c in cells {
        match c
            .class
            .as_deref()
            .and_then(|k| names.iter().position(|n| *n == k))
        {
            Some(i) => counts[i] += 1,
            None => review += 1,
        }
    }
    let erythroblast = names.len() - 1;
    let leukocytes: u64 = counts[..erythroblast].iter().sum();
    let classes = names
        .iter()
        .zip(counts)
        .map(|(name, count)| DifferentialClass {
            class: name.to_string(),
            count,
            percent: if leukocytes == 0 {
                0.0
            } else {
                // Two decimals: enough for a 100- or 200-cell differential.
                (count as f64 * 10_000.0 / leukocytes as f64).round() / 100.0
            },
        })
        .collect();
    (classes, leukocytes, review)
}

/// The differential over `files` (file id, its classified white cells).
pub fn summarise(
    files: &[(String, Vec<DifferentialCell>)],
    min_confidence: f32,
) -> WbcDifferential {
    let (classes, leukocytes_classified, review) = tally(files.iter().flat_map(|(_, c)| c));
    WbcDifferential {
        leukocytes_classified,
        review,
        classes,
        files: files
            .iter()
            .map(|(id, cells)| {
                let (classes, _, review) = tally(cells);
                DifferentialFile {
                    file_id: id.clone(),
                    classes,
                    review,
                    cells: cells.clone(),
                    unlike_smear: false,
                }
            })
            .collect(),
        model: WBC_MODEL,
        min_confidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classified(class: Option<&str>) -> DifferentialCell {
        DifferentialCell {
            x: 0,
            y: 0,
            width: 10,
            height: 10,
            class: class.map(String::from),
            probabilities: Default::default(),
        }
    }

    #[test]
    fn percentages_are_of_classified_leukocytes_and_nrbc_per_100() {
        let mut cells = Vec::new();
        for _ in 0..3 {
            cells.push(classified(Some("neutrophil_segmented")));
        }
        cells.push(classified(Some("lymphocyte")));
        cells.push(classified(Some("erythroblast")));
        cells.push(classified(None));
        let d = summarise(&[("f1".into(), cells)], 0.7);
        assert_eq!(d.leukocytes_classified, 4);
        assert_eq!(d.review, 1);
        let get = |k: &str| d.classes.iter().find(|c| c.class == k).unwrap();
        assert_eq!(get("neutrophil_segmented").percent, 75.0);
        assert_eq!(get("lymphocyte").percent, 25.0);
        assert_eq!(get("erythroblast").count, 1);
        assert_eq!(get("erythroblast").percent, 25.0, "per 100 leukocytes");
        assert_eq!(get("monocyte").count, 0);
        assert_eq!(d.classes.len(), 8, "every class, zeros included");
        let leuko_sum: f64 = d.classes[..7].iter().map(|c| c.percent).sum();
        assert!((leuko_sum - 100.0).abs() < 1e-9);
        assert_eq!(d.files[0].review, 1);
    }

    #[test]
    fn classes_follow_the_threshold_they_are_decided_at() {
        let mut c = classified(Some("lymphocyte"));
        for (i, name) in CLASSES.iter().enumerate() {
            let v = [0.0, 0.0, 0.8, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0][i];
            c.probabilities.insert(name.to_string(), v);
        }
        assert_eq!(redecide(&c, 0.7).class.as_deref(), Some("lymphocyte"));
        assert_eq!(redecide(&c, 0.9).class, None, "left for review at 0.9");
        let bare = classified(Some("monocyte"));
        assert_eq!(redecide(&bare, 0.9).class.as_deref(), Some("monocyte"));
    }

    #[test]
    fn no_classified_cell_gives_zero_percentages() {
        let d = summarise(&[("f1".into(), vec![classified(None)])], 0.7);
        assert_eq!(d.leukocytes_classified, 0);
        assert!(d.classes.iter().all(|c| c.percent == 0.0 && c.count == 0));
        assert_eq!(d.review, 1);
    }
}
