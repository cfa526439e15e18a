//! The skin pipeline on real photos: metrics in range and stable, every
//! quality gate triggered by a real photo transformed the way a user's
//! would be (blurred, darkened, rotated, shrunk, two people, no face),
//! `argusd skin analyze --json`, and the pipeline with its nets on a wgpu
//! or CUDA device against the CPU's (skipped where the device is missing).
//!
//! Photos: `tests/fixtures/skin_lisa1.jpg` (CC-0, see SOURCES.md),
//! `coffee.jpg` (CC0, no face). Where `../shared/data/faces` is present the
//! repeatability tests also run on its photos.

mod common;

use std::sync::{Arc, OnceLock};

use argus::backend::{ModelPaths, Target};
use argus::config::Config;
use argus::families::skin::analyze::{analyze, Analysis, Want};
use argus::families::skin::work::SkinBatchers;
use argus::metrics::Metrics;
use common::ran_on;
use image::{DynamicImage, RgbImage};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn batchers() -> &'static SkinBatchers {
    static B: OnceLock<SkinBatchers> = OnceLock::new();
    B.get_or_init(|| {
        let cfg = Config::default();
        let models = ModelPaths::in_dir(format!("{ROOT}/models").as_ref());
        let metrics = Arc::new(Metrics::new());
        SkinBatchers::start(&cfg, &Target::Cpu, &models, metrics).expect("skin models")
    })
}

fn photo(name: &str) -> RgbImage {
    image::open(format!("{ROOT}/tests/fixtures/{name}"))
        .expect("fixture")
        .to_rgb8()
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

async fn run(bytes: Vec<u8>) -> Analysis {
    let cfg = Config::default();
    let limits = argus::imaging::DecodeLimits {
        max_pixels: cfg.limits.max_pixels,
        formats: cfg.limits.formats.clone(),
    };
    analyze(batchers(), bytes, limits, cfg.skin, Want::default())
        .await
        .expect("analysis")
}

fn codes(a: &Analysis) -> Vec<&'static str> {
    a.quality.issues.iter().map(|i| i.code).collect()
}

/// (subject's right pupil, left pupil) of a webmorph template: its first
/// two points (the image's left eye first).
fn pupils(tem: &str) -> [[f32; 2]; 2] {
    let mut lines = std::fs::read_to_string(tem)
        .unwrap()
        .lines()
        .skip(1)
        .take(2)
        .map(|l| {
            let v: Vec<f32> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            [v[0], v[1]]
        })
        .collect::<Vec<_>>();
    lines.sort_by(|a, b| a[0].total_cmp(&b[0]));
    [lines[0], lines[1]]
}

