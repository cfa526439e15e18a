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

/// A conv with a PReLU after it: a 1x1, or a k x k with TensorFlow's SAME
/// padding at `stride`.
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
/// units, then a VALID conv whose kernel and stride are the map's edge
/// (3x3 for the mesh, 2x2 for the iris net): one value per output.
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

/// What one image needs on the device, which bounds how many go in one
/// submission (every intermediate lives until the submission completes).
#[derive(Debug, Clone, Copy)]
struct Footprint {
    /// Bytes of its largest tensor, against the largest binding.
    peak: u64,
    /// Bytes of all its activations together, against the activation budget.
    total: u64,
    /// The most workgroups along z of any of its dispatches (planes, or
    /// blocks of output channels), against the 65,535 per-dimension limit.
    planes: u64,
}

impl Footprint {
    /// Images per submission on a device whose bindings reach `max_binding`
    /// bytes.
    fn chunk(&self, max_binding: u64) -> usize {
        (max_binding / self.peak)
            .min(super::ACTIVATION_BUDGET / self.total)
            .min(65_535 / self.planes)
            .max(1) as usize
    }
}

/// The face mesh: 16 channels at 96x96; 6.2 MB counted by the
/// `activations_fit_their_footprints` test, rounded up; the mesh head's
/// 1404 outputs in blocks of 8.
const MESH: Footprint = Footprint {
    peak: 16 * 96 * 96 * 4,
    total: 8 << 20,
    planes: 176,
};
/// The iris net: 64 channels at 32x32; 4.2 MB; 128-channel planes.
const IRIS: Footprint = Footprint {
    peak: 64 * 32 * 32 * 4,
    total: 5 << 20,
    planes: 128,
};
/// The age net: 64 channels at 56x56; 7.4 MB; 256-channel planes.
const AGE: Footprint = Footprint {
    peak: 64 * 56 * 56 * 4,
    total: 9 << 20,
    planes: 256,
};

