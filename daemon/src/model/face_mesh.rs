//! MediaPipe Face Mesh: 468 3-D face landmarks from a 192x192 face crop.
//!
//! Kartynnik, Yury et al., "Real-time Facial Surface Geometry from Monocular
//! Video on Mobile GPUs", CVPR Workshops 2019 (arXiv:1907.06724).
//! Weights: `mediapipe/modules/face_landmark/face_landmark.tflite` from the
//! PyPI wheel `mediapipe` 0.10.21 (Apache-2.0, `models/skin/LICENSE-mediapipe`;
//! the 468-point model without attention), widened from float16 and re-laid
//! out to OIHW by `models/tools/convert_facemesh.py`. The graph, op by op, is
//! `models/skin/face_mesh_graph.md`; `models/tools/skin_numpy_ref.py` is the
//! reference this port follows.
//!
//! A BlazeFace-style residual net with PReLU activations: a 3x3/s2 stem, 14
//! units of depthwise 3x3 -> pointwise 1x1 -> + shortcut -> PReLU (stride 2
//! at four of them, the shortcut then max-pooled and zero-extended in
//! channels), and two heads on the 6x6 map: the mesh (1404 = 468 x (x, y, z))
//! and the face-presence logit. Every SAME convolution pads as TensorFlow
//! does: a 3x3 stride-2 conv on an even size pads 0 before and 1 after.
//!
//! Input: RGB in [0, 1] (`pixel * (1/255)`), NCHW [N, 3, 192, 192]. Output
//! landmarks are in pixels of that input (x right, y down, z depth on x's
//! scale); the face is present when the logit is > 0 (sigmoid > 0.5).

use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, Device, Layout, Module, Result, Shape, Tensor,
};
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// Edge of the square input crop, pixels.
pub const INPUT_SIZE: usize = 192;
/// Landmarks per face.
pub const NUM_LANDMARKS: usize = 468;
/// Output channels and stride of the backbone's 14 residual units.
pub(crate) const BACKBONE: [(usize, usize); 14] = [
    (16, 1),
    (16, 1),
    (32, 2),
    (32, 1),
    (32, 1),
    (64, 2),
    (64, 1),
    (64, 1),
    (128, 2),
    (128, 1),
    (128, 1),
    (128, 2),
    (128, 1),
    (128, 1),
];

/// TensorFlow SAME padding of one axis: (before, after). The output is
/// `ceil(n / s)` long and the odd pixel of padding goes after.
pub(crate) fn same_pads(n: usize, k: usize, s: usize) -> (usize, usize) {
    let total = ((n.div_ceil(s) - 1) * s + k).saturating_sub(n);
    (total / 2, total - total / 2)
}

/// A convolution with TensorFlow's padding made explicit (zero padding,
/// possibly asymmetric, then a VALID convolution). `groups` equal to the
/// channel count makes it depthwise.
pub(crate) struct Conv {
    weight: Tensor,
    bias: Tensor,
    k: usize,
    stride: usize,
    groups: usize,
    same: bool,
}

impl Conv {
    /// Weight `[cout, cin / groups, k, k]` and bias `[cout]` under `vb`.
    pub(crate) fn load(
        vb: VarBuilder,
        (cin, cout): (usize, usize),
        k: usize,
        stride: usize,
        groups: usize,
        same: bool,
    ) -> Result<Self> {
        Ok(Self {
            weight: vb.get((cout, cin / groups, k, k), "weight")?,
            bias: vb.get(cout, "bias")?.reshape((1, cout, 1, 1))?,
            k,
            stride,
            groups,
            same,
        })
    }

    /// Depthwise 3x3, TensorFlow SAME.
    pub(crate) fn depthwise(vb: VarBuilder, c: usize, stride: usize) -> Result<Self> {
        Self::load(vb, (c, c), 3, stride, c, true)
    }

    /// Pointwise 1x1.
    pub(crate) fn pointwise(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        Self::load(vb, (cin, cout), 1, 1, 1, false)
    }

    fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.weight.dim(1).is_ok_and(|d| d == 1) && self.k == 3
    }

    /// `conv(x) + residual` (shapes equal), fused on the CPU for 1x1 convs.
    pub(crate) fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() && self.k == 1 && self.stride == 1 && self.groups == 1 {
            super::ops::pointwise_add(x, &self.weight, &self.bias, false, residual)
        } else {
            self.forward(x)? + residual
        }
    }

    /// Any device: explicit zero padding (top, bottom, left, right), then
    /// candle's conv2d.
    fn forward_portable(
        &self,
        x: &Tensor,
        (t, b, l, r): (usize, usize, usize, usize),
    ) -> Result<Tensor> {
        x.pad_with_zeros(2, t, b)?
            .pad_with_zeros(3, l, r)?
            .conv2d(&self.weight, 0, self.stride, 1, self.groups)?
            .broadcast_add(&self.bias)
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let ((t, b), (l, r)) = if self.same {
            let pads = |n| same_pads(n, self.k, self.stride);
            (pads(h), pads(w))
        } else {
            ((0, 0), (0, 0))
        };
        if x.device().is_cpu() {
            if self.is_depthwise() {
                let op = Depthwise3x3 {
                    stride: self.stride,
                    top: t,
                    left: l,
                    ho: (h + t + b - 3) / self.stride + 1,
                    wo: (w + l + r - 3) / self.stride + 1,
                };
                return x
                    .contiguous()?
                    .apply_op3_no_bwd(&self.weight, &self.bias, &op);
            }
            if self.k == 1 && self.stride == 1 && self.groups == 1 {
                return super::ops::pointwise(x, &self.weight, &self.bias, false);
            }
        }
        self.forward_portable(x, (t, b, l, r))
    }
}

/// The f32 data of a contiguous CPU tensor.
fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

/// Depthwise 3x3 convolution (x [N,C,H,W], w [C,1,3,3], b [C]) with the zero
/// padding (`top`, `left` before; whatever `ho` x `wo` needs after) and the
/// bias fused, on the CPU. candle's grouped conv2d runs one convolution per
/// channel and concatenates them, several times slower on these small maps.
#[derive(Debug, Clone, Copy)]
struct Depthwise3x3 {
    stride: usize,
    top: usize,
    left: usize,
    ho: usize,
    wo: usize,
}

