//! White-cell classifier for the differential: one crop around a white cell
//! in, a probability per class out.
//!
//! Trained in this project (`argusd train wbc`) on the PBC dataset (Acevedo
//! et al., Data in Brief 30 (2020) 105474, CC BY 4.0) and BCCD's labelled
//! white cells (Shenggan/BCCD_Dataset, MIT); see models/wbc/MODEL_CARD.md.
//!
//! **Crop.** A square window [`WINDOW_RBC`] red-cell diameters wide, centred
//! on the cell, resampled bilinearly to [`CROP`]x[`CROP`] RGB. The window is
//! tied to the red-cell size, not to the photo's pixels, so the net sees
//! cells at one scale whatever the microscope (PBC's photos have red cells
//! about 30 px across at the 0.4x copy used for training).
//!
//! **Input planes.** Optical density per channel, `-ln(I / I_bg)` with
//! `I_bg` the crop's own background level (the 95th percentile of the
//! channel), clipped to [0, 3]: Beer-Lambert makes stain amount additive and
//! the background division removes the illuminant and camera white balance,
//! so photos from other microscopes land closer to the training data.
//!
//! **Net.** NHWC; seven 3x3 convolutions with ReLU (32 | 48, 48 | 96, 96 |
//! 192, 192; a 2x2 max-pool at each bar), global average pool, one linear
//! layer to [`CLASSES`] logits. Each convolution is an unfold (9 shifted
//! copies side by side) and one matrix product, so training on a CPU runs
//! at matrix-multiply speed; weights are stored as `[9 * C_in, C_out]` with
//! row `(dy * 3 + dx) * C_in + c`.

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::nhwc::{self, pooling, Dense3x3, Map};

pub mod figures;

/// Crop edge the classifier takes, in pixels.
pub const CROP: usize = 64;
/// Window edge in red-cell diameters.
pub const WINDOW_RBC: f32 = 3.4;
/// The classifier's classes, in output order: the differential's classes
/// (`families::pbs::schema::DIFFERENTIAL_CLASSES`) then `platelet`, which
/// PBC also holds and which is not a white cell.
pub const CLASSES: [&str; 9] = [
    "neutrophil_segmented",
    "neutrophil_band",
    "lymphocyte",
    "monocyte",
    "eosinophil",
    "basophil",
    "immature_granulocyte",
    "erythroblast",
    "platelet",
];
/// Output channels of the convolutions; a 2x2 max-pool follows the ones
/// listed in [`POOL_AFTER`].
pub const WIDTHS: [usize; 7] = [32, 48, 48, 96, 96, 192, 192];
pub const POOL_AFTER: [usize; 3] = [0, 2, 4];
/// Largest optical density kept.
const OD_MAX: f32 = 3.0;

/// Index of `platelet` in [`CLASSES`].
pub const PLATELET: usize = 8;

/// The class a cell is given, or `None` when it is left for review: the top
/// class when its probability reaches `min_confidence`. The two neutrophil
/// classes are one lineage: when neither reaches it alone but their sum does,
/// the cell is a neutrophil of the likelier form (band and segmented forms
/// are a continuum on which human readers also disagree). A cell called a
/// platelet is not a white cell, so it is left for review too.
pub fn decide(p: &[f32; 9], min_confidence: f32) -> Option<usize> {
    let (top, pt) = p
        .iter()
        .enumerate()
        .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
    let class = if pt >= min_confidence {
        top
    } else if p[0] + p[1] >= min_confidence {
        if p[0] >= p[1] {
            0
        } else {
            1
        }
    } else {
        return None;
    };
    (class != PLATELET).then_some(class)
}

/// Resample a window of `side` pixels centred on (`cx`, `cy`) of an RGB
/// image (`w` x `h`, interleaved) to `CROP` x `CROP`, bilinearly; outside the
/// image the nearest edge pixel is used. Returns interleaved RGB floats.
pub fn sample_window(rgb: &[u8], w: usize, h: usize, cx: f32, cy: f32, side: f32) -> Vec<f32> {
    let mut out = vec![0f32; CROP * CROP * 3];
    let step = side / CROP as f32;
    let x0 = cx - side / 2.0;
    let y0 = cy - side / 2.0;
    let px = |x: i64, y: i64, c: usize| -> f32 {
        let x = x.clamp(0, w as i64 - 1) as usize;
        let y = y.clamp(0, h as i64 - 1) as usize;
        rgb[(y * w + x) * 3 + c] as f32
    };
    for oy in 0..CROP {
        let sy = y0 + (oy as f32 + 0.5) * step - 0.5;
        let fy = sy.floor();
        let ay = sy - fy;
        for ox in 0..CROP {
            let sx = x0 + (ox as f32 + 0.5) * step - 0.5;
            let fx = sx.floor();
            let ax = sx - fx;
            let (ix, iy) = (fx as i64, fy as i64);
            for c in 0..3 {
                let v = (px(ix, iy, c) * (1.0 - ax) + px(ix + 1, iy, c) * ax) * (1.0 - ay)
                    + (px(ix, iy + 1, c) * (1.0 - ax) + px(ix + 1, iy + 1, c) * ax) * ay;
                out[(oy * CROP + ox) * 3 + c] = v;
            }
        }
    }
    out
}

