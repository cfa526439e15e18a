//! Parasitized / uninfected classifier for single red-cell crops.
//!
//! Trained in this project (`argusd train malaria`) on the NIH malaria cell
//! images (50x50 grayscale copy); see models/malaria/MODEL_CARD.md. The crop
//! is what the NIH set shows: one cell stretched to fill 50x50, pixels outside
//! the cell black.
//!
//! Input: [N, 2, 50, 50]. Channel 0 is the cell's intensity with the cell's
//! own mean removed (scaled by 4), so stain and exposure differences between
//! microscopes shift nothing; channel 1 is the cell mask (1 inside). Four 3x3
//! conv + ReLU stages (16, 32, 64, 128; max-pool after the first three),
//! global average pool, one linear unit: the parasitized logit.

use candle_core::{Device, Module, Result, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};
use rayon::prelude::*;

use super::nhwc::{self, pooling, Dense3x3, Map};

/// Crop edge the classifier takes.
pub const CROP: usize = 50;
pub const CHANNELS: usize = 2;
/// Pixels at or below this are background in a crop.
const BACKGROUND_MAX: u8 = 8;
pub(crate) const WIDTHS: [usize; 4] = [16, 32, 64, 128];

/// Turn one 50x50 grayscale crop into the net's two input planes.
pub fn planes(gray: &[u8]) -> Vec<f32> {
    debug_assert_eq!(gray.len(), CROP * CROP);
    let (mut sum, mut n) = (0f32, 0usize);
    for &p in gray {
        if p > BACKGROUND_MAX {
            sum += p as f32;
            n += 1;
        }
    }
    let mean = if n == 0 { 0.0 } else { sum / n as f32 };
    let mut out = vec![0f32; CHANNELS * CROP * CROP];
    let (inten, mask) = out.split_at_mut(CROP * CROP);
    for (i, &p) in gray.iter().enumerate() {
        if p > BACKGROUND_MAX {
            inten[i] = (p as f32 - mean) / 255.0 * 4.0;
            mask[i] = 1.0;
        }
    }
    out
}

pub struct MalariaNet {
    convs: Vec<Conv2d>,
    fc: Linear,
}

impl MalariaNet {
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let mut cin = CHANNELS;
        let mut convs = Vec::with_capacity(WIDTHS.len());
        for (i, &c) in WIDTHS.iter().enumerate() {
            convs.push(candle_nn::conv2d(
                cin,
                c,
                3,
                cfg,
                vb.pp(format!("conv{i}")),
            )?);
            cin = c;
        }
        Ok(Self {
            convs,
            fc: candle_nn::linear(cin, 1, vb.pp("fc"))?,
        })
    }

    /// Parasitized logits, `[N]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv.forward(&x)?.relu()?;
            if i + 1 < self.convs.len() {
                x = x.max_pool2d(2)?;
            }
        }
        let pooled = x.mean(D::Minus1)?.mean(D::Minus1)?;
        self.fc.forward(&pooled)?.squeeze(1)
    }

    /// P(parasitized) for a batch of 50x50 grayscale crops.
    pub fn classify(&self, crops: &[&[u8]], device: &Device) -> Result<Vec<f32>> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let mut data = Vec::with_capacity(crops.len() * CHANNELS * CROP * CROP);
        for c in crops {
            if c.len() != CROP * CROP {
                candle_core::bail!("malaria: crop must be {CROP}x{CROP}, got {} bytes", c.len());
            }
            data.extend(planes(c));
        }
        let x = Tensor::from_vec(data, (crops.len(), CHANNELS, CROP, CROP), device)?;
        candle_nn::ops::sigmoid(&self.forward(&x)?)?.to_vec1()
    }
}

/// The classifier on the NHWC CPU kernels (`model::nhwc`), packed from a
/// loaded net's weights: the CPU backend's inference path. (Training runs
/// the candle graph, whose weights change under it; pack after training.)
pub struct MalariaKernels {
    convs: Vec<Dense3x3>,
    fc_w: Vec<f32>,
    fc_b: f32,
}

impl MalariaKernels {
    pub fn new(net: &MalariaNet) -> Result<Self> {
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let convs = net
            .convs
            .iter()
            .map(|c| {
                let w = c.weight();
                let (cout, cin) = (w.dim(0)?, w.dim(1)?);
                let b = match c.bias() {
                    Some(b) => flat(b)?,
                    None => vec![0.0; cout],
                };
                Ok(Dense3x3::new(&flat(w)?, &b, cout, cin, 1))
            })
            .collect::<Result<_>>()?;
        let fc_b = match net.fc.bias() {
            Some(b) => flat(b)?[0],
            None => 0.0,
        };
        Ok(Self {
            convs,
            fc_w: flat(net.fc.weight())?,
            fc_b,
        })
    }

    /// P(parasitized) for a batch of 50x50 grayscale crops, crops in
    /// parallel; the same values as [`MalariaNet::classify`].
    pub fn classify(&self, crops: &[&[u8]]) -> Result<Vec<f32>> {
        if let Some(c) = crops.iter().find(|c| c.len() != CROP * CROP) {
            candle_core::bail!("malaria: crop must be {CROP}x{CROP}, got {} bytes", c.len());
        }
        Ok(nhwc::on_pool(|| {
            crops.par_iter().map(|c| self.probability(c)).collect()
        }))
    }

    fn probability(&self, gray: &[u8]) -> f32 {
        let mut x = Map::from_chw(&planes(gray), CHANNELS, CROP, CROP);
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv.forward(&x, true);
            if i + 1 < self.convs.len() {
                x = pooling::max_pool2x2(&x);
            }
        }
        // Global average pool, then the linear unit.
        let mean = nhwc::global_mean(&x);
        let logit = self.fc_b + mean.iter().zip(&self.fc_w).map(|(m, w)| m * w).sum::<f32>();
        1.0 / (1.0 + (-logit).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The NHWC path against the candle graph, on the shipped weights and
    /// crops of varied content.
    #[test]
    fn kernels_match_the_candle_graph() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/malaria/malaria.safetensors"
        );
        let net =
            MalariaNet::load(crate::model::load_weights(path.as_ref(), &Device::Cpu).unwrap())
                .unwrap();
        let crops: Vec<Vec<u8>> = (0..5u32)
            .map(|k| {
                (0..CROP * CROP)
                    .map(|i| {
                        let (y, x) = ((i / CROP) as i32 - 25, (i % CROP) as i32 - 25);
                        if x * x + y * y > 400 {
                            0
                        } else {
                            (60 + (i as u32 * (7 + k) + k * 31) % 150) as u8
                        }
                    })
                    .collect()
            })
            .collect();
        let refs: Vec<&[u8]> = crops.iter().map(Vec::as_slice).collect();
        let want = net.classify(&refs, &Device::Cpu).unwrap();
        let got = MalariaKernels::new(&net).unwrap().classify(&refs).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn planes_remove_the_cells_own_brightness() {
        let mut dark = vec![0u8; CROP * CROP];
        let mut bright = vec![0u8; CROP * CROP];
        for i in 500..2000 {
            dark[i] = 100 + (i % 7) as u8;
            bright[i] = 180 + (i % 7) as u8;
        }
        let (a, b) = (planes(&dark), planes(&bright));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5);
        }
        assert_eq!(a[CROP * CROP + 10], 0.0, "background is outside the mask");
        assert_eq!(a[CROP * CROP + 600], 1.0);
    }
}
