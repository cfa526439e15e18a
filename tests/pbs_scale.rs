//! A smear's counts do not depend on its magnification: each photo's
//! red-cell size is measured from the photo, so rescaled copies of a real
//! smear (0.5x to 2x, made here) count like the original, through the real
//! pipeline (`pipeline::analyse`, the batchers and the cbc UNets on the CPU).
//!
//! Targets (issue 21): white cells exact, red cells within 10%, platelets
//! within 1 of the native-size counts; the size estimate follows the
//! factor within 10%.

mod common;

use std::sync::Arc;

use argus::families::pbs::pipeline::{self, ScaleSettings, SmearAnalysis};
use argus::families::pbs::scale::ScaleSource;
use common::ROOT;

const FACTORS: [f32; 4] = [0.5, 0.75, 1.5, 2.0];

/// The smear photos in tests/fixtures (`SOURCES.md`).
const SMEARS: [&str; 1] = ["smear_cbc.jpg"];

fn batchers(config: &argus::config::Config) -> pipeline::CellBatchers {
    let models =
        argus::backend::ModelPaths::from_manifest(&config.resolved_models_dir(), true).unwrap();
    let target = argus::backend::resolve(config.backend).unwrap();
    argus::families::pbs::start_cell_batchers(
        config,
        &target,
        &models,
        Arc::new(argus::metrics::Metrics::new()),
    )
    .unwrap()
}

/// A photo of `tests/fixtures` (`SOURCES.md`).
fn fixture(name: &str) -> image::RgbImage {
    image::open(format!("{ROOT}/tests/fixtures/{name}"))
        .unwrap()
        .into_rgb8()
}

async fn analyse(
    b: &pipeline::CellBatchers,
    config: &argus::config::Config,
    img: image::RgbImage,
) -> SmearAnalysis {
    let sizes = ScaleSettings::from_config(&config.pbs);
    let watch = pipeline::Watch::default();
    pipeline::analyse(b, Arc::new(img), &sizes, config.cells, false, &watch)
        .await
        .unwrap()
        .0
}

/// [`analyse`] with every tile's progress report `(done, total)` kept.
async fn analyse_watched(
    b: &pipeline::CellBatchers,
    config: &argus::config::Config,
    img: image::RgbImage,
) -> (SmearAnalysis, Vec<(usize, usize)>) {
    let seen = std::sync::Mutex::new(Vec::new());
    let on_tile = |t: usize, n: usize| seen.lock().unwrap().push((t, n));
    let watch = pipeline::Watch {
        on_tile: Some(&on_tile),
        stop: None,
    };
    let sizes = ScaleSettings::from_config(&config.pbs);
    let (a, _) = pipeline::analyse(b, Arc::new(img), &sizes, config.cells, false, &watch)
        .await
        .unwrap();
    (a, seen.into_inner().unwrap())
}

/// Progress as a study shows it: the first total bounds the tiles run (any
/// refined scale, the samples) and may only narrow after, so the share
/// done never falls; it ends at the tiles run, complete. Returns the
/// totals reported before the last.
fn assert_progress(seen: &[(usize, usize)], tiles: usize) -> Vec<usize> {
    let share = |(t, n): (usize, usize)| t as f64 / n as f64;
    assert!(
        seen.last() == Some(&(tiles, tiles))
            && seen.iter().all(|&(t, n)| t <= n)
            && seen
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[1].1 <= w[0].1 && share(w[0]) <= share(w[1])),
        "{tiles} tiles run: {seen:?}"
    );
    seen[..seen.len() - 1].iter().map(|s| s.1).collect()
}

