//! Check the red-cell size estimate (`imaging::rbc_size`) and the counts it
//! leads to on BCCD (`../shared/data/bccd`, MIT).
//!
//!     cargo run --release --example bccd_scale -- --split train
//!     cargo run --release --example bccd_scale -- --split val --counts --factors 0.5,1,2
//!     cargo run --release --example bccd_scale -- --split train --limit 20 --counts --exact-scale
//!
//! Size: per photo, the estimate against the median box side ((w + h) / 2)
//! of its isolated red cells (boxes not cut by the photo's edge and not
//! overlapping any other box; BCCD leaves many overlapping cells unboxed, so
//! counts of boxes are no measure of size). Printed: the ratio's median,
//! spread and the share of photos within 10% and 20%, and the raw
//! calibration factor `box / (estimate / BOX_PER_MASK)` (fit on train only).
//!
//! Size consistency (`--size-consistency`): each photo resampled by each
//! factor and measured again; per factor, the share of copies whose
//! estimate lies within 5% and 10% of the native photo's estimate times the
//! factor, and the copies where either side gave no estimate. No nets run.
//!
//! Counts (`--counts`): each photo resampled by each factor, its red-cell
//! size estimated, brought to the nets' scale and counted with the default
//! parameters on the CPU backend; white-cell exact rate and platelet MAE
//! against the boxes, and the agreement with the photo's own native-size
//! counts (white cells equal, red cells within 10%, platelets within 1),
//! and the red-cell MAE and bias against the boxes (which BCCD leaves
//! incomplete in crowded fields). `--circle-supports 0,0.25` recounts the
//! same maps with each `cells.rbc_circle_support` (0: threshold markers
//! only), one table each; `--min-separations 0.5,0.7` likewise.
//! With `--counts --exact-scale`, each copy is analysed at the native photo's scale
//! divided by the factor instead of its own estimate: what is left of the
//! disagreement then is the counter's, not the size measure's (the
//! printed sizes and fall-backs are still each copy's own estimate).
//! With `--counts --jitter`, the "copies" are the native photo itself
//! analysed at its measured scale times each factor (`--factors
//! 0.96,0.98,1,1.02,1.04`): how much the count moves with the scale alone.
//! Each analysis takes the pipeline's scale samples (`cells.scale_samples`,
//! median red-cell count); `--scale-samples 1` analyses once, and
//! `--scale-samples 5 --scale-spread 0.03` tries other samples, and
//! `--no-refine` leaves the colour measure's scale unrefined by the red
//! cells' outline (`cells.rbc_outline_radius` 0); `--refine-above 0.02`
//! sets the margin, in ln of the scale, beyond which it refines (`cells.scale_refine_above`). `--radii` prints each
//! photo's outline radius (`NATIVE` lines: against its boxes; `RADII`: each
//! copy's against the native's); with `--no-refine` it shows what the
//! outline would correct, as the model card reports it (with refinement on,
//! the scales printed are already corrected).
//! `--copy-filter triangle|catmullrom|lanczos3|nearest` makes the rescaled
//! copies with that filter (CatmullRom by default; the pipeline resamples
//! with Triangle). `--outline-radius 0.465` sets the outline the scale is
//! refined towards (`cells.rbc_outline_radius`): moving it by a fraction of
//! a percent moves every refined photo's scale alike, which shows how much
//! of a difference between two runs is the counter's noise (the model
//! card's "How much of any of these differences is noise").
//! `--edge-cut 0` and `--min-depth 0.25` set `cells.rbc_edge_cut` and
//! `cells.rbc_min_depth` (an edge cut of 0 counts with the circles'
//! markers, as before 2026-12-05).
//! `--gross-above 0` leaves out the red-cell net's mask check of the
//! colour measure (`cells.scale_gross_above`, `cells::gross_scale`; as
//! before 2026-12-05); a photo it moves prints a `GROSS` line on stderr,
//! and `--radii` prints the mask's size (`mask ... d` on `NATIVE` lines,
//! `MASK` lines for the copies).
//! `--outline-looks 1` measures the outline on the first look alone (as
//! before 2026-12-06; `cells.outline_looks`, 3 by default), and
//! `--outline-step 0.03` sets the step between looks
//! (`cells.outline_look_step`); with `--radii`, `LOOKS` lines on stderr
//! give each look's outline.
//! `--working-blur 0.7` blurs every analysis's resampled
//! image by a Gaussian of that sigma (px at the nets' scale) before the
//! nets see it.
//! `--merges median,mean-maps,median:5` counts each small field each way,
//! one table each: the scale sample with the median red-cell count (the
//! pipeline's), one count of the samples' maps averaged on the first's grid
//! (`cells::StitchedMaps::mean`), or the median of 5 of the samples spread
//! over the same range (`--scale-samples 13 --merges median:3,median:5,median:7,median`
//! compares 3, 5, 7 and 13 samples over +-3% in one run), or `clumps`: the
//! red cells voted clump by clump over the samples (`cells::clump_votes`),
//! white cells and platelets the median sample's.
//! `--dump-regions FILE` writes, per photo, factor and analysis (scale
//! sample), a line `id factor sample rbc_count width height` followed by
//! the area of each counted red-cell region in d^2 (`e` after one the
//! photo's edge cuts), for recounting offline (the model card's "Counting
//! by area"); it holds no pixels.
//! The data is read from ../shared/data; nothing of it is written anywhere
//! but the numbers above.

