//! `argusd pbs differential`: the white-cell differential of single-cell
//! images, each holding one white cell near its middle (as CellaVision-type
//! analysers export cells, and as PBC, Raabin-WBC and most labelled white-cell
//! sets hold them), and with `--labelled` the figures a lab checks the
//! classifier by on its own labelled cells: accuracy, review rate, confident
//! errors and the confusion matrix (issue 21's check on an independent set).
//!
//! Each image goes through the appliance's own path: its red-cell size is
//! measured (and refined) as a smear photo's is, the white-cell net looks for
//! the cell, and the classifier sees the same window, [`WINDOW_RBC`] red-cell
//! diameters wide, that the API's `WBC_DIFFERENTIAL` gives it. Where the net
//! finds no white cell over the image's centre, the window is taken around
//! the centre, which is where a single-cell image holds its cell. With
//! `--rbc-diameter-px` nothing is measured or looked for: the window is the
//! centre's at that size, and a large set runs in seconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use serde::Serialize;

use super::{local_cell_batchers, CliError};
use crate::app::CommandError;
use crate::config::Config;
use crate::families::pbs::pipeline::{self, CellKind, ScaleSettings};
use crate::families::pbs::scale::{estimate, ScaleSource};
use crate::imaging::rbc_size;
use crate::model::wbc::figures::{argmax, lineage, lineages, other_lab, OtherLab};
use crate::model::wbc::{decide, sample_window, CLASSES, PLATELET, WINDOW_RBC};

/// The options of `argusd pbs differential`.
pub struct DifferentialArgs {
    pub images: Vec<PathBuf>,
    pub json: bool,
    pub rbc_diameter_px: Option<f32>,
    /// Classify every image at the median of the images' own measures.
    pub one_magnification: bool,
    pub labelled: bool,
}

/// Where a cell's window was centred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Located {
    /// On the box of the white cell the white-cell net found over the
    /// image's centre.
    WhiteCellBox,
    /// On the image's centre: the net found no white cell there, or the
    /// size was given and nothing was looked for.
    ImageCentre,
}