#[tokio::test]
async fn a_clear_selfie_gets_every_metric_in_range() {
    let a = run(std::fs::read(format!("{ROOT}/tests/fixtures/skin_lisa1.jpg")).unwrap()).await;
    assert!(a.quality.passed, "{:?}", codes(&a));
    let face = a.face.as_ref().unwrap();
    // The mesh's eyes land on the hand-placed pupils (within 6% of the
    // inter-ocular distance).
    let [r, l] = pupils(&format!("{ROOT}/tests/fixtures/skin_lisa1.tem"));
    let iod = ((l[0] - r[0]).powi(2) + (l[1] - r[1]).powi(2)).sqrt();
    let p = &face.landmarks;
    for (pupil, (o, i)) in [(r, (33, 133)), (l, (263, 362))] {
        let c = [(p[o][0] + p[i][0]) / 2.0, (p[o][1] + p[i][1]) / 2.0];
        let d = ((c[0] - pupil[0]).powi(2) + (c[1] - pupil[1]).powi(2)).sqrt();
        assert!(
            d < 0.06 * iod,
            "eye centre {c:?} is {d:.1} px from the pupil {pupil:?}"
        );
    }
    assert!(
        (face.iod_px - iod).abs() < 0.06 * iod,
        "{} vs {iod}",
        face.iod_px
    );
    assert!(
        face.pose.yaw.abs() < 12.0 && face.pose.pitch.abs() < 15.0 && face.pose.roll.abs() < 5.0,
        "{:?}",
        face.pose
    );
    // The iris ruler: 11.7 mm over the iris gives an inter-pupil distance
    // of an adult (54-74 mm).
    let mm = face.mm_per_px.expect("irises measured") * face.iod_px;
    assert!((54.0..74.0).contains(&mm), "IPD {mm} mm");
    let m = &a.metrics;
    let ita = m.ita.as_ref().expect("ita");
    // Skin is reddish-yellow under any near-white light (a*, b* > 0); the
    // reported angle is the formula on the reported L*, b*; the class is
    // the angle's band. (This selfie is dim and warm-lit, so its ITA is low
    // for the person: the metric is colorimetric, see the next test.)
    assert!(
        ita.a > 0.0 && ita.b > 0.0 && (10.0..95.0).contains(&ita.l),
        "{ita:?}"
    );
    let formula = (ita.l - 50.0).atan2(ita.b).to_degrees();
    assert!(
        (formula - ita.value).abs() < 1e-3,
        "{} vs {formula}",
        ita.value
    );
    assert_eq!(
        ita.class,
        argus::families::skin::color::ItaClass::of(ita.value).name()
    );
    assert_eq!(ita.areas.len(), 3);
    for c in ita.areas.values() {
        assert!(
            (c.ita - ita.value).abs() < 15.0,
            "an area is far from the face: {c:?}"
        );
    }
    assert_eq!(m.skintone.as_ref().unwrap().value, ita.class);
    let red = m.redness.as_ref().expect("redness");
    assert!(
        red.a_mean > 0.0 && red.a_mean < 40.0 && red.erythema_index > 0.0,
        "{red:?}"
    );
    let dc = m.dark_circles.as_ref().expect("dark circles");
    assert!(dc.delta_l.abs() < 25.0 && dc.delta_e < 30.0, "{dc:?}");
    let age = m.age.as_ref().expect("age");
    assert!((15.0..60.0).contains(&age.value), "age {}", age.value);
    assert!(a.withheld.is_empty());
    assert!(a
        .masks
        .contains_key(&argus::families::skin::regions::Area::Forehead));
}

#[tokio::test]
async fn the_same_face_gives_the_same_colour_when_shrunk_or_mirrored() {
    let img = photo("skin_lisa1.jpg");
    let base = run(png(&img)).await;
    let b = base.metrics.ita.as_ref().unwrap();
    // Shrunk to 70% (still above the size gate): ITA within ±3°.
    let small = image::imageops::resize(&img, 420, 560, image::imageops::FilterType::Triangle);
    let s = run(png(&small)).await;
    let si = s.metrics.ita.as_ref().expect("small photo measured");
    assert!(
        (si.value - b.value).abs() < 3.0,
        "{} vs {}",
        si.value,
        b.value
    );
    // Mirrored: the cheeks swap sides and the face's ITA stays.
    let m = run(png(&image::imageops::flip_horizontal(&img))).await;
    let mi = m.metrics.ita.as_ref().unwrap();
    assert!(
        (mi.value - b.value).abs() < 2.0,
        "{} vs {}",
        mi.value,
        b.value
    );
    use argus::families::skin::regions::Area::{LeftCheek, RightCheek};
    let (l, r) = (&b.areas[&LeftCheek], &mi.areas[&RightCheek]);
    assert!((l.ita - r.ita).abs() < 4.0, "{} vs {}", l.ita, r.ita);
    // And the run is deterministic.
    let again = run(png(&img)).await;
    assert_eq!(again.metrics.ita.as_ref().unwrap().value, b.value);
    // More light on the same face reads lighter: ITA follows the exposure.
    let mut lit = img.clone();
    lit.pixels_mut()
        .for_each(|p| p.0 = p.0.map(|v| (255.0 * (v as f32 / 255.0).powf(0.7)) as u8));
    let l = run(png(&lit)).await;
    assert!(l.metrics.ita.as_ref().unwrap().value > b.value + 5.0);
}

