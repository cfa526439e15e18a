//! CenterFace forward pass per backend, input size and batch size.
//!
//!     cargo bench --bench model
//!     ARGUS_BENCH_BATCHES=1,8 cargo bench --bench model -- wgpu
//!
//! The CPU group always runs; the wgpu group runs on the adapter
//! `backend = "wgpu"` would take (a software one only when there is no
//! GPU), batches 1, 8 and 32 at 640x640 unless `ARGUS_BENCH_BATCHES` says
//! otherwise. Each iteration ends with the heads read back to the host, so
//! the device is synchronised before the clock stops.
//!
//! The input is the letterboxed group photo from tests/fixtures, so the
//! timings include decode of the real model outputs (candidate extraction),
//! as the daemon runs them, but not JPEG decode or resizing (see `imaging`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use argus::backend::{
    cpu::CpuBackend, Backend, BackendKind, Batch, FaceBatch, ModelPaths, ModelSet,
};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn input(w: u32, h: u32, n: usize) -> FaceBatch {
    let img = image::open(format!("{ROOT}/tests/fixtures/group.jpg"))
        .unwrap()
        .into_rgb8();
    let lb = argus::imaging::resize::letterbox(&img, w, h).unwrap();
    FaceBatch {
        pixels: lb.pixels.repeat(n),
        width: w as usize,
        height: h as usize,
        thresholds: vec![0.5; n],
    }
}

fn bench(c: &mut Criterion) {
    let models = ModelPaths::in_dir(format!("{ROOT}/models").as_ref());
    let mut be = CpuBackend::load(&models, ModelSet::Faces, 32).unwrap();
    let mut g = c.benchmark_group(format!("centerface/cpu-{}t", rayon::current_num_threads()));
    g.sample_size(20);
    for (w, h, n) in [
        (320, 224, 1),
        (640, 448, 1),
        (640, 640, 1),
        (640, 448, 4),
        (1280, 736, 1),
    ] {
        let batch = input(w, h, n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{w}x{h}xb{n}")),
            &batch,
            |b, batch| b.iter(|| be.run(Batch::Faces(batch.clone())).unwrap()),
        );
    }
    g.finish();
    bench_wgpu(c, &models);
}

fn bench_wgpu(c: &mut Criterion, models: &ModelPaths) {
    let target = match argus::backend::resolve(BackendKind::Wgpu) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("centerface/wgpu skipped: {e}");
            return;
        }
    };
    let mut be = argus::backend::start(&target, models, ModelSet::Faces, 256).unwrap();
    let batches: Vec<usize> = std::env::var("ARGUS_BENCH_BATCHES")
        .unwrap_or_else(|_| "1,8,32".into())
        .split(',')
        .map(|v| v.trim().parse().expect("ARGUS_BENCH_BATCHES: numbers"))
        .collect();
    eprintln!("centerface/wgpu on {}", be.device());
    let mut g = c.benchmark_group("centerface/wgpu");
    g.sample_size(10);
    for n in batches {
        let batch = input(640, 640, n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("640x640xb{n}")),
            &batch,
            |b, batch| b.iter(|| be.run(Batch::Faces(batch.clone())).unwrap()),
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