use std::path::Path;

use argus::backend::{cpu::CpuBackend, ModelPaths, ModelSet};
use argus::families::pbs::pipeline::{self as cells, CountParams};
use argus::families::pbs::scale::{self, ScaleSettings};
use argus::imaging::rbc_size;

#[path = "bccd_common.rs"]
mod bccd_common;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[derive(Default)]
struct Truth {
    rbc: usize,
    wbc: usize,
    plt: usize,
    /// Median side of the isolated red-cell boxes, if there are 3 or more.
    rbc_box_px: Option<f32>,
    isolated: usize,
    /// Median side of the red-cell boxes not cut by the edge, if 3 or more.
    uncut_box_px: Option<f32>,
}

fn tag(s: &str, name: &str) -> Option<i64> {
    let a = s.find(&format!("<{name}>"))? + name.len() + 2;
    let b = s[a..].find(&format!("</{name}>"))? + a;
    s[a..b].trim().parse::<f64>().ok().map(|v| v.round() as i64)
}

fn truth(xml: &str) -> Truth {
    let (w, h) = (
        tag(xml, "width").unwrap_or(0),
        tag(xml, "height").unwrap_or(0),
    );
    let mut boxes = Vec::new();
    let mut t = Truth::default();
    for obj in xml.split("<object>").skip(1) {
        let name = obj
            .split("<name>")
            .nth(1)
            .and_then(|s| s.split("</name>").next())
            .unwrap_or("");
        let b = [
            tag(obj, "xmin"),
            tag(obj, "ymin"),
            tag(obj, "xmax"),
            tag(obj, "ymax"),
        ];
        match name {
            "RBC" => t.rbc += 1,
            "WBC" => t.wbc += 1,
            "Platelets" => t.plt += 1,
            _ => {}
        }
        if let [Some(x0), Some(y0), Some(x1), Some(y1)] = b {
            boxes.push((name == "RBC", [x0, y0, x1, y1]));
        }
    }
    let overlaps =
        |a: &[i64; 4], b: &[i64; 4]| a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
    let mut sides: Vec<f32> = boxes
        .iter()
        .enumerate()
        .filter(|(_, (rbc, b))| *rbc && b[0] > 1 && b[1] > 1 && b[2] < w - 1 && b[3] < h - 1)
        .filter(|(i, (_, b))| {
            boxes
                .iter()
                .enumerate()
                .all(|(j, (_, o))| j == *i || !overlaps(b, o))
        })
        .map(|(_, (_, b))| ((b[2] - b[0]) + (b[3] - b[1])) as f32 / 2.0)
        .collect();
    t.isolated = sides.len();
    if sides.len() >= 3 {
        sides.sort_by(f32::total_cmp);
        t.rbc_box_px = Some(sides[sides.len() / 2]);
    }
    let mut uncut: Vec<f32> = boxes
        .iter()
        .filter(|(rbc, b)| *rbc && b[0] > 1 && b[1] > 1 && b[2] < w - 1 && b[3] < h - 1)
        .map(|(_, b)| ((b[2] - b[0]) + (b[3] - b[1])) as f32 / 2.0)
        .collect();
    if uncut.len() >= 3 {
        uncut.sort_by(f32::total_cmp);
        t.uncut_box_px = Some(uncut[uncut.len() / 2]);
    }
    t
}

fn quantile(v: &[f32], q: f32) -> f32 {
    let mut v = v.to_vec();
    v.sort_by(f32::total_cmp);
    v[((v.len() - 1) as f32 * q).round() as usize]
}