/// The net's input planes (NHWC, 3 channels) from an interleaved RGB crop
/// of `CROP` x `CROP` in 0..255: optical density against the crop's own
/// background level per channel.
pub fn planes(rgb: &[f32]) -> Vec<f32> {
    debug_assert_eq!(rgb.len(), CROP * CROP * 3);
    let mut out = vec![0f32; rgb.len()];
    for c in 0..3 {
        let mut v: Vec<f32> = rgb.iter().skip(c).step_by(3).copied().collect();
        let k = (v.len() * 95) / 100;
        let (_, bg, _) = v.select_nth_unstable_by(k, f32::total_cmp);
        let bg = bg.max(1.0) + 1.0;
        for (i, p) in rgb.iter().skip(c).step_by(3).enumerate() {
            out[i * 3 + c] = (-((p + 1.0) / bg).ln()).clamp(0.0, OD_MAX);
        }
    }
    out
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: f32 only");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: contiguous input only"),
    }
}

/// NHWC [N, H, W, C] -> [N, H, W, 9C]: each pixel's 3x3 neighbourhood
/// (zero outside), neighbour `(dy, dx)` at channels `(dy * 3 + dx) * C..`.
/// Its gradient is [`Fold3x3`], so training pays one pass each way instead
/// of the nine pads, narrows and concatenations the same thing costs in
/// tensor ops.
struct Unfold3x3;

impl CustomOp1 for Unfold3x3 {
    fn name(&self) -> &'static str {
        "unfold3x3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, h, w, c) = l.shape().dims4()?;
        let src = f32_slice(s, l, "unfold3x3")?;
        let mut out = vec![0f32; n * h * w * 9 * c];
        out.par_chunks_mut(w * 9 * c)
            .enumerate()
            .for_each(|(row, dst)| {
                let (b, y) = (row / h, row % h);
                for x in 0..w {
                    for dy in 0..3 {
                        let sy = y as i64 + dy as i64 - 1;
                        if sy < 0 || sy >= h as i64 {
                            continue;
                        }
                        for dx in 0..3 {
                            let sx = x as i64 + dx as i64 - 1;
                            if sx < 0 || sx >= w as i64 {
                                continue;
                            }
                            let from = ((b * h + sy as usize) * w + sx as usize) * c;
                            let to = (x * 9 + dy * 3 + dx) * c;
                            dst[to..to + c].copy_from_slice(&src[from..from + c]);
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, h, w, 9 * c))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Fold3x3)?))
    }
}

/// The adjoint of [`Unfold3x3`]: [N, H, W, 9C] -> [N, H, W, C], each
/// neighbour's slot added back onto the pixel it was copied from.
struct Fold3x3;