impl CustomOp3 for Depthwise3x3 {
    fn name(&self) -> &'static str {
        "depthwise3x3-tf-pad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let Self {
            stride: s,
            top,
            left,
            ho,
            wo,
        } = *self;
        if l2.shape().elem_count() != 9 * c || l3.shape().elem_count() != c {
            candle_core::bail!(
                "depthwise3x3: weight {:?} / bias {:?} do not fit {c} channels",
                l2.shape(),
                l3.shape()
            );
        }
        let (x, wt, b) = (
            cpu_slice(s1, l1, "x")?,
            cpu_slice(s2, l2, "w")?,
            cpu_slice(s3, l3, "b")?,
        );
        // The zero-padded input plane the taps read: rows/cols beyond it are
        // never touched, so only the "before" padding shifts the copy.
        let (hp, wp) = ((ho - 1) * s + 3, (wo - 1) * s + 3);
        let mut out = vec![0f32; n * c * ho * wo];
        out.par_chunks_mut(ho * wo).enumerate().for_each_init(
            || vec![0f32; hp * wp],
            |pad, (p, dst)| {
                let ch = p % c;
                let src = &x[p * h * w..][..h * w];
                pad.fill(0.0);
                let cols = w.min(wp.saturating_sub(left));
                for (r, row) in src.chunks_exact(w).enumerate().take(hp.saturating_sub(top)) {
                    pad[(r + top) * wp + left..][..cols].copy_from_slice(&row[..cols]);
                }
                let k = &wt[ch * 9..][..9];
                for (i, orow) in dst.chunks_exact_mut(wo).enumerate() {
                    orow.fill(b[ch]);
                    for u in 0..3 {
                        let prow = &pad[(i * s + u) * wp..][..wp];
                        for v in 0..3 {
                            let kv = k[u * 3 + v];
                            if s == 1 {
                                for (o, &xv) in orow.iter_mut().zip(&prow[v..v + wo]) {
                                    *o += kv * xv;
                                }
                            } else {
                                for (j, o) in orow.iter_mut().enumerate() {
                                    *o += kv * prow[j * s + v];
                                }
                            }
                        }
                    }
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }
}

/// PReLU on the CPU in one pass: x [N,C,H,W], alpha [C].
#[derive(Debug, Clone, Copy)]
struct PreluOp;

impl CustomOp2 for PreluOp {
    fn name(&self) -> &'static str {
        "prelu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, h, w) = l1.shape().dims4()?;
        let (x, alpha) = (cpu_slice(s1, l1, "x")?, cpu_slice(s2, l2, "alpha")?);
        if alpha.len() != c {
            candle_core::bail!("prelu: {} slopes for {c} channels", alpha.len());
        }
        let mut out = x.to_vec();
        out.par_chunks_mut(h * w)
            .enumerate()
            .for_each(|(p, plane)| {
                let a = alpha[p % c];
                for v in plane {
                    if *v < 0.0 {
                        *v *= a;
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// PReLU with one slope per channel: `x` where `x >= 0`, else `alpha[c] * x`.
pub(crate) struct Prelu {
    alpha: Tensor,
}

impl Prelu {
    pub(crate) fn load(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            alpha: vb.get(c, "weight")?.reshape((1, c, 1, 1))?,
        })
    }

    fn forward_portable(&self, x: &Tensor) -> Result<Tensor> {
        // relu(x) + alpha * min(x, 0): one of the two terms is exactly 0, so
        // this is the exact PReLU.
        x.relu()?.add(&x.minimum(0f32)?.broadcast_mul(&self.alpha)?)
    }
}

impl Module for Prelu {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() {
            return x.contiguous()?.apply_op2_no_bwd(&self.alpha, &PreluOp);
        }
        self.forward_portable(x)
    }
}

/// The residual shortcut of a unit: the input itself, or (stride 2) its 2x2
/// max-pool; channels beyond the input's are zeros.
pub(crate) fn shortcut(x: &Tensor, stride: usize, cout: usize) -> Result<Tensor> {
    let x = if stride == 2 {
        x.max_pool2d(2)?
    } else {
        x.clone()
    };
    let cin = x.dim(1)?;
    if cout > cin {
        x.pad_with_zeros(1, 0, cout - cin)
    } else {
        Ok(x)
    }
}

/// A conv followed by a PReLU (`<p>.conv`, `<p>.prelu`).
struct ConvPrelu {
    conv: Conv,
    prelu: Prelu,
}

impl ConvPrelu {
    fn load(vb: VarBuilder, conv: Conv, cout: usize) -> Result<Self> {
        Ok(Self {
            conv,
            prelu: Prelu::load(vb.pp("prelu"), cout)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.prelu.forward(&self.conv.forward(x)?)
    }
}

/// Depthwise 3x3 (SAME, stride 1 or 2) -> pointwise 1x1 -> + shortcut -> PReLU.
struct ResUnit {
    dw: Conv,
    pw: Conv,
    prelu: Prelu,
    stride: usize,
    cout: usize,
}

impl ResUnit {
    fn load(vb: VarBuilder, cin: usize, cout: usize, stride: usize) -> Result<Self> {
        Ok(Self {
            dw: Conv::depthwise(vb.pp("dw"), cin, stride)?,
            pw: Conv::pointwise(vb.pp("pw"), cin, cout)?,
            prelu: Prelu::load(vb.pp("prelu"), cout)?,
            stride,
            cout,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.dw.forward(x)?;
        let sum = self
            .pw
            .forward_add(&h, &shortcut(x, self.stride, self.cout)?)?;
        self.prelu.forward(&sum)
    }
}

/// One output head: residual units at 128 channels, a 1x1 projection to 32 +
/// PReLU, residual units at 32 channels, then a 3x3 VALID conv on the 3x3 map.
struct Head {
    wide: Vec<ResUnit>,
    proj: ConvPrelu,
    narrow: Vec<ResUnit>,
    out: Conv,
}

impl Head {
    /// `wide` / `narrow` are the strides of the units before / after the
    /// projection; units are numbered in order across both (`mesh.0..3`).
    fn load(vb: VarBuilder, wide: &[usize], narrow: &[usize], outputs: usize) -> Result<Self> {
        let unit = |i: usize, c: usize, s: usize| ResUnit::load(vb.pp(i.to_string()), c, c, s);
        let proj = vb.pp("proj");
        Ok(Self {
            wide: wide
                .iter()
                .enumerate()
                .map(|(i, &s)| unit(i, 128, s))
                .collect::<Result<_>>()?,
            proj: ConvPrelu::load(proj.clone(), Conv::pointwise(proj.pp("conv"), 128, 32)?, 32)?,
            narrow: narrow
                .iter()
                .enumerate()
                .map(|(i, &s)| unit(wide.len() + i, 32, s))
                .collect::<Result<_>>()?,
            out: Conv::load(vb.pp("out"), (32, outputs), 3, 3, 1, false)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for u in &self.wide {
            h = u.forward(&h)?;
        }
        h = self.proj.forward(&h)?;
        for u in &self.narrow {
            h = u.forward(&h)?;
        }
        self.out.forward(&h)
    }
}

/// Face mesh outputs for a batch of N crops.
#[derive(Debug, Clone)]
pub struct FaceMeshOutput {
    /// [N, 468, 3]: (x, y, z) in pixels of the 192x192 input.
    pub landmarks: Tensor,
    /// `[N]`: face-presence logit; the face is there when it is > 0.
    pub presence_logit: Tensor,
}

pub struct FaceMesh {
    stem: ConvPrelu,
    backbone: Vec<ResUnit>,
    mesh: Head,
    flag: Head,
    /// The same weights packed for the NHWC CPU kernels.
    kernels: super::face_mesh_nhwc::MeshKernels,
}

impl FaceMesh {
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let stem = vb.pp("stem");
        let stem = ConvPrelu::load(
            stem.clone(),
            Conv::load(stem.pp("conv"), (3, 16), 3, 2, 1, true)?,
            16,
        )?;
        let mut backbone = Vec::with_capacity(BACKBONE.len());
        let mut cin = 16;
        for (i, &(cout, stride)) in BACKBONE.iter().enumerate() {
            backbone.push(ResUnit::load(
                vb.pp(format!("backbone.{i}")),
                cin,
                cout,
                stride,
            )?);
            cin = cout;
        }
        Ok(Self {
            stem,
            backbone,
            mesh: Head::load(vb.pp("mesh"), &[2, 1, 1], &[1], 3 * NUM_LANDMARKS)?,
            flag: Head::load(vb.pp("flag"), &[2], &[1], 1)?,
            kernels: super::face_mesh_nhwc::MeshKernels::load(&vb, &BACKBONE, NUM_LANDMARKS)?,
        })
    }

    /// x: [N, 3, 192, 192] RGB in [0, 1]. On the CPU this runs on the NHWC
    /// kernels, one image per thread ([`super::nhwc::whole_images`]);
    /// elsewhere on candle's ops.
    pub fn forward(&self, x: &Tensor) -> Result<FaceMeshOutput> {
        let (n, c, h, w) = x.dims4()?;
        if (c, h, w) != (3, INPUT_SIZE, INPUT_SIZE) {
            candle_core::bail!(
                "face mesh: input must be [N, 3, {INPUT_SIZE}, {INPUT_SIZE}], got {:?}",
                x.dims()
            );
        }
        if !x.device().is_cpu() {
            return self.forward_candle(x);
        }
        let outs = super::per_chw_image(x, |img, h, w| self.kernels.forward_chw(img, h, w))?;
        let mut landmarks = Vec::with_capacity(n * 3 * NUM_LANDMARKS);
        let mut logits = Vec::with_capacity(n);
        for (l, f) in outs {
            landmarks.extend_from_slice(&l);
            logits.push(f);
        }
        Ok(FaceMeshOutput {
            landmarks: Tensor::from_vec(landmarks, (n, NUM_LANDMARKS, 3), x.device())?,
            presence_logit: Tensor::from_vec(logits, n, x.device())?,
        })
    }

    /// The same on candle's ops (with this module's CPU ops where the
    /// tensors are on the CPU): the path other devices take.
    pub fn forward_candle(&self, x: &Tensor) -> Result<FaceMeshOutput> {
        let n = x.dim(0)?;
        let mut h = self.stem.forward(x)?;
        for u in &self.backbone {
            h = u.forward(&h)?;
        }
        Ok(FaceMeshOutput {
            landmarks: self.mesh.forward(&h)?.reshape((n, NUM_LANDMARKS, 3))?,
            presence_logit: self.flag.forward(&h)?.reshape(n)?,
        })
    }
}

/// RGB crops (HWC u8, 192x192x3 each) -> the model's input [N, 3, 192, 192],
/// `pixel * (1/255)` in float32 as MediaPipe's ImageToTensorCalculator does.
pub fn input_from_rgb8(crops: &[&[u8]], device: &Device) -> Result<Tensor> {
    rgb8_to_nchw(crops, INPUT_SIZE, device, |_, p| p as f32 * (1.0 / 255.0))
}

/// HWC u8 crops of `size` x `size` x 3 -> NCHW f32 via `f(channel, pixel)`.
pub(crate) fn rgb8_to_nchw(
    crops: &[&[u8]],
    size: usize,
    device: &Device,
    f: impl Fn(usize, u8) -> f32,
) -> Result<Tensor> {
    let plane = size * size;
    let mut data = vec![0f32; crops.len() * 3 * plane];
    for (crop, dst) in crops.iter().zip(data.chunks_exact_mut(3 * plane)) {
        if crop.len() != 3 * plane {
            candle_core::bail!(
                "crop must be {size}x{size}x3 RGB bytes, got {} bytes",
                crop.len()
            );
        }
        for (i, px) in crop.chunks_exact(3).enumerate() {
            for (ch, &p) in px.iter().enumerate() {
                dst[ch * plane + i] = f(ch, p);
            }
        }
    }
    Tensor::from_vec(data, (crops.len(), 3, size, size), device)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::max_abs_diff;
    use candle_core::{DType, IndexOp};
    use std::collections::HashMap;

    pub(crate) const SKIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/skin");

    /// Weights of `models/skin/<name>.safetensors` and its goldens
    /// (`models/skin/goldens/<name>.safetensors`, from the original runtime).
    pub(crate) fn weights_and_golden(name: &str) -> (VarBuilder<'static>, HashMap<String, Tensor>) {
        let dev = Device::Cpu;
        let path = format!("{SKIN}/{name}.safetensors");
        let vb = crate::model::load_weights(path.as_ref(), &dev).unwrap();
        let golden =
            candle_core::safetensors::load(format!("{SKIN}/goldens/{name}.safetensors"), &dev)
                .unwrap();
        (vb, golden)
    }

    /// Median wall time of a few forwards, milliseconds.
    pub(crate) fn time_ms(mut f: impl FnMut()) -> f64 {
        f();
        let mut t: Vec<f64> = (0..5)
            .map(|_| {
                let t0 = std::time::Instant::now();
                f();
                t0.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        t.sort_by(f64::total_cmp);
        t[2]
    }

    #[test]
    fn same_padding_is_tensorflows() {
        assert_eq!(same_pads(192, 3, 2), (0, 1));
        assert_eq!(same_pads(96, 3, 1), (1, 1));
        assert_eq!(same_pads(6, 3, 2), (0, 1));
        assert_eq!(same_pads(7, 3, 2), (1, 1));
        assert_eq!(same_pads(8, 2, 2), (0, 0));
    }

    /// The CPU kernels (depthwise with TensorFlow padding, pointwise, PReLU)
    /// against the portable candle path other devices take.
    #[test]
    fn cpu_kernels_match_the_portable_path() {
        let dev = Device::Cpu;
        let rand = |s: &[usize]| Tensor::randn(0f32, 1.0, s, &dev).unwrap();
        let vb = |c: usize, k: usize, cin: usize| {
            let t = HashMap::from([
                ("weight".to_string(), rand(&[c, cin, k, k])),
                ("bias".to_string(), rand(&[c])),
            ]);
            VarBuilder::from_tensors(t, DType::F32, &dev)
        };
        for (h, w, stride) in [
            (12, 12, 1),
            (12, 12, 2),
            (7, 9, 1),
            (7, 9, 2),
            (2, 2, 1),
            (3, 3, 1),
        ] {
            let x = rand(&[2, 5, h, w]);
            let conv = Conv::depthwise(vb(5, 3, 1), 5, stride).unwrap();
            let pads = (same_pads(h, 3, stride), same_pads(w, 3, stride));
            let want = conv
                .forward_portable(&x, (pads.0 .0, pads.0 .1, pads.1 .0, pads.1 .1))
                .unwrap();
            let got = conv.forward(&x).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert!(
                max_abs_diff(&got, &want) < 1e-5,
                "depthwise {h}x{w}/{stride}"
            );
        }
        let x = rand(&[2, 6, 5, 7]);
        let pw = Conv::pointwise(vb(4, 1, 6), 6, 4).unwrap();
        let d = max_abs_diff(
            &pw.forward(&x).unwrap(),
            &pw.forward_portable(&x, (0, 0, 0, 0)).unwrap(),
        );
        assert!(d < 1e-5, "pointwise {d}");
        let prelu = Prelu {
            alpha: rand(&[6]).reshape((1, 6, 1, 1)).unwrap(),
        };
        assert_eq!(
            max_abs_diff(
                &prelu.forward(&x).unwrap(),
                &prelu.forward_portable(&x).unwrap()
            ),
            0.0
        );
    }

    /// Parity with the TFLite interpreter on a real face crop. Tolerances:
    /// the numpy reference, which follows the same graph in float32, differs
    /// from TFLite by 1.1e-4 px and 7.6e-6 on the logit (summation order;
    /// TFLite's own reference and XNNPACK kernels differ by 6e-5 px), so 1e-3
    /// px (landmarks reach ~170 px; 5e-6 of the crop) and 1e-3 on a logit of
    /// ~24 leave room for candle's kernel order while a misplaced pad (a
    /// one-pixel grid shift) or a wrong PReLU shows up as whole pixels.
    #[test]
    fn matches_tflite_on_a_real_face() {
        let (vb, golden) = weights_and_golden("face_mesh");
        let model = FaceMesh::load(vb).unwrap();
        let x = &golden["input"];
        // The NHWC kernels (what the CPU runs) and candle's ops (the other
        // devices' path) each against TFLite.
        type Path = fn(&FaceMesh, &Tensor) -> Result<FaceMeshOutput>;
        for (name, f) in [
            ("nhwc", FaceMesh::forward as Path),
            ("candle", FaceMesh::forward_candle as Path),
        ] {
            let out = f(&model, x).unwrap();
            let lm = max_abs_diff(&out.landmarks.i(0).unwrap(), &golden["landmarks"]);
            let logit = max_abs_diff(&out.presence_logit, &golden["face_flag_logit"]);
            let ms = time_ms(|| {
                f(&model, x).unwrap();
            });
            println!(
                "face mesh ({name}): landmarks max |diff| {lm:.3e} px, logit {logit:.3e}; forward {ms:.1} ms"
            );
            assert!(lm < 1e-3, "{name}: landmarks differ by {lm} px");
            assert!(logit < 1e-3, "{name}: presence logit differs by {logit}");
            assert!(out.presence_logit.i(0).unwrap().to_scalar::<f32>().unwrap() > 0.0);
        }
    }

    #[test]
    fn rgb8_input_is_the_goldens() {
        let (_, golden) = weights_and_golden("face_mesh");
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
        let (vb, golden) = weights_and_golden("face_mesh");
        let model = FaceMesh::load(vb).unwrap();
        let a = golden["input"].clone();
        let b = a.flip(&[3]).unwrap().affine(0.8, 0.1).unwrap();
        let batch = model.forward(&Tensor::cat(&[&a, &b], 0).unwrap()).unwrap();
        assert_eq!(batch.landmarks.dims(), [2, NUM_LANDMARKS, 3]);
        assert_eq!(batch.presence_logit.dims(), [2]);
        for (i, x) in [a, b].iter().enumerate() {
            let one = model.forward(x).unwrap();
            let d = max_abs_diff(&batch.landmarks.i(i).unwrap(), &one.landmarks.i(0).unwrap());
            let dl = max_abs_diff(
                &batch.presence_logit.i(i).unwrap(),
                &one.presence_logit.i(0).unwrap(),
            );
            assert!(d < 1e-4 && dl < 1e-4, "row {i}: {d} px, logit {dl}");
        }
    }

    #[test]
    fn rejects_other_sizes() {
        let (vb, _) = weights_and_golden("face_mesh");
        let model = FaceMesh::load(vb).unwrap();
        let x = Tensor::zeros((1, 3, 128, 128), DType::F32, &Device::Cpu).unwrap();
        assert!(model.forward(&x).is_err());
    }
}
