//! The skin family's models on the GPU devices: MediaPipe's face mesh and
//! iris nets (`model::face_mesh`, `model::iris`) and face-api's age net
//! (`model::age`), block for block, from the same checkpoints. The CPU
//! modules document the graphs and their sources; the ops here follow
//! their candle paths (TensorFlow SAME padding included).

use candle_nn::VarBuilder;

use super::ops::{self, Conv, Relu, Slopes};
use super::{f32s, load_conv, load_err, Compute, GpuError, Record, Result, Tensor};
use crate::frame::{EyePoints, MeshPoints};
use crate::model::{age, face_mesh, iris};

type Load<T> = candle_core::Result<T>;

/// PReLU slopes `<vb>.weight`, one per channel.
fn load_slopes<D: Compute>(dev: &D, vb: VarBuilder, c: usize) -> Load<Slopes<D::Buf>> {
    let alpha = vb.get(c, "weight")?.to_vec1::<f32>()?;
    Slopes::new(dev, &alpha).map_err(load_err)
}

/// Depthwise 3x3 `[c, 1, 3, 3]`.
fn load_dw<D: Compute>(dev: &D, vb: VarBuilder, c: usize) -> Load<Conv<D::Buf>> {
    load_conv(dev, &vb, [c, 1, 3, 3])
}

/// Dense `[cout, cin, k, k]`.
fn load_dense<D: Compute>(
    dev: &D,
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
) -> Load<Conv<D::Buf>> {
    load_conv(dev, &vb, [cout, cin, k, k])
}

/// One residual unit of the MediaPipe nets: an optional reduction (the
/// iris net's 1x1, or 2x2/s2 VALID where it downsamples) + PReLU, a
/// depthwise 3x3 SAME, a pointwise 1x1 with the shortcut added (the input,
/// or its 2x2 max-pool at stride 2; channels past the input's are zeros),
/// then PReLU.
struct Unit<B> {
    reduce: Option<(Conv<B>, Slopes<B>)>,
    dw: Conv<B>,
    pw: Conv<B>,
    prelu: Slopes<B>,
    stride: usize,
}

impl<B> Unit<B> {
    /// The face mesh's unit: the depthwise conv carries the stride.
    fn mesh<D: Compute<Buf = B>>(
        dev: &D,
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        stride: usize,
    ) -> Load<Self> {
        Ok(Self {
            reduce: None,
            dw: load_dw(dev, vb.pp("dw"), cin)?,
            pw: load_dense(dev, vb.pp("pw"), cin, cout, 1)?,
            prelu: load_slopes(dev, vb.pp("prelu"), cout)?,
            stride,
        })
    }

    /// The iris net's bottleneck unit (`cin` -> `mid` -> `cout`): the
    /// reduction carries the stride.
    fn iris<D: Compute<Buf = B>>(
        dev: &D,
        vb: VarBuilder,
        (cin, mid, cout, down): (usize, usize, usize, bool),
    ) -> Load<Self> {
        let k = if down { 2 } else { 1 };
        Ok(Self {
            reduce: Some((
                load_dense(dev, vb.pp("reduce"), cin, mid, k)?,
                load_slopes(dev, vb.pp("reduce_prelu"), mid)?,
            )),
            dw: load_dw(dev, vb.pp("dw"), mid)?,
            pw: load_dense(dev, vb.pp("pw"), mid, cout, 1)?,
            prelu: load_slopes(dev, vb.pp("prelu"), cout)?,
            stride: k,
        })
    }

    fn forward<R: Record<Buf = B>>(&self, r: &mut R, x: &Tensor<B>) -> Result<Tensor<B>> {
        let h = match &self.reduce {
            Some((conv, slopes)) => {
                let h = if conv.k == 1 {
                    ops::conv1x1(r, x, conv, false, None)?
                } else {
                    ops::conv2d(r, x, conv, conv.k, 0, false)?
                };
                ops::prelu(r, &h, slopes)?;
                ops::depthwise_same(r, &h, &self.dw, 1, Relu::Off)?
            }
            None => ops::depthwise_same(r, x, &self.dw, self.stride, Relu::Off)?,
        };
        let pooled;
        let shortcut = if self.stride == 2 {
            pooled = ops::maxpool2x2(r, x)?;
            &pooled
        } else {
            x
        };
        let y = ops::conv1x1(r, &h, &self.pw, false, Some(shortcut))?;
        ops::prelu(r, &y, &self.prelu)?;
        Ok(y)
    }
}

