//! CenterFace forward pass per backend, input size and batch size.
//!
//!     cargo bench --bench model
//!     ARGUS_BENCH_BATCHES=1,8 cargo bench --bench model -- wgpu
//!     scripts/build-cuda.sh && LD_LIBRARY_PATH=target/nvrtc \
//!         cargo bench --features cuda --bench model -- 'cpu|cuda'
//!
//! The CPU group always runs; the cuda and wgpu groups run on the device
//! `backend = "cuda"` / `"wgpu"` would take (for wgpu a software adapter
//! only when there is no GPU) and skip with the reason otherwise. Every
//! group runs 640x640 at batches 1, 8 and 32 unless `ARGUS_BENCH_BATCHES`
//! says otherwise; the CPU group also a few other sizes. Each iteration ends with the heads read back to the host, so
//! the device is synchronised before the clock stops.
//!
//! The input is the letterboxed group photo from tests/fixtures, so the
//! timings include decode of the real model outputs (candidate extraction),
//! as the daemon runs them, but not JPEG decode or resizing (see `imaging`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use argus::backend::{
    cpu::CpuBackend, Backend, BackendKind, Batch, FaceBatch, FaceImage, ModelPaths, ModelSet,
};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn input(w: u32, h: u32, n: usize) -> FaceBatch {
    let img = image::open(format!("{ROOT}/tests/fixtures/group.jpg"))
        .unwrap()
        .into_rgb8();
    let lb = argus::imaging::resize::letterbox(&img, w, h).unwrap();
    FaceBatch {
        images: vec![FaceImage::Letterboxed(lb.pixels); n],
        width: w as usize,
        height: h as usize,
        thresholds: vec![0.5; n],
    }
}

/// Batch sizes of the 640x640 runs: `ARGUS_BENCH_BATCHES` or 1, 8, 32.
fn batches() -> Vec<usize> {
    std::env::var("ARGUS_BENCH_BATCHES")
        .unwrap_or_else(|_| "1,8,32".into())
        .split(',')
        .map(|v| v.trim().parse().expect("ARGUS_BENCH_BATCHES: numbers"))
        .collect()
}

fn bench(c: &mut Criterion) {
    let models = ModelPaths::in_dir(format!("{ROOT}/models").as_ref());
    let mut be = CpuBackend::load(&models, ModelSet::Faces, 32).unwrap();
    let mut g = c.benchmark_group(format!("centerface/cpu-{}t", rayon::current_num_threads()));
    g.sample_size(10);
    let sizes = [(320, 224, 1), (640, 448, 1), (640, 448, 4), (1280, 736, 1)];
    let runs = sizes
        .into_iter()
        .chain(batches().into_iter().map(|n| (640, 640, n)));
    for (w, h, n) in runs {
        let batch = input(w, h, n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{w}x{h}xb{n}")),
            &batch,
            |b, batch| b.iter(|| be.run(Batch::Faces(batch.clone())).unwrap()),
        );
    }
    g.finish();
    bench_device(c, &models, BackendKind::Cuda, "cuda");
    bench_device(c, &models, BackendKind::Wgpu, "wgpu");
}

/// The accelerator `kind` as the daemon would open it, when there is one.
fn bench_device(c: &mut Criterion, models: &ModelPaths, kind: BackendKind, label: &str) {
    let name = format!("centerface/{label}");
    let target = match argus::backend::resolve(kind) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name} skipped: {e}");
            return;
        }
    };
    let mut be = argus::backend::start(&target, models, ModelSet::Faces, 256).unwrap();
    eprintln!("{name} on {}", be.device());
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    for n in batches() {
        let batch = input(640, 640, n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("640x640xb{n}")),
            &batch,
            |b, batch| b.iter(|| be.run(Batch::Faces(batch.clone())).unwrap()),
        );
    }
    // What the daemon sends this backend: whole 1280x720 frames, uploaded
    // and letterboxed by the batch ("frames"), or already on the device,
    // put there by their requests ("resident", the usual case: the batch
    // only letterboxes).
    let frame = std::sync::Arc::new(
        image::open(format!("{ROOT}/tests/fixtures/group.jpg"))
            .unwrap()
            .resize_exact(1280, 720, image::imageops::FilterType::Triangle)
            .into_rgb8(),
    );
    #[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(unused_mut))]
    let mut sources = vec![("frames", None)];
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if let argus::detect::Masker::Device(_, dev) = be.masker() {
        sources.push(("resident", Some(dev.upload(&frame).unwrap())));
    }
    for (source, copy) in sources {
        for n in batches() {
            let batch = FaceBatch {
                images: vec![FaceImage::Frame(frame.clone(), copy.clone()); n],
                width: 640,
                height: 640,
                thresholds: vec![0.5; n],
            };
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(
                BenchmarkId::from_parameter(format!("{source}-1280x720-to-640x640xb{n}")),
                &batch,
                |b, batch| b.iter(|| be.run(Batch::Faces(batch.clone())).unwrap()),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
