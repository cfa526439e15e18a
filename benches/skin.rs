//! One selfie analysed end to end (decode, detect, two face-mesh passes,
//! both irises, age, alignment, metrics, masks) on the CPU backend, and
//! each skin model's forward pass alone.
//!
//!     cargo bench --bench skin
//!     RAYON_NUM_THREADS=2 cargo bench --bench skin
//!
//! The photo is `zoom/30cm.jpg` of `../shared/data/faces` (1152x1536,
//! 1.8 MP) where present, else `tests/fixtures/skin_lisa1.jpg` enlarged to
//! 1200x1600 so the photo has a selfie's size either way.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

use argus::backend::{cpu::CpuBackend, Backend, Batch, ModelPaths, ModelSet, Target};
use argus::config::Config;
use argus::families::skin::analyze::{analyze, Want};
use argus::families::skin::work::SkinBatchers;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn selfie() -> (String, Vec<u8>) {
    let shared = format!("{ROOT}/../shared/data/faces/zoom/30cm.jpg");
    if let Ok(b) = std::fs::read(&shared) {
        return ("zoom-30cm-1152x1536".into(), b);
    }
    let img = image::open(format!("{ROOT}/tests/fixtures/skin_lisa1.jpg"))
        .unwrap()
        .to_rgb8();
    let big = image::imageops::resize(&img, 1200, 1600, image::imageops::FilterType::CatmullRom);
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .encode_image(&big)
        .unwrap();
    ("lisa1-1200x1600".into(), out.into_inner())
}

fn bench(c: &mut Criterion) {
    let cfg = Config::default();
    let models = ModelPaths::in_dir(format!("{ROOT}/models").as_ref());
    let metrics = Arc::new(argus::metrics::Metrics::new());
    let b = SkinBatchers::start(&cfg, &Target::Cpu, &models, metrics).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let limits = argus::imaging::DecodeLimits {
        max_pixels: cfg.limits.max_pixels,
        formats: cfg.limits.formats.clone(),
    };
    let (name, bytes) = selfie();
    let threads = rayon::current_num_threads();
    let mut g = c.benchmark_group(format!("skin/cpu-{threads}t"));
    g.sample_size(20);
    g.bench_function(BenchmarkId::new("analyze", &name), |it| {
        it.iter(|| {
            let a = rt
                .block_on(analyze(
                    &b,
                    bytes.clone(),
                    limits.clone(),
                    cfg.skin,
                    Want::default(),
                ))
                .unwrap();
            assert!(a.metrics.ita.is_some(), "{:?}", a.quality.issues);
        })
    });
    for (set, batch, label) in [
        (
            ModelSet::FaceMesh,
            Batch::MeshCrops {
                data: vec![127; 192 * 192 * 3],
                count: 1,
            },
            "face_mesh-192",
        ),
        (
            ModelSet::Iris,
            Batch::EyeCrops {
                data: vec![127; 64 * 64 * 3],
                count: 1,
            },
            "iris-64",
        ),
        (
            ModelSet::Age,
            Batch::AgeCrops {
                data: vec![127; 112 * 112 * 3],
                count: 1,
            },
            "age-112",
        ),
    ] {
        let mut be = CpuBackend::load(&models, set, 1).unwrap();
        g.bench_function(BenchmarkId::new("model", label), |it| {
            it.iter(|| be.run(batch_clone(&batch)).unwrap())
        });
    }
    g.finish();
    b.shutdown();
}

fn batch_clone(b: &Batch) -> Batch {
    match b {
        Batch::MeshCrops { data, count } => Batch::MeshCrops {
            data: data.clone(),
            count: *count,
        },
        Batch::EyeCrops { data, count } => Batch::EyeCrops {
            data: data.clone(),
            count: *count,
        },
        Batch::AgeCrops { data, count } => Batch::AgeCrops {
            data: data.clone(),
            count: *count,
        },
        _ => unreachable!("only skin batches here"),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