#[tokio::test]
async fn each_quality_gate_fires_on_a_real_transformed_photo() {
    let img = photo("skin_lisa1.jpg");
    let blurred = image::imageops::blur(&img, 6.0);
    let a = run(png(&blurred)).await;
    assert!(
        codes(&a).contains(&"blurred"),
        "{:?} sharpness {:?}",
        codes(&a),
        a.quality.sharpness
    );
    assert!(a.metrics.age.is_none() && a.withheld["age"].contains(&"blurred"));

    let mut dark = img.clone();
    dark.pixels_mut()
        .for_each(|p| p.0 = p.0.map(|v| (v as f32 * 0.12) as u8));
    let a = run(png(&dark)).await;
    assert!(
        codes(&a).contains(&"underexposed"),
        "{:?} {:?}",
        codes(&a),
        a.quality.exposure
    );
    assert!(a.metrics.ita.is_none() && a.withheld["ita"].contains(&"underexposed"));

    let mut bright = img.clone();
    bright
        .pixels_mut()
        .for_each(|p| p.0 = p.0.map(|v| (v as f32 * 4.0).min(255.0) as u8));
    let a = run(png(&bright)).await;
    assert!(
        codes(&a).contains(&"overexposed"),
        "{:?} {:?}",
        codes(&a),
        a.quality.exposure
    );

    let a = run(png(&image::imageops::rotate90(&img))).await;
    assert!(
        codes(&a).contains(&"pose_out_of_range"),
        "{:?} {:?}",
        codes(&a),
        a.face.map(|f| f.pose)
    );

    // Upside down: the detector's landmarks say so, and the mesh must be
    // fitted that way up (it was once fitted upright and read level).
    let a = run(png(&image::imageops::rotate180(&img))).await;
    let roll = a.face.as_ref().map(|f| f.pose.roll);
    assert!(
        codes(&a).contains(&"pose_out_of_range") && roll.is_some_and(|r| r.abs() > 150.0),
        "{:?} {roll:?}",
        codes(&a)
    );
    assert!(a.metrics.ita.is_none() && a.metrics.age.is_none());

    // Black and white: no colour metric from the grey, age still read.
    let grey = image::DynamicImage::ImageLuma8(image::imageops::grayscale(&img)).to_rgb8();
    let a = run(png(&grey)).await;
    assert_eq!(codes(&a), ["monochrome"]);
    for m in ["ita", "skintone", "redness", "dark_circles"] {
        assert_eq!(a.withheld[m], ["monochrome"], "{m}");
    }
    assert!(a.metrics.ita.is_none() && a.metrics.redness.is_none());
    assert!(a.metrics.age.is_some() && !a.withheld.contains_key("age"));

    let small = image::imageops::resize(&img, 180, 240, image::imageops::FilterType::Triangle);
    let a = run(png(&small)).await;
    assert!(codes(&a).contains(&"face_too_small"), "{:?}", codes(&a));
    assert!(a.metrics.ita.is_none() && a.metrics.age.is_none());

    let mut pair = RgbImage::new(1200, 800);
    image::imageops::replace(&mut pair, &img, 0, 0);
    image::imageops::replace(&mut pair, &image::imageops::flip_horizontal(&img), 600, 0);
    let a = run(png(&pair)).await;
    assert!(codes(&a).contains(&"multiple_faces"), "{:?}", codes(&a));

    let a = run(std::fs::read(format!("{ROOT}/tests/fixtures/coffee.jpg")).unwrap()).await;
    assert_eq!(codes(&a), ["no_face"]);
    assert!(a.face.is_none() && a.withheld.len() == 5);

    // A hand over the face: the lower two thirds painted skin-coloured.
    let mut covered = img.clone();
    for y in 330..700 {
        for x in 100..500 {
            covered.put_pixel(x, y, image::Rgb([200, 160, 140]));
        }
    }
    let a = run(png(&covered)).await;
    let c = codes(&a);
    assert!(
        c.contains(&"occluded") || c.contains(&"no_face"),
        "{c:?} presence {:?}",
        a.face.map(|f| f.presence)
    );
}