/// A conv with a PReLU after it (TensorFlow SAME when `same`).
struct ConvPrelu<B> {
    conv: Conv<B>,
    prelu: Slopes<B>,
    stride: usize,
}

impl<B> ConvPrelu<B> {
    fn load<D: Compute<Buf = B>>(
        dev: &D,
        vb: VarBuilder,
        (cin, cout, k, stride): (usize, usize, usize, usize),
    ) -> Load<Self> {
        Ok(Self {
            conv: load_dense(dev, vb.pp("conv"), cin, cout, k)?,
            prelu: load_slopes(dev, vb.pp("prelu"), cout)?,
            stride,
        })
    }

    fn forward<R: Record<Buf = B>>(&self, r: &mut R, x: &Tensor<B>) -> Result<Tensor<B>> {
        let y = if self.conv.k == 1 {
            ops::conv1x1(r, x, &self.conv, false, None)?
        } else {
            ops::conv2d_same(r, x, &self.conv, self.stride, false)?
        };
        ops::prelu(r, &y, &self.prelu)?;
        Ok(y)
    }
}

/// A head: units, for the face mesh a 1x1 projection + PReLU and more
/// units, then a VALID conv (kernel = stride = the map's edge for the
/// mesh; 2x2 on 2x2 for the iris net) to one value per output.
struct Head<B> {
    units: Vec<Unit<B>>,
    proj: Option<(ConvPrelu<B>, Vec<Unit<B>>)>,
    out: Conv<B>,
}

impl<B> Head<B> {
    fn forward<R: Record<Buf = B>>(&self, r: &mut R, x: &Tensor<B>) -> Result<Tensor<B>> {
        let mut h = self.units[0].forward(r, x)?;
        for u in &self.units[1..] {
            h = u.forward(r, &h)?;
        }
        if let Some((proj, narrow)) = &self.proj {
            h = proj.forward(r, &h)?;
            for u in narrow {
                h = u.forward(r, &h)?;
            }
        }
        ops::conv2d(r, &h, &self.out, self.out.k, 0, false)
    }
}

