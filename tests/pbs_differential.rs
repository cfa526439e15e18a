//! The white-cell differential through the real server: a smear photo at
//! its own size and at half magnification, `WBC_DIFFERENTIAL` and
//! `CBC_COUNTS` asked together, the trained classifier on the CPU.

mod common;

use argus::families::pbs::schema::DIFFERENTIAL_CLASSES;
use common::pbs::{call, configure, login, new_study, setup_org, upload, wait_ready};
use common::{fixture, start};
use serde_json::{json, Value};

/// The fixture at `factor` of its size, as a PNG.
fn rescaled(name: &str, factor: f32) -> Vec<u8> {
    let img = image::load_from_memory(&fixture(name)).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let out = image::imageops::resize(
        &img,
        (w as f32 * factor).round() as u32,
        (h as f32 * factor).round() as u32,
        image::imageops::FilterType::Triangle,
    );
    let mut png = Vec::new();
    out.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}

/// The checks every differential (a study's or a file's) must pass.
fn check_classes(classes: &Value, review: u64, cells: &[Value]) {
    let names: Vec<&str> = classes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["class"].as_str().unwrap())
        .collect();
    assert_eq!(names, DIFFERENTIAL_CLASSES, "every class, in report order");
    let count = |k: &str| cells.iter().filter(|c| c["class"] == k).count() as u64;
    let mut classified = 0;
    for c in classes.as_array().unwrap() {
        let k = c["class"].as_str().unwrap();
        assert_eq!(c["count"].as_u64().unwrap(), count(k), "{k}");
        classified += c["count"].as_u64().unwrap();
    }
    let unsure = cells.iter().filter(|c| c.get("class").is_none()).count() as u64;
    assert_eq!(review, unsure, "cells without a class are the review count");
    assert_eq!(classified + review, cells.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn white_cells_are_classified_at_any_magnification() {
    let s = start(configure).await;
    setup_org(&s, "clinic-d").await;
    let token = login(&s, "lab@clinic-d.test").await;
    let id = new_study(&s, &token, json!({})).await;
    for (name, body) in [
        ("native.jpg", fixture("smear_cbc.jpg")),
        ("half.png", rescaled("smear_cbc.jpg", 0.5)),
    ] {
        let (st, v) = upload(&s, &id, &format!("file_name={name}"), &token, body).await;
        assert_eq!(st, 201, "{v}");
    }
    let (st, v) = call(
        &s,
        "POST",
        &format!("/pbs/{id}/tasks"),
        &token,
        Some(json!({"diagnostic_tasks": ["WBC_DIFFERENTIAL", "CBC_COUNTS"]})),
    )
    .await;
    assert_eq!(st, 202, "{v}");
    let done = wait_ready(&s, &id, &token).await;
    assert_eq!(done["results"]["report_status"], "ready", "{done}");

    let report = |task: &'static str| {
        let path = format!("/pbs/{id}/report/{task}");
        let s = &s;
        let token = &token;
        async move {
            let (st, v) = call(s, "GET", &path, token, None).await;
            assert_eq!(st, 200, "{v}");
            v["results"]["report"][task].clone()
        }
    };
    let diff = report("WBC_DIFFERENTIAL").await;
    let cbc = report("CBC_COUNTS").await;

    // One white cell per file: the file's differential holds exactly the
    // white cells the count found, each with its box and 9 probabilities.
    let files = diff["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{diff}");
    let mut all_cells = Vec::new();
    for (f, counted) in files.iter().zip(cbc["files"].as_array().unwrap()) {
        assert_eq!(f["file_id"], counted["file_id"]);
        let cells = f["cells"].as_array().unwrap();
        assert_eq!(cells.len() as u64, counted["wbc"].as_u64().unwrap(), "{f}");
        check_classes(&f["classes"], f["review"].as_u64().unwrap(), cells);
        for c in cells {
            let p = c["probabilities"].as_object().unwrap();
            assert_eq!(p.len(), 9, "{c}");
            let total: f64 = p.values().map(|v| v.as_f64().unwrap()).sum();
            assert!((total - 1.0).abs() < 1e-3, "{c}");
            assert!(c["width"].as_u64().unwrap() > 0);
            if let Some(k) = c["class"].as_str() {
                let top = p[k].as_f64().unwrap();
                let neutro = p["neutrophil_segmented"].as_f64().unwrap()
                    + p["neutrophil_band"].as_f64().unwrap();
                let sure = if k.starts_with("neutrophil") {
                    neutro
                } else {
                    top
                };
                assert!(
                    sure >= diff["min_confidence"].as_f64().unwrap() - 1e-6,
                    "{c}"
                );
            }
        }
        all_cells.extend(cells.iter().cloned());
    }
    check_classes(
        &diff["classes"],
        diff["review"].as_u64().unwrap(),
        &all_cells,
    );

    // The fixture's one white cell (a neutrophil, SOURCES.md) is called a
    // neutrophil at both magnifications: the window follows the red cells.
    for f in files {
        let cells = f["cells"].as_array().unwrap();
        assert_eq!(cells.len(), 1, "{f}");
        let class = cells[0]["class"].as_str().unwrap_or("review");
        assert!(
            class.starts_with("neutrophil"),
            "{}: {class}: {}",
            f["file_id"],
            cells[0]
        );
    }
    let leukocytes = diff["leukocytes_classified"].as_u64().unwrap();
    assert_eq!(leukocytes, 2, "{diff}");
    let percent: f64 = diff["classes"].as_array().unwrap()[..7]
        .iter()
        .map(|c| c["percent"].as_f64().unwrap())
        .sum();
    assert!((percent - 100.0).abs() < 0.02, "{percent}");

    // CBC_COUNTS carries the same differential.
    let mut inner = diff.clone();
    inner.as_object_mut().unwrap().remove("created_at");
    assert_eq!(cbc["differential"], inner);

    // The task list names the new task; an unknown one is still refused.
    let (st, v) = call(
        &s,
        "POST",
        &format!("/pbs/{id}/tasks"),
        &token,
        Some(json!({"diagnostic_tasks": ["WBC_DIFF"]})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("WBC_DIFFERENTIAL"),
        "{v}"
    );
    s.stop().await;
}

/// `argusd pbs differential --labelled`: single-cell images in folders named
/// for their class (two PBC cells, CC BY 4.0, `SOURCES.md`; one more in a
/// folder that names no class, and a blank image no red cell can be measured
/// in), through the appliance's own path, at a given size and at the set's
/// median size. Each image's line, the blank's size from the others, and
/// the figures over the labelled ones.
#[test]
fn labelled_single_cell_images_give_the_differentials_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cells");
    // A class folder above a slide's folder labels the slide's images.
    for (folder, name) in [
        ("Lymphocyte/slide1", "pbc_lymphocyte.jpg"),
        ("neutrophils", "pbc_band_neutrophil.jpg"),
        ("smudge", "pbc_lymphocyte.jpg"),
    ] {
        std::fs::create_dir_all(dir.join(folder)).unwrap();
        std::fs::write(dir.join(folder).join(name), fixture(name)).unwrap();
    }
    std::fs::create_dir_all(dir.join("mono")).unwrap();
    image::RgbImage::from_pixel(150, 150, image::Rgb([236, 226, 228]))
        .save(dir.join("mono/blank.png"))
        .unwrap();
    for size in ["measured", "given", "one magnification"] {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_argusd"));
        c.current_dir(common::ROOT)
            .env("ARGUS_STATE_DIR", tmp.path())
            .env("ARGUS_BACKEND", "cpu")
            .env_remove("ARGUS_CONFIG")
            .args(["pbs", "differential", "--labelled", "--json"]);
        match size {
            "given" => c.args(["--rbc-diameter-px", "30"]),
            "one magnification" => c.arg("--one-magnification"),
            _ => &mut c,
        };
        let out = c.arg(&dir).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let cell = |label: &str| {
            lines
                .iter()
                .find(|l| l["label"] == label)
                .unwrap_or_else(|| panic!("no {label}: {lines:?}"))
        };
        let (lym, neu) = (cell("lymphocyte"), cell("neutrophil"));
        assert_eq!(lym["class"], "lymphocyte", "{lym}");
        for l in [lym, neu] {
            assert!(l.get("warning").is_none(), "one cell's image: {l}");
        }
        assert!(
            neu["top_class"].as_str().unwrap().starts_with("neutrophil"),
            "{neu}"
        );
        let summary = &lines.last().unwrap()["summary"];
        assert_eq!(summary["unlabelled_folders"], json!({"smudge": 1}));
        match size {
            "given" | "one magnification" => {
                // At one size for all nothing is measured per image: the
                // blank image's centre is classified too.
                assert_eq!(out.status.code(), Some(0), "{stderr}");
                assert_eq!(lines.len(), 4, "three images and the summary");
                assert_eq!(summary["not_classified"], 0);
                assert_eq!(summary["all"]["cells"], 3, "{summary}");
                let d = match size {
                    "given" => 30.0,
                    _ => {
                        // The two PBC cells' measures; the blank gives none.
                        let set = &summary["one_magnification"];
                        assert_eq!(set["images_measured"], 2, "{summary}");
                        set["rbc_diameter_px"].as_f64().unwrap()
                    }
                };
                assert!((24.0..=38.0).contains(&d), "{summary}");
                let source = if size == "given" {
                    "given"
                } else {
                    "set_median"
                };
                for l in [lym, neu] {
                    assert_eq!(l["rbc_size_source"], source, "{l}");
                    assert_eq!(l["located"], "image_centre");
                    let side = l["window"][2].as_f64().unwrap();
                    assert!((side - 3.4 * d).abs() < 1e-3, "{l}");
                }
            }
            _ => {
                // The blank image's red cells cannot be measured: it is
                // classified at the median of the two PBC cells' sizes,
                // with a warning that says so.
                assert_eq!(out.status.code(), Some(0), "{stderr}");
                assert_eq!(lines.len(), 4, "three images and the summary");
                let blank = lines
                    .iter()
                    .find(|l| l["file"].as_str().is_some_and(|f| f.ends_with("blank.png")))
                    .unwrap_or_else(|| panic!("no blank: {lines:?}"));
                assert_eq!(blank["rbc_size_source"], "set_median", "{blank}");
                assert_eq!(blank["located"], "image_centre", "{blank}");
                let warning = blank["warning"].as_str().unwrap_or_default();
                assert!(
                    warning.contains("could not be measured")
                        && warning.contains("median of the 2 images"),
                    "{blank}"
                );
                let sizes = [lym, neu].map(|l| l["rbc_diameter_px"].as_f64().unwrap());
                let d = blank["rbc_diameter_px"].as_f64().unwrap();
                assert_eq!(d, sizes[0].max(sizes[1]), "the upper median of two");
                assert_eq!(summary["not_classified"], 0);
                assert_eq!(summary["all"]["cells"], 3, "{summary}");
                assert_eq!(summary["five_normal_types"]["cells"], 3, "{summary}");
                assert_eq!(summary["at_run_median"], 1, "{summary}");
                assert_eq!(summary["min_confidence"], 0.7, "as configured");
                for l in [lym, neu] {
                    assert_eq!(l["rbc_size_source"], "photo", "{l}");
                    assert_eq!(l["located"], "white_cell_box", "{l}");
                    let d = l["rbc_diameter_px"].as_f64().unwrap();
                    assert!((24.0..=38.0).contains(&d), "{l}");
                }
            }
        }
    }
}

