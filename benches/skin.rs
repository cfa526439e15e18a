//! One selfie analysed end to end (decode, detect, two face-mesh passes,
//! both irises, age, alignment, metrics, masks) on the CPU backend, and
//! each skin model's forward pass alone. The cuda and wgpu groups (the
//! same, the nets at batches of 1, 8 and 32) run where `auto` would take
//! that device: a CUDA build with a GPU, a hardware wgpu adapter; they are
//! skipped on a software adapter such as lavapipe unless
//! `ARGUS_BENCH_SOFTWARE=1` (for `cargo bench --bench skin -- --test`, a
//! run of each bench once to check the bench itself).
//!
//!     cargo bench --bench skin
//!     RAYON_NUM_THREADS=2 cargo bench --bench skin
//!
//! The photo is `zoom/30cm.jpg` of `../shared/data/faces` (1152x1536,
//! 1.8 MP) where present, else `tests/fixtures/skin_lisa1.jpg` enlarged to
//! 1200x1600 so the photo has a selfie's size either way.

use std::sync::Arc;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};

use argus::backend::{cpu::CpuBackend, Backend, BackendKind, Batch, ModelPaths, ModelSet, Target};
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

/// The selfie analysed end to end on batchers started on `target`.
fn analyze_bench(g: &mut BenchmarkGroup<WallTime>, target: &Target, name: &str, bytes: &[u8]) {
    let cfg = Config::default();
    let models = ModelPaths::in_dir(format!("{ROOT}/models").as_ref());
    let metrics = Arc::new(argus::metrics::Metrics::new());
    let b = SkinBatchers::start(&cfg, target, &models, metrics).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let limits = argus::imaging::DecodeLimits {
        max_pixels: cfg.limits.max_pixels,
        formats: cfg.limits.formats.clone(),
    };
    g.bench_function(BenchmarkId::new("analyze", name), |it| {
        it.iter(|| {
            let a = rt
                .block_on(analyze(
                    &b,
                    bytes.to_vec(),
                    limits.clone(),
                    cfg.skin,
                    Want::default(),
                ))
                .unwrap();
            assert!(a.metrics.ita.is_some(), "{:?}", a.quality.issues);
        })
    });
    b.shutdown();
}

/// Each skin net's forward pass alone at each batch size in `sizes`, on
/// backends `start` opens (a set and its batch cap).
fn model_benches(
    g: &mut BenchmarkGroup<WallTime>,
    sizes: &[usize],
    mut start: impl FnMut(ModelSet, usize) -> Box<dyn Backend>,
) {
    type Pack = fn(Vec<u8>, usize) -> Batch;
    let nets: [(ModelSet, usize, &str, Pack); 3] = [
        (ModelSet::FaceMesh, 192, "face_mesh-192", |data, count| {
            Batch::MeshCrops { data, count }
        }),
        (ModelSet::Iris, 64, "iris-64", |data, count| {
            Batch::EyeCrops { data, count }
        }),
        (ModelSet::Age, 112, "age-112", |data, count| {
            Batch::AgeCrops { data, count }
        }),
    ];
    for (set, side, label, pack) in nets {
        let max = *sizes.iter().max().unwrap();
        let mut be = start(set, max);
        for &n in sizes {
            // A mid-grey crop: the nets' cost does not depend on content.
            let data = vec![127u8; n * side * side * 3];
            g.throughput(Throughput::Elements(n as u64));
            let id = if sizes.len() == 1 {
                BenchmarkId::new("model", label)
            } else {
                BenchmarkId::new(format!("model/{label}"), n)
            };
            g.bench_function(id, |it| it.iter(|| be.run(pack(data.clone(), n)).unwrap()));
        }
    }
}

fn bench(c: &mut Criterion) {
    let models = ModelPaths::in_dir(format!("{ROOT}/models").as_ref());
    let (name, bytes) = selfie();
    let threads = rayon::current_num_threads();
    let mut g = c.benchmark_group(format!("skin/cpu-{threads}t"));
    g.sample_size(20);
    analyze_bench(&mut g, &Target::Cpu, &name, &bytes);
    model_benches(&mut g, &[1], |set, max| {
        Box::new(CpuBackend::load(&models, set, max).unwrap())
    });
    g.finish();
    bench_device(c, &models, BackendKind::Cuda, "cuda", (&name, &bytes));
    bench_device(c, &models, BackendKind::Wgpu, "wgpu", (&name, &bytes));
}

/// The pipeline and the nets on the accelerator `kind` as the daemon
/// would open it, when there is a hardware one.
fn bench_device(
    c: &mut Criterion,
    models: &ModelPaths,
    kind: BackendKind,
    label: &str,
    (name, bytes): (&str, &[u8]),
) {
    let group = format!("skin/{label}");
    let target = match argus::backend::resolve(kind) {
        // A software adapter measures the rasteriser, not the shaders; a
        // smoke run of the bench code (`-- --test`) may still ask for it.
        Ok(t) if t.is_software() && std::env::var_os("ARGUS_BENCH_SOFTWARE").is_none() => {
            eprintln!("{group} skipped: a software adapter (ARGUS_BENCH_SOFTWARE=1 runs it)");
            return;
        }
        Ok(t) => t,
        Err(e) => {
            eprintln!("{group} skipped: {e}");
            return;
        }
    };
    let mut g = c.benchmark_group(group);
    g.sample_size(20);
    analyze_bench(&mut g, &target, name, bytes);
    model_benches(&mut g, &[1, 8, 32], |set, max| {
        argus::backend::start(&target, models, set, max).unwrap()
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