/// A field of many red cells takes no scale samples: once the outline has
/// settled its scale, the bound drops the refined scales and the samples it
/// no longer needs, so a study's progress does not jump from a few per cent
/// to done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_narrows_once_the_scale_is_settled() {
    let tmp = tempfile::tempdir().unwrap();
    let config = common::base_config(tmp.path());
    let b = batchers(&config);
    let (a, seen) = analyse_watched(&b, &config, fixture("smear_cbc.jpg")).await;
    b.shutdown();
    let totals = assert_progress(&seen, a.tiles);
    assert!(a.counts.rbc >= config.cells.scale_samples_below_rbc as usize);
    // Narrowed while the tiles ran, not only at the end.
    assert!(totals.last() < totals.first(), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_hold_from_half_to_double_magnification() {
    let tmp = tempfile::tempdir().unwrap();
    let config = common::base_config(tmp.path());
    let b = batchers(&config);
    let mut problems = Vec::new();
    for name in SMEARS {
        let img = fixture(name);
        problems.extend(copies_agree(&b, &config, name, img, &FACTORS).await.1);
    }
    b.shutdown();
    assert!(problems.is_empty(), "{problems:#?}");
}

/// A white-cell-centred crop from another lab (PBC: CellaVision DM96,
/// May-Grünwald Giemsa, `SOURCES.md`): a lymphocyte and about 15 pale red
/// cells, most cut by the edge. The white cell's dark purple takes Otsu's
/// level over the whole photo, which left the red-cell mask empty, the
/// photo unmeasured and analysed at the assumed 100 px (no white cell
/// counted; `rbc_size::PURPLE_SHARE_MAX`). Measured from the photo, it
/// counts one white cell at native size and at every copy (0.5x would be
/// under the 75 px the pipeline analyses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_white_cell_centred_crop_from_another_lab_is_measured_from_the_photo() {
    let tmp = tempfile::tempdir().unwrap();
    let config = common::base_config(tmp.path());
    let b = batchers(&config);
    let name = "pbc_lymphocyte.jpg";
    let img = fixture(name);
    let (native, problems) = copies_agree(&b, &config, name, img, &[0.75, 1.5, 2.0]).await;
    b.shutdown();
    let size = native.rbc_size.expect("a size");
    // Its red cells are about 30 px across (PBC's 360x363 crops, here at 0.4).
    assert!(
        (24.0..=38.0).contains(&size.rbc_diameter_px),
        "{name}: {size:?}"
    );
    assert_eq!(native.counts.wbc, 1, "{name}: {:?}", native.counts);
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Red cells with wide pale centres, photographed at about twice BCCD's
/// usual magnification (BCCD val 00352, MIT, read from
/// `../shared/data/bccd`; runs where it is present, and nothing of it is
/// kept): the colour mask holds only the cells' rims, open where they are
/// pale, so the colour measure says 44 px against boxes of about 106. The
/// photo was analysed at 2.4 times the nets' size and counted 53 red cells
/// (12 boxed, about 20 in view). The red-cell net's mask fills the cells,
/// and its size moves the scale (`pipeline::gross_scale`) before the
/// outline refines it: about 95 px and 17 red cells at every
/// magnification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pale_centred_cells_are_sized_by_the_red_cell_nets_mask() {
    let path = format!("{ROOT}/../shared/data/bccd/JPEGImages/BloodImage_00352.jpg");
    let Ok(img) = image::open(&path) else {
        eprintln!("skipped: {path} is absent");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let config = common::base_config(tmp.path());
    let b = batchers(&config);
    let name = "BCCD val 00352";
    let (native, problems) = copies_agree(&b, &config, name, img.into_rgb8(), &[0.75, 1.5]).await;
    b.shutdown();
    let size = native.rbc_size.expect("a size");
    assert!(
        size.measured_px.is_some_and(|m| m < 60.0),
        "{name}: the colour measure no longer fails here, so this tests nothing: {size:?}"
    );
    assert!(
        (80.0..=130.0).contains(&size.rbc_diameter_px),
        "{name}: {size:?}"
    );
    assert!(
        (12..=24).contains(&native.counts.rbc),
        "{name}: {:?}",
        native.counts
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Another PBC crop (a band neutrophil), where the white-cell net, trained
/// on BCCD, also takes a dense red cell at the bottom right for a white
/// cell: that box holds no purple (nuclear) pixel, so it is not counted
/// (`cells.wbc_min_nucleus`); with the test off, it is.
///
/// The crop holds six clean red cells, so its measured size moves by a
/// few per cent with any change to the measure (31.9 px until 2026-12-06),
/// and whether the net makes that mistake moves with it: it does for red
/// cells given as 28, 29, 30, 31 and 31.9 px, and not at 32 to 36 px. The
/// photo is analysed at 30 px, inside that range, so that this tests the
/// nucleus check alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_cell_taken_for_a_white_cell_holds_no_nucleus_and_is_not_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let config = common::base_config(tmp.path());
    let mut off = config.clone();
    off.cells.wbc_min_nucleus = 0.0;
    let b = batchers(&config);
    let img = Arc::new(fixture("pbc_band_neutrophil.jpg"));
    let pinned = ScaleSettings {
        given_px: Some(30.0),
        ..Default::default()
    };
    let watch = pipeline::Watch::default();
    let run = |params| pipeline::analyse(&b, img.clone(), &pinned, params, false, &watch);
    let with_test = run(config.cells).await.unwrap().0;
    let without = run(off.cells).await.unwrap().0;
    b.shutdown();
    assert_eq!(with_test.counts.wbc, 1, "{:?}", with_test.counts);
    assert_eq!(without.counts.wbc, 2, "{:?}", without.counts);
    // Only the white cells differ.
    assert_eq!(
        (with_test.counts.rbc, with_test.counts.platelets),
        (without.counts.rbc, without.counts.platelets)
    );
}

/// Analyses `img` and its CatmullRom copies at each factor, and returns
/// the native analysis and what breaks issue 21's targets: the photo or a
/// copy not measured from the photo, a copy's size more than 10% from the
/// native size times the factor, white cells other than the native count,
/// red cells more than 10% or platelets more than 1 from it.
async fn copies_agree(
    b: &pipeline::CellBatchers,
    config: &argus::config::Config,
    name: &str,
    img: image::RgbImage,
    factors: &[f32],
) -> (SmearAnalysis, Vec<String>) {
    let mut problems = Vec::new();
    let native = analyse(b, config, img.clone()).await;
    let size = native.rbc_size.clone().expect("a size");
    if size.source != ScaleSource::Photo {
        problems.push(format!("{name}: not measured from the photo: {size:?}"));
    }
    let (d0, c0) = (size.rbc_diameter_px, &native.counts);
    println!(
        "{name} x1: d {d0:.1} px from {} cells; rbc {} wbc {} platelets {}",
        size.cells_measured, c0.rbc, c0.wbc, c0.platelets
    );
    for &f in factors {
        let (w, h) = (
            (img.width() as f32 * f).round() as u32,
            (img.height() as f32 * f).round() as u32,
        );
        let scaled = image::imageops::resize(&img, w, h, image::imageops::FilterType::CatmullRom);
        let a = analyse(b, config, scaled).await;
        let s = a.rbc_size.clone().expect("a size");
        let c = &a.counts;
        println!(
            "{name} x{f}: d {:.1} px ({:.3} of native x{f}) from {} cells; rbc {} wbc {} platelets {}{}",
            s.rbc_diameter_px,
            s.rbc_diameter_px / (d0 * f),
            s.cells_measured,
            c.rbc,
            c.wbc,
            c.platelets,
            s.warning.as_deref().map(|w| format!("; warning: {w}")).unwrap_or_default()
        );
        if s.source != ScaleSource::Photo || (s.rbc_diameter_px / (d0 * f) - 1.0).abs() > 0.1 {
            problems.push(format!("{name} x{f}: size {s:?}, native {d0}"));
        }
        if c.wbc != c0.wbc {
            problems.push(format!("{name} x{f}: wbc {} (native {})", c.wbc, c0.wbc));
        }
        if (c.rbc as f32 - c0.rbc as f32).abs() > 0.1 * c0.rbc as f32 {
            problems.push(format!("{name} x{f}: rbc {} (native {})", c.rbc, c0.rbc));
        }
        if c.platelets.abs_diff(c0.platelets) > 1 {
            problems.push(format!(
                "{name} x{f}: platelets {} (native {})",
                c.platelets, c0.platelets
            ));
        }
    }
    (native, problems)
}

/// A field of fewer than `cells.scale_samples_below_rbc` red cells is
/// analysed at `cells.scale_samples` scales around its measured one and keeps the analysis
/// of the median red-cell count; its rescaled copies still count alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_field_is_counted_at_several_scales_and_its_copies_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let config = common::base_config(tmp.path());
    let mut once = config.clone();
    once.cells.scale_samples = 1;
    let b = batchers(&config);
    let img = fixture("smear_cbc.jpg");
    // The left 40% of the field: about 25 red cells.
    let crop = image::imageops::crop_imm(&img, 0, 0, 490, 652).to_image();
    let single = analyse(&b, &once, crop.clone()).await;
    // Progress over the samples only moves forward and ends complete.
    let (native, seen) = analyse_watched(&b, &config, crop.clone()).await;
    assert_progress(&seen, native.tiles);
    let c0 = native.counts.clone();
    println!(
        "crop: once rbc {} ({} tiles, scale {:.4}); sampled scales rbc {} wbc {} platelets {} ({} tiles, kept scale {:.4})",
        single.counts.rbc, single.tiles, single.scale, c0.rbc, c0.wbc, c0.platelets, native.tiles, native.scale
    );
    assert!(
        (1..config.cells.scale_samples_below_rbc).contains(&single.counts.rbc),
        "the crop should be a small field: {:?}",
        single.counts
    );
    let scales = pipeline::sample_scales(single.scale, &config.cells);
    assert_eq!(scales.len(), config.cells.scale_samples as usize);
    assert!(scales.len() > 1, "the default samples a small field");
    assert!(
        scales.contains(&native.scale),
        "{} of {scales:?}",
        native.scale
    );
    let tiles_at = |s: f32| pipeline::prepare(&crop, s).unwrap().0.count;
    let mut tiles: usize = scales.iter().map(|&s| tiles_at(s)).sum();
    // The outline's other looks around the colour measure's scale were
    // run, and when the outline refined that scale, the first look at it.
    let size = native.rbc_size.as_ref().unwrap();
    let measured = pipeline::scale_for(size.measured_px, &config.cells);
    let looks = pipeline::outline_look_scales(measured, &config.cells);
    assert_eq!(looks.len(), config.cells.outline_looks as usize);
    tiles += looks[1..].iter().map(|&s| tiles_at(s)).sum::<usize>();
    if (measured - single.scale).abs() > 1e-6 {
        tiles += tiles_at(measured);
    }
    println!(
        "crop: colour measure {:?} px (scale {measured:.4}), analysed at {:.1} px",
        size.measured_px, size.rbc_diameter_px
    );
    assert_eq!(native.tiles, tiles);
    let mut problems = Vec::new();
    for f in FACTORS {
        let (w, h) = (
            (crop.width() as f32 * f).round() as u32,
            (crop.height() as f32 * f).round() as u32,
        );
        let scaled = image::imageops::resize(&crop, w, h, image::imageops::FilterType::CatmullRom);
        let c = analyse(&b, &config, scaled).await.counts;
        println!(
            "crop x{f}: rbc {} wbc {} platelets {}",
            c.rbc, c.wbc, c.platelets
        );
        if c.wbc != c0.wbc
            || (c.rbc as f32 - c0.rbc as f32).abs() > 0.1 * c0.rbc as f32
            || c.platelets.abs_diff(c0.platelets) > 1
        {
            problems.push(format!("x{f}: {c:?} (native {c0:?})"));
        }
    }
    b.shutdown();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmeasurable_photo_falls_back_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = common::base_config(tmp.path());
    config.pbs.native_rbc_diameter_px = 80.0;
    config.pbs.microns_per_px = 0.1;
    let b = batchers(&config);
    // A blank field: no cells to measure.
    let blank = image::RgbImage::from_pixel(320, 240, image::Rgb([225, 215, 210]));
    let a = analyse(&b, &config, blank).await;
    b.shutdown();
    let s = a.rbc_size.expect("a size");
    assert_eq!(
        (s.rbc_diameter_px, s.source),
        (80.0, ScaleSource::Configured)
    );
    assert!((s.rbc_diameter_um.unwrap() - 8.0).abs() < 1e-4);
    assert!((a.scale - 50.0 / 80.0).abs() < 1e-6, "{}", a.scale);
    let w = s.warning.expect("a warning");
    assert!(w.contains("too few clean single red cells"), "{w}");
}

/// The colour measure's scale is refined by the red cells' outline in a
/// first analysis: with the outline's target set 10% above what the
/// fixture shows, the photo is analysed again at a 10% larger scale, and
/// the size reported follows, the colour measure kept beside it (one look
/// at the outline here; three below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_red_cells_outline_refines_the_measured_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = common::base_config(tmp.path());
    config.cells.rbc_outline_radius = 0.0;
    config.cells.scale_samples = 1;
    config.cells.outline_looks = 1;
    let b = batchers(&config);
    let img = fixture("smear_cbc.jpg");
    let plain = analyse(&b, &config, img.clone()).await;
    let outline = plain
        .rbc_outline
        .expect("the fixture's cells show an outline");
    let size = plain.rbc_size.clone().unwrap();
    assert!((0.35..0.65).contains(&outline), "{outline}");
    // The fixture is large, so its outline is measured on a probe of its
    // centre: that probe, at the same scale, shows this outline.
    let (x, y, w, h) = pipeline::probe_rect(img.dimensions(), plain.scale).expect("a probe");
    let probe_img = image::imageops::crop_imm(&img, x, y, w, h).to_image();
    let at_plain = ScaleSettings {
        given_px: Some(config.cells.rbc_diameter_px / plain.scale),
        ..Default::default()
    };
    let watch = pipeline::Watch::default();
    let (probed, _) = pipeline::analyse(
        &b,
        Arc::new(probe_img),
        &at_plain,
        config.cells,
        false,
        &watch,
    )
    .await
    .unwrap();
    let probe_outline = probed.rbc_outline.expect("the probe shows an outline");
    assert!(
        (probe_outline / outline - 1.0).abs() < 0.05,
        "{probe_outline} {outline}"
    );
    config.cells.rbc_outline_radius = probe_outline * 1.1;
    let refined = analyse(&b, &config, img.clone()).await;
    let s = refined.rbc_size.clone().unwrap();
    println!(
        "fixture: outline {outline:.4} d (probe {probe_outline:.4}) at scale {:.4}; refined to {:.4}, outline then {:?}; rbc {} -> {}",
        plain.scale, refined.scale, refined.rbc_outline, plain.counts.rbc, refined.counts.rbc
    );
    // The correction is the outline's 10% less the margin, in ln.
    let want = (1.1f32.ln() - config.cells.scale_refine_above).exp();
    let ratio = refined.scale / plain.scale;
    assert!((ratio - want).abs() < 1e-4, "{ratio} {want}");
    let probe = pipeline::tiles_at((w, h), plain.scale).unwrap();
    assert_eq!(probe, pipeline::PROBE_TILES.0 * pipeline::PROBE_TILES.1);
    assert_eq!(
        refined.tiles,
        probe + pipeline::prepare(&img, refined.scale).unwrap().0.count
    );
    assert_eq!(s.measured_px, size.measured_px);
    assert!((s.rbc_diameter_px * ratio - size.rbc_diameter_px).abs() < 0.01 * size.rbc_diameter_px);
    // The outline follows the scale, if less than in proportion (the
    // fixture: +3.3% for +5.7%): at the refined scale it has grown by more
    // than 40% of the scale's step, towards the target and not past it.
    let again = refined.rbc_outline.unwrap();
    let target = config.cells.rbc_outline_radius;
    assert!(
        again / outline - 1.0 > 0.4 * (ratio - 1.0) && again < target,
        "outline {outline} -> {again} at x{ratio}, target {target}"
    );
    // Within the margin, the first analysis stands.
    config.cells.rbc_outline_radius = probe_outline * 1.02;
    let kept = analyse(&b, &config, img).await;
    b.shutdown();
    assert_eq!((kept.scale, kept.tiles), (plain.scale, probe + plain.tiles));
    assert_eq!(kept.counts.rbc, plain.counts.rbc);
}

