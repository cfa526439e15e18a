//! Each op against a CPU reference on fresh random inputs: candle's own
//! ops where it has them, plain loops otherwise.

use super::*;
use crate::gpu::{f32s, on_every_device, Compute};
use candle_core::{Device, Tensor as CTensor, D as Dim};
use rand::{Rng, SeedableRng};

fn rnd(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// Relative L2 error of `got` against `want`.
fn rel_l2(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt() as f32
}

/// Ops are plain f32 arithmetic in a different order: well inside 1e-5.
const TOL: f32 = 1e-5;

fn run<'d, D: Compute>(gpu: &'d D, f: impl FnOnce(&mut D::Rec<'d>) -> Tensor<D::Buf>) -> Vec<f32> {
    let mut r = gpu.recorder();
    let y = f(&mut r);
    let rb = r.read(&y.buf, (y.len() * 4) as u64).unwrap();
    f32s(&r.finish().unwrap()[rb.0])
}

fn ct(data: &[f32], shape: &[usize]) -> CTensor {
    CTensor::from_slice(data, shape, &Device::Cpu).unwrap()
}

fn host(t: &CTensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn with_bias(t: CTensor, b: &[f32], relu: bool) -> CTensor {
    let c = b.len();
    let t = t.broadcast_add(&ct(b, &[1, c, 1, 1])).unwrap();
    if relu {
        t.relu().unwrap()
    } else {
        t
    }
}

#[test]
fn conv2d_matches_candle() {
    on_every_device!(conv2d_matches_candle_on);
}

fn conv2d_matches_candle_on<D: Compute>(gpu: &D) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for (n, cin, cout, h, w, stride, pad, relu) in [
        (2, 3, 32, 33, 47, 2, 1, true),
        (1, 24, 24, 20, 12, 1, 1, false),
        (2, 5, 13, 17, 19, 1, 0, true),
    ] {
        let (x, wt, b) = (
            rnd(&mut rng, n * cin * h * w),
            rnd(&mut rng, cout * cin * 9),
            rnd(&mut rng, cout),
        );
        let c = Conv::new(gpu, &wt, &b, cout, cin, 3).unwrap();
        let got = run(gpu, |r| {
            let xt = gpu.tensor_from([n, cin, h, w], &x).unwrap();
            conv2d(r, &xt, &c, stride, pad, relu).unwrap()
        });
        let want = ct(&x, &[n, cin, h, w])
            .conv2d(&ct(&wt, &[cout, cin, 3, 3]), pad, stride, 1, 1)
            .unwrap();
        let want = host(&with_bias(want, &b, relu));
        let e = rel_l2(&got, &want);
        assert!(e < TOL, "conv2d {cin}->{cout} s{stride} p{pad}: rel L2 {e}");
    }
}

#[test]
fn same_padding_matches_candle() {
    on_every_device!(same_padding_matches_candle_on);
}

/// TensorFlow SAME through the shaders' leading pad and skipped taps,
/// against candle on explicitly zero-padded maps: an even size at
/// stride 2 (0 before, 1 after), an odd one (1 and 1), stride 1.
fn same_padding_matches_candle_on<D: Compute>(gpu: &D) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for (n, cin, cout, hw, stride) in [(2, 3, 16, 12, 2), (1, 8, 8, 7, 2), (2, 4, 6, 9, 1)] {
        let (x, wt, b, dw, db) = (
            rnd(&mut rng, n * cin * hw * hw),
            rnd(&mut rng, cout * cin * 9),
            rnd(&mut rng, cout),
            rnd(&mut rng, cin * 9),
            rnd(&mut rng, cin),
        );
        let (before, after) = same_pads(hw, 3, stride);
        let padded = ct(&x, &[n, cin, hw, hw])
            .pad_with_zeros(2, before, after)
            .unwrap()
            .pad_with_zeros(3, before, after)
            .unwrap();
        let dense = Conv::new(gpu, &wt, &b, cout, cin, 3).unwrap();
        let got = run(gpu, |r| {
            let xt = gpu.tensor_from([n, cin, hw, hw], &x).unwrap();
            conv2d_same(r, &xt, &dense, stride, true).unwrap()
        });
        let want = padded
            .conv2d(&ct(&wt, &[cout, cin, 3, 3]), 0, stride, 1, 1)
            .unwrap();
        assert_eq!(want.dims()[2], hw.div_ceil(stride));
        let e = rel_l2(&got, &host(&with_bias(want, &b, true)));
        assert!(e < TOL, "conv2d_same {hw} s{stride}: rel L2 {e}");

        let dwc = Conv::new(gpu, &dw, &db, cin, 1, 3).unwrap();
        let got = run(gpu, |r| {
            let xt = gpu.tensor_from([n, cin, hw, hw], &x).unwrap();
            depthwise_same(r, &xt, &dwc, stride, Relu::Off).unwrap()
        });
        let want = padded
            .conv2d(&ct(&dw, &[cin, 1, 3, 3]), 0, stride, 1, cin)
            .unwrap();
        let e = rel_l2(&got, &host(&with_bias(want, &db, false)));
        assert!(e < TOL, "depthwise_same {hw} s{stride}: rel L2 {e}");

        // The ReLU on the input: the same conv of max(x, 0).
        let got = run(gpu, |r| {
            let xt = gpu.tensor_from([n, cin, hw, hw], &x).unwrap();
            depthwise_same(r, &xt, &dwc, stride, Relu::Input).unwrap()
        });
        let want = padded
            .relu()
            .unwrap()
            .conv2d(&ct(&dw, &[cin, 1, 3, 3]), 0, stride, 1, cin)
            .unwrap();
        let e = rel_l2(&got, &host(&with_bias(want, &db, false)));
        assert!(e < TOL, "depthwise_same relu_in {hw} s{stride}: rel L2 {e}");
    }
    // 8 rows pad 0 before at stride 2, 7 columns pad 1: refused.
    let dense = Conv::new(gpu, &[0.0; 27], &[0.0], 1, 3, 3).unwrap();
    let x = gpu.tensor_from([1, 3, 8, 7], &[0.0; 168]).unwrap();
    let mut r = gpu.recorder();
    assert!(conv2d_same(&mut r, &x, &dense, 2, false).is_err());
    assert!(conv2d_same(&mut r, &x, &dense, 1, false).is_ok());
}

