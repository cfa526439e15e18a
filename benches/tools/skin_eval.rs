//! Measure the skin pipeline against the model card's targets on the face
//! photos of `../shared/data/faces` (read there, never copied):
//!
//!     cargo run --release --example skin_eval [-- --data DIR]
//!
//! Prints markdown: age MAE on the `canada` set (ages in `ages.csv`), the
//! faces the mesh missed, ITA across the `zoom` camera distances, every
//! metric's repeatability per ITA band (the same photo shrunk, mirrored and
//! re-encoded), the gates on the no-face `rainbow` set, and the time per
//! photo. CPU backend; `RAYON_NUM_THREADS` bounds the cores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use argus::backend::{ModelPaths, Target};
use argus::config::Config;
use argus::families::skin::analyze::{analyze, Analysis, Want};
use argus::families::skin::color::ItaClass;
use argus::families::skin::work::SkinBatchers;
use image::RgbImage;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn jpgs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|x| x == "jpg"));
    v.sort();
    v
}

fn encode(img: &RgbImage, jpeg_quality: Option<u8>) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    match jpeg_quality {
        Some(q) => {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
                .encode_image(img)
                .unwrap();
        }
        None => img.write_to(&mut out, image::ImageFormat::Png).unwrap(),
    }
    out.into_inner()
}

struct Run<'a> {
    b: &'a SkinBatchers,
    cfg: Config,
    rt: tokio::runtime::Runtime,
    times: Vec<f64>,
}

impl Run<'_> {
    fn go(&mut self, bytes: Vec<u8>) -> Analysis {
        let limits = argus::imaging::DecodeLimits {
            max_pixels: self.cfg.limits.max_pixels,
            formats: self.cfg.limits.formats.clone(),
        };
        let t = Instant::now();
        let a = self
            .rt
            .block_on(analyze(
                self.b,
                bytes,
                limits,
                self.cfg.skin,
                Want::default(),
            ))
            .expect("analysis");
        self.times.push(t.elapsed().as_secs_f64() * 1e3);
        a
    }
}

fn issues(a: &Analysis) -> String {
    a.quality
        .issues
        .iter()
        .map(|i| i.code)
        .collect::<Vec<_>>()
        .join(",")
}

fn sd(v: &[f32]) -> f32 {
    let n = v.len() as f32;
    let m = v.iter().sum::<f32>() / n;
    (v.iter().map(|x| (x - m).powi(2)).sum::<f32>() / n).sqrt()
}