/// The filter rescaled copies are made with (`--copy-filter`, CatmullRom
/// unless set): how much the counts depend on how a copy was made.
static COPY_FILTER: std::sync::OnceLock<image::imageops::FilterType> = std::sync::OnceLock::new();

fn resample(img: &image::RgbImage, f: f32) -> image::RgbImage {
    if f == 1.0 {
        return img.clone();
    }
    let w = (img.width() as f32 * f).round() as u32;
    let h = (img.height() as f32 * f).round() as u32;
    let filter = *COPY_FILTER.get_or_init(|| image::imageops::FilterType::CatmullRom);
    image::imageops::resize(img, w, h, filter)
}

/// The nets' maps of one photo at the scale its estimate gives, or at
/// `exact` (the estimate is still made and returned, for the report), and a
/// counter of them: counting is cheap, so each `--circle-supports` value
/// recounts the same maps.
struct Run {
    maps: Vec<argus::backend::TileMaps>,
    cols: usize,
    sw: usize,
    sh: usize,
    f: f32,
    dims: (u32, u32),
    /// The photo (or probe) the maps are of, for the white cells' nucleus
    /// test (`cells::drop_anucleate_white_cells`).
    photo: image::RgbImage,
}

/// Counts a run as the pipeline does: the nets' maps, then the white cells
/// without a nucleus dropped.
fn count_run(r: &Run, params: &CountParams) -> cells::SmearAnalysis {
    let mut a = cells::count(&r.maps, r.cols, r.sw, r.sh, r.f, r.dims, params);
    cells::drop_anucleate_white_cells(&mut a, &r.photo, params.wbc_min_nucleus);
    a
}

/// The red cells' outline radius of a run, a fraction of d (`--radii`).
fn ring_radius(r: &Run, params: &CountParams) -> Option<f32> {
    cells::count(&r.maps, r.cols, r.sw, r.sh, r.f, r.dims, params).rbc_outline
}

/// One photo's runs, one per scale sample (`cells::sample_scales`, taken
/// when the pipeline would take them at the base parameters); its count is
/// the run the pipeline keeps (`cells::median_index`).
struct Analysed {
    runs: Vec<Run>,
}

/// How a small field's scale samples give its counts (`--merges`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Merge {
    /// The sample with the median red-cell count (the pipeline's), of
    /// `Some(n)` of the runs (`median:N`, spread evenly over the same range
    /// as all of them) or of all.
    Median(Option<usize>),
    /// One count of the samples' maps averaged on the first's grid.
    MeanMaps,
    /// Red cells voted clump by clump (`cells::clump_votes`); white cells
    /// and platelets the median sample's.
    Clumps,
}

impl Merge {
    fn parse(s: &str) -> anyhow::Result<Self> {
        match s.split_once(':') {
            None if s == "median" => Ok(Self::Median(None)),
            None if s == "mean-maps" => Ok(Self::MeanMaps),
            None if s == "clumps" => Ok(Self::Clumps),
            Some(("median", n)) => Ok(Self::Median(Some(n.parse()?))),
            _ => anyhow::bail!("--merges: median, median:N, mean-maps or clumps, not {s}"),
        }
    }
}

impl Analysed {
    /// The runs of `n` scale samples spread over the same range as all of
    /// them (every k-th multiplier of `cells::sample_scales`' order: the
    /// first run is the middle one); all when `n` does not divide them.
    fn subset(&self, n: Option<usize>) -> Vec<&Run> {
        let all = self.runs.len();
        let Some(n) = n.filter(|&n| n > 1 && n < all && (all - 1).is_multiple_of(n - 1)) else {
            return self.runs.iter().collect();
        };
        let (k, mid) = ((all - 1) / (n - 1), (all - 1) / 2);
        let mut out = vec![&self.runs[0]];
        for i in (0..all).filter(|i| i.is_multiple_of(k) && *i != mid) {
            out.push(&self.runs[if i < mid { i + 1 } else { i }]);
        }
        out
    }