/// Runs `forward` over the `[c, h, w]` items of `data` in as many
/// submissions as `footprint` says the device takes; returns each
/// submission's item count and readbacks (one per output of `forward`).
fn in_chunks<D: Compute>(
    dev: &D,
    data: &[f32],
    [c, h, w]: [usize; 3],
    footprint: Footprint,
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
    let chunk = footprint.chunk(dev.max_binding());
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

/// A model module's `input_from_rgb8`: HWC u8 crops to its scaled NCHW input.
type InputFn = fn(&[&[u8]], &candle_core::Device) -> Load<candle_core::Tensor>;

/// HWC u8 crops as the model's NCHW input on the host, for upload.
fn host_input(crops: &[&[u8]], input: InputFn) -> Result<Vec<f32>> {
    input(crops, &candle_core::Device::Cpu)
        .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
        .map_err(|e| GpuError::Shape(e.to_string()))
}

/// `[x, y, z]` triples of one flat row.
fn triples(row: &[f32]) -> Vec<[f32; 3]> {
    row.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect()
}

/// The MediaPipe nets' common shape: a 3x3/s2 SAME conv + PReLU, residual
/// units, and two heads on the last map.
struct Landmarks<B> {
    name: &'static str,
    side: usize,
    stem: ConvPrelu<B>,
    backbone: Vec<Unit<B>>,
    heads: [Head<B>; 2],
}

impl<B> Landmarks<B> {
    /// `[n, 3, side, side]` -> each head's `[n, outputs, 1, 1]`.
    fn forward<R: Record<Buf = B>>(&self, r: &mut R, x: &Tensor<B>) -> Result<[Tensor<B>; 2]> {
        let (name, side) = (self.name, self.side);
        if x.shape[1..] != [3, side, side] {
            return Err(GpuError::Shape(format!(
                "{name}: input must be [n, 3, {side}, {side}], got {:?}",
                x.shape
            )));
        }
        let mut h = self.stem.forward(r, x)?;
        for u in &self.backbone {
            h = u.forward(r, &h)?;
        }
        Ok([self.heads[0].forward(r, &h)?, self.heads[1].forward(r, &h)?])
    }

    /// Both heads' values for each RGB crop (HWC u8), as `input` scales it.
    fn rows<D: Compute<Buf = B>>(
        &self,
        dev: &D,
        crops: &[&[u8]],
        input: InputFn,
        footprint: Footprint,
    ) -> Result<Vec<[Vec<f32>; 2]>> {
        let data = host_input(crops, input)?;
        let side = self.side;
        let chunks = in_chunks(dev, &data, [3, side, side], footprint, |r, x| {
            Ok(self.forward(r, x)?.into())
        })?;
        let [a, b] = [self.heads[0].out.cout, self.heads[1].out.cout];
        let mut out = Vec::with_capacity(crops.len());
        for (k, maps) in chunks {
            for i in 0..k {
                out.push([
                    maps[0][i * a..][..a].to_vec(),
                    maps[1][i * b..][..b].to_vec(),
                ]);
            }
        }
        Ok(out)
    }
}

/// MediaPipe Face Mesh on the device (`model::face_mesh`): heads mesh and
/// presence flag.
pub struct GpuFaceMesh<B>(Landmarks<B>);

impl<B> GpuFaceMesh<B> {
    pub fn load<D: Compute<Buf = B>>(dev: &D, vb: VarBuilder) -> Load<Self> {
        let mut backbone = Vec::with_capacity(face_mesh::BACKBONE.len());
        let mut cin = 16;
        for (i, &(cout, stride)) in face_mesh::BACKBONE.iter().enumerate() {
            let unit = vb.pp(format!("backbone.{i}"));
            backbone.push(Unit::mesh(dev, unit, cin, cout, stride)?);
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
        Ok(Self(Landmarks {
            name: "face mesh",
            side: face_mesh::INPUT_SIZE,
            stem: ConvPrelu::load(dev, vb.pp("stem"), (3, 16, 3, 2))?,
            backbone,
            heads: [
                head(vb.pp("mesh"), &[2, 1, 1], 3 * face_mesh::NUM_LANDMARKS)?,
                head(vb.pp("flag"), &[2], 1)?,
            ],
        }))
    }

    /// `[n, 3, 192, 192]` RGB in [0, 1] -> the mesh `[n, 1404, 1, 1]` (468
    /// (x, y, z) in input pixels) and the presence logits `[n, 1, 1, 1]`.
    pub fn forward<R: Record<Buf = B>>(&self, r: &mut R, x: &Tensor<B>) -> Result<[Tensor<B>; 2]> {
        self.0.forward(r, x)
    }

    /// 192x192 RGB crops (HWC u8) -> landmarks and P(face) per crop, as the
    /// CPU backend gives them.
    pub fn run<D: Compute<Buf = B>>(&self, dev: &D, crops: &[&[u8]]) -> Result<Vec<MeshPoints>> {
        let rows = self.0.rows(dev, crops, face_mesh::input_from_rgb8, MESH)?;
        Ok(rows
            .into_iter()
            .map(|[mesh, logit]| MeshPoints {
                points: triples(&mesh),
                presence: 1.0 / (1.0 + (-logit[0]).exp()),
            })
            .collect())
    }
}

/// MediaPipe Iris on the device (`model::iris`): heads eye contour and iris.
pub struct GpuIris<B>(Landmarks<B>);

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
        Ok(Self(Landmarks {
            name: "iris",
            side: iris::INPUT_SIZE,
            stem: ConvPrelu::load(dev, vb.pp("stem"), (3, 64, 3, 2))?,
            backbone: iris::BACKBONE
                .iter()
                .enumerate()
                .map(|(i, &cfg)| Unit::iris(dev, vb.pp(format!("backbone.{i}")), cfg))
                .collect::<Load<_>>()?,
            heads: [
                head(vb.pp("contour"), 3 * iris::NUM_CONTOUR)?,
                head(vb.pp("iris"), 3 * iris::NUM_IRIS)?,
            ],
        }))
    }

    /// `[n, 3, 64, 64]` RGB in [0, 1], left eyes -> contour `[n, 213, 1,
    /// 1]` and iris `[n, 15, 1, 1]`, (x, y, z) in input pixels.
    pub fn forward<R: Record<Buf = B>>(&self, r: &mut R, x: &Tensor<B>) -> Result<[Tensor<B>; 2]> {
        self.0.forward(r, x)
    }

    /// 64x64 RGB eye crops (HWC u8) -> eye points per crop, as the CPU
    /// backend gives them.
    pub fn run<D: Compute<Buf = B>>(&self, dev: &D, crops: &[&[u8]]) -> Result<Vec<EyePoints>> {
        let rows = self.0.rows(dev, crops, iris::input_from_rgb8, IRIS)?;
        Ok(rows
            .into_iter()
            .map(|[contour, iris]| {
                let p = triples(&iris);
                EyePoints {
                    contour: triples(&contour),
                    iris: [p[0], p[1], p[2], p[3], p[4]],
                }
            })
            .collect())
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
        let chunks = in_chunks(dev, &data, [3, side, side], AGE, |r, x| {
            Ok(vec![self.forward(r, x)?])
        })?;
        Ok(chunks
            .into_iter()
            .flat_map(|(k, maps)| maps[0][..k].to_vec())
            .collect())
    }
}

#[cfg(test)]
mod tests;
