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

    /// Parasitized logits, [N].
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

#[cfg(test)]
mod tests {
    use super::*;

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
