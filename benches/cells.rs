//! The clinic path per backend: the three cell UNets per batch of 188x188
//! tiles, the malaria classifier per batch of crops, the white-cell
//! classifier of the differential per batch of windows; on the CPU also
//! the red cells' size measured from a photo's colours (`rbc_size_measure`)
//! and one whole smear photo end to end (equalise, tile, UNets, count,
//! crop, classify).
//!
//!     cargo bench --bench cells
//!     scripts/build-cuda.sh && LD_LIBRARY_PATH=target/nvrtc \
//!         cargo bench --features cuda --bench cells -- 'cells/(cpu|cuda)'
//!
//! The CPU group always runs. The cuda and wgpu groups (the nets, at the
//! GPU's batch sizes too) run on the device `backend = "cuda"` / `"wgpu"`
//! would take, and skip with the reason where there is none or it is a
//! software adapter (lavapipe takes about 15 s per UNet tile on 2 vCPUs;
//! `ARGUS_BENCH_SOFTWARE=1` runs it anyway, for a `-- --test` smoke run).
//! Each iteration ends with the results on the host. Smears per second
//! and crops per second are the throughput figures.

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};

use argus::backend::{
    cpu::CpuBackend, Backend, BackendKind, Batch, BatchOutput, ModelPaths, ModelSet,
};
use argus::families::pbs::pipeline::{self as cells, CountParams};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The three model sets of the clinic path on one backend.
struct Nets {
    unets: Box<dyn Backend>,
    malaria: Box<dyn Backend>,
    wbc: Box<dyn Backend>,
}

impl Nets {
    fn load(mut start: impl FnMut(ModelSet, usize) -> Box<dyn Backend>) -> Self {
        Self {
            unets: start(ModelSet::CellTiles, 32),
            malaria: start(ModelSet::Crops, 256),
            wbc: start(ModelSet::WbcCrops, 32),
        }
    }
}

/// What the nets are fed: 32 of the smear fixture's tiles, and a window of it
/// as the pipeline cuts them for a white cell (3.4 red-cell diameters of
/// ~100 px).
struct Inputs {
    tiles: Vec<f32>,
    tile_len: usize,
    window: Vec<f32>,
}

/// Batch sizes per net: UNet tiles, malaria crops, white-cell windows.
struct Sizes {
    tiles: &'static [usize],
    crops: &'static [usize],
    windows: &'static [usize],
}

fn nets(g: &mut BenchmarkGroup<WallTime>, nets: &mut Nets, inputs: &Inputs, sizes: &Sizes) {
    for &n in sizes.tiles {
        let data = inputs.tiles[..n * inputs.tile_len].to_vec();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("unet3_tiles", n), &data, |b, d| {
            b.iter(|| {
                nets.unets
                    .run(Batch::CellTiles {
                        data: d.clone(),
                        count: n,
                    })
                    .unwrap()
            })
        });
    }
    for &n in sizes.crops {
        let data = vec![128u8; n * 2500];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("malaria_crops", n), &data, |b, d| {
            b.iter(|| {
                nets.malaria
                    .run(Batch::Crops {
                        data: d.clone(),
                        count: n,
                    })
                    .unwrap()
            })
        });
    }
    for &n in sizes.windows {
        let data = inputs.window.repeat(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("wbc_crops", n), &data, |b, d| {
            b.iter(|| {
                nets.wbc
                    .run(Batch::WbcCrops {
                        data: d.clone(),
                        count: n,
                    })
                    .unwrap()
            })
        });
    }
}

fn bench(c: &mut Criterion) {
    let models = ModelPaths::in_dir(format!("{ROOT}/models").as_ref());
    let img = image::open(format!("{ROOT}/tests/fixtures/smear_cbc.jpg"))
        .unwrap()
        .into_rgb8();
    let params = CountParams::default();
    let scale = cells::scale_for(None, &params);
    let (tiles, sw, sh) = cells::prepare(&img, scale).unwrap();
    let tile_len = tiles.tile(0).len();
    let (w, h) = img.dimensions();
    let inputs = Inputs {
        // Enough for the largest batch, the photo's tiles over again.
        tiles: tiles
            .data
            .iter()
            .copied()
            .cycle()
            .take(32 * tile_len)
            .collect(),
        tile_len,
        window: argus::model::wbc::sample_window(
            img.as_raw(),
            w as usize,
            h as usize,
            w as f32 / 2.0,
            h as f32 / 2.0,
            argus::model::wbc::WINDOW_RBC * 100.0,
        ),
    };

    let mut cpu = Nets::load(|set, max| Box::new(CpuBackend::load(&models, set, max).unwrap()));
    let mut g = c.benchmark_group(format!("cells/cpu-{}t", rayon::current_num_threads()));
    g.sample_size(10);
    let sizes = Sizes {
        tiles: &[1, 4, 8],
        crops: &[1, 64, 256],
        windows: &[1, 8, 32],
    };
    nets(&mut g, &mut cpu, &inputs, &sizes);
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
                if let BatchOutput::CellTiles(m) = cpu
                    .unets
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
            cpu.malaria.run(Batch::Crops { data, count }).unwrap();
            let windows = argus::families::pbs::differential::wbc_windows(&img, &a, 100.0);
            let count = windows.len();
            let data: Vec<f32> = windows.into_iter().flat_map(|(_, w)| w).collect();
            cpu.wbc.run(Batch::WbcCrops { data, count }).unwrap()
        })
    });
    g.finish();
    bench_device(c, &models, &inputs, BackendKind::Cuda, "cuda");
    bench_device(c, &models, &inputs, BackendKind::Wgpu, "wgpu");
}

/// The clinic nets on the accelerator `kind` as the daemon would open it,
/// when there is a hardware one.
fn bench_device(
    c: &mut Criterion,
    models: &ModelPaths,
    inputs: &Inputs,
    kind: BackendKind,
    label: &str,
) {
    let name = format!("cells/{label}");
    let target = match argus::backend::resolve(kind) {
        // A software adapter measures the rasteriser, not the shaders; a
        // smoke run of the bench code (`-- --test`) may still ask for it.
        Ok(t) if t.is_software() && std::env::var_os("ARGUS_BENCH_SOFTWARE").is_none() => {
            eprintln!("{name} skipped: a software adapter (ARGUS_BENCH_SOFTWARE=1 runs it)");
            return;
        }
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name} skipped: {e}");
            return;
        }
    };
    let mut dev = Nets::load(|set, max| argus::backend::start(&target, models, set, max).unwrap());
    eprintln!("{name} on {}", dev.unets.device());
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    let sizes = Sizes {
        tiles: &[1, 8, 32],
        crops: &[64, 256],
        windows: &[1, 8, 32],
    };
    nets(&mut g, &mut dev, inputs, &sizes);
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
