//! The blood-cell segmentation UNets of the PyPI package `cbc` 1.1.0 (MIT,
//! Amine Neggazi): one net each for red cells (mask + edge heads), white
//! cells and platelets, identical apart from the heads.
//!
//! Weights are converted by `models/tools/convert_cbc.py`, which folds every
//! BatchNorm (Keras epsilon 1e-3) into the convolution before it.
//!
//! Input: a 188x188 BGR tile scaled to [-1, 1], NCHW. All 3x3 convolutions
//! are unpadded, so the output is the 100x100 centre of the tile. Encoder:
//! 3x3 (96) -> 1x1 (32) -> 3x3 (32), then three stages of max-pool 2x2 and
//! two 3x3 convs (64, 128, 256). Decoder: three stages of 2x2/s2 transposed
//! conv, concatenation [encoder skip cropped by 4/16/40 px, upsampled] and
//! two 3x3 convs (128, 64, 32). Every conv is followed by ReLU; the heads are
//! 1x1 convs with a sigmoid.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::nhwc::{self, pooling as pool, Dense3x3, Map, Pointwise, Upsample2x2};
use super::ops;

/// Tile edge the nets take.
pub const TILE_IN: usize = 188;
/// Tile edge they give back: the centre of the input.
pub const TILE_OUT: usize = 100;
/// What each side of the input loses: (188 - 100) / 2.
pub const MARGIN: usize = (TILE_IN - TILE_OUT) / 2;

/// A convolution with BatchNorm folded in, followed by ReLU.
struct ConvRelu {
    w: Tensor,
    b: Tensor,
}

impl ConvRelu {
    fn load(vb: VarBuilder, cout: usize, cin: usize, k: usize) -> Result<Self> {
        Ok(Self {
            w: vb.get((cout, cin, k, k), "weight")?,
            b: vb.get(cout, "bias")?,
        })
    }

    /// The 3x3 conv for the NHWC kernels.
    fn dense(&self) -> Result<Dense3x3> {
        let (cout, cin) = (self.w.dim(0)?, self.w.dim(1)?);
        Ok(Dense3x3::new(
            &flat(&self.w)?,
            &flat(&self.b)?,
            cout,
            cin,
            1,
        ))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.w.dim(2)? == 1 {
            return ops::pointwise(x, &self.w, &self.b, true);
        }
        // The padded fused kernel, then the 1-px border dropped: the same
        // values as an unpadded conv.
        let y = ops::dense3x3(x, &self.w, &self.b, 1, true)?;
        let (_, _, h, w) = y.dims4()?;
        y.narrow(2, 1, h - 2)?.narrow(3, 1, w - 2)
    }
}

/// A tensor's values in order.
fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// The 1x1 squeeze conv for the NHWC kernels.
fn stem_pointwise(c: &ConvRelu) -> Result<Pointwise> {
    let (cout, cin) = (c.w.dim(0)?, c.w.dim(1)?);
    Ok(Pointwise::new(&flat(&c.w)?, &flat(&c.b)?, cout, cin))
}

/// Two unpadded 3x3 conv + ReLU.
struct DoubleConv {
    a: ConvRelu,
    b: ConvRelu,
}

