//! Tune and check the cell counter on BCCD (`../shared/data/bccd`, MIT).
//!
//!     cargo run --release --example bccd_eval -- --split train --scales 0.5,0.6,0.75 --limit 60
//!     cargo run --release --example bccd_eval -- --split val --scales 0.6 --malaria
//!
//! For each photo of the split, the three UNets run once per scale; the
//! counting parameters are then swept over a grid on the cached maps (cheap),
//! and the tool prints, per scale, the best grid point by WBC exact-count
//! rate (then platelet MAE) and the figures of the configured defaults.
//! BCCD's red-cell boxes are incomplete, so red-cell MAE is reported, not tuned for.
//! The data is read from ../shared/data; nothing of it is written anywhere.

use std::path::Path;

use argus::backend::{
    cpu::CpuBackend, Backend, Batch, BatchOutput, ModelPaths, ModelSet, TileMaps,
};
use argus::families::pbs::pipeline::{self as cells, CountParams};

#[path = "bccd_common.rs"]
mod bccd_common;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

struct Truth {
    rbc: usize,
    wbc: usize,
    plt: usize,
}

fn truth(xml: &str) -> Truth {
    let n = |name: &str| xml.matches(&format!("<name>{name}</name>")).count();
    Truth {
        rbc: n("RBC"),
        wbc: n("WBC"),
        plt: n("Platelets"),
    }
}

struct Cached {
    maps: Vec<TileMaps>,
    cols: usize,
    sw: usize,
    sh: usize,
    scale: f32,
    dims: (u32, u32),
    truth: Truth,
    img: image::RgbImage,
}

#[derive(Default, Clone, Copy)]
struct Score {
    n: usize,
    wbc_exact: usize,
    plt_abs: usize,
    rbc_abs: usize,
    rbc_signed: i64,
}

impl Score {
    fn line(&self) -> String {
        let n = self.n.max(1) as f64;
        format!(
            "WBC exact {:.1}% | platelet MAE {:.2} | RBC MAE {:.1} (bias {:+.1}) | n={}",
            100.0 * self.wbc_exact as f64 / n,
            self.plt_abs as f64 / n,
            self.rbc_abs as f64 / n,
            self.rbc_signed as f64 / n,
            self.n
        )
    }
}

fn score(cache: &[Cached], p: &CountParams) -> Score {
    let mut s = Score::default();
    for c in cache {
        let mut a = cells::count(&c.maps, c.cols, c.sw, c.sh, c.scale, c.dims, p);
        cells::drop_anucleate_white_cells(&mut a, &c.img, p.wbc_min_nucleus);
        s.n += 1;
        s.wbc_exact += (a.counts.wbc == c.truth.wbc) as usize;
        s.plt_abs += a.counts.platelets.abs_diff(c.truth.plt);
        s.rbc_abs += a.counts.rbc.abs_diff(c.truth.rbc);
        s.rbc_signed += a.counts.rbc as i64 - c.truth.rbc as i64;
    }
    s
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (data, _, ids) = bccd_common::photos(&args, "val")?;
    let scales: Vec<f32> = bccd_common::arg(&args, "--scales")
        .unwrap_or("1.0".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let malaria = args.iter().any(|a| a == "--malaria");
    let sweep = !args.iter().any(|a| a == "--no-sweep");
    let models = ModelPaths::in_dir(Path::new(&format!("{ROOT}/models")));
    let mut unets = CpuBackend::load(&models, ModelSet::CellTiles, 16)?;
    let mut classifier = if malaria {
        Some(CpuBackend::load(&models, ModelSet::Crops, 256)?)
    } else {
        None
    };
    let base = CountParams::default();
    for &scale in &scales {
        let started = std::time::Instant::now();
        let mut cache = Vec::new();
        for id in &ids {
            let img = image::open(data.join("JPEGImages").join(format!("{id}.jpg")))?.into_rgb8();
            let xml = std::fs::read_to_string(data.join("Annotations").join(format!("{id}.xml")))?;
            let (tiles, sw, sh) = cells::prepare(&img, scale)?;
            let maps = bccd_common::run_unets(&mut unets, &tiles)?;
            cache.push(Cached {
                maps,
                cols: tiles.cols,
                sw,
                sh,
                scale,
                dims: img.dimensions(),
                truth: truth(&xml),
                img,
            });
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "scale {scale}: {} images in {secs:.1} s ({:.2} images/s)",
            cache.len(),
            cache.len() as f64 / secs
        );
        let p = CountParams {
            rbc_diameter_px: cells::ASSUMED_NATIVE_RBC_PX * scale,
            ..base
        };
        println!("  defaults:  {}", score(&cache, &p).line());
        if sweep {
            let mut best: Option<(Score, CountParams)> = None;
            for &threshold in &[0.4f32, 0.5, 0.6] {
                for &wbc_min_area in &[0.05f32, 0.1, 0.2, 0.3, 0.45] {
                    for &platelet_min_area in &[0.002f32, 0.005, 0.01, 0.02, 0.04] {
                        for &rbc_min_area in &[0.02f32, 0.05, 0.08, 0.15] {
                            let q = CountParams {
                                threshold,
                                wbc_min_area,
                                platelet_min_area,
                                rbc_min_area,
                                ..p
                            };
                            let s = score(&cache, &q);
                            let better = match &best {
                                None => true,
                                Some((b, _)) => {
                                    (s.wbc_exact, std::cmp::Reverse(s.plt_abs))
                                        > (b.wbc_exact, std::cmp::Reverse(b.plt_abs))
                                }
                            };
                            if better {
                                best = Some((s, q));
                            }
                        }
                    }
                }
            }
            if let Some((s, q)) = best {
                println!("  best grid: {}", s.line());
                println!(
                    "             threshold {} wbc_min_area {} platelet_min_area {} rbc_min_area {}",
                    q.threshold, q.wbc_min_area, q.platelet_min_area, q.rbc_min_area
                );
            }
        }
        if let Some(cls) = classifier.as_mut() {
            let (mut pos, mut total) = (0usize, 0usize);
            for c in &cache {
                let a = cells::count(&c.maps, c.cols, c.sw, c.sh, c.scale, c.dims, &p);
                let crops = cells::rbc_crops(&c.img, &a);
                if crops.is_empty() {
                    continue;
                }
                let count = crops.len();
                let data: Vec<u8> = crops.into_iter().flat_map(|(_, c)| c).collect();
                if let BatchOutput::Parasitized(ps) = cls.run(Batch::Crops { data, count })? {
                    pos += ps.iter().filter(|&&x| x >= p.parasite_threshold).count();
                    total += ps.len();
                }
            }
            println!(
                "  malaria on these (normal) smears: {pos} of {total} red cells positive ({:.2}%)",
                100.0 * pos as f64 / total.max(1) as f64
            );
        }
    }
    Ok(())
}
