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
//! the centre, which is where a single-cell image holds its cell. An image
//! whose red cells cannot be measured (a tight crop shows few whole ones)
//! is classified last, at the centre, at the median of the sizes the
//! run's other images measured, with a warning. With
//! `--rbc-diameter-px` nothing is measured or looked for: the window is the
//! centre's at that size, and a large set runs in seconds; with
//! `--one-magnification` that size is the median of the images' own
//! measures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use serde::Serialize;

use super::labels::{class_of_image, folder_of, NAMES_TAKEN};
use super::summary::{SetSize, Tally};
use super::{local_cell_batchers, CliError};
use crate::app::CommandError;
use crate::config::Config;
use crate::families::pbs::pipeline::{self, CellKind, ScaleSettings};
use crate::families::pbs::scale::{estimate, RbcScale, ScaleSource};
use crate::imaging::rbc_size;
use crate::model::wbc::figures::{argmax, lineage, lineages};
use crate::model::wbc::{decide, sample_window, CLASSES, WINDOW_RBC};

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
    /// `eos`, `ig`, `NRBC`, CellaVision's `LY`, ...): the nearest of its
    /// folders that names one, up to the directory given (so
    /// `Lymphocyte/slide1/` is a lymphocyte's); images under no such
    /// folder are left out and counted.
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
    /// size was given (or taken from the run's other images) and nothing
    /// was looked for.
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
    /// `configured`, `microns_per_px`), or `set_median`: the median of the
    /// images' measures (`--one-magnification`; or, for an image whose red
    /// cells could not be measured, of the run's images that were).
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

/// Longest side, in red-cell diameters, past which an image is taken for a
/// microscope field rather than one cell's image: PBC's images span about
/// 5 (144x145 px at 30 px red cells in the shared copy, 360x363 in the
/// original), BCCD's 640x480 fields, each framed on a white cell, about
/// 6.5; the fixture smear (1226x652 px, red cells 98.7 px) 12.4.
const SINGLE_CELL_SPAN_MAX: f32 = 10.0;

/// Why the image at hand may not be one cell's image, if it may not: it
/// spans more than [`SINGLE_CELL_SPAN_MAX`] red-cell diameters of `d` px,
/// or the white-cell net (when it ran) found `outside` white cells whose
/// centres lie outside the window classified.
fn not_single_cell((w, h): (f32, f32), d: f32, outside: usize) -> Option<String> {
    let span = w.max(h) / d;
    let mut why = Vec::new();
    if span > SINGLE_CELL_SPAN_MAX {
        why.push(format!(
            "it spans {span:.1} red-cell diameters, more than one cell's image does \
             (at most {SINGLE_CELL_SPAN_MAX})"
        ));
    }
    if outside > 0 {
        why.push(format!(
            "the white-cell net found {outside} white cell{} outside the window classified",
            if outside == 1 { "" } else { "s" }
        ));
    }
    (!why.is_empty()).then(|| {
        format!(
            "{}: only the cell at the image's centre is classified; a smear photo's \
             differential is `argusd pbs count`'s",
            why.join(" and ")
        )
    })
}

/// Both warnings, when there are two.
fn joined(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
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
        format!("its red cells could not be measured ({why})")
    })
}

/// Why an image gave no cell: its red cells could not be measured (the
/// reason; the run may still classify it at its other images' size), or
/// anything else failed.
enum Refusal {
    Unmeasured(String),
    Failed(String),
}

impl From<String> for Refusal {
    fn from(e: String) -> Self {
        Refusal::Failed(e)
    }
}

/// The advice that ends the refusal of an image no size could be found for
/// (`--one-magnification` would not help: it takes the same measure).
const GIVE_A_SIZE: &str =
    "give their size with --rbc-diameter-px, or set pbs.native_rbc_diameter_px";