impl CustomOp1 for Fold3x3 {
    fn name(&self) -> &'static str {
        "fold3x3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, h, w, c9) = l.shape().dims4()?;
        let c = c9 / 9;
        let src = f32_slice(s, l, "fold3x3")?;
        let mut out = vec![0f32; n * h * w * c];
        // Gather form: output pixel (y, x) takes slot (dy, dx) of the unfolded
        // pixel (y - dy + 1, x - dx + 1), so rows are written independently.
        out.par_chunks_mut(w * c)
            .enumerate()
            .for_each(|(row, dst)| {
                let (b, y) = (row / h, row % h);
                for x in 0..w {
                    let d = &mut dst[x * c..(x + 1) * c];
                    for dy in 0..3 {
                        let uy = y as i64 - dy as i64 + 1;
                        if uy < 0 || uy >= h as i64 {
                            continue;
                        }
                        for dx in 0..3 {
                            let ux = x as i64 - dx as i64 + 1;
                            if ux < 0 || ux >= w as i64 {
                                continue;
                            }
                            let from =
                                ((b * h + uy as usize) * w + ux as usize) * c9 + (dy * 3 + dx) * c;
                            for (o, v) in d.iter_mut().zip(&src[from..from + c]) {
                                *o += v;
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, h, w, c))))
    }
}

/// A 3x3 convolution, padding 1, stride 1, on NHWC as unfold + matmul.
/// `w`: `[9 * C_in, C_out]`; `b`: `[C_out]`.
pub fn conv3x3(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (n, h, wd, c) = x.dims4()?;
    let cout = w.dim(1)?;
    let u = x
        .contiguous()?
        .apply_op1(Unfold3x3)?
        .reshape((n * h * wd, 9 * c))?;
    u.matmul(w)?.broadcast_add(b)?.reshape((n, h, wd, cout))
}

/// 2x2 max-pool, stride 2, on NHWC (odd edges dropped).
pub fn max_pool2(x: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    let (h2, w2) = (h / 2, w / 2);
    let x = if h % 2 == 1 || w % 2 == 1 {
        x.narrow(1, 0, h2 * 2)?.narrow(2, 0, w2 * 2)?.contiguous()?
    } else {
        x.clone()
    };
    x.reshape((n, h2, 2, w2, 2, c))?.max(4)?.max(2)
}

/// A convolution's weight as trained (`[9 * C_in, C_out]`, row
/// `(dy * 3 + dx) * C_in + c`) in PyTorch's layout, `[C_out, C_in, 3, 3]`
/// flattened, which the CPU kernels and the GPU ops take. Returns
/// `(weights, C_out, C_in)`.
pub fn oihw(w: &Tensor) -> Result<(Vec<f32>, usize, usize)> {
    let (k, cout) = w.dims2()?;
    let cin = k / 9;
    let u = w.flatten_all()?.to_vec1::<f32>()?;
    let mut std = vec![0f32; cout * cin * 9];
    for tap in 0..9 {
        for c in 0..cin {
            for o in 0..cout {
                std[(o * cin + c) * 9 + tap] = u[(tap * cin + c) * cout + o];
            }
        }
    }
    Ok((std, cout, cin))
}

/// The classifier's parameters (plain tensors, so training can hold them as
/// `Var`s and inference as constants).
pub struct WbcNet {
    pub convs: Vec<(Tensor, Tensor)>,
    pub fc_w: Tensor,
    pub fc_b: Tensor,
}

impl WbcNet {
    /// Tensor names: `conv{i}.weight` [9*C_in, C_out], `conv{i}.bias`,
    /// `fc.weight` [C_last, CLASSES], `fc.bias`.
    pub fn load(get: impl Fn(&str) -> Result<Tensor>) -> Result<Self> {
        let mut convs = Vec::with_capacity(WIDTHS.len());
        let mut cin = 3;
        for (i, &c) in WIDTHS.iter().enumerate() {
            let w = get(&format!("conv{i}.weight"))?;
            let b = get(&format!("conv{i}.bias"))?;
            if w.dims() != [9 * cin, c] || b.dims() != [c] {
                candle_core::bail!(
                    "wbc: conv{i} has shape {:?}, want [{}, {c}]",
                    w.dims(),
                    9 * cin
                );
            }
            convs.push((w, b));
            cin = c;
        }
        let fc_w = get("fc.weight")?;
        let fc_b = get("fc.bias")?;
        if fc_w.dims() != [cin, CLASSES.len()] {
            candle_core::bail!("wbc: fc has shape {:?}", fc_w.dims());
        }
        Ok(Self { convs, fc_w, fc_b })
    }

    pub fn from_safetensors(path: &std::path::Path, device: &Device) -> Result<Self> {
        let t = candle_core::safetensors::load(path, device)?;
        Self::load(|name| {
            t.get(name)
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg(format!("wbc: no tensor {name}")))
        })
    }

    /// Logits [N, CLASSES] of input planes [N, CROP, CROP, 3].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, (w, b)) in self.convs.iter().enumerate() {
            x = conv3x3(&x, w, b)?.relu()?;
            if POOL_AFTER.contains(&i) {
                x = max_pool2(&x)?;
            }
        }
        let pooled = x.mean(2)?.mean(1)?;
        pooled.matmul(&self.fc_w)?.broadcast_add(&self.fc_b)
    }

    /// Class probabilities for interleaved RGB crops of `CROP` x `CROP`
    /// (0..255 floats, as [`sample_window`] makes them).
    pub fn classify(&self, crops: &[&[f32]], device: &Device) -> Result<Vec<[f32; 9]>> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let mut data = Vec::with_capacity(crops.len() * CROP * CROP * 3);
        for c in crops {
            if c.len() != CROP * CROP * 3 {
                candle_core::bail!("wbc: crop must be {CROP}x{CROP}x3, got {}", c.len());
            }
            data.extend(planes(c));
        }
        let x = Tensor::from_vec(data, (crops.len(), CROP, CROP, 3), device)?;
        let p = candle_nn::ops::softmax(&self.forward(&x)?, D::Minus1)?.to_vec2::<f32>()?;
        Ok(p.into_iter()
            .map(|row| {
                let mut a = [0f32; 9];
                a.copy_from_slice(&row);
                a
            })
            .collect())
    }
}