#[test]
fn prelu_matches_its_definition() {
    on_every_device!(prelu_matches_its_definition_on);
}

fn prelu_matches_its_definition_on<D: Compute>(gpu: &D) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let (n, c, h, w) = (2, 5, 7, 9);
    let x = rnd(&mut rng, n * c * h * w);
    let alpha = rnd(&mut rng, c);
    let slopes = Slopes::new(gpu, &alpha).unwrap();
    let got = run(gpu, |r| {
        let xt = gpu.tensor_from([n, c, h, w], &x).unwrap();
        prelu(r, &xt, &slopes).unwrap();
        xt
    });
    let want: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v < 0.0 {
                v * alpha[(i / (h * w)) % c]
            } else {
                v
            }
        })
        .collect();
    assert_eq!(got, want, "one multiply per negative value: exact");
    let x = gpu.tensor_from([1, c + 1, 2, 2], &[0.0; 24]).unwrap();
    assert!(prelu(&mut gpu.recorder(), &x, &slopes).is_err());
}

#[test]
fn depthwise_matches_candle() {
    on_every_device!(depthwise_matches_candle_on);
}

fn depthwise_matches_candle_on<D: Compute>(gpu: &D) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    for (n, c, h, w, stride) in [(2, 96, 21, 30, 2), (1, 144, 16, 9, 1)] {
        let (x, wt, b) = (
            rnd(&mut rng, n * c * h * w),
            rnd(&mut rng, c * 9),
            rnd(&mut rng, c),
        );
        let conv = Conv::new(gpu, &wt, &b, c, 1, 3).unwrap();
        let got = run(gpu, |r| {
            let xt = gpu.tensor_from([n, c, h, w], &x).unwrap();
            depthwise(r, &xt, &conv, stride, 1, true).unwrap()
        });
        let want = ct(&x, &[n, c, h, w])
            .conv2d(&ct(&wt, &[c, 1, 3, 3]), 1, stride, 1, c)
            .unwrap();
        let e = rel_l2(&got, &host(&with_bias(want, &b, true)));
        assert!(e < TOL, "depthwise c{c} s{stride}: rel L2 {e}");
    }
}