    fn count(&self, params: &CountParams, merge: Merge) -> cells::Counts {
        let counted = |r: &Run| count_run(r, params);
        let first = &self.runs[0];
        let runs = match merge {
            Merge::Median(n) => self.subset(n),
            Merge::MeanMaps | Merge::Clumps => self.runs.iter().collect(),
        };
        let mut counts: Vec<cells::SmearAnalysis> = vec![counted(first)];
        // The runs were taken at the base parameters; a swept value whose
        // first count is not a small field's keeps that first count, as the
        // pipeline would.
        if runs.len() == 1 || !cells::wants_more_samples(counts[0].counts.rbc, params) {
            return counts.swap_remove(0).counts;
        }
        if merge == Merge::MeanMaps {
            let stitched: Vec<cells::StitchedMaps> = runs
                .iter()
                .map(|r| cells::StitchedMaps::stitch(&r.maps, r.cols, r.sw, r.sh))
                .collect();
            let refs: Vec<&cells::StitchedMaps> = stitched.iter().collect();
            let mean = cells::StitchedMaps::mean(&refs, first.sw, first.sh);
            let mut a = cells::count_stitched(&mean, first.maps.len(), first.f, first.dims, params);
            cells::drop_anucleate_white_cells(&mut a, &first.photo, params.wbc_min_nucleus);
            return a.counts;
        }
        counts.extend(runs[1..].iter().map(|r| counted(r)));
        let voted = (merge == Merge::Clumps)
            .then(|| cells::clump_votes(&counts).iter().map(Vec::len).sum());
        let rbc: Vec<usize> = counts.iter().map(|c| c.counts.rbc).collect();
        let mut kept = counts.swap_remove(cells::median_index(&rbc)).counts;
        kept.rbc = voted.unwrap_or(kept.rbc);
        kept
    }
}

/// Gaussian blur, in px of the nets' scale, applied after the resampling
/// and before the equalisation (`--working-blur`, none unless set): whether
/// a softer input makes a small field's count depend less on how the photo
/// was resampled.
static WORKING_BLUR: std::sync::OnceLock<f32> = std::sync::OnceLock::new();

/// `cells::prepare`, with the working blur above when one is set.
fn prepare(
    img: &image::RgbImage,
    f: f32,
) -> anyhow::Result<(argus::imaging::smear::Tiles, usize, usize)> {
    let sigma = WORKING_BLUR.get().copied().unwrap_or(0.0);
    if sigma <= 0.0 {
        return Ok(cells::prepare(img, f)?);
    }
    let (sw, sh) = cells::scaled_size(img.dimensions(), f)?;
    let scaled = image::imageops::resize(
        img,
        sw as u32,
        sh as u32,
        image::imageops::FilterType::Triangle,
    );
    let soft = image::imageops::blur(&scaled, sigma);
    let eq = argus::imaging::smear::equalise(soft.as_raw(), sw, sh);
    Ok((argus::imaging::smear::tile(&eq, sw, sh), sw, sh))
}

/// The nets' maps of `img` at scale `f`.
fn run_at(unets: &mut CpuBackend, img: &image::RgbImage, f: f32) -> anyhow::Result<Run> {
    let (tiles, sw, sh) = prepare(img, f)?;
    let maps = bccd_common::run_unets(unets, &tiles)?;
    Ok(Run {
        maps,
        cols: tiles.cols,
        sw,
        sh,
        f,
        dims: img.dimensions(),
        photo: img.clone(),
    })
}

/// As the pipeline analyses a photo: the red cells' outline from a first
/// run at its measured scale (of a probe of a large photo,
/// `cells::probe_rect`), a run at the scale the outline gives when it
/// refines the measure (`cells::refined_scale`; neither with `exact`), then
/// the other scale samples around that when the field is small.
fn analyse(
    unets: &mut CpuBackend,
    img: &image::RgbImage,
    params: &CountParams,
    exact: Option<f32>,
) -> anyhow::Result<(Analysed, scale::RbcScale)> {
    let mut s = scale::estimate(img, &ScaleSettings::default(), params);
    let mut f0 = exact.unwrap_or_else(|| cells::scale_for(Some(s.rbc_diameter_px), params));
    let refine = exact.is_none() && s.source == scale::ScaleSource::Photo && cells::refines(params);
    let mut whole = None;
    if refine {
        // The outline (and the net's mask size) from a probe of a large
        // photo, or a whole first run.
        let mut first = outline_at(unets, img, f0, params)?;
        let measured = f0;
        for _ in 0..cells::MAX_GROSS_MOVES {
            let Some(g) = cells::gross_scale(f0, first.1, params) else {
                break;
            };
            eprintln!("GROSS: scale {f0:.4}, mask {:?} d -> {g:.4}", first.1);
            f0 = g;
            first = outline_at(unets, img, f0, params)?;
        }
        let (outline, _, run) = first;
        // The other looks, as the pipeline's `look_around`.
        let mut all = vec![outline];
        for &s in &cells::outline_look_scales(f0, params)[1..] {
            let region = cells::look_rect(img.dimensions(), s, run.is_none());
            all.push(outline_in(unets, img, s, region, params)?);
        }
        if looks_verbose() && all.len() > 1 {
            eprintln!("LOOKS: scale {f0:.4}: {all:?}");
        }
        let outline = cells::mean_outline(&all);
        whole = run;
        if let Some(f) = cells::refined_scale(f0, outline, params) {
            whole = None;
            f0 = f;
        }
        if f0 != measured {
            s.refine(
                params.rbc_diameter_px / f0,
                &ScaleSettings::default(),
                params,
            );
        }
    }
    let first = match whole {
        Some(r) => r,
        None => run_at(unets, img, f0)?,
    };
    let first_rbc = count_run(&first, params).counts.rbc;
    let mut runs = vec![first];
    if cells::wants_more_samples(first_rbc, params) {
        for (f, _) in cells::sample_plan(img.dimensions(), f0, params)?
            .into_iter()
            .skip(1)
        {
            runs.push(run_at(unets, img, f)?);
        }
    }
    Ok((Analysed { runs }, s))
}