/// Runs `forward` over `count` items of `per` input values in as many
/// submissions as the activation budget and the largest binding allow:
/// `peak` is the largest tensor one item needs, `total` all of an item's
/// activations together (every intermediate lives until the submission
/// completes), both bytes. Returns the readbacks per submission, with the
/// item count of each.
fn in_chunks<D: Compute>(
    dev: &D,
    data: &[f32],
    [c, h, w]: [usize; 3],
    (peak, total): (u64, u64),
    mut forward: impl FnMut(&mut D::Rec<'_>, &Tensor<D::Buf>) -> Result<Vec<Tensor<D::Buf>>>,
) -> Result<Vec<(usize, Vec<Vec<f32>>)>> {
    let per = c * h * w;
    if per == 0 || !data.len().is_multiple_of(per) {
        return Err(GpuError::Shape(format!(
            "{} values for inputs of {c}x{h}x{w}",
            data.len()
        )));
    }
    let count = data.len() / per;
    let chunk = (dev.max_binding() / peak)
        .min(super::ACTIVATION_BUDGET / total)
        .max(1) as usize;
    let mut out = Vec::new();
    for start in (0..count).step_by(chunk) {
        let k = chunk.min(count - start);
        let mut r = dev.recorder();
        let x = dev.tensor_from([k, c, h, w], &data[start * per..(start + k) * per])?;
        let ys = forward(&mut r, &x)?;
        let reads = ys
            .iter()
            .map(|y| r.read(&y.buf, (y.len() * 4) as u64))
            .collect::<Result<Vec<_>>>()?;
        let bytes = r.finish()?;
        out.push((k, reads.iter().map(|rb| f32s(&bytes[rb.0])).collect()));
    }
    Ok(out)
}

/// HWC u8 crops as the model's NCHW input, scaled by `input_from_rgb8`.
fn host_input(
    crops: &[&[u8]],
    input: fn(&[&[u8]], &candle_core::Device) -> candle_core::Result<candle_core::Tensor>,
) -> Result<Vec<f32>> {
    input(crops, &candle_core::Device::Cpu)
        .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
        .map_err(|e| GpuError::Shape(e.to_string()))
}

/// `[x, y, z]` triples of one flat row.
fn triples(row: &[f32]) -> Vec<[f32; 3]> {
    row.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect()
}

/// Per-image bytes of the face mesh's largest tensor (16 channels at
/// 96x96) and of all its activations (6.2 MB, counted by the
/// `activations_fit_their_bounds` test), rounded up.
const MESH_BYTES: (u64, u64) = (16 * 96 * 96 * 4, 8 << 20);
/// The iris net's: 64 channels at 32x32; all together 4.2 MB.
const IRIS_BYTES: (u64, u64) = (64 * 32 * 32 * 4, 5 << 20);
/// The age net's: 64 channels at 56x56; all together 7.4 MB.
const AGE_BYTES: (u64, u64) = (64 * 56 * 56 * 4, 9 << 20);

/// MediaPipe Face Mesh on the device (`model::face_mesh`).
pub struct GpuFaceMesh<B> {
    stem: ConvPrelu<B>,
    backbone: Vec<Unit<B>>,
    mesh: Head<B>,
    flag: Head<B>,
}

impl<B> GpuFaceMesh<B> {
    pub fn load<D: Compute<Buf = B>>(dev: &D, vb: VarBuilder) -> Load<Self> {
        let mut backbone = Vec::with_capacity(face_mesh::BACKBONE.len());
        let mut cin = 16;
        for (i, &(cout, stride)) in face_mesh::BACKBONE.iter().enumerate() {
            backbone.push(Unit::mesh(
                dev,
                vb.pp(format!("backbone.{i}")),
                cin,
                cout,
                stride,
            )?);
            cin = cout;
        }
        // Units are numbered across both sides of the projection.
        let head = |vb: VarBuilder, wide: &[usize], outputs: usize| -> Load<Head<B>> {
            let unit =
                |i: usize, c: usize, s: usize| Unit::mesh(dev, vb.pp(i.to_string()), c, c, s);
            Ok(Head {
                units: wide
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| unit(i, 128, s))
                    .collect::<Load<_>>()?,
                proj: Some((
                    ConvPrelu::load(dev, vb.pp("proj"), (128, 32, 1, 1))?,
                    vec![unit(wide.len(), 32, 1)?],
                )),
                out: load_dense(dev, vb.pp("out"), 32, outputs, 3)?,
            })
        };
        Ok(Self {
            stem: ConvPrelu::load(dev, vb.pp("stem"), (3, 16, 3, 2))?,
            backbone,
            mesh: head(vb.pp("mesh"), &[2, 1, 1], 3 * face_mesh::NUM_LANDMARKS)?,
            flag: head(vb.pp("flag"), &[2], 1)?,
        })
    }

    /// `[n, 3, 192, 192]` RGB in [0, 1] -> the mesh `[n, 1404, 1, 1]` (468
    /// (x, y, z) in input pixels) and the presence logits `[n, 1, 1, 1]`.
    pub fn forward<R: Record<Buf = B>>(&self, r: &mut R, x: &Tensor<B>) -> Result<[Tensor<B>; 2]> {
        let side = face_mesh::INPUT_SIZE;
        if x.shape[1..] != [3, side, side] {
            return Err(GpuError::Shape(format!(
                "face mesh: input must be [n, 3, {side}, {side}], got {:?}",
                x.shape
            )));
        }
        let mut h = self.stem.forward(r, x)?;
        for u in &self.backbone {
            h = u.forward(r, &h)?;
        }
        Ok([self.mesh.forward(r, &h)?, self.flag.forward(r, &h)?])
    }

    /// 192x192 RGB crops (HWC u8) -> landmarks and P(face) per crop, as the
    /// CPU backend gives them.
    pub fn run<D: Compute<Buf = B>>(&self, dev: &D, crops: &[&[u8]]) -> Result<Vec<MeshPoints>> {
        let data = host_input(crops, face_mesh::input_from_rgb8)?;
        let side = face_mesh::INPUT_SIZE;
        let chunks = in_chunks(dev, &data, [3, side, side], MESH_BYTES, |r, x| {
            Ok(self.forward(r, x)?.into())
        })?;
        let per = 3 * face_mesh::NUM_LANDMARKS;
        let mut out = Vec::with_capacity(crops.len());
        for (k, maps) in chunks {
            for i in 0..k {
                out.push(MeshPoints {
                    points: triples(&maps[0][i * per..][..per]),
                    presence: 1.0 / (1.0 + (-maps[1][i]).exp()),
                });
            }
        }
        Ok(out)
    }
}