impl DoubleConv {
    fn load(vb: VarBuilder, cout: usize, cin: usize) -> Result<Self> {
        Ok(Self {
            a: ConvRelu::load(vb.pp("0"), cout, cin, 3)?,
            b: ConvRelu::load(vb.pp("1"), cout, cout, 3)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.b.forward(&self.a.forward(x)?)
    }
}

/// Transposed conv 2x2/s2 + ReLU, crop-and-concat with the skip, two convs.
struct UpStage {
    up_w: Tensor,
    up_b: Tensor,
    crop: usize,
    convs: DoubleConv,
}

impl UpStage {
    fn load(vb: VarBuilder, cin: usize, cout: usize, crop: usize) -> Result<Self> {
        Ok(Self {
            up_w: vb.get((cin, cout, 2, 2), "up.weight")?,
            up_b: vb.get(cout, "up.bias")?,
            crop,
            // The skip has `cout` channels too: [skip, up] is 2*cout wide.
            convs: DoubleConv::load(vb, cout, 2 * cout)?,
        })
    }

    fn forward(&self, x: &Tensor, skip: &Tensor) -> Result<Tensor> {
        let up = ops::upsample2x2(x, &self.up_w, &self.up_b, true)?;
        let (_, _, h, w) = skip.dims4()?;
        let c = self.crop;
        let skip = skip.narrow(2, c, h - 2 * c)?.narrow(3, c, w - 2 * c)?;
        self.convs.forward(&Tensor::cat(&[&skip, &up], 1)?)
    }
}

/// Which heads a net has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heads {
    /// Cell mask only (white cells, platelets).
    Mask,
    /// Cell mask and cell-boundary map (red cells).
    MaskEdge,
}

/// Sigmoid maps for a batch of tiles, each [N, 1, 100, 100].
#[derive(Debug)]
pub struct UnetOutput {
    pub mask: Tensor,
    pub edge: Option<Tensor>,
}

pub struct Unet {
    cpu: Kernels,
    stem: ConvRelu,
    squeeze: ConvRelu,
    stem2: ConvRelu,
    enc: Vec<DoubleConv>,
    dec: Vec<UpStage>,
    mask: (Tensor, Tensor),
    edge: Option<(Tensor, Tensor)>,
}

impl Unet {
    pub fn load(vb: VarBuilder, heads: Heads) -> Result<Self> {
        let head = |name: &str| -> Result<(Tensor, Tensor)> {
            let vb = vb.pp("head").pp(name);
            Ok((vb.get((1, 32, 1, 1), "weight")?, vb.get(1, "bias")?))
        };
        let enc = [(2, 64, 32), (3, 128, 64), (4, 256, 128)]
            .into_iter()
            .map(|(i, cout, cin)| DoubleConv::load(vb.pp(format!("enc{i}")), cout, cin))
            .collect::<Result<Vec<_>>>()?;
        let dec = [(1, 256, 128, 4), (2, 128, 64, 16), (3, 64, 32, 40)]
            .into_iter()
            .map(|(i, cin, cout, crop)| UpStage::load(vb.pp(format!("dec{i}")), cin, cout, crop))
            .collect::<Result<Vec<_>>>()?;
        let stem = ConvRelu::load(vb.pp("enc1.0"), 96, 3, 3)?;
        let squeeze = ConvRelu::load(vb.pp("enc1.1"), 32, 96, 1)?;
        let stem2 = ConvRelu::load(vb.pp("enc1.2"), 32, 32, 3)?;
        let mask = head("mask")?;
        let edge = match heads {
            Heads::MaskEdge => Some(head("edge")?),
            Heads::Mask => None,
        };
        let cpu = Kernels {
            stem: stem.dense()?,
            squeeze: stem_pointwise(&squeeze)?,
            stem2: stem2.dense()?,
            enc: enc
                .iter()
                .map(|d| Ok([d.a.dense()?, d.b.dense()?]))
                .collect::<Result<_>>()?,
            dec: dec
                .iter()
                .map(|s| {
                    let (cin, cout) = (s.up_w.dim(0)?, s.up_w.dim(1)?);
                    Ok(CpuUpStage {
                        up: Upsample2x2::new(&flat(&s.up_w)?, &flat(&s.up_b)?, cin, cout),
                        crop: s.crop,
                        convs: [s.convs.a.dense()?, s.convs.b.dense()?],
                    })
                })
                .collect::<Result<_>>()?,
            heads: {
                // Both heads as one 32 -> 1|2 product: channel 0 mask, 1 edge.
                let hs: Vec<&(Tensor, Tensor)> = std::iter::once(&mask).chain(&edge).collect();
                let (mut w, mut b) = (Vec::new(), Vec::new());
                for (hw, hb) in &hs {
                    w.extend(flat(hw)?);
                    b.extend(flat(hb)?);
                }
                Pointwise::new(&w, &b, hs.len(), 32)
            },
        };
        Ok(Self {
            cpu,
            stem,
            squeeze,
            stem2,
            enc,
            dec,
            mask,
            edge,
        })
    }

    /// Sigmoid maps for `count` tiles of `data` (each `3 × 188 × 188`, NCHW
    /// BGR in [-1, 1]) on the NHWC CPU kernels: per tile the mask and, for
    /// [`Heads::MaskEdge`], the edge map, each 100 × 100 row-major. Tiles run
    /// in parallel on the rayon pool, each layer also split by rows.
    ///
    /// # Panics
    /// If `data` is not `count` whole tiles.
    pub fn forward_tiles(&self, data: &[f32], count: usize) -> Vec<(Vec<f32>, Option<Vec<f32>>)> {
        let n = 3 * TILE_IN * TILE_IN;
        assert_eq!(
            data.len(),
            count * n,
            "unet: not {count} tiles of 3x{TILE_IN}x{TILE_IN}"
        );
        nhwc::on_pool(|| {
            data.par_chunks_exact(n)
                .map(|tile| self.cpu.forward(tile))
                .collect()
        })
    }

    /// `x`: [N, 3, 188, 188] BGR in [-1, 1].
    pub fn forward(&self, x: &Tensor) -> Result<UnetOutput> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 || h != TILE_IN || w != TILE_IN {
            candle_core::bail!(
                "unet: input must be [N,3,{TILE_IN},{TILE_IN}], got {:?}",
                x.dims()
            );
        }
        let e1 = self
            .stem2
            .forward(&self.squeeze.forward(&self.stem.forward(x)?)?)?;
        let mut skips = vec![e1];
        for stage in &self.enc {
            let pooled = skips.last().expect("e1").max_pool2d(2)?;
            skips.push(stage.forward(&pooled)?);
        }
        let mut y = skips.pop().expect("e4");
        for stage in &self.dec {
            y = stage.forward(&y, &skips.pop().expect("skip per stage"))?;
        }
        let head = |(w, b): &(Tensor, Tensor)| -> Result<Tensor> {
            candle_nn::ops::sigmoid(&ops::pointwise(&y, w, b, false)?)
        };
        Ok(UnetOutput {
            mask: head(&self.mask)?,
            edge: self.edge.as_ref().map(head).transpose()?,
        })
    }
}

