//! The NHWC dense kernels (`argus_kernels::nhwc`) against the NCHW ops of
//! [`super::ops`], which are themselves checked against candle's conv2d.
//! These live here rather than beside the kernels because the reference
//! is candle's: the kernels crate knows nothing of candle.

use super::nhwc::{Dense3x3, Map, Upsample2x2};
use super::{ops, simd};
use candle_core::{Device, Tensor};

fn rand(shape: &[usize]) -> Tensor {
    Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// The NHWC dense 3x3 (from NCHW and from NHWC input) against the NCHW
/// op, which is itself checked against candle's conv2d, on every
/// instruction set this CPU has (the gathering GEMM tile differs per
/// set: 14x32 on AVX-512, 6x16 on AVX2 and NEON).
#[test]
fn dense3x3_matches_the_nchw_op() {
    for isa in simd::all_supported() {
        for (cin, cout, h, w, s) in [
            (3, 32, 10, 14, 2),
            (24, 24, 7, 9, 1),
            (5, 15, 6, 6, 2),
            (16, 40, 9, 31, 1),
        ] {
            let (x, wt, b) = (
                rand(&[1, cin, h, w]),
                rand(&[cout, cin, 3, 3]),
                rand(&[cout]),
            );
            let want = flat(&ops::dense3x3(&x, &wt, &b, s, true).unwrap());
            let d = Dense3x3::for_isa(isa, &flat(&wt), &flat(&b), cout, cin, s);
            let from_chw = d.forward_chw(&flat(&x), h, w, true);
            let e = max_diff(&from_chw.to_chw(), &want);
            assert!(e < 1e-4, "{isa} {cin}->{cout} {h}x{w}/{s}: {e}");
            let map = Map::from_chw(&flat(&x), cin, h, w);
            let e = max_diff(&d.forward(&map, true).to_chw(), &want);
            assert!(e < 1e-4, "{isa} {cin}->{cout} {h}x{w}/{s}: {e}");
        }
    }
}

#[test]
fn upsample_matches_the_nchw_op() {
    for isa in simd::all_supported() {
        for (cin, cout, h, w) in [(24, 24, 5, 7), (17, 9, 3, 11)] {
            let (x, wt, b) = (
                rand(&[1, cin, h, w]),
                rand(&[cin, cout, 2, 2]),
                rand(&[cout]),
            );
            let want = flat(&ops::upsample2x2(&x, &wt, &b, true).unwrap());
            let u = Upsample2x2::for_isa(isa, &flat(&wt), &flat(&b), cin, cout);
            let got = u.forward(&Map::from_chw(&flat(&x), cin, h, w));
            assert_eq!((got.h, got.w, got.c), (2 * h, 2 * w, cout));
            let e = max_diff(&got.to_chw(), &want);
            assert!(e < 1e-4, "{isa} {cin}->{cout} {h}x{w}: {e}");
        }
    }
}