/// One image's cell as the command reports it.
#[derive(Debug, Serialize)]
struct Classified {
    file: PathBuf,
    /// The class its folder names (`--labelled`).
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'static str>,
    /// The class the differential gives it; `null`: left for review.
    class: Option<&'static str>,
    /// The most probable class, whatever its probability.
    top_class: &'static str,
    probabilities: BTreeMap<&'static str, f32>,
    /// Red-cell diameter the window was sized by, pixels of the image.
    rbc_diameter_px: f32,
    /// Where it came from: a `pbs count` size source (`photo`, `given`,
    /// `configured`, `microns_per_px`), or `set_median` (the median of the
    /// images' measures, `--one-magnification`).
    rbc_size_source: String,
    located: Located,
    /// The window: centre x, centre y and side, pixels of the image.
    window: [f32; 3],
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

/// Class names a labelled folder may carry, by [`normalised`] name: the
/// class indices of `model::wbc::CLASSES`. Besides these, a name that
/// starts the name of a class (`neut`, `lymph`, `mono`, `eos`, `baso`, as
/// LISC and others abbreviate them) stands for it.
const ALIASES: &[(&str, usize)] = &[
    ("neutrophilsegmented", 0),
    ("segmentedneutrophil", 0),
    ("segmented", 0),
    ("sne", 0),
    ("neutrophilband", 1),
    ("bandneutrophil", 1),
    ("band", 1),
    ("bne", 1),
    ("ig", 6),
    ("nrbc", 7),
    ("nucleatedredcell", 7),
    ("nucleatedredbloodcell", 7),
    ("thrombocyte", 8),
];

/// Names a prefix of which stands for the class (index into `CLASSES`).
const PREFIXED: &[(&str, usize)] = &[
    ("neutrophil", 0),
    ("lymphocyte", 2),
    ("monocyte", 3),
    ("eosinophil", 4),
    ("basophil", 5),
    ("immaturegranulocyte", 6),
    ("erythroblast", 7),
    ("platelet", 8),
];

/// Lower case, letters and digits only.
fn normalised(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The class (index into `CLASSES`) a folder named `name` holds: a class's
/// name in any case and spacing, singular or plural, its first three or
/// more letters, or one of [`ALIASES`]. `None` for anything else.
pub fn class_of_label(name: &str) -> Option<usize> {
    let n = normalised(name);
    let singular = n.strip_suffix('s').map(str::to_string);
    [Some(n), singular].into_iter().flatten().find_map(|n| {
        ALIASES
            .iter()
            .find(|(a, _)| *a == n)
            .map(|&(_, c)| c)
            .or_else(|| {
                (n.len() >= 3)
                    .then(|| PREFIXED.iter().find(|(full, _)| full.starts_with(&n)))
                    .flatten()
                    .map(|&(_, c)| c)
            })
    })
}

/// The name of the folder `path` lies in.
fn folder_of(path: &Path) -> String {
    path.parent()
        .and_then(Path::file_name)
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The probabilities of one image's cell and where its window lay.
struct Cell {
    p: [f32; 9],
    rbc_diameter_px: f32,
    source: String,
    located: Located,
    window: [f32; 3],
    warning: Option<String>,
}

/// One image through the appliance's path (or, with `given`, the centre's
/// window at that size, its source named so). Errors: the red cells could
/// not be measured and no size is configured, or the classifier failed.
async fn classify_one(
    b: &pipeline::CellBatchers,
    config: &Config,
    img: Arc<RgbImage>,
    given: Option<(f32, &str)>,
) -> Result<Cell, String> {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let (cx, cy) = (w / 2.0, h / 2.0);
    let centre_window =
        |d: f32| sample_window(img.as_raw(), w as usize, h as usize, cx, cy, WINDOW_RBC * d);
    if let Some((d, source)) = given {
        let p = pipeline::classify_wbc(&b.wbc, vec![centre_window(d)])
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Cell {
            p: p[0],
            rbc_diameter_px: d,
            source: source.to_string(),
            located: Located::ImageCentre,
            window: [cx, cy, WINDOW_RBC * d],
            warning: None,
        });
    }
    let sizes = ScaleSettings::from_config(&config.pbs);
    // The first step of the analysis, taken apart so that an image whose
    // red cells cannot be measured is refused before the nets run: BCCD's
    // ~100 px, the analysis's last resort, is no size for a single cell's
    // image (a refined size only ever comes from a measured one).
    let first = {
        let (img, params) = (img.clone(), config.cells);
        tokio::task::spawn_blocking(move || estimate(&img, &sizes, &params))
            .await
            .map_err(|e| e.to_string())?
    };
    if first.source == ScaleSource::Assumed {
        let why = match first.measured_px {
            Some(d) => format!("they measure {d:.1} px across, which cannot be right"),
            None => format!(
                "{} clean single red cells found, {} needed",
                first.cells_measured,
                rbc_size::MIN_CELLS
            ),
        };
        return Err(format!(
            "its red cells could not be measured ({why}); give their size with \
             --rbc-diameter-px or --one-magnification, or set pbs.native_rbc_diameter_px or \
             pbs.microns_per_px"
        ));
    }
    let watch = pipeline::Watch::default();
    let (a, _) = pipeline::analyse(b, img.clone(), &sizes, config.cells, false, &watch)
        .await
        .map_err(|e| e.to_string())?;
    let size = a.rbc_size.clone().ok_or("no red-cell size was decided")?;
    let d = size.rbc_diameter_px;
    // The white cell over the centre; of several, the one nearest it.
    let over_centre = a
        .cells
        .iter()
        .filter(|c| c.kind == CellKind::Wbc && c.wbc_probabilities.is_some())
        .filter(|c| {
            let (x0, y0) = (c.x as f32, c.y as f32);
            (x0..=x0 + c.width as f32).contains(&cx) && (y0..=y0 + c.height as f32).contains(&cy)
        })
        .map(|c| {
            let (bx, by) = (
                c.x as f32 + c.width as f32 / 2.0,
                c.y as f32 + c.height as f32 / 2.0,
            );
            (
                (bx - cx).hypot(by - cy),
                bx,
                by,
                c.wbc_probabilities.unwrap_or_default(),
            )
        })
        .min_by(|a, b| a.0.total_cmp(&b.0));
    let (p, located, window) = match over_centre {
        Some((_, bx, by, p)) => (p, Located::WhiteCellBox, [bx, by, WINDOW_RBC * d]),
        None => {
            let p = pipeline::classify_wbc(&b.wbc, vec![centre_window(d)])
                .await
                .map_err(|e| e.to_string())?;
            (p[0], Located::ImageCentre, [cx, cy, WINDOW_RBC * d])
        }
    };
    Ok(Cell {
        p,
        rbc_diameter_px: d,
        source: source_name(size.source),
        located,
        window,
        warning: size.warning,
    })
}

/// A size source as the reports name it (`photo`, `given`, ...).
fn source_name(source: ScaleSource) -> String {
    serde_json::to_value(source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The images to classify with their labels (`--labelled`: the class their
/// folder names), and the images left out for a folder that names none,
/// by folder.
type Work = (Vec<(PathBuf, Option<usize>)>, BTreeMap<String, usize>);

fn labelled_work(images: &[PathBuf], labelled: bool) -> Result<Work, CommandError> {
    let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
    let mut work = Vec::new();
    for input in crate::offline::expand(images).map_err(CliError::Usage)? {
        let label = match labelled {
            true => {
                let folder = folder_of(&input.path);
                let Some(c) = class_of_label(&folder) else {
                    *unknown.entry(folder).or_default() += 1;
                    continue;
                };
                Some(c)
            }
            false => None,
        };
        work.push((input.path, label));
    }
    Ok((work, unknown))
}

/// The red-cell size of images taken at one magnification: each image's
/// own colour measure (the analysis's first step, `scale::estimate`), and
/// of those that give a usable one, the median, with how many gave one.
/// One image's measure can be far off (a crop with few clean red cells);
/// the median of a set is not. Errors: no image gives a measure.
fn set_median_size(
    work: &[(PathBuf, Option<usize>)],
    limits: &crate::imaging::DecodeLimits,
    config: &Config,
) -> Result<(f32, usize), CommandError> {
    let mut sizes: Vec<f32> = work
        .iter()
        .filter_map(|(path, _)| {
            let bytes = std::fs::read(path).ok()?;
            let img = crate::imaging::decode(&bytes, limits).ok()?.image;
            let s = estimate(&img, &ScaleSettings::default(), &config.cells);
            (s.source == ScaleSource::Photo).then_some(s.rbc_diameter_px)
        })
        .collect();
    if sizes.is_empty() {
        return Err(CliError::Failed(
            "no image's red cells could be measured; give their size with --rbc-diameter-px".into(),
        ));
    }
    sizes.sort_by(f32::total_cmp);
    Ok((sizes[sizes.len() / 2], sizes.len()))
}

/// What the labelled images gave, for the summary.
#[derive(Default)]
struct Tally {
    probs: Vec<[f32; 9]>,
    truth: Vec<usize>,
    failed: usize,
    /// Images labelled platelet, and how many of them are likeliest one.
    platelets: (usize, usize),
}

/// `argusd pbs differential`: each image's cell, and with `--labelled` the
/// figures over them. Exit status 1 when an image could not be classified.
pub async fn differential(config: &Config, args: DifferentialArgs) -> Result<i32, CommandError> {
    let (work, unknown) = labelled_work(&args.images, args.labelled)?;
    let limits = crate::imaging::DecodeLimits {
        max_pixels: config.limits.max_pixels,
        formats: ["jpeg", "png", "webp", "bmp", "tiff"]
            .map(String::from)
            .to_vec(),
    };
    let mut set_size = None;
    let given = match (args.rbc_diameter_px, args.one_magnification) {
        (Some(d), _) => Some((d, "given")),
        (None, true) => {
            let (d, measured) = set_median_size(&work, &limits, config)?;
            eprintln!(
                "red cells: {d:.1} px across, the median of {measured} of {} images' measures; \
                 every image is classified at that size",
                work.len()
            );
            set_size = Some(SetSize {
                rbc_diameter_px: d,
                images_measured: measured,
            });
            Some((d, "set_median"))
        }
        (None, false) => None,
    };
    let b = local_cell_batchers(config)?;
    let min_confidence = config.cells.wbc_min_confidence;
    let bar = crate::offline::progress(work.len() as u64, "images");
    let mut tally = Tally::default();
    for (path, label) in &work {
        bar.set_message(path.display().to_string());
        let res = async {
            let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
            let img = crate::imaging::decode(&bytes, &limits)
                .map_err(|e| e.to_string())?
                .image;
            classify_one(&b, config, Arc::new(img), given).await
        }
        .await;
        bar.inc(1);
        bar.suspend(|| match res {
            Ok(cell) => {
                let out = Classified {
                    file: path.clone(),
                    label: label.map(|c| lineages()[lineage(c)]),
                    class: decide(&cell.p, min_confidence).map(|c| CLASSES[c]),
                    top_class: CLASSES[argmax(&cell.p)],
                    probabilities: CLASSES.iter().copied().zip(cell.p).collect(),
                    rbc_diameter_px: cell.rbc_diameter_px,
                    rbc_size_source: cell.source,
                    located: cell.located,
                    window: cell.window,
                    warning: cell.warning,
                };
                print_one(&out, args.json);
                match label {
                    Some(t) if *t == PLATELET => {
                        tally.platelets.0 += 1;
                        tally.platelets.1 += (out.top_class == CLASSES[PLATELET]) as usize;
                    }
                    Some(t) => {
                        tally.probs.push(cell.p);
                        tally.truth.push(*t);
                    }
                    None => {}
                }
            }
            Err(e) => {
                tally.failed += 1;
                eprintln!("{}: {e}", path.display());
            }
        });
    }
    bar.finish_and_clear();
    b.shutdown();
    if args.labelled {
        let mut summary = Summary::new(
            &tally.probs,
            &tally.truth,
            min_confidence,
            tally.failed,
            unknown,
        );
        (summary.platelets, summary.platelets_likeliest_platelet) = tally.platelets;
        summary.one_magnification = set_size;
        if args.json {
            println!("{}", serde_json::json!({ "summary": summary }));
        } else {
            print!("{}", summary.text());
        }
    }
    Ok(if tally.failed > 0 { 1 } else { 0 })
}

fn print_one(c: &Classified, json: bool) {
    if json {
        println!("{}", serde_json::to_string(c).unwrap_or_default());
        return;
    }
    let p = |k: &str| c.probabilities.get(k).copied().unwrap_or(0.0);
    let call = match c.class {
        Some(k) => format!("{k} ({:.3})", p(k)),
        None => format!("review (likeliest {} {:.3})", c.top_class, p(c.top_class)),
    };
    let label = c
        .label
        .map(|l| format!(", labelled {l}"))
        .unwrap_or_default();
    let located = match c.located {
        Located::WhiteCellBox => "window on the white cell's box",
        Located::ImageCentre => "window on the image's centre",
    };
    println!(
        "{}: {call}{label}; red cells {:.1} px ({}), {located}",
        c.file.display(),
        c.rbc_diameter_px,
        c.rbc_size_source
    );
    if let Some(w) = &c.warning {
        println!("{}: warning: {w}", c.file.display());
    }
}

/// The figures over a labelled set: over every labelled class, and over the
/// five normal types alone (neutrophil, lymphocyte, monocyte, eosinophil,
/// basophil), the figures an independent check asks for.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Every labelled image classified.
    pub all: OtherLab,
    /// Those labelled with one of the five normal types.
    pub five_normal_types: OtherLab,
    /// Share of the cells given a class that were given the right one
    /// (over `all`).
    pub accuracy_of_called: f64,
    pub min_confidence: f32,
    /// Labelled images that could not be classified (unreadable, or their
    /// red cells not measurable).
    pub not_classified: usize,
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

/// The red-cell size of a set at one magnification ([`set_median_size`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SetSize {
    /// The median of the images' measures, pixels.
    pub rbc_diameter_px: f32,
    /// Images whose red cells gave a measure.
    pub images_measured: usize,
}

/// Lineage indices (of `lineages()`) of the five normal types.
const NORMAL: std::ops::Range<usize> = 0..5;

impl Summary {
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
        let called = all.cells as f64 * (1.0 - all.review_rate);
        let right = all.accuracy * all.cells as f64;
        Self {
            accuracy_of_called: if called > 0.0 { right / called } else { 0.0 },
            all,
            five_normal_types,
            min_confidence,
            not_classified,
            unlabelled_folders,
            platelets: 0,
            platelets_likeliest_platelet: 0,
            one_magnification: None,
        }
    }

    /// The summary as a table for the terminal.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let line = |name: &str, f: &OtherLab| {
            format!(
                "{name}: {} cells, accuracy {:.3}, left for review {:.3}, confident errors {}, \
                 top class right {:.3}\n",
                f.cells, f.accuracy, f.review_rate, f.confident_errors, f.top_class_accuracy
            )
        };
        out.push_str(&format!(
            "\nlabelled cells at min confidence {}:\n",
            self.min_confidence
        ));
        out.push_str(&line("all white cells", &self.all));
        out.push_str(&line("five normal types", &self.five_normal_types));
        out.push_str(&format!(
            "accuracy of the cells given a class: {:.3}\n",
            self.accuracy_of_called
        ));
        if self.not_classified > 0 {
            out.push_str(&format!(
                "not classified (see the errors above): {}\n",
                self.not_classified
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
                "left out: {n} images in folders named {folder:?}, which names no class\n"
            ));
        }
        let names = &self.all.lineages;
        out.push_str("confusion (rows: labelled; columns: called):\n");
        out.push_str(&format!("{:>22}", ""));
        for n in names.iter().copied().chain(["review"]) {
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

    #[test]
    fn folder_names_of_common_sets_name_their_classes() {
        let class = |n: &str| class_of_label(n).map(|c| CLASSES[c]);
        for (name, want) in [
            ("Neutrophil", "neutrophil_segmented"),
            ("neutrophils", "neutrophil_segmented"),
            ("neut", "neutrophil_segmented"),
            ("SNE", "neutrophil_segmented"),
            ("Band neutrophil", "neutrophil_band"),
            ("Lymphocyte", "lymphocyte"),
            ("lymp", "lymphocyte"),
            ("mono", "monocyte"),
            ("eos", "eosinophil"),
            ("EOSINOPHILS", "eosinophil"),
            ("Baso", "basophil"),
            ("ig", "immature_granulocyte"),
            ("immature_granulocytes", "immature_granulocyte"),
            ("NRBC", "erythroblast"),
            ("erythroblast", "erythroblast"),
            ("platelets", "platelet"),
        ] {
            assert_eq!(class(name), Some(want), "{name}");
        }
        for name in ["", "ne", "blast", "smudge", "artefact", "images", "cells"] {
            assert_eq!(class(name), None, "{name}");
        }
    }

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
        assert!((s.all.accuracy - 0.6).abs() < 1e-9);
        assert!((s.all.review_rate - 0.2).abs() < 1e-9);
        assert_eq!(s.all.confident_errors, 1);
        assert!((s.accuracy_of_called - 0.75).abs() < 1e-9);
        assert_eq!(s.five_normal_types.cells, 4, "the erythroblast is not one");
        assert!((s.five_normal_types.accuracy - 0.5).abs() < 1e-9);
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
}