/// MediaPipe Iris on the device (`model::iris`).
pub struct GpuIris<B> {
    stem: ConvPrelu<B>,
    backbone: Vec<Unit<B>>,
    contour: Head<B>,
    iris: Head<B>,
}

impl<B> GpuIris<B> {
    pub fn load<D: Compute<Buf = B>>(dev: &D, vb: VarBuilder) -> Load<Self> {
        let head = |vb: VarBuilder, outputs: usize| -> Load<Head<B>> {
            Ok(Head {
                units: iris::HEAD_DOWN
                    .iter()
                    .enumerate()
                    .map(|(i, &down)| Unit::iris(dev, vb.pp(i.to_string()), (128, 64, 128, down)))
                    .collect::<Load<_>>()?,
                proj: None,
                out: load_dense(dev, vb.pp("out"), 128, outputs, 2)?,
            })
        };
        Ok(Self {
            stem: ConvPrelu::load(dev, vb.pp("stem"), (3, 64, 3, 2))?,
            backbone: iris::BACKBONE
                .iter()
                .enumerate()
                .map(|(i, &cfg)| Unit::iris(dev, vb.pp(format!("backbone.{i}")), cfg))
                .collect::<Load<_>>()?,
            contour: head(vb.pp("contour"), 3 * iris::NUM_CONTOUR)?,
            iris: head(vb.pp("iris"), 3 * iris::NUM_IRIS)?,
        })
    }

    /// `[n, 3, 64, 64]` RGB in [0, 1], left eyes -> contour `[n, 213, 1,
    /// 1]` and iris `[n, 15, 1, 1]`, (x, y, z) in input pixels.
    pub fn forward<R: Record<Buf = B>>(&self, r: &mut R, x: &Tensor<B>) -> Result<[Tensor<B>; 2]> {
        let side = iris::INPUT_SIZE;
        if x.shape[1..] != [3, side, side] {
            return Err(GpuError::Shape(format!(
                "iris: input must be [n, 3, {side}, {side}], got {:?}",
                x.shape
            )));
        }
        let mut h = self.stem.forward(r, x)?;
        for u in &self.backbone {
            h = u.forward(r, &h)?;
        }
        Ok([self.contour.forward(r, &h)?, self.iris.forward(r, &h)?])
    }

    /// 64x64 RGB eye crops (HWC u8) -> eye points per crop, as the CPU
    /// backend gives them.
    pub fn run<D: Compute<Buf = B>>(&self, dev: &D, crops: &[&[u8]]) -> Result<Vec<EyePoints>> {
        let data = host_input(crops, iris::input_from_rgb8)?;
        let side = iris::INPUT_SIZE;
        let chunks = in_chunks(dev, &data, [3, side, side], IRIS_BYTES, |r, x| {
            Ok(self.forward(r, x)?.into())
        })?;
        let (nc, ni) = (3 * iris::NUM_CONTOUR, 3 * iris::NUM_IRIS);
        let mut out = Vec::with_capacity(crops.len());
        for (k, maps) in chunks {
            for i in 0..k {
                let p = triples(&maps[1][i * ni..][..ni]);
                out.push(EyePoints {
                    contour: triples(&maps[0][i * nc..][..nc]),
                    iris: [p[0], p[1], p[2], p[3], p[4]],
                });
            }
        }
        Ok(out)
    }
}

