//! Decode, letterbox, mask and encode on real photos (CPU), and on the CUDA
//! and wgpu devices when there is one: masking (`mask_3_faces_cuda`, the
//! frame's rows up and back included), JPEG encoding (`encode_jpeg_cuda`,
//! the frame up and the file back) and both at once as a JPEG answer does
//! it (`mask_jpeg_3_faces_cuda`, against the CPU's `mask_jpeg_3_faces`);
//! and JPEG encoding per restart interval (`encode_jpeg_cuda_rst/N`), to
//! tune it.
//!
//!     cargo bench --bench imaging

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use argus::imaging::{self, resize, DecodeLimits, MaskMethod, MaskParams, OutputFormat};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Every masking method, at one strength and padding.
fn mask_params() -> impl Iterator<Item = MaskParams> {
    [
        MaskMethod::Gaussian,
        MaskMethod::Pixelate,
        MaskMethod::Solid,
        MaskMethod::Elliptical,
    ]
    .into_iter()
    .map(|method| MaskParams {
        method,
        strength: 199,
        padding: 0.15,
    })
}

fn bench(c: &mut Criterion) {
    let bytes = std::fs::read(format!("{ROOT}/tests/fixtures/group.jpg")).unwrap();
    let limits = DecodeLimits {
        max_pixels: 40_000_000,
        formats: vec!["jpeg".into()],
    };
    let img = imaging::decode(&bytes, &limits).unwrap().image;
    // The three faces of group.jpg as the detector finds them.
    let faces = [
        [139.1, 141.5, 230.0, 257.3],
        [575.8, 461.2, 646.8, 551.5],
        [911.7, 221.2, 968.6, 294.8],
    ];
    let mut g = c.benchmark_group("imaging/1200x800");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_jpeg", |b| {
        b.iter(|| imaging::decode(&bytes, &limits).unwrap())
    });
    g.bench_function("letterbox_640x640", |b| {
        b.iter(|| resize::letterbox(&img, 640, 640).unwrap())
    });
    for p in mask_params() {
        let m = p.method;
        g.bench_with_input(BenchmarkId::new("mask_3_faces", m.as_str()), &p, |b, p| {
            b.iter_batched(
                || img.clone(),
                |mut im| imaging::mask::apply(&mut im, &faces, *p),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    for kind in [
        argus::backend::BackendKind::Cuda,
        argus::backend::BackendKind::Wgpu,
    ] {
        match argus::backend::resolve(kind) {
            Ok(argus::backend::Target::Cpu) => {}
            #[cfg(feature = "wgpu")]
            Ok(argus::backend::Target::Wgpu(gpu)) => {
                bench_device_mask(&mut g, "wgpu", gpu.as_ref(), &img, &faces)
            }
            #[cfg(feature = "cuda")]
            Ok(argus::backend::Target::Cuda(dev)) => {
                bench_device_mask(&mut g, "cuda", dev.as_ref(), &img, &faces)
            }
            Err(e) => eprintln!("mask_3_faces on {kind:?} skipped: {e}"),
        }
    }
    for (f, q) in [
        (OutputFormat::Jpeg, 95),
        (OutputFormat::Png, 0),
        (OutputFormat::Webp, 80),
    ] {
        g.bench_with_input(BenchmarkId::new("encode", f.as_str()), &f, |b, f| {
            b.iter(|| imaging::encode(&img, *f, q).unwrap())
        });
    }
    for q in JPEG_QUALITIES {
        g.bench_with_input(BenchmarkId::new("encode_jpeg", q), &q, |b, &q| {
            b.iter(|| imaging::encode(&img, OutputFormat::Jpeg, q).unwrap())
        });
    }
    let gaussian = mask_params().next().unwrap();
    g.bench_function(BenchmarkId::new("mask_jpeg_3_faces", 85), |b| {
        b.iter_batched(
            || img.clone(),
            |mut im| {
                imaging::mask::apply(&mut im, &faces, gaussian);
                imaging::encode(&im, OutputFormat::Jpeg, 85).unwrap()
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// JPEG qualities timed: the default, and one on each side of the switch
/// from 4:2:0 to 4:4:4 chroma at 90.
const JPEG_QUALITIES: [u8; 2] = [85, 95];

/// Masking and JPEG encoding on a device, uploads and readbacks included.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn bench_device_mask<D: argus::gpu::Compute>(
    g: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>,
    label: &str,
    dev: &D,
    img: &image::RgbImage,
    faces: &[[f32; 4]],
) {
    eprintln!("mask_3_faces_{label} on {}", dev.describe());
    for p in mask_params() {
        let m = p.method;
        g.bench_with_input(
            BenchmarkId::new(format!("mask_3_faces_{label}"), m.as_str()),
            &p,
            |b, p| {
                b.iter_batched(
                    || img.clone(),
                    |mut im| argus::gpu::mask::apply(dev, &mut im, faces, *p).unwrap(),
                    criterion::BatchSize::LargeInput,
                )
            },
        );
    }
    for q in JPEG_QUALITIES {
        g.bench_with_input(
            BenchmarkId::new(format!("encode_jpeg_{label}"), q),
            &q,
            |b, &q| b.iter(|| argus::gpu::jpeg::encode(dev, img, q).unwrap()),
        );
    }
    // The restart interval (MCUs per Huffman invocation), to tune
    // `gpu::jpeg::RESTART_MCUS` on a GPU: shorter means more parallel
    // invocations and a slightly bigger file. (On llvmpipe, intervals
    // past about 30 MCUs are cut short by its loop limit: time them on
    // hardware only.)
    for restart in [2, 4, 8, 16, 32] {
        let plan =
            argus::gpu::jpeg::Plan::with_restart(img.width(), img.height(), 85, restart).unwrap();
        let size = argus::gpu::jpeg::encode_planned(dev, img, &plan)
            .unwrap()
            .len();
        eprintln!("encode_jpeg_{label}_rst/{restart}: {size} bytes");
        g.bench_with_input(
            BenchmarkId::new(format!("encode_jpeg_{label}_rst"), restart),
            &plan,
            |b, plan| b.iter(|| argus::gpu::jpeg::encode_planned(dev, img, plan).unwrap()),
        );
    }
    let gaussian = mask_params().next().unwrap();
    g.bench_function(
        BenchmarkId::new(format!("mask_jpeg_3_faces_{label}"), 85),
        |b| b.iter(|| argus::gpu::mask::apply_jpeg(dev, img, faces, gaussian, 85).unwrap()),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
