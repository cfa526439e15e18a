//! Per-op timings of the CPU kernels at CenterFace's shapes for a 640x448 input.
//!
//!     cargo run --release --example opbench

use candle_core::{Device, Tensor};
use std::time::Instant;
fn t<F: FnMut()>(name: &str, flops: f64, mut f: F) {
    f();
    let n = 10;
    let s = Instant::now();
    for _ in 0..n {
        f();
    }
    let dt = s.elapsed().as_secs_f64() / n as f64;
    println!(
        "{name:40} {:8.2} ms  {:6.1} GFLOP/s",
        dt * 1e3,
        flops / dt / 1e9
    );
}
fn main() {
    let d = Device::Cpu;
    let r = |s: &[usize]| Tensor::randn(0f32, 1.0, s, &d).unwrap();
    // expand at stride 2 (block 1): 16->96 at 320x224
    let (x, w, b) = (r(&[1, 16, 224, 320]), r(&[96, 16, 1, 1]), r(&[96]));
    t("pw 16->96 @320x224", 2.0 * 16.0 * 96.0 * 71680.0, || {
        argus::model::ops::pointwise(&x, &w, &b, true).unwrap();
    });
    let (x, w, b) = (r(&[1, 144, 112, 160]), r(&[24, 144, 1, 1]), r(&[24]));
    t("pw 144->24 @160x112", 2.0 * 144.0 * 24.0 * 17920.0, || {
        argus::model::ops::pointwise(&x, &w, &b, false).unwrap();
    });
    let (x, w, b) = (r(&[1, 24, 112, 160]), r(&[144, 24, 1, 1]), r(&[144]));
    t("pw 24->144 @160x112", 2.0 * 144.0 * 24.0 * 17920.0, || {
        argus::model::ops::pointwise(&x, &w, &b, true).unwrap();
    });
    let (x, w, b) = (r(&[1, 960, 14, 20]), r(&[160, 960, 1, 1]), r(&[160]));
    t("pw 960->160 @20x14", 2.0 * 960.0 * 160.0 * 280.0, || {
        argus::model::ops::pointwise(&x, &w, &b, false).unwrap();
    });
    let (x, w, b) = (r(&[1, 96, 224, 320]), r(&[96, 1, 3, 3]), r(&[96]));
    t("dw 96 s2 @320x224", 2.0 * 9.0 * 96.0 * 17920.0, || {
        argus::model::ops::depthwise3x3(&x, &w, &b, 2, true).unwrap();
    });
    let (x, w, b) = (r(&[1, 144, 112, 160]), r(&[144, 1, 3, 3]), r(&[144]));
    t("dw 144 s1 @160x112", 2.0 * 9.0 * 144.0 * 17920.0, || {
        argus::model::ops::depthwise3x3(&x, &w, &b, 1, true).unwrap();
    });
    let (x, w) = (r(&[1, 3, 448, 640]), r(&[32, 3, 3, 3]));
    let b = r(&[32]);
    t(
        "stem dense3x3 3->32 s2",
        2.0 * 27.0 * 32.0 * 71680.0,
        || {
            argus::model::ops::dense3x3(&x, &w, &b, 2, true).unwrap();
        },
    );
    let (x, w) = (r(&[1, 24, 112, 160]), r(&[24, 24, 3, 3]));
    let b = r(&[24]);
    t(
        "head dense3x3 24->24 @160x112",
        2.0 * 216.0 * 24.0 * 17920.0,
        || {
            argus::model::ops::dense3x3(&x, &w, &b, 1, true).unwrap();
        },
    );
    let (x, w, b) = (r(&[1, 24, 56, 80]), r(&[24, 24, 2, 2]), r(&[24]));
    t("up 24 @80x56", 2.0 * 24.0 * 96.0 * 4480.0, || {
        argus::model::ops::upsample2x2(&x, &w, &b, true).unwrap();
    });
}
