//! Recall of face detection against face size in 12 MP photos, with and
//! without tiling, and what tiling costs:
//!
//!     cargo run --release --example tiling_eval [-- --data DIR --per-size N]
//!
//! Faces of `../shared/data/faces/canada` (CC BY 4.0, located by the
//! detector on their own photo, cropped with a margin) are pasted at known
//! widths, one per photo at a random place, into the `rainbow` photos (no
//! faces) enlarged to 4032x3024. A face counts as found when a detection's
//! box overlaps its pasted box with IoU >= 0.3. Seeded, so runs repeat.
//! Nothing is written; the data is read from ../shared/data.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use argus::backend::{ModelPaths, Target};
use argus::config::Config;
use argus::detect::{self, DetectParams};
use argus::model::Face;
use image::RgbImage;
use rand::{Rng, SeedableRng};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const SIZES: [u32; 7] = [24, 32, 40, 50, 60, 90, 140];

fn jpgs(dir: &PathBuf) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|x| x == "jpg"));
    v.sort();
    v
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(img)
        .unwrap();
    out.into_inner()
}

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let i = w * h;
    i / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - i)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |n: &str| {
        args.iter()
            .position(|a| a == n)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let data = PathBuf::from(arg("--data").unwrap_or(format!("{ROOT}/../shared/data/faces")));
    let per_size: usize = arg("--per-size").and_then(|v| v.parse().ok()).unwrap_or(12);
    let cfg = Config::default();
    let models = ModelPaths::in_dir(format!("{ROOT}/models").as_ref());
    let input = (cfg.detector.input_width, cfg.detector.input_height);
    let b = argus::families::face_batcher(
        &cfg,
        input,
        &Target::Cpu,
        &models,
        Arc::new(argus::metrics::Metrics::new()),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let limits = argus::imaging::DecodeLimits {
        max_pixels: cfg.limits.max_pixels,
        formats: cfg.limits.formats.clone(),
    };
    let run = |bytes: &[u8], tiles: Option<f32>| -> (Vec<Face>, f64, usize) {
        let t = Instant::now();
        let info = b.info();
        let mut prep = detect::prepare(
            bytes,
            &limits,
            info.input_width,
            info.input_height,
            info.frames,
        )
        .unwrap();
        let params = DetectParams {
            tile_min_face_px: tiles,
            ..Default::default()
        };
        let d = rt.block_on(detect::detect(&b, &mut prep, params)).unwrap();
        (d.faces, t.elapsed().as_secs_f64() * 1e3, d.tiles)
    };
    // Face crops, each with its box inside the crop.
    let mut faces: Vec<(RgbImage, [f32; 4])> = Vec::new();
    for p in jpgs(&data.join("canada")) {
        let bytes = std::fs::read(&p).unwrap();
        let (found, _, _) = run(&bytes, None);
        let Some(f) = found.first() else { continue };
        let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
        let (w, h) = (f.x2 - f.x1, f.y2 - f.y1);
        let (x0, y0) = ((f.x1 - 0.4 * w).max(0.0), (f.y1 - 0.4 * h).max(0.0));
        let crop = image::imageops::crop_imm(
            &img,
            x0 as u32,
            y0 as u32,
            (1.8 * w) as u32,
            (1.8 * h) as u32,
        )
        .to_image();
        faces.push((crop, [f.x1 - x0, f.y1 - y0, f.x2 - x0, f.y2 - y0]));
    }
    let backgrounds: Vec<RgbImage> = jpgs(&data.join("rainbow"))
        .iter()
        .map(|p| {
            image::imageops::resize(
                &image::open(p).unwrap().to_rgb8(),
                4032,
                3024,
                image::imageops::FilterType::Triangle,
            )
        })
        .collect();
    assert!(
        !faces.is_empty() && !backgrounds.is_empty(),
        "no data under {}",
        data.display()
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261130);
    println!("## Small faces in 12 MP photos (4032x3024): recall by face width\n");
    println!("{} faces of `canada` pasted into `rainbow` backgrounds, {per_size} photos per width, CPU, {} threads; found = IoU >= 0.3 with the pasted box.\n", faces.len(), rayon::current_num_threads());
    println!("| face width (px) | recall, one pass | recall, tiling auto (min_face_px 40) | other detections, one pass / tiling |");
    println!("| --- | --- | --- | --- |");
    let (mut t_one, mut t_tiled, mut n_tiles) = (Vec::new(), Vec::new(), 0);
    for size in SIZES {
        let (mut hit_one, mut hit_tiled, mut fp_one, mut fp_tiled) = (0, 0, 0, 0);
        for i in 0..per_size {
            let (face, fb) = &faces[rng.gen_range(0..faces.len())];
            let mut img = backgrounds[i % backgrounds.len()].clone();
            let k = size as f32 / (fb[2] - fb[0]);
            let f = image::imageops::resize(
                face,
                ((face.width() as f32 * k) as u32).max(1),
                ((face.height() as f32 * k) as u32).max(1),
                image::imageops::FilterType::CatmullRom,
            );
            let (x, y) = (
                rng.gen_range(0..4032 - f.width()),
                rng.gen_range(0..3024 - f.height()),
            );
            image::imageops::replace(&mut img, &f, x as i64, y as i64);
            let truth = [
                x as f32 + fb[0] * k,
                y as f32 + fb[1] * k,
                x as f32 + fb[2] * k,
                y as f32 + fb[3] * k,
            ];
            let bytes = jpeg(&img);
            let hit = |found: &[Face]| {
                found
                    .iter()
                    .any(|d| iou([d.x1, d.y1, d.x2, d.y2], truth) >= 0.3)
            };
            let (a, ta, _) = run(&bytes, None);
            let (c, tc, n) = run(&bytes, Some(40.0));
            hit_one += hit(&a) as usize;
            hit_tiled += hit(&c) as usize;
            let other = |found: &[Face]| {
                found
                    .iter()
                    .filter(|d| iou([d.x1, d.y1, d.x2, d.y2], truth) < 0.3)
                    .count()
            };
            fp_one += other(&a);
            fp_tiled += other(&c);
            t_one.push(ta);
            t_tiled.push(tc);
            n_tiles = n;
        }
        println!(
            "| {size} | {hit_one}/{per_size} | {hit_tiled}/{per_size} | {fp_one} / {fp_tiled} |"
        );
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("\nTime per 12 MP photo, decode to faces: one pass {:.0} ms, tiling {:.0} ms ({n_tiles} tiles of 800x800 source px each letterboxed to 640x640, batched).", med(&mut t_one), med(&mut t_tiled));
    b.shutdown();
}