#[test]
fn maxpool_same_matches_candle() {
    on_every_device!(maxpool_same_matches_candle_on);
}

/// 3x3 max-pools with SAME padding (edge replication stands in for
/// -inf in candle: a copied edge cell never beats its original), with
/// and without a residual. Max and one add: exact.
fn maxpool_same_matches_candle_on<D: Compute>(gpu: &D) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for (n, c, hw, k, stride) in [(2, 3, 12, 3, 2), (1, 4, 7, 3, 2), (2, 2, 9, 3, 1)] {
        let x = rnd(&mut rng, n * c * hw * hw);
        let (before, after) = same_pads(hw, k, stride);
        let want = ct(&x, &[n, c, hw, hw])
            .pad_with_same(2, before, after)
            .unwrap()
            .pad_with_same(3, before, after)
            .unwrap()
            .max_pool2d_with_stride(k, stride)
            .unwrap();
        let out = want.dims4().unwrap();
        let res = rnd(&mut rng, want.elem_count());
        for with_res in [false, true] {
            let got = run(gpu, |r| {
                let xt = gpu.tensor_from([n, c, hw, hw], &x).unwrap();
                let rt = with_res.then(|| gpu.tensor_from(out.into(), &res).unwrap());
                maxpool_same(r, &xt, k, stride, rt.as_ref()).unwrap()
            });
            let want = if with_res {
                (&want + ct(&res, &[out.0, out.1, out.2, out.3])).unwrap()
            } else {
                want.clone()
            };
            assert_eq!(
                got,
                host(&want),
                "maxpool {hw} s{stride} residual {with_res}"
            );
        }
    }
    // A residual of another shape is refused.
    let x = gpu.tensor_from([1, 1, 4, 4], &[0.0; 16]).unwrap();
    let res = gpu.tensor_from([1, 1, 3, 3], &[0.0; 9]).unwrap();
    let mut r = gpu.recorder();
    assert!(maxpool_same(&mut r, &x, 3, 2, Some(&res)).is_err());
}

#[test]
fn conv1x1_matches_candle_with_relu_and_residual() {
    on_every_device!(conv1x1_matches_candle_with_relu_and_residual_on);
}

fn conv1x1_matches_candle_with_relu_and_residual_on<D: Compute>(gpu: &D) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    // Sizes off the 64/16 tile edges on purpose. The residual's
    // channels (0: none); fewer than the output's are zero-padded.
    for (n, cin, cout, h, w, relu, res_c) in [
        (2, 24, 144, 13, 11, true, 0),
        (3, 160, 960, 5, 7, false, 0),
        (1, 37, 70, 9, 10, false, 70),
        (2, 96, 24, 4, 4, true, 24),
        (2, 16, 32, 6, 6, false, 16),
        (1, 20, 70, 3, 5, true, 45),
    ] {
        let (x, wt, b, res) = (
            rnd(&mut rng, n * cin * h * w),
            rnd(&mut rng, cout * cin),
            rnd(&mut rng, cout),
            rnd(&mut rng, n * res_c * h * w),
        );
        let c = Conv::new(gpu, &wt, &b, cout, cin, 1).unwrap();
        let got = run(gpu, |r| {
            let xt = gpu.tensor_from([n, cin, h, w], &x).unwrap();
            let rt = (res_c > 0).then(|| gpu.tensor_from([n, res_c, h, w], &res).unwrap());
            conv1x1(r, &xt, &c, relu, rt.as_ref()).unwrap()
        });
        let mut want = with_bias(
            ct(&x, &[n, cin, h, w])
                .conv2d(&ct(&wt, &[cout, cin, 1, 1]), 0, 1, 1, 1)
                .unwrap(),
            &b,
            relu,
        );
        if res_c > 0 {
            let res = ct(&res, &[n, res_c, h, w])
                .pad_with_zeros(1, 0, cout - res_c)
                .unwrap();
            want = (want + res).unwrap();
        }
        let e = rel_l2(&got, &host(&want));
        assert!(
            e < TOL,
            "conv1x1 {cin}->{cout} residual {res_c}: rel L2 {e}"
        );
    }
    // A residual wider than the output, or of another size, is refused.
    let c = Conv::new(gpu, &[0.0; 8], &[0.0; 2], 2, 4, 1).unwrap();
    let x = gpu.tensor_from([1, 4, 2, 2], &[0.0; 16]).unwrap();
    let mut r = gpu.recorder();
    for shape in [[1, 3, 2, 2], [1, 2, 2, 3]] {
        let res = gpu
            .tensor_from(shape, &vec![0.0; shape.iter().product()])
            .unwrap();
        assert!(
            conv1x1(&mut r, &x, &c, false, Some(&res)).is_err(),
            "{shape:?}"
        );
    }
}