/// A smear photo given to `pbs differential` is classified at its centre
/// with a warning that it is no single cell's image.
#[test]
fn a_smear_photo_is_warned_of() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_argusd"))
        .current_dir(common::ROOT)
        .env("ARGUS_STATE_DIR", tmp.path())
        .env("ARGUS_BACKEND", "cpu")
        .env_remove("ARGUS_CONFIG")
        .args(["pbs", "differential", "--json", "--rbc-diameter-px", "98.7"])
        .arg("tests/fixtures/smear_cbc.jpg")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    let warning = line["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("12.4 red-cell diameters") && warning.contains("pbs count"),
        "{line}"
    );
}

/// An image whose red cells cannot be measured, in a run where no other
/// image was, is refused with the reason and what to do, and the exit
/// status says so.
#[test]
fn an_unmeasurable_image_alone_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let blank = tmp.path().join("blank.png");
    image::RgbImage::from_pixel(150, 150, image::Rgb([236, 226, 228]))
        .save(&blank)
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_argusd"))
        .current_dir(common::ROOT)
        .env("ARGUS_STATE_DIR", tmp.path())
        .env("ARGUS_BACKEND", "cpu")
        .env_remove("ARGUS_CONFIG")
        .args(["pbs", "differential", "--json"])
        .arg(&blank)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "no cell printed");
    assert!(
        stderr.contains("blank.png: its red cells could not be measured")
            && stderr.contains("--rbc-diameter-px"),
        "{stderr}"
    );
}