/// Depthwise 3x3 SAME then pointwise 1x1: TensorFlow's separable conv.
struct Separable<B> {
    dw: Conv<B>,
    pw: Conv<B>,
}

impl<B> Separable<B> {
    fn load<D: Compute<Buf = B>>(dev: &D, vb: VarBuilder, cin: usize, cout: usize) -> Load<Self> {
        Ok(Self {
            dw: load_dw(dev, vb.pp("dw"), cin)?,
            pw: load_dense(dev, vb.pp("pw"), cin, cout, 1)?,
        })
    }

    /// `relu_in`: ReLU of the input as the depthwise conv reads it;
    /// `relu_out`: of the pointwise's output (before `residual`).
    fn forward<R: Record<Buf = B>>(
        &self,
        r: &mut R,
        x: &Tensor<B>,
        relu_in: bool,
        relu_out: bool,
        residual: Option<&Tensor<B>>,
    ) -> Result<Tensor<B>> {
        let relu = if relu_in { Relu::Input } else { Relu::Off };
        let h = ops::depthwise_same(r, x, &self.dw, 1, relu)?;
        ops::conv1x1(r, &h, &self.pw, relu_out, residual)
    }
}

/// Xception's reduction block: [ReLU] sep, ReLU, sep, 3x3/s2 max-pool,
/// plus a 1x1/s2 conv of the block's raw input.
struct Reduction<B> {
    seps: [Separable<B>; 2],
    expand: Conv<B>,
    activate_input: bool,
}

impl<B> Reduction<B> {
    fn load<D: Compute<Buf = B>>(
        dev: &D,
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        activate_input: bool,
    ) -> Load<Self> {
        Ok(Self {
            seps: [
                Separable::load(dev, vb.pp("sep0"), cin, cout)?,
                Separable::load(dev, vb.pp("sep1"), cout, cout)?,
            ],
            expand: load_dense(dev, vb.pp("expand"), cin, cout, 1)?,
            activate_input,
        })
    }

    fn forward<R: Record<Buf = B>>(&self, r: &mut R, x: &Tensor<B>) -> Result<Tensor<B>> {
        let h = self.seps[0].forward(r, x, self.activate_input, true, None)?;
        let h = self.seps[1].forward(r, &h, false, false, None)?;
        // A 1x1 SAME conv at stride 2 pads nothing: the even pixels.
        let shortcut = ops::conv2d(r, x, &self.expand, 2, 0, false)?;
        ops::maxpool_same(r, &h, 3, 2, Some(&shortcut))
    }
}

/// face-api's age net on the device (`model::age`).
pub struct GpuAge<B> {
    conv_in: Conv<B>,
    reductions: [Reduction<B>; 3],
    /// The two main blocks' three separable convs each.
    mains: [[Separable<B>; 3]; 2],
    exit_sep: Separable<B>,
    fc: Conv<B>,
}

impl<B> GpuAge<B> {
    pub fn load<D: Compute<Buf = B>>(dev: &D, vb: VarBuilder) -> Load<Self> {
        let (entry, middle) = (vb.pp("entry"), vb.pp("middle"));
        let main = |i: usize| -> Load<[Separable<B>; 3]> {
            let sep =
                |j: usize| Separable::load(dev, middle.pp(format!("block{i}.sep{j}")), 128, 128);
            Ok([sep(0)?, sep(1)?, sep(2)?])
        };
        let fc = vb.pp("fc_age");
        Ok(Self {
            conv_in: load_dense(dev, entry.pp("conv_in"), 3, 32, 3)?,
            reductions: [
                Reduction::load(dev, entry.pp("block0"), 32, 64, false)?,
                Reduction::load(dev, entry.pp("block1"), 64, 128, true)?,
                Reduction::load(dev, vb.pp("exit.block"), 128, 256, true)?,
            ],
            mains: [main(0)?, main(1)?],
            exit_sep: Separable::load(dev, vb.pp("exit.sep"), 256, 512)?,
            fc: Conv::new(
                dev,
                &fc.get((1, 512), "weight")?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
                &fc.get(1, "bias")?.to_vec1::<f32>()?,
                1,
                512,
                1,
            )
            .map_err(load_err)?,
        })
    }

