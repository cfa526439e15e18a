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
        Ok(Self {
            stem: ConvRelu::load(vb.pp("enc1.0"), 96, 3, 3)?,
            squeeze: ConvRelu::load(vb.pp("enc1.1"), 32, 96, 1)?,
            stem2: ConvRelu::load(vb.pp("enc1.2"), 32, 32, 3)?,
            enc,
            dec,
            mask: head("mask")?,
            edge: match heads {
                Heads::MaskEdge => Some(head("edge")?),
                Heads::Mask => None,
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

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
            let out = net(name, heads).forward(tile).unwrap();
            assert_eq!(out.mask.dims(), &[1, 1, TILE_OUT, TILE_OUT]);
            let e = crate::model::max_abs_diff(&out.mask, &golden[&format!("{name}_mask")]);
            assert!(e < 1e-3, "{name} mask: max abs error {e}");
            if let Some(edge) = out.edge {
                let e = crate::model::max_abs_diff(&edge, &golden["rbc_edge"]);
                assert!(e < 1e-3, "rbc edge: max abs error {e}");
            }
        }
    }

    #[test]
    fn rejects_tiles_of_the_wrong_size() {
        let x = Tensor::zeros((1, 3, 200, 200), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(net("wbc", Heads::Mask).forward(&x).is_err());
    }
}