/// The classifier on the NHWC CPU kernels (`model::nhwc`), packed from a
/// loaded net's weights: the CPU backend's inference path. (Training runs
/// the candle graph on `Var`s; pack after training.)
pub struct WbcKernels {
    convs: Vec<Dense3x3>,
    /// `[C_last × CLASSES]`, row-major.
    fc_w: Vec<f32>,
    fc_b: Vec<f32>,
}

impl WbcKernels {
    pub fn new(net: &WbcNet) -> Result<Self> {
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let convs = net
            .convs
            .iter()
            .map(|(w, b)| {
                let (std, cout, cin) = oihw(w)?;
                Ok(Dense3x3::new(&std, &flat(b)?, cout, cin, 1))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            convs,
            fc_w: flat(&net.fc_w)?,
            fc_b: flat(&net.fc_b)?,
        })
    }

    /// Class probabilities, as [`WbcNet::classify`] gives them, crops in
    /// parallel.
    pub fn classify(&self, crops: &[&[f32]]) -> Result<Vec<[f32; 9]>> {
        if let Some(c) = crops.iter().find(|c| c.len() != CROP * CROP * 3) {
            candle_core::bail!("wbc: crop must be {CROP}x{CROP}x3, got {}", c.len());
        }
        Ok(nhwc::on_pool(|| {
            crops.par_iter().map(|c| self.probabilities(c)).collect()
        }))
    }

    fn probabilities(&self, crop: &[f32]) -> [f32; 9] {
        let mut x = Map::zeros(CROP, CROP, 3);
        x.data.copy_from_slice(&planes(crop));
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv.forward(&x, true);
            if POOL_AFTER.contains(&i) {
                x = pooling::max_pool2x2(&x);
            }
        }
        let mean = nhwc::global_mean(&x);
        let mut logits = [0f32; 9];
        for (j, l) in logits.iter_mut().enumerate() {
            *l = self.fc_b[j]
                + mean
                    .iter()
                    .enumerate()
                    .map(|(c, m)| m * self.fc_w[c * 9 + j])
                    .sum::<f32>();
        }
        let top = logits.iter().copied().fold(f32::MIN, f32::max);
        let e = logits.map(|l| (l - top).exp());
        let sum: f32 = e.iter().sum();
        e.map(|v| v / sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The NHWC path against the candle graph, on the shipped weights and
    /// varied windows.
    #[test]
    fn kernels_match_the_candle_graph() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/wbc/wbc.safetensors");
        let net = WbcNet::from_safetensors(path.as_ref(), &Device::Cpu).unwrap();
        let crops: Vec<Vec<f32>> = (0..4usize)
            .map(|k| {
                (0..CROP * CROP * 3)
                    .map(|i| ((i * (13 + k) + 40 * k) % 230) as f32 + 20.0)
                    .collect()
            })
            .collect();
        let refs: Vec<&[f32]> = crops.iter().map(Vec::as_slice).collect();
        let want = net.classify(&refs, &Device::Cpu).unwrap();
        let got = WbcKernels::new(&net).unwrap().classify(&refs).unwrap();
        for (g, w) in got.iter().zip(&want) {
            for (a, b) in g.iter().zip(w) {
                assert!((a - b).abs() < 1e-4, "{g:?} vs {w:?}");
            }
        }
    }