#[test]
fn conv_transpose2x2_matches_candle() {
    on_every_device!(conv_transpose2x2_matches_candle_on);
}

fn conv_transpose2x2_matches_candle_on<D: Compute>(gpu: &D) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let (n, cin, cout, h, w) = (2, 24, 24, 7, 5);
    let (x, wt, b) = (
        rnd(&mut rng, n * cin * h * w),
        rnd(&mut rng, cin * cout * 4),
        rnd(&mut rng, cout),
    );
    let c = Conv::new(gpu, &wt, &b, cout, cin, 2).unwrap();
    let got = run(gpu, |r| {
        let xt = gpu.tensor_from([n, cin, h, w], &x).unwrap();
        conv_transpose2x2(r, &xt, &c, true).unwrap()
    });
    let want = ct(&x, &[n, cin, h, w])
        .conv_transpose2d(&ct(&wt, &[cin, cout, 2, 2]), 0, 0, 2, 1)
        .unwrap();
    let e = rel_l2(&got, &host(&with_bias(want, &b, true)));
    assert!(e < TOL, "conv_transpose2x2: rel L2 {e}");
}

#[test]
fn pooling_concat_and_activations_match_candle() {
    on_every_device!(pooling_concat_and_activations_match_candle_on);
}

fn pooling_concat_and_activations_match_candle_on<D: Compute>(gpu: &D) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let (n, c, h, w) = (2, 5, 11, 9);
    let x = rnd(&mut rng, n * c * h * w);
    let xc = ct(&x, &[n, c, h, w]);

    let got = run(gpu, |r| {
        let xt = gpu.tensor_from([n, c, h, w], &x).unwrap();
        maxpool2x2(r, &xt).unwrap()
    });
    assert_eq!(got, host(&xc.max_pool2d(2).unwrap()), "maxpool2x2");

    let got = run(gpu, |r| {
        let xt = gpu.tensor_from([n, c, h, w], &x).unwrap();
        global_avg_pool(r, &xt).unwrap()
    });
    let want = host(&xc.mean(Dim::Minus1).unwrap().mean(Dim::Minus1).unwrap());
    assert!(rel_l2(&got, &want) < TOL, "global_avg_pool");

    let got = run(gpu, |r| {
        let xt = gpu.tensor_from([n, c, h, w], &x).unwrap();
        sigmoid(r, &xt, 1, 3).unwrap();
        xt
    });
    let sig = candle_nn::ops::sigmoid(&xc).unwrap();
    let want = CTensor::cat(
        &[
            xc.narrow(1, 0, 1).unwrap(),
            sig.narrow(1, 1, 3).unwrap(),
            xc.narrow(1, 4, 1).unwrap(),
        ],
        1,
    )
    .unwrap();
    assert!(rel_l2(&got, &host(&want)) < TOL, "sigmoid");

    let got = run(gpu, |r| {
        let xt = gpu.tensor_from([n, c, h, w], &x).unwrap();
        softmax(r, &xt).unwrap();
        xt
    });
    let want = candle_nn::ops::softmax_last_dim(&xc.reshape((n, c * h * w)).unwrap()).unwrap();
    assert!(rel_l2(&got, &host(&want)) < TOL, "softmax");

    // Crop 9x9 -> 5x5 (2 px a side) and append a 3-channel 5x5 map.
    let (ha, hb, cb) = (9, 5, 3);
    let a = rnd(&mut rng, n * c * ha * ha);
    let b = rnd(&mut rng, n * cb * hb * hb);
    let got = run(gpu, |r| {
        let at = gpu.tensor_from([n, c, ha, ha], &a).unwrap();
        let bt = gpu.tensor_from([n, cb, hb, hb], &b).unwrap();
        crop_concat(r, &at, &bt).unwrap()
    });
    let crop = ct(&a, &[n, c, ha, ha])
        .narrow(2, 2, hb)
        .unwrap()
        .narrow(3, 2, hb)
        .unwrap();
    let want = CTensor::cat(&[crop, ct(&b, &[n, cb, hb, hb])], 1).unwrap();
    assert_eq!(got, host(&want), "crop_concat");

    let (inputs, outputs) = (c * h * w, 7);
    let (wt, bias) = (rnd(&mut rng, outputs * inputs), rnd(&mut rng, outputs));
    let lin = Conv::new(gpu, &wt, &bias, outputs, inputs, 1).unwrap();
    let got = run(gpu, |r| {
        let xt = gpu.tensor_from([n, c, h, w], &x).unwrap();
        linear(r, &xt, &lin).unwrap()
    });
    let want = xc
        .reshape((n, inputs))
        .unwrap()
        .matmul(&ct(&wt, &[outputs, inputs]).t().unwrap())
        .unwrap()
        .broadcast_add(&ct(&bias, &[outputs]))
        .unwrap();
    assert!(rel_l2(&got, &host(&want)) < TOL, "linear");
}