/// The classified white cells of analysis `a`: each box's centre and the
/// cell's probabilities.
fn white_cells(a: &pipeline::SmearAnalysis) -> impl Iterator<Item = (f32, f32, [f32; 9])> + '_ {
    a.cells
        .iter()
        .filter(|c| c.kind == CellKind::Wbc)
        .filter_map(|c| {
            let (x0, y0) = (c.x as f32, c.y as f32);
            Some((
                x0 + c.width as f32 / 2.0,
                y0 + c.height as f32 / 2.0,
                c.wbc_probabilities?,
            ))
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
) -> Result<Cell, Refusal> {
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
            warning: not_single_cell((w, h), d, 0),
        });
    }
    let sizes = ScaleSettings::from_config(&config.pbs);
    // The analysis's first step, run apart first so that an image it would
    // analyse at BCCD's size is set aside (for the run's median size) before
    // the nets run.
    let first = {
        let (img, params) = (img.clone(), config.cells);
        tokio::task::spawn_blocking(move || estimate(&img, &sizes, &params))
            .await
            .map_err(|e| e.to_string())?
    };
    if let Some(why) = unmeasured(&first) {
        return Err(Refusal::Unmeasured(why));
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
    let half = WINDOW_RBC * d / 2.0;
    let outside = white_cells(&a)
        .filter(|(cx, cy, _)| (cx - x).abs() > half || (cy - y).abs() > half)
        .count();
    Ok(Cell {
        p,
        rbc_diameter_px: d,
        source: source_name(size.source),
        located,
        window: [x, y, 2.0 * half],
        warning: joined(size.warning, not_single_cell((w, h), d, outside)),
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
                let Some(c) = class_of_image(&input.path, &input.rel) else {
                    *unknown.entry(folder_of(&input.path)).or_default() += 1;
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
    let measure = |path: &PathBuf| {
        let bytes = std::fs::read(path).ok()?;
        let img = crate::imaging::decode(&bytes, limits).ok()?.image;
        let s = estimate(&img, &ScaleSettings::default(), params);
        (s.source == ScaleSource::Photo).then_some(s.rbc_diameter_px)
    };
    let mut sizes = Vec::new();
    let mut unmeasured = Vec::new();
    for path in paths {
        match measure(path) {
            Some(d) => sizes.push(d),
            None => unmeasured.push(path.display().to_string()),
        }
    }
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
        not_measured: unmeasured,
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
    if !set.not_measured.is_empty() {
        const SHOWN: usize = 10;
        let more = set.not_measured.len().saturating_sub(SHOWN);
        eprintln!(
            "no measure from: {}{}",
            set.not_measured[..set.not_measured.len().min(SHOWN)].join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    Ok((Some((set.rbc_diameter_px, "set_median")), Some(set)))
}

/// `argusd pbs differential`: each image's cell, and with `--labelled` the
/// figures over them. An image whose red cells cannot be measured is
/// classified, after the others, at the median size of those that were
/// (`set_median`, with a warning): the images of one run usually come from
/// one analyser. Exit status 1 when an image could not be classified.
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
    let mut measured = Vec::new();
    let mut deferred = Vec::new();
    let report =
        |tally: &mut Tally, path: &Path, label: Option<usize>, res: Result<Cell, String>| {
            bar.suspend(|| match &res {
                Ok(cell) => print_one(
                    &classified(path, label, cell, min_confidence),
                    args.json,
                    min_confidence,
                ),
                Err(e) => eprintln!("{}: {e}", path.display()),
            });
            tally.add(label, res.as_ref().ok().map(|c| &c.p));
        };
    for (path, label) in &work {
        bar.set_message(path.display().to_string());
        let res = classify_file(&b, config, &limits, path, given).await;
        bar.inc(1);
        let res = match res {
            Err(Refusal::Unmeasured(why)) => {
                deferred.push((path, *label, why));
                continue;
            }
            Err(Refusal::Failed(e)) => Err(e),
            Ok(cell) => {
                if cell.source == source_name(ScaleSource::Photo) {
                    measured.push(cell.rbc_diameter_px);
                }
                Ok(cell)
            }
        };
        report(&mut tally, path, *label, res);
    }
    measured.sort_by(f32::total_cmp);
    for (path, label, why) in deferred {
        bar.set_message(path.display().to_string());
        let res = at_run_median(&b, config, &limits, path, why, &measured).await;
        if res.is_ok() && label.is_some() {
            tally.at_run_median += 1;
        }
        report(&mut tally, path, label, res);
    }
    bar.finish_and_clear();
    b.shutdown();
    if args.labelled {
        let summary = tally.summary(min_confidence, unknown, set_size);
        if args.json {
            println!("{}", serde_json::json!({ "summary": summary }));
        } else {
            print!("{}", summary.text());
        }
    }
    Ok(if tally.failed() > 0 { 1 } else { 0 })
}

/// The image at `path`, whose red cells could not be measured (`why`),
/// classified at its centre at the median of `measured` (the sizes of the
/// run's images that were, sorted), with a warning that says so. Errors:
/// `measured` is empty (the reason and what to do), or as
/// [`classify_file`]'s.
async fn at_run_median(
    b: &pipeline::CellBatchers,
    config: &Config,
    limits: &crate::imaging::DecodeLimits,
    path: &Path,
    why: String,
    measured: &[f32],
) -> Result<Cell, String> {
    let Some(&d) = measured.get(measured.len() / 2) else {
        return Err(format!("{why}; {GIVE_A_SIZE}"));
    };
    let mut cell = classify_file(b, config, limits, path, Some((d, "set_median")))
        .await
        .map_err(|e| match e {
            Refusal::Unmeasured(e) | Refusal::Failed(e) => e,
        })?;
    let said = match measured.len() {
        1 => format!(
            "{why}; classified at {d:.1} px, the size of the one image of this run measured"
        ),
        n => format!(
            "{why}; classified at {d:.1} px, the median of the {n} images of this run that were \
             measured"
        ),
    };
    cell.warning = joined(Some(said), cell.warning);
    Ok(cell)
}

/// [`classify_one`] of the image file at `path`. Errors: as
/// [`classify_one`]'s, and a file that cannot be read or decoded.
async fn classify_file(
    b: &pipeline::CellBatchers,
    config: &Config,
    limits: &crate::imaging::DecodeLimits,
    path: &Path,
    given: Option<(f32, &str)>,
) -> Result<Cell, Refusal> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let img = crate::imaging::decode(&bytes, limits)
        .map_err(|e| e.to_string())?
        .image;
    classify_one(b, config, Arc::new(img), given).await
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

fn print_one(c: &Classified, json: bool, min_confidence: f32) {
    if json {
        println!("{}", serde_json::to_string(c).unwrap_or_default());
        return;
    }
    let p = |k: &str| c.probabilities.get(k).copied().unwrap_or(0.0);
    let (seg, band) = (p(CLASSES[0]), p(CLASSES[1]));
    let call = match c.class {
        // Called by the lineage: neither form reached it alone (`decide`).
        Some(k) if p(k) < min_confidence && (k == CLASSES[0] || k == CLASSES[1]) => format!(
            "{k} ({:.3}; neutrophil {:.3}: segmented {seg:.3} + band {band:.3})",
            p(k),
            seg + band
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_or_other_white_cells_are_warned_of_and_a_cells_image_is_not() {
        // PBC's 144x145 at 30 px red cells; the fixture smear at 98.7 px.
        assert_eq!(not_single_cell((144.0, 145.0), 30.0, 0), None);
        assert_eq!(
            not_single_cell((1226.0, 652.0), 98.7, 0).unwrap(),
            "it spans 12.4 red-cell diameters, more than one cell's image does (at most 10): \
             only the cell at the image's centre is classified; a smear photo's differential is \
             `argusd pbs count`'s"
        );
        let two = not_single_cell((144.0, 145.0), 30.0, 2).unwrap();
        assert!(
            two.starts_with("the white-cell net found 2 white cells outside"),
            "{two}"
        );
        let both = not_single_cell((1226.0, 652.0), 98.7, 1).unwrap();
        assert!(
            both.contains("does (at most 10) and the white-cell net found 1 white cell outside"),
            "{both}"
        );
    }

    #[test]
    fn an_image_without_a_measure_or_a_configured_size_gives_the_reason() {
        let mut first = RbcScale {
            rbc_diameter_px: 100.0,
            rbc_diameter_um: None,
            source: ScaleSource::Assumed,
            measured_px: None,
            cells_measured: 1,
            warning: None,
            cells_round: None,
            unlike_smear: false,
        };
        let why = unmeasured(&first).expect("no size");
        assert!(
            why.contains("1 clean single red cell found, 3 needed"),
            "{why}"
        );
        first.measured_px = Some(4.6);
        assert!(unmeasured(&first).unwrap().contains("4.6 px"));
        first.source = ScaleSource::Configured;
        assert_eq!(unmeasured(&first), None, "a configured size is used");
    }
}