/// ITA of one face photographed from 15 to 60 cm, the camera re-balancing
/// its colour each time: within ±3° of the median of the four (the issue's
/// target; see models/skin/MODEL_CARD.md). Runs where the shared data set
/// is present.
#[tokio::test]
async fn ita_is_repeatable_across_camera_distances() {
    let dir = format!("{ROOT}/../shared/data/faces/zoom");
    let mut itas = Vec::new();
    for cm in [15, 30, 45, 60] {
        let Ok(bytes) = std::fs::read(format!("{dir}/{cm}cm.jpg")) else {
            eprintln!("skipped: {dir} is absent");
            return;
        };
        let a = run(bytes).await;
        assert!(a.white_balance.is_some(), "{cm} cm: no sclera found");
        itas.push((cm, a.metrics.ita.as_ref().expect("measured").value));
    }
    let mut s: Vec<f32> = itas.iter().map(|x| x.1).collect();
    s.sort_by(f32::total_cmp);
    let median = (s[1] + s[2]) / 2.0;
    for (cm, v) in itas.iter() {
        assert!(
            (v - median).abs() <= 3.0,
            "{cm} cm: {v} vs median {median} ({itas:?})"
        );
    }
}

/// Apparent age against the true ages of the 40 `canada` faces (17-35):
/// the issue's MAE target of 5 years, and no large bias either way (the
/// dlib model this replaced read +5.8). Runs where the shared data set is
/// present.
#[tokio::test]
async fn age_is_within_five_years_on_the_canada_faces() {
    let dir = format!("{ROOT}/../shared/data/faces/canada");
    let Ok(csv) = std::fs::read_to_string(format!("{dir}/ages.csv")) else {
        eprintln!("skipped: {dir} is absent");
        return;
    };
    let mut errors = Vec::new();
    for line in csv.lines().skip(1) {
        let mut f = line.split(',');
        let (id, truth) = (f.next().unwrap(), f.next().unwrap());
        let truth: f32 = truth.parse().unwrap();
        let a = run(std::fs::read(format!("{dir}/{id}.jpg")).unwrap()).await;
        let age = a
            .metrics
            .age
            .as_ref()
            .unwrap_or_else(|| panic!("{id}: no age"));
        errors.push(age.value - truth);
    }
    assert_eq!(errors.len(), 40);
    let n = errors.len() as f32;
    let mae = errors.iter().map(|e| e.abs()).sum::<f32>() / n;
    let bias = errors.iter().sum::<f32>() / n;
    println!("canada: age MAE {mae:.2} years, bias {bias:+.2}");
    assert!(mae <= 5.0, "MAE {mae}");
    assert!(bias.abs() <= 3.0, "bias {bias}");
}

#[test]
fn the_cli_prints_the_analysis_as_json() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_argusd"))
        .args(["--state-dir", std::env::temp_dir().to_str().unwrap()])
        .args(["skin", "analyze", "--json"])
        .arg(format!("{ROOT}/tests/fixtures/skin_lisa1.jpg"))
        .arg(format!("{ROOT}/tests/fixtures/coffee.jpg"))
        .env("ARGUS_BACKEND", "cpu")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    assert!(r[0]["metrics"]["ita"]["value"].is_number());
    assert!(r[0]["metrics"]["age"]["value"].is_number());
    assert!(r[0]["masks"]["face_oval"]
        .as_str()
        .unwrap()
        .starts_with('M'));
    assert_eq!(r[1]["quality"]["issues"][0]["code"], "no_face");
    assert_eq!(v["unavailable"].as_object().unwrap().len(), 22);
    assert!(v["unavailable"]["pores"].is_string());

    // A directory with two photos of one stem: each gets its own outputs,
    // and the command says which are whose.
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let lisa = std::fs::read(format!("{ROOT}/tests/fixtures/skin_lisa1.jpg")).unwrap();
    std::fs::write(photos.join("a.jpg"), &lisa).unwrap();
    image::load_from_memory(&lisa)
        .unwrap()
        .save(photos.join("a.png"))
        .unwrap();
    let dir = tmp.path().join("out");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_argusd"))
        .args(["--state-dir", tmp.path().to_str().unwrap()])
        .args(["skin", "analyze", "--out"])
        .arg(&dir)
        .arg(&photos)
        .env("ARGUS_BACKEND", "cpu")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for stem in ["a.jpg", "a.png"] {
        for suffix in ["aligned.jpg", "redness.png", "anonymised.jpg", "masks.svg"] {
            assert!(
                dir.join(format!("{stem}.{suffix}")).exists(),
                "{stem}.{suffix}"
            );
        }
        assert!(
            err.contains(&format!("{}.*", dir.join(stem).display())),
            "{err}"
        );
    }
}