/// The letterbox filter in f64: a triangle widened by the reduction
/// factor, normalised over the taps inside the frame.
fn letterbox_reference(
    frame: &[u8],
    (sw, sh): (usize, usize),
    (rw, rh): (usize, usize),
    (dw, dh): (usize, usize),
) -> Vec<f64> {
    let taps = |o: usize, s: usize, d: usize| -> Vec<(usize, f64)> {
        let ratio = s as f64 / d as f64;
        let fw = ratio.max(1.0);
        let c = (o as f64 + 0.5) * ratio;
        let lo = (c - fw).floor().max(0.0) as usize;
        let hi = ((c + fw).ceil() as usize).min(s);
        let w: Vec<(usize, f64)> = (lo..hi)
            .map(|i| (i, (1.0 - ((i as f64 - (c - 0.5)) / fw).abs()).max(0.0)))
            .collect();
        let sum: f64 = w.iter().map(|t| t.1).sum();
        w.into_iter().map(|(i, v)| (i, v / sum)).collect()
    };
    let mut out = vec![0.0; 3 * dh * dw];
    for ch in 0..3 {
        for oy in 0..rh {
            for ox in 0..rw {
                let mut v = 0.0;
                for (yy, wy) in taps(oy, sh, rh) {
                    for (xx, wx) in taps(ox, sw, rw) {
                        v += wy * wx * frame[(yy * sw + xx) * 3 + ch] as f64;
                    }
                }
                out[(ch * dh + oy) * dw + ox] = v;
            }
        }
    }
    out
}

#[test]
fn letterbox_resamples_into_its_slot() {
    on_every_device!(letterbox_resamples_into_its_slot_on);
}

