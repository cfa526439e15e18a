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
//! centre's at that size, and a large set runs in seconds; with
//! `--one-magnification` that size is the median of the images' own
//! measures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use serde::Serialize;

use super::labels::{class_of_label, folder_of, NAMES_TAKEN};
use super::{local_cell_batchers, CliError};
use crate::app::CommandError;
use crate::config::Config;
use crate::families::pbs::pipeline::{self, CellKind, ScaleSettings};
use crate::families::pbs::scale::{estimate, RbcScale, ScaleSource};
use crate::imaging::rbc_size;
use crate::model::wbc::figures::{argmax, lineage, lineages, other_lab, OtherLab};
use crate::model::wbc::{decide, sample_window, CLASSES, PLATELET, WINDOW_RBC};

/// The options of `argusd pbs differential`.
#[derive(Debug, clap::Args)]
pub struct DifferentialArgs {
    /// Image files, or directories of them (searched recursively).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Print one JSON object per line and image (with --labelled, the
    /// summary last).
    #[arg(long)]
    json: bool,
    /// Red-cell diameter in these images, pixels: nothing is measured or
    /// looked for, each image's centre is classified at this size (fast).
    #[arg(long, value_parser = super::positive_px)]
    rbc_diameter_px: Option<f32>,
    /// The images share one magnification (one microscope and camera,
    /// as one analyser's export does): each image's red cells are
    /// measured by colour and every image's centre is classified at
    /// the median of those measures (fast; no white cell looked for).
    #[arg(long, conflicts_with = "rbc_diameter_px")]
    one_magnification: bool,
    /// Each image's folder names its true class (`Neutrophil`, `lymph`,
    /// `eos`, `ig`, `NRBC`, CellaVision's `LY`, ...; folders that name
    /// none are left out).
    #[arg(long)]
    labelled: bool,
}

/// Where a cell's window was centred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Located {
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

/// The probabilities of one image's cell and where its window lay.
struct Cell {
    p: [f32; 9],
    rbc_diameter_px: f32,
    source: String,
    located: Located,
    window: [f32; 3],
    warning: Option<String>,
}

/// Why an image's red cells give no size to classify it at, when they
/// give none and nothing is configured (BCCD's ~100 px, the analysis's
/// last resort, is no size for a single cell's image).
fn unmeasured(first: &RbcScale) -> Option<String> {
    (first.source == ScaleSource::Assumed).then(|| {
        let why = match first.measured_px {
            Some(d) => {
                format!("they measure {d:.1} px across, too small or too large to be red cells")
            }
            None => format!(
                "{} clean single red cell{} found, {} needed",
                first.cells_measured,
                if first.cells_measured == 1 { "" } else { "s" },
                rbc_size::MIN_CELLS
            ),
        };
        format!(
            "its red cells could not be measured ({why}); give their size with \
             --rbc-diameter-px, or use --one-magnification for a set from one analyser"
        )
    })
}

/// The white cell whose box covers (`cx`, `cy`), the nearest to it by its
/// box's centre when several do: that centre and its probabilities.
fn cell_over(a: &pipeline::SmearAnalysis, cx: f32, cy: f32) -> Option<(f32, f32, [f32; 9])> {
    a.cells
        .iter()
        .filter(|c| c.kind == CellKind::Wbc)
        .filter_map(|c| {
            let p = c.wbc_probabilities?;
            let (x0, y0) = (c.x as f32, c.y as f32);
            let (w, h) = (c.width as f32, c.height as f32);
            let covers = (x0..=x0 + w).contains(&cx) && (y0..=y0 + h).contains(&cy);
            covers.then_some((x0 + w / 2.0, y0 + h / 2.0, p))
        })
        .min_by(|a, b| {
            (a.0 - cx)
                .hypot(a.1 - cy)
                .total_cmp(&(b.0 - cx).hypot(b.1 - cy))
        })
}