    /// The unfold convolution against the definition, on odd sizes.
    #[test]
    fn unfold_conv_matches_the_definition() {
        let dev = Device::Cpu;
        let (n, h, w, c, co) = (2, 5, 7, 3, 4);
        let xs: Vec<f32> = (0..n * h * w * c)
            .map(|i| ((i * 37) % 11) as f32 - 5.0)
            .collect();
        let ws: Vec<f32> = (0..9 * c * co)
            .map(|i| ((i * 13) % 7) as f32 - 3.0)
            .collect();
        let bs = vec![0.5f32, -1.0, 2.0, 0.0];
        let x = Tensor::from_vec(xs.clone(), (n, h, w, c), &dev).unwrap();
        let wt = Tensor::from_vec(ws.clone(), (9 * c, co), &dev).unwrap();
        let b = Tensor::from_vec(bs.clone(), co, &dev).unwrap();
        let got = conv3x3(&x, &wt, &b)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for bi in 0..n {
            for y in 0..h {
                for xx in 0..w {
                    for o in 0..co {
                        let mut s = bs[o];
                        for dy in 0..3 {
                            for dx in 0..3 {
                                let (sy, sx) =
                                    (y as i64 + dy as i64 - 1, xx as i64 + dx as i64 - 1);
                                if sy < 0 || sx < 0 || sy >= h as i64 || sx >= w as i64 {
                                    continue;
                                }
                                for ci in 0..c {
                                    let xv =
                                        xs[((bi * h + sy as usize) * w + sx as usize) * c + ci];
                                    s += xv * ws[((dy * 3 + dx) * c + ci) * co + o];
                                }
                            }
                        }
                        let g = got[((bi * h + y) * w + xx) * co + o];
                        assert!((g - s).abs() < 1e-3, "({bi},{y},{xx},{o}): {g} vs {s}");
                    }
                }
            }
        }
    }

    #[test]
    fn unsure_cells_are_left_for_review() {
        let mut p = [0.0f32; 9];
        p[2] = 0.9;
        p[3] = 0.1;
        assert_eq!(decide(&p, 0.7), Some(2));
        p[2] = 0.5;
        p[3] = 0.5;
        assert_eq!(decide(&p, 0.7), None);
        let mut n = [0.0f32; 9];
        n[0] = 0.45;
        n[1] = 0.4;
        n[2] = 0.15;
        assert_eq!(
            decide(&n, 0.7),
            Some(0),
            "a neutrophil of the likelier form"
        );
        let mut plt = [0.0f32; 9];
        plt[PLATELET] = 0.99;
        assert_eq!(decide(&plt, 0.7), None, "not a white cell");
    }

    /// The unfold's gradient is its adjoint: <unfold(x), g> = <x, fold(g)>.
    #[test]
    fn fold_is_the_adjoint_of_unfold() {
        let dev = Device::Cpu;
        let (n, h, w, c) = (2, 4, 5, 3);
        let x = Tensor::from_vec(
            (0..n * h * w * c)
                .map(|i| ((i * 7) % 5) as f32 - 2.0)
                .collect::<Vec<_>>(),
            (n, h, w, c),
            &dev,
        )
        .unwrap();
        let g = Tensor::from_vec(
            (0..n * h * w * 9 * c)
                .map(|i| ((i * 3) % 7) as f32 - 3.0)
                .collect::<Vec<_>>(),
            (n, h, w, 9 * c),
            &dev,
        )
        .unwrap();
        let u = x.apply_op1_no_bwd(&Unfold3x3).unwrap();
        let f = g.apply_op1_no_bwd(&Fold3x3).unwrap();
        let a = (u * &g)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let b = (x * f)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }

    #[test]
    fn max_pool_takes_each_quad_maximum() {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(
            (0..16).map(|v| v as f32).collect::<Vec<_>>(),
            (1, 4, 4, 1),
            &dev,
        )
        .unwrap();
        let y = max_pool2(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(y, vec![5.0, 7.0, 13.0, 15.0]);
    }

    #[test]
    fn planes_ignore_the_illuminant() {
        // The same cell under a brighter, bluer light gives the same density.
        let mut a = vec![0f32; CROP * CROP * 3];
        for (i, v) in a.iter_mut().enumerate() {
            *v = if (i / 3) % 5 == 0 { 90.0 } else { 200.0 };
        }
        let b: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, v)| v * [1.1, 1.15, 1.25][i % 3])
            .collect();
        for (x, y) in planes(&a).iter().zip(planes(&b)) {
            assert!((x - y).abs() < 0.02, "{x} vs {y}");
        }
    }

    #[test]
    fn window_sampling_scales_with_the_side() {
        // A 4x4 image with one bright pixel at (1, 1); a window the size of
        // the image maps it to crop pixels 16..32.
        let mut rgb = vec![0u8; 4 * 4 * 3];
        for c in 0..3 {
            rgb[(4 + 1) * 3 + c] = 255;
        }
        let out = sample_window(&rgb, 4, 4, 2.0, 2.0, 4.0);
        let at = |x: usize, y: usize| out[(y * CROP + x) * 3];
        assert!(at(CROP / 4 + 8, CROP / 4 + 8) > 200.0);
        assert!(at(CROP - 4, CROP - 4) < 1.0);
    }
}