/// The outline radius and the net's mask size (fractions of d) of a
/// probe of a large photo at `f` (`cells::probe_rect`), or of a whole run,
/// which is returned too.
fn outline_at(
    unets: &mut CpuBackend,
    img: &image::RgbImage,
    f: f32,
    params: &CountParams,
) -> anyhow::Result<(Option<f32>, Option<f32>, Option<Run>)> {
    if let Some((x, y, w, h)) = cells::probe_rect(img.dimensions(), f) {
        let probe = image::imageops::crop_imm(img, x, y, w, h).to_image();
        let a = count_run(&run_at(unets, &probe, f)?, params);
        // As the pipeline's `first_look`: no outline in the probe, the
        // whole photo.
        if a.rbc_outline.is_some() {
            return Ok((a.rbc_outline, a.rbc_mask_diameter(), None));
        }
    }
    let r = run_at(unets, img, f)?;
    let a = count_run(&r, params);
    Ok((a.rbc_outline, a.rbc_mask_diameter(), Some(r)))
}

/// Whether `--radii` was given: then each photo's looks at its outline
/// are printed (`LOOKS` lines on stderr).
static LOOKS_VERBOSE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

fn looks_verbose() -> bool {
    LOOKS_VERBOSE.get().copied().unwrap_or(false)
}

/// The outline of `region` of `img` (the whole photo when `None`) at `f`.
fn outline_in(
    unets: &mut CpuBackend,
    img: &image::RgbImage,
    f: f32,
    region: Option<(u32, u32, u32, u32)>,
    params: &CountParams,
) -> anyhow::Result<Option<f32>> {
    let run = match region {
        Some((x, y, w, h)) => run_at(
            unets,
            &image::imageops::crop_imm(img, x, y, w, h).to_image(),
            f,
        )?,
        None => run_at(unets, img, f)?,
    };
    Ok(count_run(&run, params).rbc_outline)
}