/// One image through the appliance's path (or, with `given`, the centre's
/// window at that size, its source named so). Errors: the red cells could
/// not be measured and no size is configured ([`unmeasured`]), or the
/// analysis or the classifier failed.
async fn classify_one(
    b: &pipeline::CellBatchers,
    config: &Config,
    img: Arc<RgbImage>,
    given: Option<(f32, &str)>,
) -> Result<Cell, String> {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let (cx, cy) = (w / 2.0, h / 2.0);
    let raw: &[u8] = img.as_raw();
    let centre = move |d: f32| async move {
        let window = sample_window(raw, w as usize, h as usize, cx, cy, WINDOW_RBC * d);
        let p = pipeline::classify_wbc(&b.wbc, vec![window]).await;
        p.map(|p| p[0]).map_err(|e| e.to_string())
    };
    if let Some((d, source)) = given {
        return Ok(Cell {
            p: centre(d).await?,
            rbc_diameter_px: d,
            source: source.to_string(),
            located: Located::ImageCentre,
            window: [cx, cy, WINDOW_RBC * d],
            warning: None,
        });
    }
    let sizes = ScaleSettings::from_config(&config.pbs);
    // The analysis's first step, run apart first so that an image it would
    // analyse at BCCD's size is refused before the nets run.
    let first = {
        let (img, params) = (img.clone(), config.cells);
        tokio::task::spawn_blocking(move || estimate(&img, &sizes, &params))
            .await
            .map_err(|e| e.to_string())?
    };
    if let Some(why) = unmeasured(&first) {
        return Err(why);
    }
    let watch = pipeline::Watch::default();
    let (a, _) = pipeline::analyse(b, img.clone(), &sizes, config.cells, false, &watch)
        .await
        .map_err(|e| e.to_string())?;
    let size = a.rbc_size.clone().unwrap_or(first);
    let d = size.rbc_diameter_px;
    let (p, located, (x, y)) = match cell_over(&a, cx, cy) {
        Some((x, y, p)) => (p, Located::WhiteCellBox, (x, y)),
        None => (centre(d).await?, Located::ImageCentre, (cx, cy)),
    };
    Ok(Cell {
        p,
        rbc_diameter_px: d,
        source: source_name(size.source),
        located,
        window: [x, y, WINDOW_RBC * d],
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

/// Errors: an argument that is no image or directory of them, or, with
/// `labelled`, no image in a folder that names a class.
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
    if work.is_empty() {
        let folders: Vec<&str> = unknown.keys().map(String::as_str).collect();
        return Err(CliError::Usage(format!(
            "--labelled: no image lies in a folder that names a class (folders found: {}); \
             folder names taken: {NAMES_TAKEN}",
            folders.join(", ")
        )));
    }
    Ok((work, unknown))
}

/// The red-cell size of images taken at one magnification: each image's
/// own colour measure (the analysis's first step, `scale::estimate`), and
/// of those that give a usable one, the median, with how many gave one.
/// One image's measure can be far off (a crop with few clean red cells);
/// the median of a set is not. Blocking: decodes every image. Errors: no
/// image gives a measure.
fn set_median_size(
    paths: &[PathBuf],
    limits: &crate::imaging::DecodeLimits,
    params: &pipeline::CountParams,
) -> Result<SetSize, String> {
    let mut sizes: Vec<f32> = paths
        .iter()
        .filter_map(|path| {
            let bytes = std::fs::read(path).ok()?;
            let img = crate::imaging::decode(&bytes, limits).ok()?.image;
            let s = estimate(&img, &ScaleSettings::default(), params);
            (s.source == ScaleSource::Photo).then_some(s.rbc_diameter_px)
        })
        .collect();
    if sizes.is_empty() {
        return Err(
            "no image's red cells could be measured; give their size with \
                    --rbc-diameter-px"
                .into(),
        );
    }
    sizes.sort_by(f32::total_cmp);
    Ok(SetSize {
        rbc_diameter_px: sizes[sizes.len() / 2],
        images_measured: sizes.len(),
    })
}

/// The size every image is classified at, and its source's name, when one
/// is: `--rbc-diameter-px`, or the set's median (`--one-magnification`,
/// said on stderr). `None`: each image is measured.
async fn run_size(
    args: &DifferentialArgs,
    work: &[(PathBuf, Option<usize>)],
    limits: &crate::imaging::DecodeLimits,
    config: &Config,
) -> Result<(Option<(f32, &'static str)>, Option<SetSize>), CommandError> {
    if let Some(d) = args.rbc_diameter_px {
        return Ok((Some((d, "given")), None));
    }
    if !args.one_magnification {
        return Ok((None, None));
    }
    let paths: Vec<PathBuf> = work.iter().map(|(p, _)| p.clone()).collect();
    let (limits, params) = (limits.clone(), config.cells);
    let set = tokio::task::spawn_blocking(move || set_median_size(&paths, &limits, &params))
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?
        .map_err(CliError::Failed)?;
    eprintln!(
        "red cells: {:.1} px across, the median of {} of {} images' measures; every image is \
         classified at that size",
        set.rbc_diameter_px,
        set.images_measured,
        work.len()
    );
    Ok((Some((set.rbc_diameter_px, "set_median")), Some(set)))
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

impl Tally {
    /// Count one image's result: a white cell's probabilities under its
    /// label, a platelet apart (not a white cell), or a failure.
    fn add(&mut self, label: Option<usize>, p: Option<&[f32; 9]>) {
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
}

/// `argusd pbs differential`: each image's cell, and with `--labelled` the
/// figures over them. Exit status 1 when an image could not be classified.
pub(super) async fn differential(
    config: &Config,
    args: DifferentialArgs,
) -> Result<i32, CommandError> {
    let (work, unknown) = labelled_work(&args.images, args.labelled)?;
    let limits = super::photo_limits(config);
    let (given, set_size) = run_size(&args, &work, &limits, config).await?;
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
        bar.suspend(|| match &res {
            Ok(cell) => print_one(&classified(path, *label, cell, min_confidence), args.json),
            Err(e) => eprintln!("{}: {e}", path.display()),
        });
        tally.add(*label, res.as_ref().ok().map(|c| &c.p));
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

/// One image's cell as it is printed.
fn classified(path: &Path, label: Option<usize>, cell: &Cell, min_confidence: f32) -> Classified {
    Classified {
        file: path.to_path_buf(),
        label: label.map(|c| lineages()[lineage(c)]),
        class: decide(&cell.p, min_confidence).map(|c| CLASSES[c]),
        top_class: CLASSES[argmax(&cell.p)],
        probabilities: CLASSES.iter().copied().zip(cell.p).collect(),
        rbc_diameter_px: cell.rbc_diameter_px,
        rbc_size_source: cell.source.clone(),
        located: cell.located,
        window: cell.window,
        warning: cell.warning.clone(),
    }
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
    /// left for review.
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
pub(super) struct SetSize {
    /// The median of the images' measures, pixels.
    pub rbc_diameter_px: f32,
    /// Images whose red cells gave a measure.
    pub images_measured: usize,
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
            min_confidence,
            not_classified,
            unlabelled_folders,
            platelets: 0,
            platelets_likeliest_platelet: 0,
            one_magnification: None,
        }
    }

    /// The summary as a table for the terminal.
    fn text(&self) -> String {
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
        out.push_str(&line("all but platelets", &self.all));
        out.push_str(&line("five normal types", &self.five_normal_types));
        out.push_str(&match self.accuracy_of_called {
            Some(a) => format!("accuracy of the cells given a class: {a:.3}\n"),
            None => "accuracy of the cells given a class: none was given one\n".to_string(),
        });
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
                "left out: {n} image{} in a folder named {folder:?}, which names no class \
                 ({NAMES_TAKEN})\n",
                if *n == 1 { "" } else { "s" }
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
        assert_eq!(s.accuracy_of_called, Some(0.75));
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

    #[test]
    fn a_set_with_every_cell_in_review_has_no_accuracy_of_the_called() {
        let s = Summary::new(&[calling(2, 0.4)], &[2], 0.7, 0, BTreeMap::new());
        assert_eq!(s.accuracy_of_called, None);
        assert!(s.text().contains("none was given one"), "{}", s.text());
    }

    #[test]
    fn an_image_without_a_measure_or_a_configured_size_is_refused_with_the_reason() {
        let mut first = RbcScale {
            rbc_diameter_px: 100.0,
            rbc_diameter_um: None,
            source: ScaleSource::Assumed,
            measured_px: None,
            cells_measured: 1,
            warning: None,
        };
        let why = unmeasured(&first).expect("refused");
        assert!(
            why.contains("1 clean single red cell found, 3 needed"),
            "{why}"
        );
        assert!(why.contains("--one-magnification"), "{why}");
        first.measured_px = Some(4.6);
        assert!(unmeasured(&first).unwrap().contains("4.6 px"));
        first.source = ScaleSource::Configured;
        assert_eq!(unmeasured(&first), None, "a configured size is used");
    }
}