/// Over three looks (the default), the outline that refines the scale is
/// the geometric mean of three probes' outlines, each at its own scale
/// (x1/1.04, x1, x1.04 of the colour measure's) and each as that probe
/// analysed alone shows it; the tiles run are the three probes' and the
/// refined analysis's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outline_over_three_looks_is_the_mean_of_their_probes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = common::base_config(tmp.path());
    config.cells.scale_samples = 1;
    assert_eq!(config.cells.outline_looks, 3);
    let b = batchers(&config);
    let img = fixture("smear_cbc.jpg");
    let mut unrefined = config.clone();
    unrefined.cells.rbc_outline_radius = 0.0;
    let plain = analyse(&b, &unrefined, img.clone()).await;
    let probe = |s: f32| {
        let (x, y, w, h) = pipeline::look_rect(img.dimensions(), s, true).expect("a probe");
        image::imageops::crop_imm(&img, x, y, w, h).to_image()
    };
    let probe_tiles = pipeline::PROBE_TILES.0 * pipeline::PROBE_TILES.1;
    let watch = pipeline::Watch::default();
    let mut outlines = Vec::new();
    for s in pipeline::outline_look_scales(plain.scale, &config.cells) {
        let at = ScaleSettings {
            given_px: Some(config.cells.rbc_diameter_px / s),
            ..Default::default()
        };
        let (a, _) = pipeline::analyse(&b, Arc::new(probe(s)), &at, config.cells, false, &watch)
            .await
            .unwrap();
        assert_eq!(a.tiles, probe_tiles, "a look at x{}", s / plain.scale);
        outlines.push(a.rbc_outline);
    }
    let mean = pipeline::mean_outline(&outlines).expect("the probes show an outline");
    config.cells.rbc_outline_radius = mean * 1.1;
    let looked = analyse(&b, &config, img.clone()).await;
    b.shutdown();
    println!(
        "fixture: outlines {outlines:?} over three looks, mean {mean:.4}; refined to {:.4}",
        looked.scale
    );
    // The correction is the mean outline's 10% less the margin, in ln.
    let want = (1.1f32.ln() - config.cells.scale_refine_above).exp();
    let ratio = looked.scale / plain.scale;
    assert!((ratio - want).abs() < 1e-4, "{ratio} {want}");
    assert_eq!(
        looked.tiles,
        3 * probe_tiles + pipeline::prepare(&img, looked.scale).unwrap().0.count
    );
}
