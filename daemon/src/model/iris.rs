//! MediaPipe Iris: 71 eye-contour/eyebrow and 5 iris landmarks from a 64x64 eye crop.
//!
//! Ablavatski, Artsiom et al., "Real-time Pupil Tracking from Monocular Video
//! for Digital Puppetry", CVPR Workshops 2020 (arXiv:2006.11341).
//! Weights: `mediapipe/modules/iris_landmark/iris_landmark.tflite` from the
//! PyPI wheel `mediapipe` 0.10.21 (Apache-2.0, `models/skin/LICENSE-mediapipe`),
//! re-laid out to OIHW by `models/tools/convert_facemesh.py`. The graph, op by
//! op, is `models/skin/iris_graph.md`; `models/tools/skin_numpy_ref.py` is the
//! reference this port follows.
//!
//! A 3x3/s2 stem + PReLU, then bottleneck units: `reduce` (1x1, or 2x2/s2
//! VALID where the unit downsamples) and PReLU, depthwise 3x3 SAME, 1x1, the
//! shortcut added (identity, or 2x2 max-pool with zero channels appended),
//! PReLU. Ten units form the backbone (32x32 -> 16x16 -> 8x8); two heads of
//! eight units each (8x8 -> 4x4 -> 2x2) end in 2x2 VALID convs.
//!
//! Input: RGB in [0, 1] (`pixel * (1/255)`), NCHW [N, 3, 64, 64], a **left**
//! eye in MediaPipe's sense (the eye on the image's left, face-mesh landmarks
//! 33/133): flip a right eye's crop horizontally and flip the results' x
//! back (`x' = 64 - x`). Outputs are in pixels of the 64x64 input.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::face_mesh::{rgb8_to_nchw, shortcut, Conv, Prelu};

/// Edge of the square input crop, pixels.
pub const INPUT_SIZE: usize = 64;
/// Eye-contour and eyebrow landmarks.
pub const NUM_CONTOUR: usize = 71;
/// Iris landmarks: the centre, then four points on the boundary.
pub const NUM_IRIS: usize = 5;

/// (in, reduced, out channels, downsamples) of the backbone's units.
pub(crate) const BACKBONE: [(usize, usize, usize, bool); 10] = [
    (64, 32, 64, false),
    (64, 32, 64, false),
    (64, 32, 64, false),
    (64, 32, 64, false),
    (64, 64, 128, true),
    (128, 64, 128, false),
    (128, 64, 128, false),
    (128, 64, 128, false),
    (128, 64, 128, false),
    (128, 64, 128, true),
];
/// Units of each head (128 -> 64 -> 128 channels) that downsample.
pub(crate) const HEAD_DOWN: [bool; 8] = [false, false, true, false, false, true, false, false];

/// reduce (1x1, or 2x2/s2 VALID) -> PReLU -> dw 3x3 SAME -> pw 1x1 ->
/// + shortcut -> PReLU.
struct Unit {
    reduce: Conv,
    reduce_prelu: Prelu,
    dw: Conv,
    pw: Conv,
    prelu: Prelu,
    stride: usize,
    cout: usize,
}