    /// `[n, 3, 112, 112]` normalised crops -> ages `[n, 1, 1, 1]`, years.
    pub fn forward<R: Record<Buf = B>>(&self, r: &mut R, x: &Tensor<B>) -> Result<Tensor<B>> {
        let side = age::INPUT_SIZE;
        if x.shape[1..] != [3, side, side] {
            return Err(GpuError::Shape(format!(
                "age: input must be [n, 3, {side}, {side}], got {:?}",
                x.shape
            )));
        }
        let [entry0, entry1, exit] = &self.reductions;
        let mut h = ops::conv2d_same(r, x, &self.conv_in, 2, true)?;
        h = entry0.forward(r, &h)?;
        h = entry1.forward(r, &h)?;
        for [a, b, c] in &self.mains {
            let t = a.forward(r, &h, true, true, None)?;
            let t = b.forward(r, &t, false, true, None)?;
            h = c.forward(r, &t, false, false, Some(&h))?;
        }
        h = exit.forward(r, &h)?;
        h = self.exit_sep.forward(r, &h, false, true, None)?;
        let pooled = ops::global_avg_pool(r, &h)?;
        ops::linear(r, &pooled, &self.fc)
    }

    /// 112x112 RGB face crops (HWC u8) -> apparent age per crop, years.
    pub fn run<D: Compute<Buf = B>>(&self, dev: &D, crops: &[&[u8]]) -> Result<Vec<f32>> {
        let data = host_input(crops, age::input_from_rgb8)?;
        let side = age::INPUT_SIZE;
        let chunks = in_chunks(dev, &data, [3, side, side], AGE_BYTES, |r, x| {
            Ok(vec![self.forward(r, x)?])
        })?;
        Ok(chunks
            .into_iter()
            .flat_map(|(k, maps)| maps[0][..k].to_vec())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{on_every_device, Readback};
    use crate::model::age::AgeNet;
    use crate::model::face_mesh::tests::weights_and_golden;
    use crate::model::face_mesh::FaceMesh;
    use crate::model::iris::IrisNet;
    use candle_core::Device;

    /// The golden crop (HWC u8) and its mirror image: two different faces
    /// or eyes for the nets, so a batch's rows are told apart.
    fn crop_and_mirror(
        golden: &std::collections::HashMap<String, candle_core::Tensor>,
    ) -> [Vec<u8>; 2] {
        let image = golden["image"]
            .flatten_all()
            .unwrap()
            .to_vec1::<u8>()
            .unwrap();
        let side = golden["image"].dims()[0];
        let mirror = image
            .chunks_exact(3 * side)
            .flat_map(|row| {
                row.chunks_exact(3)
                    .rev()
                    .flatten()
                    .copied()
                    .collect::<Vec<_>>()
            })
            .collect();
        [image, mirror]
    }

    fn max_diff(a: &[[f32; 3]], b: &[f32]) -> f32 {
        assert_eq!(a.len() * 3, b.len());
        a.iter()
            .flatten()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn flat(t: &candle_core::Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Tolerances as the CPU nets' own tests against the original runtimes
    /// (1e-3 px; 1e-3 years): f32 in another summation order, while any
    /// graph error (a pad on the wrong side, a missing shortcut) moves the
    /// points by pixels.
    #[test]
    fn face_mesh_matches_tflite_and_the_cpu_net() {
        on_every_device!(face_mesh_on);
    }

    fn face_mesh_on<D: Compute>(gpu: &D) {
        let (vb, golden) = weights_and_golden("face_mesh");
        let cpu = FaceMesh::load(vb.clone()).unwrap();
        let dev = GpuFaceMesh::load(gpu, vb).unwrap();
        let crops = crop_and_mirror(&golden);
        let refs: Vec<&[u8]> = crops.iter().map(Vec::as_slice).collect();
        let got = dev.run(gpu, &refs).unwrap();
        assert_eq!(got.len(), 2);
        let d = max_diff(&got[0].points, &flat(&golden["landmarks"]));
        let logit = flat(&golden["face_flag_logit"])[0];
        let p = 1.0 / (1.0 + (-logit).exp());
        println!("face mesh ({}): {d:.3e} px from TFLite", gpu.describe());
        assert!(d < 1e-3, "landmarks {d} px from TFLite");
        assert!((got[0].presence - p).abs() < 1e-5);
        let want = cpu
            .forward(&face_mesh::input_from_rgb8(&refs, &Device::Cpu).unwrap())
            .unwrap();
        let (lm, logits) = (flat(&want.landmarks), flat(&want.presence_logit));
        let per = 3 * face_mesh::NUM_LANDMARKS;
        for (i, g) in got.iter().enumerate() {
            let d = max_diff(&g.points, &lm[i * per..][..per]);
            assert!(d < 1e-3, "crop {i}: {d} px from the CPU net");
            let p = 1.0 / (1.0 + (-logits[i]).exp());
            assert!((g.presence - p).abs() < 1e-5, "crop {i}");
        }
        // A wrong input size is refused, not run.
        let x = gpu.tensor_from([1, 3, 8, 8], &[0.0; 192]).unwrap();
        assert!(dev.forward(&mut gpu.recorder(), &x).is_err());
    }

    #[test]
    fn iris_matches_tflite_and_the_cpu_net() {
        on_every_device!(iris_on);
    }

    fn iris_on<D: Compute>(gpu: &D) {
        let (vb, golden) = weights_and_golden("iris");
        let cpu = IrisNet::load(vb.clone()).unwrap();
        let dev = GpuIris::load(gpu, vb).unwrap();
        let crops = crop_and_mirror(&golden);
        let refs: Vec<&[u8]> = crops.iter().map(Vec::as_slice).collect();
        let got = dev.run(gpu, &refs).unwrap();
        assert_eq!(got.len(), 2);
        let dc = max_diff(&got[0].contour, &flat(&golden["eye_contour"]));
        let di = max_diff(&got[0].iris, &flat(&golden["iris"]));
        println!(
            "iris ({}): contour {dc:.3e} px, iris {di:.3e} px from TFLite",
            gpu.describe()
        );
        assert!(
            dc < 1e-3 && di < 1e-3,
            "contour {dc} px, iris {di} px from TFLite"
        );
        let want = cpu
            .forward(&iris::input_from_rgb8(&refs, &Device::Cpu).unwrap())
            .unwrap();
        let (contour, points) = (flat(&want.contour), flat(&want.iris));
        let (nc, ni) = (3 * iris::NUM_CONTOUR, 3 * iris::NUM_IRIS);
        for (i, g) in got.iter().enumerate() {
            let dc = max_diff(&g.contour, &contour[i * nc..][..nc]);
            let di = max_diff(&g.iris, &points[i * ni..][..ni]);
            assert!(
                dc < 1e-3 && di < 1e-3,
                "crop {i}: {dc} / {di} px from the CPU net"
            );
        }
        // One item per submission gives what one submission of both gave.
        let data = host_input(&refs, iris::input_from_rgb8).unwrap();
        let side = iris::INPUT_SIZE;
        let one_each = in_chunks(
            gpu,
            &data,
            [3, side, side],
            (gpu.max_binding(), 1),
            |r, x| Ok(dev.forward(r, x)?.into()),
        )
        .unwrap();
        assert_eq!(one_each.len(), 2);
        for (i, (k, maps)) in one_each.iter().enumerate() {
            assert_eq!(*k, 1);
            assert_eq!(max_diff(&got[i].contour, &maps[0]), 0.0, "crop {i}");
        }
    }

    #[test]
    fn age_matches_tensorflow_js_and_the_cpu_net() {
        on_every_device!(age_on);
    }

    fn age_on<D: Compute>(gpu: &D) {
        let (vb, golden) = weights_and_golden("age");
        let cpu = AgeNet::load(vb.clone()).unwrap();
        let dev = GpuAge::load(gpu, vb).unwrap();
        let crops = crop_and_mirror(&golden);
        let refs: Vec<&[u8]> = crops.iter().map(Vec::as_slice).collect();
        let got = dev.run(gpu, &refs).unwrap();
        let want = flat(&golden["age"])[0];
        println!("age ({}): {} vs {want} years", gpu.describe(), got[0]);
        assert!(
            (got[0] - want).abs() < 1e-3,
            "{} years, TF.js {want}",
            got[0]
        );
        let cpu = flat(
            &cpu.forward(&age::input_from_rgb8(&refs, &Device::Cpu).unwrap())
                .unwrap(),
        );
        assert_eq!(got.len(), cpu.len());
        for (g, c) in got.iter().zip(&cpu) {
            assert!((g - c).abs() < 1e-3, "{g} years, the CPU net {c}");
        }
    }

    /// A recorder that adds up the tensors a forward allocates (`tensor`
    /// takes `&self`, hence the cells).
    struct Counting<R> {
        inner: R,
        total: std::cell::Cell<u64>,
        peak: std::cell::Cell<u64>,
    }

    impl<R: Record> Record for Counting<R> {
        type Buf = R::Buf;

        fn dispatch(
            &mut self,
            name: &str,
            params: &[u32],
            bufs: &[&R::Buf],
            groups: [u32; 3],
        ) -> Result<()> {
            self.inner.dispatch(name, params, bufs, groups)
        }
        fn size(&self, buf: &R::Buf) -> u64 {
            self.inner.size(buf)
        }
        fn tensor(&self, shape: [usize; 4]) -> Result<Tensor<R::Buf>> {
            let bytes = 4 * shape.iter().product::<usize>() as u64;
            self.total.set(self.total.get() + bytes);
            self.peak.set(self.peak.get().max(bytes));
            self.inner.tensor(shape)
        }
        fn read(&mut self, buf: &R::Buf, len: u64) -> Result<Readback> {
            self.inner.read(buf, len)
        }
        fn finish(self) -> Result<Vec<Vec<u8>>> {
            self.inner.finish()
        }
    }

    /// The per-image bounds the models split batches by hold: every
    /// tensor one image's forward allocates, counted, within them.
    #[test]
    fn activations_fit_their_bounds() {
        on_every_device!(activations_on);
    }

    fn activations_on<D: Compute>(gpu: &D) {
        let count = |side: usize,
                     bounds: (u64, u64),
                     f: &dyn Fn(&mut Counting<D::Rec<'_>>, &Tensor<D::Buf>)| {
            let mut r = Counting {
                inner: gpu.recorder(),
                total: 0.into(),
                peak: 0.into(),
            };
            let x = gpu
                .tensor_from([1, 3, side, side], &vec![0.5; 3 * side * side])
                .unwrap();
            f(&mut r, &x);
            let (peak, total) = (r.peak.get(), r.total.get());
            println!("{side}x{side}: peak {peak} B, total {total} B");
            assert!(
                peak <= bounds.0 && total <= bounds.1,
                "{peak} / {total} over {bounds:?}"
            );
            // Within a third: a bound far above the use wastes batch room.
            assert!(3 * total > 2 * bounds.1, "{total} far under {}", bounds.1);
            r.finish().unwrap();
        };
        let (vb, _) = weights_and_golden("face_mesh");
        let mesh = GpuFaceMesh::load(gpu, vb).unwrap();
        count(face_mesh::INPUT_SIZE, MESH_BYTES, &|r, x| {
            mesh.forward(r, x).unwrap();
        });
        let (vb, _) = weights_and_golden("iris");
        let eyes = GpuIris::load(gpu, vb).unwrap();
        count(iris::INPUT_SIZE, IRIS_BYTES, &|r, x| {
            eyes.forward(r, x).unwrap();
        });
        let (vb, _) = weights_and_golden("age");
        let ages = GpuAge::load(gpu, vb).unwrap();
        count(age::INPUT_SIZE, AGE_BYTES, &|r, x| {
            ages.forward(r, x).unwrap();
        });
    }
}