/// The metric values a repeatability study compares.
fn values(a: &Analysis) -> Option<[f32; 4]> {
    let m = &a.metrics;
    Some([
        m.ita.as_ref()?.value,
        m.redness.as_ref()?.a_mean,
        m.dark_circles.as_ref()?.delta_l,
        m.age.as_ref()?.value,
    ])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = args
        .iter()
        .position(|a| a == "--data")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or(format!("{ROOT}/../shared/data/faces"));
    let data = PathBuf::from(data);
    let cfg = Config::default();
    let models = ModelPaths::in_dir(format!("{ROOT}/models").as_ref());
    let metrics = Arc::new(argus::metrics::Metrics::new());
    let b = SkinBatchers::start(&cfg, &Target::Cpu, &models, metrics).unwrap();
    let mut run = Run {
        b: &b,
        cfg,
        rt: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap(),
        times: Vec::new(),
    };

    // 1. Age on the canada set.
    let ages: BTreeMap<String, f32> = std::fs::read_to_string(data.join("canada/ages.csv"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some((f.first()?.to_string(), f.get(1)?.parse().ok()?))
        })
        .collect();
    let mut errs = Vec::new();
    let mut missed = Vec::new();
    let mut faces: Vec<(PathBuf, Analysis)> = Vec::new();
    for set in ["canada", "composite"] {
        for p in jpgs(&data.join(set)) {
            let a = run.go(std::fs::read(&p).unwrap());
            let stem = p.file_stem().unwrap().to_string_lossy().to_string();
            if a.face.is_none() || a.face.as_ref().is_some_and(|f| f.presence < 0.5) {
                missed.push(format!("{set}/{stem}"));
            }
            if let (Some(truth), Some(age)) = (ages.get(&stem), a.metrics.age.as_ref()) {
                if set == "canada" {
                    errs.push(age.value - truth);
                }
            }
            faces.push((p, a));
        }
    }
    let times_canada = run.times.clone();
    println!("## Skin pipeline on `../shared/data/faces`\n");
    let mae = errs.iter().map(|e| e.abs()).sum::<f32>() / errs.len().max(1) as f32;
    let bias = errs.iter().sum::<f32>() / errs.len().max(1) as f32;
    println!(
        "- age on canada (n={}, true ages {}): MAE {mae:.2} years, bias {bias:+.2}",
        errs.len(),
        {
            let mut v: Vec<f32> = ages.values().copied().collect();
            v.sort_by(f32::total_cmp);
            format!("{}-{}", v.first().unwrap_or(&0.0), v.last().unwrap_or(&0.0))
        }
    );
    println!(
        "- face mesh found on {}/{} faces (canada + composite){}",
        faces.len() - missed.len(),
        faces.len(),
        if missed.is_empty() {
            String::new()
        } else {
            format!("; missed: {}", missed.join(", "))
        }
    );
    let gated: Vec<String> = faces
        .iter()
        .filter(|(_, a)| !a.quality.passed)
        .map(|(p, a)| {
            format!(
                "{} ({})",
                p.file_name().unwrap().to_string_lossy(),
                issues(a)
            )
        })
        .collect();
    println!(
        "- photos failing a quality gate: {}",
        if gated.is_empty() {
            "none".into()
        } else {
            gated.join(", ")
        }
    );

    // 2. ITA across camera distances.
    let mut zoom = Vec::new();
    for p in jpgs(&data.join("zoom")) {
        let a = run.go(std::fs::read(&p).unwrap());
        zoom.push((
            p.file_stem().unwrap().to_string_lossy().to_string(),
            a.metrics.ita.as_ref().map(|i| i.value),
            issues(&a),
        ));
    }
    let mut v: Vec<f32> = zoom.iter().filter_map(|z| z.1).collect();
    v.sort_by(f32::total_cmp);
    // The middle value, or the mean of the two middle ones.
    let median = match v.len() {
        0 => f32::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    println!(
        "- ITA across camera distances (zoom): {}; median {median:.2}°, largest deviation {:.2}°",
        zoom.iter()
            .map(|(n, i, q)| match i {
                Some(i) => format!("{n} {i:.2}°"),
                None => format!("{n} withheld ({q})"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        v.iter().map(|x| (x - median).abs()).fold(0.0, f32::max)
    );

    // 3. Repeatability per ITA band: each face re-captured four ways.
    let mut bands: BTreeMap<&'static str, Vec<[f32; 4]>> = BTreeMap::new();
    for (p, a) in &faces {
        let Some(base) = values(a) else { continue };
        let img = image::open(p).unwrap().to_rgb8();
        let (w, h) = img.dimensions();
        let variants = [
            encode(
                &image::imageops::resize(
                    &img,
                    w * 7 / 10,
                    h * 7 / 10,
                    image::imageops::FilterType::Triangle,
                ),
                None,
            ),
            encode(&image::imageops::flip_horizontal(&img), None),
            encode(&img, Some(75)),
        ];
        let mut vals = vec![base];
        for bytes in variants {
            if let Some(v) = values(&run.go(bytes)) {
                vals.push(v);
            }
        }
        let sds: [f32; 4] =
            std::array::from_fn(|k| sd(&vals.iter().map(|v| v[k]).collect::<Vec<_>>()));
        bands
            .entry(ItaClass::of(base[0]).name())
            .or_default()
            .push(sds);
    }
    println!("\nRepeatability: standard deviation of each metric over the original, 70% size, mirrored and JPEG q75 copies of each photo, averaged per ITA band:\n");
    println!("| ITA band | faces | ITA (°) | redness a* | dark circles ΔL* | age (years) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (band, rows) in &bands {
        let n = rows.len() as f32;
        let m: [f32; 4] = std::array::from_fn(|k| rows.iter().map(|r| r[k]).sum::<f32>() / n);
        println!(
            "| {band} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            rows.len(),
            m[0],
            m[1],
            m[2],
            m[3]
        );
    }

    // 4. No-face photos.
    let rainbow = jpgs(&data.join("rainbow"));
    let wrong: Vec<String> = rainbow
        .iter()
        .filter_map(|p| {
            let a = run.go(std::fs::read(p).unwrap());
            (!a.withheld.contains_key("ita"))
                .then(|| p.file_name().unwrap().to_string_lossy().to_string())
        })
        .collect();
    println!(
        "\n- no-face photos (rainbow, n={}): metrics withheld on {}{}",
        rainbow.len(),
        rainbow.len() - wrong.len(),
        if wrong.is_empty() {
            String::new()
        } else {
            format!("; analysed anyway: {}", wrong.join(", "))
        }
    );

    let mut t = times_canada;
    t.sort_by(f64::total_cmp);
    println!("- time per 1350x1800 canada photo (2.4 MP, decode to metrics, {} threads): median {:.0} ms, p90 {:.0} ms",
        rayon::current_num_threads(), t[t.len() / 2], t[t.len() * 9 / 10]);
    b.shutdown();
}