fn letterbox_resamples_into_its_slot_on<D: Compute>(gpu: &D) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (dw, dh) = (24, 16);
    let plain = Prep {
        bgr: false,
        scale: 1.0,
        offset: 0.0,
    };
    // Shrinking by 2.9 and by 1.3, an exact copy, and enlarging.
    for (sw, sh, rw, rh) in [
        (70, 37, 24, 13),
        (31, 21, 24, 16),
        (24, 16, 24, 16),
        (9, 7, 20, 16),
    ] {
        let frame: Vec<u8> = (0..sw * sh * 3).map(|_| rng.gen()).collect();
        let src = gpu.upload("frame", &frame).unwrap();
        let got = run(gpu, |r| {
            let x = r.tensor([3, 3, dh, dw]).unwrap();
            // Slot 1 of 3: the other slots are not this kernel's.
            letterbox(r, &src, (sw, sh), (rw, rh), &x, 1, plain).unwrap();
            x
        });
        let want = letterbox_reference(&frame, (sw, sh), (rw, rh), (dw, dh));
        let slot = &got[3 * dh * dw..6 * dh * dw];
        let worst = slot
            .iter()
            .zip(&want)
            .map(|(g, w)| (*g as f64 - w).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-3, "{sw}x{sh} -> {rw}x{rh}: off by {worst}");
        if (sw, sh) == (rw, rh) {
            for (i, g) in slot.iter().enumerate() {
                let (ch, p) = (i / (dh * dw), i % (dh * dw));
                assert_eq!(*g, frame[p * 3 + ch] as f32, "copy at {i}");
            }
        }
    }
    // Channel order and scaling, and the padding gets the offset.
    let frame: Vec<u8> = (0..10 * 4 * 3).map(|i| i as u8).collect();
    let src = gpu.upload("frame", &frame).unwrap();
    let prep = Prep {
        bgr: true,
        scale: 2.0 / 255.0,
        offset: -1.0,
    };
    let got = run(gpu, |r| {
        let x = r.tensor([1, 3, 8, 12]).unwrap();
        letterbox(r, &src, (10, 4), (10, 4), &x, 0, prep).unwrap();
        x
    });
    assert_eq!(got[0], frame[2] as f32 * prep.scale + prep.offset);
    assert_eq!(got[2 * 96], frame[0] as f32 * prep.scale + prep.offset);
    assert_eq!(got[5 * 12 + 11], -1.0, "padding");
    // Too wide for the input, a slot past the batch, a frame bigger
    // than its upload.
    let mut r = gpu.recorder();
    let x = r.tensor([1, 3, 8, 12]).unwrap();
    assert!(letterbox(&mut r, &src, (10, 4), (13, 4), &x, 0, prep).is_err());
    assert!(letterbox(&mut r, &src, (10, 4), (10, 4), &x, 1, prep).is_err());
    assert!(letterbox(&mut r, &src, (20, 4), (10, 4), &x, 0, prep).is_err());
}

/// On a real photo the device letterbox is the host's within the 8-bit
/// rounding of the host's two passes.
#[test]
fn letterbox_matches_the_host_letterbox_on_a_photo() {
    on_every_device!(letterbox_matches_the_host_letterbox_on_a_photo_on);
}

fn letterbox_matches_the_host_letterbox_on_a_photo_on<D: Compute>(gpu: &D) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let img = image::open(format!("{root}/tests/fixtures/group.jpg"))
        .unwrap()
        .to_rgb8();
    let (dw, dh) = (320, 224);
    let host = crate::imaging::resize::letterbox(&img, dw as u32, dh as u32).unwrap();
    let (sw, sh) = (img.width() as usize, img.height() as usize);
    let (rw, rh) = (host.resized_width as usize, host.resized_height as usize);
    let src = gpu.upload("frame", img.as_raw()).unwrap();
    let plain = Prep {
        bgr: false,
        scale: 1.0,
        offset: 0.0,
    };
    let got = run(gpu, |r| {
        let x = r.tensor([1, 3, dh, dw]).unwrap();
        letterbox(r, &src, (sw, sh), (rw, rh), &x, 0, plain).unwrap();
        x
    });
    let (mut worst, mut sum) = (0f32, 0f64);
    for p in 0..dw * dh {
        for ch in 0..3 {
            let d = (got[ch * dw * dh + p] - host.pixels[p * 3 + ch] as f32).abs();
            worst = worst.max(d);
            sum += d as f64;
        }
    }
    let mean = sum / (3 * dw * dh) as f64;
    assert!(worst <= LETTERBOX_MAX_DIFF, "worst {worst}, mean {mean}");
    assert!(mean < LETTERBOX_MEAN_DIFF, "worst {worst}, mean {mean}");
}

const LETTERBOX_MAX_DIFF: f32 = 2.0;
const LETTERBOX_MEAN_DIFF: f64 = 0.5;