/// Per factor, how far each rescaled copy's estimate strays from the
/// native photo's estimate times the factor (`--size-consistency`): the
/// share within 5% and 10%, and the copies where one side fell back.
fn size_consistency(
    ids: &[String],
    factors: &[f32],
    load: &dyn Fn(&str) -> anyhow::Result<(image::RgbImage, Truth)>,
    verbose: bool,
) -> anyhow::Result<()> {
    #[derive(Default, Clone, Copy)]
    struct Row {
        copies: usize,
        within_5: usize,
        within_10: usize,
        fell_back: usize,
    }
    let mut rows = vec![Row::default(); factors.len()];
    for id in ids {
        let (img, _) = load(id)?;
        let native = rbc_size::measure(&img).diameter_px;
        for (f, row) in factors.iter().zip(rows.iter_mut()) {
            if *f == 1.0 {
                continue;
            }
            let copy = rbc_size::measure(&resample(&img, *f)).diameter_px;
            row.copies += 1;
            match (native, copy) {
                (Some(n), Some(c)) => {
                    let off = (c / (n * f) - 1.0).abs();
                    row.within_5 += (off <= 0.05) as usize;
                    row.within_10 += (off <= 0.10) as usize;
                    if verbose && off > 0.10 {
                        println!(
                            "{id} x{f}: native {n:.1} px, copy {:.1} px ({:+.1}%)",
                            c / f,
                            100.0 * (c / (n * f) - 1.0)
                        );
                    }
                }
                _ => row.fell_back += 1,
            }
        }
    }
    println!("| factor | copies | within 5% of native x factor | within 10% | a side fell back |");
    println!("|---|---|---|---|---|");
    for (f, r) in factors.iter().zip(&rows) {
        if *f == 1.0 {
            continue;
        }
        let n = r.copies.max(1) as f32;
        println!(
            "| {f} | {} | {:.1}% | {:.1}% | {} |",
            r.copies,
            100.0 * r.within_5 as f32 / n,
            100.0 * r.within_10 as f32 / n,
            r.fell_back
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (data, split, ids) = bccd_common::photos(&args, "train")?;
    let factors: Vec<f32> = bccd_common::arg(&args, "--factors")
        .unwrap_or("0.5,0.75,1,1.5,2".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    if let Some(name) = bccd_common::arg(&args, "--copy-filter") {
        use image::imageops::FilterType;
        let filter = match name.as_str() {
            "triangle" => FilterType::Triangle,
            "catmullrom" => FilterType::CatmullRom,
            "lanczos3" => FilterType::Lanczos3,
            "nearest" => FilterType::Nearest,
            other => anyhow::bail!(
                "--copy-filter: triangle, catmullrom, lanczos3 or nearest, not {other}"
            ),
        };
        COPY_FILTER.set(filter).expect("set once, before any copy");
    }
    if let Some(v) = bccd_common::arg(&args, "--working-blur") {
        WORKING_BLUR
            .set(v.parse()?)
            .expect("set once, before any run");
    }
    let verbose = args.iter().any(|a| a == "--verbose");
    let exact_scale = args.iter().any(|a| a == "--exact-scale");
    let jitter = args.iter().any(|a| a == "--jitter");
    let radii = args.iter().any(|a| a == "--radii");
    LOOKS_VERBOSE.set(radii).expect("set once");
    let load = |id: &str| -> anyhow::Result<(image::RgbImage, Truth)> {
        let img = image::open(data.join("JPEGImages").join(format!("{id}.jpg")))?.into_rgb8();
        let xml = std::fs::read_to_string(data.join("Annotations").join(format!("{id}.xml")))?;
        Ok((img, truth(&xml)))
    };

    // Size against the boxes.
    let (mut isolated, mut uncut) = (Vec::new(), Vec::new());
    let mut no_estimate = 0;
    for id in &ids {
        let (img, t) = load(id)?;
        let m = rbc_size::measure(&img);
        if verbose {
            println!(
                "{id}: estimate {:?} from {} cells; boxes: isolated {} median {:?}, uncut median {:?}",
                m.diameter_px, m.cells, t.isolated, t.rbc_box_px, t.uncut_box_px
            );
        }
        let Some(d) = m.diameter_px else {
            no_estimate += 1;
            continue;
        };
        isolated.extend(t.rbc_box_px.map(|b| d / b));
        uncut.extend(t.uncut_box_px.map(|b| d / b));
    }
    println!("{split}: {} photos; no estimate {no_estimate}", ids.len());
    for (what, ratios) in [
        ("isolated boxes (3 or more)", &isolated),
        ("boxes not cut by the edge (3 or more)", &uncut),
    ] {
        if ratios.is_empty() {
            continue;
        }
        let within = |tol: f32| ratios.iter().filter(|r| (*r - 1.0).abs() <= tol).count();
        let n = ratios.len() as f32;
        println!(
            "  estimate / median side of {what}: median {:.3}, IQR {:.3}-{:.3}, 5-95% {:.3}-{:.3}; within 10% {:.1}%, within 20% {:.1}% (n={})",
            quantile(ratios, 0.5),
            quantile(ratios, 0.25),
            quantile(ratios, 0.75),
            quantile(ratios, 0.05),
            quantile(ratios, 0.95),
            100.0 * within(0.1) as f32 / n,
            100.0 * within(0.2) as f32 / n,
            ratios.len()
        );
        println!(
            "    calibration: BOX_PER_MASK would be {:.3} (it is {})",
            rbc_size::BOX_PER_MASK / quantile(ratios, 0.5),
            rbc_size::BOX_PER_MASK
        );
    }
    if args.iter().any(|a| a == "--size-consistency") {
        size_consistency(&ids, &factors, &load, verbose)?;
    }
    if !args.iter().any(|a| a == "--counts") {
        return Ok(());
    }

    let models = ModelPaths::in_dir(Path::new(&format!("{ROOT}/models")));
    let mut unets = CpuBackend::load(&models, ModelSet::CellTiles, 16)?;
    let mut base = CountParams::default();
    if let Some(n) = bccd_common::arg(&args, "--scale-samples") {
        base.scale_samples = n.parse()?;
        anyhow::ensure!(
            base.scale_samples % 2 == 1 && base.scale_samples <= 13,
            "--scale-samples must be odd, 1 to 13 (the daemon takes at most 9)"
        );
    }
    if let Some(v) = bccd_common::arg(&args, "--scale-spread") {
        base.scale_spread = v.parse()?;
    }
    if let Some(v) = bccd_common::arg(&args, "--refine-above") {
        base.scale_refine_above = v.parse()?;
    }
    if let Some(v) = bccd_common::arg(&args, "--outline-radius") {
        base.rbc_outline_radius = v.parse()?;
    }
    if args.iter().any(|a| a == "--no-refine") {
        base.rbc_outline_radius = 0.0;
    }
    if let Some(v) = bccd_common::arg(&args, "--outline-looks") {
        base.outline_looks = v.parse()?;
    }
    if let Some(v) = bccd_common::arg(&args, "--outline-step") {
        base.outline_look_step = v.parse()?;
    }
    if let Some(v) = bccd_common::arg(&args, "--gross-above") {
        base.scale_gross_above = v.parse()?;
    }
    if let Some(v) = bccd_common::arg(&args, "--edge-cut") {
        base.rbc_edge_cut = v.parse()?;
    }
    if let Some(v) = bccd_common::arg(&args, "--min-depth") {
        base.rbc_min_depth = v.parse()?;
    }
    let list = |name: &str, default: f32| -> anyhow::Result<Vec<f32>> {
        match bccd_common::arg(&args, name) {
            Some(v) => Ok(v.split(',').map(|s| s.parse()).collect::<Result<_, _>>()?),
            None => Ok(vec![default]),
        }
    };
    let merges = match bccd_common::arg(&args, "--merges") {
        None => vec![Merge::Median(None)],
        Some(v) => v
            .split(',')
            .map(Merge::parse)
            .collect::<anyhow::Result<_>>()?,
    };
    let mut supports = Vec::new();
    for cs in list("--circle-supports", base.rbc_circle_support)? {
        for sep in list("--min-separations", base.rbc_min_separation)? {
            for &merge in &merges {
                supports.push((cs, sep, merge));
            }
        }
    }
    #[derive(Default, Clone, Copy)]
    struct Tally {
        n: usize,
        wbc_exact: usize,
        plt_abs: usize,
        rbc_abs: usize,
        rbc_signed: i64,
        same_wbc: usize,
        rbc_in_10: usize,
        plt_in_1: usize,
        fallback: usize,
    }
    let mut tallies = vec![vec![Tally::default(); factors.len()]; supports.len()];
    let mut dump = match bccd_common::arg(&args, "--dump-regions") {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    for id in &ids {
        let (img, t) = load(id)?;
        let (native_maps, native_size) = analyse(&mut unets, &img, &base, None)?;
        let copies = factors
            .iter()
            .map(|f| {
                if *f == 1.0 {
                    return Ok(None);
                }
                let native_scale = cells::scale_for(Some(native_size.rbc_diameter_px), &base);
                if jitter {
                    return analyse(&mut unets, &img, &base, Some(native_scale * f)).map(Some);
                }
                let exact = exact_scale.then_some(native_scale / f);
                analyse(&mut unets, &resample(&img, *f), &base, exact).map(Some)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if radii {
            let rn = ring_radius(&native_maps.runs[0], &base);
            let sn = native_maps.runs[0].f;
            let mn = count_run(&native_maps.runs[0], &base).rbc_mask_diameter();
            println!(
                "NATIVE {id}: ring {rn:?} d, scale {sn:.4}, granulometry {:?} px, isolated boxes {:?} px, uncut boxes {:?} px, mask {mn:?} d",
                native_size.measured_px, t.rbc_box_px, t.uncut_box_px
            );
            for (f, copy) in factors.iter().zip(&copies) {
                let Some((a, _)) = copy else { continue };
                let rc = ring_radius(&a.runs[0], &base);
                let mc = count_run(&a.runs[0], &base).rbc_mask_diameter();
                println!("MASK {id} x{f}: {mc:?} d");
                // A copy at f holds cells f times the native's; a jittered run is
                // the native photo itself.
                let rel = if jitter { 1.0 } else { *f } * a.runs[0].f / sn;
                if let (Some(rn), Some(rc)) = (rn, rc) {
                    println!(
                        "RADII {id} x{f}: native ring {rn:.4} d, copy scale/exact {rel:.4}, ring/native {:.4}, corrected {:.4}",
                        rc / rn,
                        rel * rn / rc
                    );
                } else {
                    println!("RADII {id} x{f}: no ring (native {rn:?}, copy {rc:?})");
                }
            }
        }
        if let Some(out) = dump.as_mut() {
            use std::io::Write;
            for (f, copy) in factors.iter().zip(&copies) {
                let a = match copy {
                    None => &native_maps,
                    Some((a, _)) => a,
                };
                for (k, r) in a.runs.iter().enumerate() {
                    let c = count_run(r, &base);
                    let d2 = base.rbc_diameter_px * base.rbc_diameter_px;
                    write!(out, "{id} {f} {k} {} {} {}", c.counts.rbc, r.sw, r.sh)?;
                    for g in c.rbc_regions() {
                        let edge = g.x0 == 0 || g.y0 == 0 || g.x1 >= r.sw || g.y1 >= r.sh;
                        write!(
                            out,
                            " {:.4}{}",
                            g.area as f32 / d2,
                            if edge { "e" } else { "" }
                        )?;
                    }
                    writeln!(out)?;
                }
            }
        }
        for (&(cs, sep, merge), row) in supports.iter().zip(tallies.iter_mut()) {
            let params = CountParams {
                rbc_circle_support: cs,
                rbc_min_separation: sep,
                ..base
            };
            let native = native_maps.count(&params, merge);
            for ((f, tally), copy) in factors.iter().zip(row.iter_mut()).zip(&copies) {
                let (c, s) = match copy {
                    None => (native.clone(), &native_size),
                    Some((a, s)) => (a.count(&params, merge), s),
                };
                tally.n += 1;
                tally.wbc_exact += (c.wbc == t.wbc) as usize;
                tally.plt_abs += c.platelets.abs_diff(t.plt);
                tally.rbc_abs += c.rbc.abs_diff(t.rbc);
                tally.rbc_signed += c.rbc as i64 - t.rbc as i64;
                tally.same_wbc += (c.wbc == native.wbc) as usize;
                tally.rbc_in_10 +=
                    ((c.rbc as f32 - native.rbc as f32).abs() <= 0.1 * native.rbc as f32) as usize;
                tally.plt_in_1 += (c.platelets.abs_diff(native.platelets) <= 1) as usize;
                tally.fallback += (s.source != scale::ScaleSource::Photo) as usize;
                if verbose {
                    println!(
                        "{id} x{f} c{cs} s{sep} {merge:?}: d {:.1} px ({:?}), rbc {} wbc {} plt {} (native {} {} {}; boxes {} {} {})",
                        s.rbc_diameter_px,
                        s.source,
                        c.rbc,
                        c.wbc,
                        c.platelets,
                        native.rbc,
                        native.wbc,
                        native.platelets,
                        t.rbc,
                        t.wbc,
                        t.plt
                    );
                }
            }
        }
    }
    for ((cs, sep, merge), row) in supports.iter().zip(&tallies) {
        println!("rbc_circle_support {cs}, rbc_min_separation {sep}, samples merged by {merge:?}:");
        println!("| factor | WBC exact vs boxes | platelet MAE vs boxes | RBC MAE (bias) vs boxes | WBC = native | RBC within 10% of native | platelets within 1 of native | fell back |");
        println!("|---|---|---|---|---|---|---|---|");
        for (f, t) in factors.iter().zip(row) {
            let n = t.n.max(1) as f32;
            let pct = |k: usize| 100.0 * k as f32 / n;
            println!(
                "| {f} | {:.1}% | {:.2} | {:.2} ({:+.2}) | {:.1}% | {:.1}% | {:.1}% | {} |",
                pct(t.wbc_exact),
                t.plt_abs as f32 / n,
                t.rbc_abs as f32 / n,
                t.rbc_signed as f32 / n,
                pct(t.same_wbc),
                pct(t.rbc_in_10),
                pct(t.plt_in_1),
                t.fallback
            );
        }
    }
    Ok(())
}