/// The skin pipeline with every net on a wgpu or CUDA device (the face
/// detector, the face mesh, iris and age nets) against the CPU's, on the
/// selfie fixture. The device letterboxes the detector's input itself (up
/// to 2 of 255 off the host's, so boxes move by under half a pixel), and
/// the mesh, iris and age crops are cut from that box, so the results
/// agree within what such a shift moves, not bit for bit.
async fn device_pipeline_matches_the_cpu(kind: argus::backend::BackendKind, name: &str) {
    let target = match argus::backend::resolve(kind) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("skipping {name}: {e}");
            return;
        }
    };
    let cfg = Config::default();
    let models = ModelPaths::in_dir(format!("{ROOT}/models").as_ref());
    let metrics = Arc::new(Metrics::new());
    let device = SkinBatchers::start(&cfg, &target, &models, metrics.clone()).expect("skin models");
    let limits = argus::imaging::DecodeLimits {
        max_pixels: cfg.limits.max_pixels,
        formats: cfg.limits.formats.clone(),
    };
    let bytes = std::fs::read(format!("{ROOT}/tests/fixtures/skin_lisa1.jpg")).unwrap();
    let b = analyze(&device, bytes.clone(), limits, cfg.skin, Want::default())
        .await
        .expect("analysis on the device");
    device.shutdown();
    let a = run(bytes).await;

    let m = metrics.render();
    for model in ["face_mesh", "iris", "age"] {
        assert!(
            ran_on(&m, model, name),
            "{model} did not run on {name}: {m}"
        );
        assert!(!ran_on(&m, model, "cpu"), "{model} ran on the CPU: {m}");
    }

    assert_eq!(codes(&a), codes(&b));
    assert_eq!(a.quality.passed, b.quality.passed);
    let (fa, fb) = (a.face.as_ref().unwrap(), b.face.as_ref().unwrap());
    let far = fa
        .landmarks
        .iter()
        .zip(&fb.landmarks)
        .map(|(p, q)| ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt())
        .fold(0.0, f32::max);
    let (ia, ib) = (
        a.metrics.ita.as_ref().unwrap(),
        b.metrics.ita.as_ref().unwrap(),
    );
    let (aa, ab) = (
        a.metrics.age.as_ref().unwrap().value,
        b.metrics.age.as_ref().unwrap().value,
    );
    println!(
        "{name}: landmarks up to {far:.3} px apart (iod {:.1} px), ITA {} vs {}, age {aa} vs {ab}",
        fa.iod_px, ia.value, ib.value
    );
    assert!(far < 0.01 * fa.iod_px, "landmarks {far} px apart");
    assert!((fa.iod_px - fb.iod_px).abs() < 0.005 * fa.iod_px);
    assert!((fa.presence - fb.presence).abs() < 1e-3);
    // The iris net's answer: the irises' diameter (the photo's mm scale).
    let (da, db) = (
        fa.iris_diameter_px.expect("irises measured on the CPU"),
        fb.iris_diameter_px.expect("irises measured on the device"),
    );
    println!("{name}: iris diameter {da} vs {db} px");
    assert!((da - db).abs() < 0.01 * da, "iris {da} vs {db} px");
    assert!(
        (ia.value - ib.value).abs() < 0.5,
        "ITA {} vs {}",
        ia.value,
        ib.value
    );
    assert_eq!(ia.class, ib.class);
    // The age net moves most with its crop (0.3 years for the 0.26 px
    // measured on lavapipe): 1 year, against its 4.5-year MAE.
    assert!((aa - ab).abs() < 1.0, "age {aa} vs {ab}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wgpu_pipeline_matches_the_cpu() {
    device_pipeline_matches_the_cpu(argus::backend::BackendKind::Wgpu, "wgpu").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuda_pipeline_matches_the_cpu() {
    device_pipeline_matches_the_cpu(argus::backend::BackendKind::Cuda, "cuda").await;
}
