//! The clinic path on the CPU backend: the three cell UNets per batch of
//! 188x188 tiles, the malaria classifier per batch of crops, the white-cell
//! classifier of the differential per batch of windows, the red cells' size
//! measured from a photo's colours (`rbc_size_measure`), and one whole
//! smear photo end to end (equalise, tile, UNets, count, crop, classify).
//!
//!     cargo bench --bench cells
//!
//! Smears per second and crops per second are the throughput figures.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use argus::backend::{cpu::CpuBackend, Backend, Batch, BatchOutput, ModelPaths, ModelSet};
use argus::families::pbs::pipeline::{self as cells, CountParams};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn bench(c: &mut Criterion) {
    let models = ModelPaths::in_dir(format!("{ROOT}/models").as_ref());
    let mut unets = CpuBackend::load(&models, ModelSet::CellTiles, 16).unwrap();
    let mut classifier = CpuBackend::load(&models, ModelSet::Crops, 256).unwrap();
    let mut wbc = CpuBackend::load(&models, ModelSet::WbcCrops, 32).unwrap();
    let img = image::open(format!("{ROOT}/tests/fixtures/smear_cbc.jpg"))
        .unwrap()
        .into_rgb8();
    let params = CountParams::default();
    let scale = cells::scale_for(None, &params);
    let (tiles, sw, sh) = cells::prepare(&img, scale).unwrap();
    let tile_len = tiles.tile(0).len();

    let mut g = c.benchmark_group(format!("cells/cpu-{}t", rayon::current_num_threads()));
    g.sample_size(10);
    for n in [1usize, 4, 8] {
        let data = tiles.data[..n * tile_len].to_vec();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("unet3_tiles", n), &data, |b, d| {
            b.iter(|| {
                unets
                    .run(Batch::CellTiles {
                        data: d.clone(),
                        count: n,
                    })
                    .unwrap()
            })
        });
    }
    for n in [1usize, 64, 256] {
        let data = vec![128u8; n * 2500];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("malaria_crops", n), &data, |b, d| {
            b.iter(|| {
                classifier
                    .run(Batch::Crops {
                        data: d.clone(),
                        count: n,
                    })
                    .unwrap()
            })
        });
    }
    // Real pixels: a window of the smear, as the pipeline cuts them (3.4
    // red-cell diameters of ~100 px).
    let (w, h) = img.dimensions();
    let window = argus::model::wbc::sample_window(
        img.as_raw(),
        w as usize,
        h as usize,
        w as f32 / 2.0,
        h as f32 / 2.0,
        argus::model::wbc::WINDOW_RBC * 100.0,
    );
    for n in [1usize, 8, 32] {
        let data = window.repeat(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("wbc_crops", n), &data, |b, d| {
            b.iter(|| {
                wbc.run(Batch::WbcCrops {
                    data: d.clone(),
                    count: n,
                })
                .unwrap()
            })
        });
    }
    g.throughput(Throughput::Elements(1));
    // The red cells' size measured from the photo's colours, which every
    // photo without a given size pays before the nets: the fixture, and a
    // BCCD-sized 640x480 part of it.
    let part = image::imageops::crop_imm(&img, 0, 0, 640, 480).to_image();
    for (name, photo) in [("1226x652", &img), ("640x480", &part)] {
        g.bench_with_input(BenchmarkId::new("rbc_size_measure", name), photo, |b, p| {
            b.iter(|| argus::imaging::rbc_size::measure(p))
        });
    }
    g.bench_function("smear_end_to_end_1226x652", |b| {
        b.iter(|| {
            let (tiles, sw2, sh2) = cells::prepare(&img, scale).unwrap();
            assert_eq!((sw2, sh2), (sw, sh));
            let mut maps = Vec::new();
            for chunk in tiles.data.chunks(8 * tile_len) {
                let count = chunk.len() / tile_len;
                if let BatchOutput::CellTiles(m) = unets
                    .run(Batch::CellTiles {
                        data: chunk.to_vec(),
                        count,
                    })
                    .unwrap()
                {
                    maps.extend(m);
                }
            }
            let a = cells::count(&maps, tiles.cols, sw, sh, scale, img.dimensions(), &params);
            let crops = cells::rbc_crops(&img, &a);
            let count = crops.len();
            let data: Vec<u8> = crops.into_iter().flat_map(|(_, c)| c).collect();
            classifier.run(Batch::Crops { data, count }).unwrap();
            let windows = argus::families::pbs::differential::wbc_windows(&img, &a, 100.0);
            let count = windows.len();
            let data: Vec<f32> = windows.into_iter().flat_map(|(_, w)| w).collect();
            wbc.run(Batch::WbcCrops { data, count }).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