/// The same net on the NHWC CPU kernels, packed at load. Unpadded 3x3
/// convs are [`Dense3x3::forward_padded`] on the unpadded map: its
/// "padding" is then the map's own outer pixels, which is exactly a valid
/// convolution.
struct Kernels {
    stem: Dense3x3,
    squeeze: Pointwise,
    stem2: Dense3x3,
    enc: Vec<[Dense3x3; 2]>,
    dec: Vec<CpuUpStage>,
    heads: Pointwise,
}

struct CpuUpStage {
    up: Upsample2x2,
    crop: usize,
    convs: [Dense3x3; 2],
}

impl Kernels {
    /// One `3 × 188 × 188` tile to its (mask, edge) sigmoid maps.
    fn forward(&self, tile: &[f32]) -> (Vec<f32>, Option<Vec<f32>>) {
        let x = Map::from_chw(tile, 3, TILE_IN, TILE_IN);
        let y = self.stem.forward_padded(&x, true);
        let y = nhwc::pointwise_map(&self.squeeze, &y, true, None);
        let mut skips = vec![self.stem2.forward_padded(&y, true)];
        for [a, b] in &self.enc {
            let pooled = pool::max_pool2x2(skips.last().expect("e1"));
            skips.push(b.forward_padded(&a.forward_padded(&pooled, true), true));
        }
        let mut y = skips.pop().expect("e4");
        for s in &self.dec {
            let skip = skips.pop().expect("skip per stage");
            let cat = pool::concat_cropped(&skip, s.crop, &s.up.forward(&y));
            y = s.convs[1].forward_padded(&s.convs[0].forward_padded(&cat, true), true);
        }
        let heads = nhwc::pointwise_map(&self.heads, &y, false, None);
        let sigmoid = |v: &f32| 1.0 / (1.0 + (-v).exp());
        let c = heads.c;
        let mask = heads.data.iter().step_by(c).map(sigmoid).collect();
        let edge = (c == 2).then(|| heads.data[1..].iter().step_by(2).map(sigmoid).collect());
        (mask, edge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

    fn max_diff(got: &[f32], want: &Tensor) -> f32 {
        let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    }

    pub(crate) fn net(name: &str, heads: Heads) -> Unet {
        let path = format!("{ROOT}/models/cbc/{name}.safetensors");
        Unet::load(
            crate::model::load_weights(path.as_ref(), &Device::Cpu).unwrap(),
            heads,
        )
        .unwrap()
    }

    /// Parity with TensorFlow running the package's own .h5 weights on a real
    /// smear tile (models/tools/make_cbc_golden.py). The outputs are
    /// probabilities; tolerance: max absolute error below 1e-3 per pixel.
    #[test]
    fn matches_tensorflow_on_a_real_tile() {
        let golden = candle_core::safetensors::load(
            format!("{ROOT}/tests/fixtures/golden/cbc_smear.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let tile = &golden["tile"];
        for (name, heads) in [
            ("rbc", Heads::MaskEdge),
            ("wbc", Heads::Mask),
            ("plt", Heads::Mask),
        ] {
            let net = net(name, heads);
            let out = net.forward(tile).unwrap();
            assert_eq!(out.mask.dims(), &[1, 1, TILE_OUT, TILE_OUT]);
            let want_mask = &golden[&format!("{name}_mask")];
            let e = crate::model::max_abs_diff(&out.mask, want_mask);
            assert!(e < 1e-3, "{name} mask: max abs error {e}");
            if let Some(edge) = out.edge {
                let e = crate::model::max_abs_diff(&edge, &golden["rbc_edge"]);
                assert!(e < 1e-3, "rbc edge: max abs error {e}");
            }
            // The NHWC kernels, twice in one batch (tiles run in parallel).
            let x = tile.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let two = [x.clone(), x].concat();
            for (mask, edge) in net.forward_tiles(&two, 2) {
                let e = max_diff(&mask, want_mask);
                assert!(e < 1e-3, "{name} nhwc mask: max abs error {e}");
                assert_eq!(edge.is_some(), heads == Heads::MaskEdge);
                if let Some(edge) = edge {
                    let e = max_diff(&edge, &golden["rbc_edge"]);
                    assert!(e < 1e-3, "rbc nhwc edge: max abs error {e}");
                }
            }
        }
    }

    #[test]
    fn rejects_tiles_of_the_wrong_size() {
        let x = Tensor::zeros((1, 3, 200, 200), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(net("wbc", Heads::Mask).forward(&x).is_err());
    }
}