impl Unit {
    fn load(vb: VarBuilder, (cin, mid, cout, down): (usize, usize, usize, bool)) -> Result<Self> {
        let (k, stride) = if down { (2, 2) } else { (1, 1) };
        Ok(Self {
            reduce: Conv::load(vb.pp("reduce"), (cin, mid), k, stride, 1, false)?,
            reduce_prelu: Prelu::load(vb.pp("reduce_prelu"), mid)?,
            dw: Conv::depthwise(vb.pp("dw"), mid, 1)?,
            pw: Conv::pointwise(vb.pp("pw"), mid, cout)?,
            prelu: Prelu::load(vb.pp("prelu"), cout)?,
            stride,
            cout,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.reduce_prelu.forward(&self.reduce.forward(x)?)?;
        let h = self.dw.forward(&h)?;
        let sum = self
            .pw
            .forward_add(&h, &shortcut(x, self.stride, self.cout)?)?;
        self.prelu.forward(&sum)
    }
}

/// Eight units on the 8x8 backbone map, then a 2x2 VALID conv on 2x2 -> 1x1.
struct Head {
    units: Vec<Unit>,
    out: Conv,
}

impl Head {
    fn load(vb: VarBuilder, outputs: usize) -> Result<Self> {
        Ok(Self {
            units: HEAD_DOWN
                .iter()
                .enumerate()
                .map(|(i, &down)| Unit::load(vb.pp(i.to_string()), (128, 64, 128, down)))
                .collect::<Result<_>>()?,
            out: Conv::load(vb.pp("out"), (128, outputs), 2, 1, 1, false)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for u in &self.units {
            h = u.forward(&h)?;
        }
        self.out.forward(&h)
    }
}

/// Iris model outputs for a batch of N eye crops, in 64x64 input pixels.
#[derive(Debug, Clone)]
pub struct IrisOutput {
    /// [N, 71, 3]: eye contour and eyebrow points (x, y, z).
    pub contour: Tensor,
    /// [N, 5, 3]: iris centre, then four boundary points (x, y, z).
    pub iris: Tensor,
}

pub struct IrisNet {
    stem_conv: Conv,
    stem_prelu: Prelu,
    backbone: Vec<Unit>,
    contour: Head,
    iris: Head,
    /// The same weights packed for the NHWC CPU kernels.
    kernels: super::iris_nhwc::IrisKernels,
}

impl IrisNet {
    pub fn load(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            stem_conv: Conv::load(vb.pp("stem.conv"), (3, 64), 3, 2, 1, true)?,
            stem_prelu: Prelu::load(vb.pp("stem.prelu"), 64)?,
            backbone: BACKBONE
                .iter()
                .enumerate()
                .map(|(i, &cfg)| Unit::load(vb.pp(format!("backbone.{i}")), cfg))
                .collect::<Result<_>>()?,
            contour: Head::load(vb.pp("contour"), 3 * NUM_CONTOUR)?,
            iris: Head::load(vb.pp("iris"), 3 * NUM_IRIS)?,
            kernels: super::iris_nhwc::IrisKernels::load(
                &vb,
                &BACKBONE,
                &HEAD_DOWN,
                (3 * NUM_CONTOUR, 3 * NUM_IRIS),
            )?,
        })
    }

    /// x: [N, 3, 64, 64] RGB in [0, 1], a left eye. On the CPU this runs
    /// on the NHWC kernels, one image per thread in a batch
    /// ([`super::nhwc::whole_images`]); elsewhere on candle's ops.
    pub fn forward(&self, x: &Tensor) -> Result<IrisOutput> {
        let (n, c, h, w) = x.dims4()?;
        if (c, h, w) != (3, INPUT_SIZE, INPUT_SIZE) {
            candle_core::bail!(
                "iris: input must be [N, 3, {INPUT_SIZE}, {INPUT_SIZE}], got {:?}",
                x.dims()
            );
        }
        if !x.device().is_cpu() {
            return self.forward_candle(x);
        }
        let outs = super::per_chw_image(x, |img, h, w| self.kernels.forward_chw(img, h, w))?;
        let (mut contour, mut iris) = (Vec::new(), Vec::new());
        for (c, i) in outs {
            contour.extend_from_slice(&c);
            iris.extend_from_slice(&i);
        }
        Ok(IrisOutput {
            contour: Tensor::from_vec(contour, (n, NUM_CONTOUR, 3), x.device())?,
            iris: Tensor::from_vec(iris, (n, NUM_IRIS, 3), x.device())?,
        })
    }

    /// The same on candle's ops (with the face mesh's CPU ops where the
    /// tensors are on the CPU): the path other devices take.
    pub fn forward_candle(&self, x: &Tensor) -> Result<IrisOutput> {
        let n = x.dim(0)?;
        let mut h = self.stem_prelu.forward(&self.stem_conv.forward(x)?)?;
        for u in &self.backbone {
            h = u.forward(&h)?;
        }
        Ok(IrisOutput {
            contour: self.contour.forward(&h)?.reshape((n, NUM_CONTOUR, 3))?,
            iris: self.iris.forward(&h)?.reshape((n, NUM_IRIS, 3))?,
        })
    }
}

/// RGB eye crops (HWC u8, 64x64x3 each) -> the model's input [N, 3, 64, 64],
/// `pixel * (1/255)` in float32 as MediaPipe's TfLiteConverterCalculator does.
pub fn input_from_rgb8(crops: &[&[u8]], device: &Device) -> Result<Tensor> {
    rgb8_to_nchw(crops, INPUT_SIZE, device, |_, p| p as f32 * (1.0 / 255.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::face_mesh::tests::{time_ms, weights_and_golden};
    use crate::model::max_abs_diff;
    use candle_core::IndexOp;

    /// Parity with the TFLite interpreter on a real eye crop. Tolerance
    /// 1e-3 px: the numpy reference of the same graph is within 4e-5 px of
    /// TFLite (float32 summation order), and coordinates are below 64 px, so
    /// this leaves room for candle's kernel order while any graph error
    /// (padding side, shortcut, PReLU) moves points by far more.
    #[test]
    fn matches_tflite_on_a_real_eye() {
        let (vb, golden) = weights_and_golden("iris");
        let model = IrisNet::load(vb).unwrap();
        let x = &golden["input"];
        // The NHWC kernels (what the CPU runs) and candle's ops (the other
        // devices' path) each against TFLite.
        type Path = fn(&IrisNet, &Tensor) -> Result<IrisOutput>;
        for (name, f) in [
            ("nhwc", IrisNet::forward as Path),
            ("candle", IrisNet::forward_candle as Path),
        ] {
            let out = f(&model, x).unwrap();
            let dc = max_abs_diff(&out.contour.i(0).unwrap(), &golden["eye_contour"]);
            let di = max_abs_diff(&out.iris.i(0).unwrap(), &golden["iris"]);
            let ms = time_ms(|| {
                f(&model, x).unwrap();
            });
            println!(
                "iris ({name}): contour max |diff| {dc:.3e} px, iris {di:.3e} px; forward {ms:.1} ms"
            );
            assert!(dc < 1e-3, "{name}: eye contour differs by {dc} px");
            assert!(di < 1e-3, "{name}: iris differs by {di} px");
        }
    }

    #[test]
    fn rgb8_input_is_the_goldens() {
        let (_, golden) = weights_and_golden("iris");
        let image = golden["image"]
            .flatten_all()
            .unwrap()
            .to_vec1::<u8>()
            .unwrap();
        let x = input_from_rgb8(&[&image], &Device::Cpu).unwrap();
        assert_eq!(max_abs_diff(&x, &golden["input"]), 0.0);
    }

    /// Row i of a batch is the single-image result (bar summation order).
    #[test]
    fn batch_rows_match_single_images() {
        let (vb, golden) = weights_and_golden("iris");
        let model = IrisNet::load(vb).unwrap();
        let a = golden["input"].clone();
        let b = a.flip(&[3]).unwrap().affine(0.8, 0.1).unwrap();
        let batch = model.forward(&Tensor::cat(&[&a, &b], 0).unwrap()).unwrap();
        assert_eq!(batch.contour.dims(), [2, NUM_CONTOUR, 3]);
        assert_eq!(batch.iris.dims(), [2, NUM_IRIS, 3]);
        for (i, x) in [a, b].iter().enumerate() {
            let one = model.forward(x).unwrap();
            let dc = max_abs_diff(&batch.contour.i(i).unwrap(), &one.contour.i(0).unwrap());
            let di = max_abs_diff(&batch.iris.i(i).unwrap(), &one.iris.i(0).unwrap());
            assert!(
                dc < 1e-4 && di < 1e-4,
                "row {i}: contour {dc} px, iris {di} px"
            );
        }
    }
}
