//! The clinic models on the GPU devices: the cell UNets of `model::unet`,
//! the malaria classifier of `model::malaria` and the white-cell classifier
//! of `model::wbc`, block for block.

use candle_nn::VarBuilder;

use super::ops::{self, Conv};
use super::{f32s, load_conv, load_err, Compute, GpuError, Record, Result, Tensor};
use crate::model::malaria::{CHANNELS, CROP, WIDTHS};
use crate::model::unet::{Heads, TILE_IN, TILE_OUT};
use crate::model::wbc::{self, WbcNet};

type Load<T> = candle_core::Result<T>;

/// Unpadded conv + ReLU (1x1 as the tiled product).
struct ConvRelu<B>(Conv<B>);

impl<B> ConvRelu<B> {
    fn load<D: Compute<Buf = B>>(
        gpu: &D,
        vb: VarBuilder,
        cout: usize,
        cin: usize,
        k: usize,
    ) -> Load<Self> {
        Ok(Self(load_conv(gpu, &vb, [cout, cin, k, k])?))
    }

    fn forward<R: Record<Buf = B>>(&self, r: &mut R, x: &Tensor<B>) -> Result<Tensor<B>> {
        if self.0.k == 1 {
            ops::conv1x1(r, x, &self.0, true, None)
        } else {
            ops::conv2d(r, x, &self.0, 1, 0, true)
        }
    }
}

struct DoubleConv<B>(ConvRelu<B>, ConvRelu<B>);

impl<B> DoubleConv<B> {
    fn load<D: Compute<Buf = B>>(gpu: &D, vb: VarBuilder, cout: usize, cin: usize) -> Load<Self> {
        Ok(Self(
            ConvRelu::load(gpu, vb.pp("0"), cout, cin, 3)?,
            ConvRelu::load(gpu, vb.pp("1"), cout, cout, 3)?,
        ))
    }

    fn forward<R: Record<Buf = B>>(&self, r: &mut R, x: &Tensor<B>) -> Result<Tensor<B>> {
        let y = self.0.forward(r, x)?;
        self.1.forward(r, &y)
    }
}

struct UpStage<B> {
    up: Conv<B>,
    convs: DoubleConv<B>,
}

impl<B> UpStage<B> {
    fn load<D: Compute<Buf = B>>(gpu: &D, vb: VarBuilder, cin: usize, cout: usize) -> Load<Self> {
        let w = vb
            .get((cin, cout, 2, 2), "up.weight")?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let b = vb.get(cout, "up.bias")?.to_vec1::<f32>()?;
        Ok(Self {
            up: Conv::new(gpu, &w, &b, cout, cin, 2).map_err(load_err)?,
            convs: DoubleConv::load(gpu, vb, cout, 2 * cout)?,
        })
    }

    fn forward<R: Record<Buf = B>>(
        &self,
        r: &mut R,
        x: &Tensor<B>,
        skip: &Tensor<B>,
    ) -> Result<Tensor<B>> {
        let up = ops::conv_transpose2x2(r, x, &self.up, true)?;
        let cat = ops::crop_concat(r, skip, &up)?;
        self.convs.forward(r, &cat)
    }
}

pub struct GpuUnet<B> {
    stem: ConvRelu<B>,
    squeeze: ConvRelu<B>,
    stem2: ConvRelu<B>,
    enc: Vec<DoubleConv<B>>,
    dec: Vec<UpStage<B>>,
    /// Mask head, then the edge head when the net has one, as one 1x1 conv.
    heads: Conv<B>,
}

impl<B> GpuUnet<B> {
    pub fn load<D: Compute<Buf = B>>(gpu: &D, vb: VarBuilder, heads: Heads) -> Load<Self> {
        let names: &[&str] = match heads {
            Heads::Mask => &["mask"],
            Heads::MaskEdge => &["mask", "edge"],
        };
        let (mut hw, mut hb) = (Vec::new(), Vec::new());
        for name in names {
            let v = vb.pp("head").pp(*name);
            hw.extend(
                v.get((1, 32, 1, 1), "weight")?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
            hb.extend(v.get(1, "bias")?.to_vec1::<f32>()?);
        }
        Ok(Self {
            stem: ConvRelu::load(gpu, vb.pp("enc1.0"), 96, 3, 3)?,
            squeeze: ConvRelu::load(gpu, vb.pp("enc1.1"), 32, 96, 1)?,
            stem2: ConvRelu::load(gpu, vb.pp("enc1.2"), 32, 32, 3)?,
            enc: [(2, 64, 32), (3, 128, 64), (4, 256, 128)]
                .into_iter()
                .map(|(i, cout, cin)| DoubleConv::load(gpu, vb.pp(format!("enc{i}")), cout, cin))
                .collect::<Load<Vec<_>>>()?,
            dec: [(1, 256, 128), (2, 128, 64), (3, 64, 32)]
                .into_iter()
                .map(|(i, cin, cout)| UpStage::load(gpu, vb.pp(format!("dec{i}")), cin, cout))
                .collect::<Load<Vec<_>>>()?,
            heads: Conv::new(gpu, &hw, &hb, names.len(), 32, 1).map_err(load_err)?,
        })
    }

    /// [n, 3, 188, 188] tiles to [n, heads, 100, 100] probabilities.
    pub fn forward<R: Record<Buf = B>>(&self, r: &mut R, x: &Tensor<B>) -> Result<Tensor<B>> {
        if x.shape[1..] != [3, TILE_IN, TILE_IN] {
            return Err(GpuError::Shape(format!(
                "unet: tiles must be [n, 3, {TILE_IN}, {TILE_IN}], got {:?}",
                x.shape
            )));
        }
        let a = self.stem.forward(r, x)?;
        let b = self.squeeze.forward(r, &a)?;
        let mut skips = vec![self.stem2.forward(r, &b)?];
        for stage in &self.enc {
            let pooled = ops::maxpool2x2(r, skips.last().expect("e1"))?;
            skips.push(stage.forward(r, &pooled)?);
        }
        let mut y = skips.pop().expect("e4");
        for stage in &self.dec {
            y = stage.forward(r, &y, &skips.pop().expect("skip per stage"))?;
        }
        let out = ops::conv1x1(r, &y, &self.heads, false, None)?;
        ops::sigmoid(r, &out, 0, self.heads.cout)?;
        Ok(out)
    }
}

/// The three cell nets' maps for `count` tiles ([count, 3, 188, 188] f32):
/// per tile (rbc, rbc edge, wbc, platelets), each 100x100.
pub fn cell_tiles<D: Compute>(
    gpu: &D,
    nets: &[GpuUnet<D::Buf>; 3],
    data: &[f32],
    count: usize,
) -> Result<Vec<[Vec<f32>; 4]>> {
    let per = 3 * TILE_IN * TILE_IN;
    if data.len() != count * per {
        return Err(GpuError::Shape(format!(
            "{} values for {count} tiles of {TILE_IN}x{TILE_IN}x3",
            data.len()
        )));
    }
    let plane = TILE_OUT * TILE_OUT;
    // The largest activation is 96 channels at 186x186 per tile; all of a
    // tile's activations together come to under three times that.
    let peak = (96 * (TILE_IN - 2) * (TILE_IN - 2) * 4) as u64;
    let chunk = (gpu.max_binding() / peak).min(super::ACTIVATION_BUDGET / (3 * peak)) as usize;
    let chunk = chunk.max(1);
    let mut out = Vec::with_capacity(count);
    for start in (0..count).step_by(chunk) {
        let k = chunk.min(count - start);
        let mut r = gpu.recorder();
        let x = gpu.tensor_from(
            [k, 3, TILE_IN, TILE_IN],
            &data[start * per..(start + k) * per],
        )?;
        let mut reads = Vec::with_capacity(3);
        for net in nets {
            let y = net.forward(&mut r, &x)?;
            reads.push((r.read(&y.buf, (y.len() * 4) as u64)?, y.shape[1]));
        }
        let bytes = r.finish()?;
        let maps: Vec<(Vec<f32>, usize)> = reads
            .iter()
            .map(|&(rb, c)| (f32s(&bytes[rb.0]), c))
            .collect();
        let [(rbc, rc), (wbc, wc), (plt, pc)] = &maps[..] else {
            unreachable!("three nets")
        };
        if *rc != 2 {
            return Err(GpuError::Shape("the rbc net has no edge head".into()));
        }
        for i in 0..k {
            let at = |m: &[f32], c: usize, ch: usize| m[(i * c + ch) * plane..][..plane].to_vec();
            out.push([
                at(rbc, 2, 0),
                at(rbc, 2, 1),
                at(wbc, *wc, 0),
                at(plt, *pc, 0),
            ]);
        }
    }
    Ok(out)
}

pub struct GpuMalaria<B> {
    convs: Vec<Conv<B>>,
    fc: Conv<B>,
}

impl<B> GpuMalaria<B> {
    pub fn load<D: Compute<Buf = B>>(gpu: &D, vb: VarBuilder) -> Load<Self> {
        let mut cin = CHANNELS;
        let mut convs = Vec::with_capacity(WIDTHS.len());
        for (i, &c) in WIDTHS.iter().enumerate() {
            convs.push(load_conv(gpu, &vb.pp(format!("conv{i}")), [c, cin, 3, 3])?);
            cin = c;
        }
        let fc = vb.pp("fc");
        let w = fc
            .get((1, cin), "weight")?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let b = fc.get(1, "bias")?.to_vec1::<f32>()?;
        Ok(Self {
            convs,
            fc: Conv::new(gpu, &w, &b, 1, cin, 1).map_err(load_err)?,
        })
    }

    /// P(parasitized) per crop. The two input planes are made on the host
    /// (`model::malaria::planes`): a per-crop mean over 2,500 bytes.
    pub fn classify<D: Compute<Buf = B>>(&self, gpu: &D, crops: &[&[u8]]) -> Result<Vec<f32>> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let mut data = Vec::with_capacity(crops.len() * CHANNELS * CROP * CROP);
        for c in crops {
            if c.len() != CROP * CROP {
                return Err(GpuError::Shape(format!(
                    "malaria: crop must be {CROP}x{CROP}, got {} bytes",
                    c.len()
                )));
            }
            data.extend(crate::model::malaria::planes(c));
        }
        let mut r = gpu.recorder();
        let mut x = gpu.tensor_from([crops.len(), CHANNELS, CROP, CROP], &data)?;
        for (i, conv) in self.convs.iter().enumerate() {
            x = ops::conv2d(&mut r, &x, conv, 1, 1, true)?;
            if i + 1 < self.convs.len() {
                x = ops::maxpool2x2(&mut r, &x)?;
            }
        }
        let pooled = ops::global_avg_pool(&mut r, &x)?;
        let logit = ops::linear(&mut r, &pooled, &self.fc)?;
        ops::sigmoid(&mut r, &logit, 0, 1)?;
        let rb = r.read(&logit.buf, (logit.len() * 4) as u64)?;
        let out = r.finish()?;
        Ok(f32s(&out[rb.0])[..crops.len()].to_vec())
    }
}

/// The white-cell classifier of the differential (`model::wbc`): seven
/// padded 3x3 convolutions with ReLU, a 2x2 max-pool after those of
/// `wbc::POOL_AFTER`, the global mean, one linear layer and a softmax over
/// `wbc::CLASSES`. Uploaded from the host net's weights, whose trained
/// layouts are turned into the ops' (PyTorch's) ones here.
pub struct GpuWbc<B> {
    convs: Vec<Conv<B>>,
    fc: Conv<B>,
}

impl<B> GpuWbc<B> {
    pub fn new<D: Compute<Buf = B>>(gpu: &D, net: &WbcNet) -> Load<Self> {
        let convs = net
            .convs
            .iter()
            .map(|(w, b)| {
                let (w, cout, cin) = wbc::oihw(w)?;
                Conv::new(gpu, &w, &b.to_vec1::<f32>()?, cout, cin, 3).map_err(load_err)
            })
            .collect::<Load<_>>()?;
        // Trained as [inputs, outputs]; `ops::linear` takes [outputs, inputs].
        let fc_w = net.fc_w.t()?.contiguous()?;
        let (outputs, inputs) = fc_w.dims2()?;
        let fc = Conv::new(
            gpu,
            &fc_w.flatten_all()?.to_vec1::<f32>()?,
            &net.fc_b.to_vec1::<f32>()?,
            outputs,
            inputs,
            1,
        )
        .map_err(load_err)?;
        Ok(Self { convs, fc })
    }

    /// Class probabilities per window (`wbc::CROP` square, interleaved RGB
    /// in 0..255, as `wbc::sample_window` cuts them). The optical-density
    /// planes are made on the host (`wbc::planes`: a percentile per channel
    /// of 4,096 pixels) and laid out channel-first for the ops.
    pub fn classify<D: Compute<Buf = B>>(
        &self,
        gpu: &D,
        crops: &[&[f32]],
    ) -> Result<Vec<[f32; 9]>> {
        const PIXELS: usize = wbc::CROP * wbc::CROP;
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let mut data = Vec::with_capacity(crops.len() * 3 * PIXELS);
        for c in crops {
            if c.len() != 3 * PIXELS {
                return Err(GpuError::Shape(format!(
                    "wbc: a window must be {0}x{0}x3, got {1} values",
                    wbc::CROP,
                    c.len()
                )));
            }
            let planes = wbc::planes(c);
            for ch in 0..3 {
                data.extend(planes.iter().skip(ch).step_by(3));
            }
        }
        let mut r = gpu.recorder();
        let mut x = gpu.tensor_from([crops.len(), 3, wbc::CROP, wbc::CROP], &data)?;
        for (i, conv) in self.convs.iter().enumerate() {
            x = ops::conv2d(&mut r, &x, conv, 1, 1, true)?;
            if wbc::POOL_AFTER.contains(&i) {
                x = ops::maxpool2x2(&mut r, &x)?;
            }
        }
        let pooled = ops::global_avg_pool(&mut r, &x)?;
        let logits = ops::linear(&mut r, &pooled, &self.fc)?;
        ops::softmax(&mut r, &logits)?;
        let rb = r.read(&logits.buf, (logits.len() * 4) as u64)?;
        let out = r.finish()?;
        let p = f32s(&out[rb.0]);
        Ok(p.chunks_exact(wbc::CLASSES.len())
            .take(crops.len())
            .map(|row| {
                let mut a = [0f32; 9];
                a.copy_from_slice(row);
                a
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{on_every_device, Compute};
    use crate::model::malaria::MalariaNet;
    use crate::model::unet::Unet;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

    fn weights(path: &str) -> VarBuilder<'static> {
        let p = format!("{ROOT}/models/{path}");
        crate::model::load_weights(p.as_ref(), &Device::Cpu).unwrap()
    }

    fn rel_l2(a: &[f32], b: &[f32]) -> f32 {
        let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        (num / den.max(1e-30)).sqrt() as f32
    }

    /// Two tiles of the real smear fixture through all three nets on both
    /// paths: every map within relative L2 1e-4 of the CPU nets.
    #[test]
    fn unets_match_the_cpu_nets_on_a_real_smear() {
        on_every_device!(unets_match_the_cpu_nets_on_a_real_smear_on);
    }

    fn unets_match_the_cpu_nets_on_a_real_smear_on<D: Compute>(gpu: &D) {
        let img = image::open(format!("{ROOT}/tests/fixtures/smear_cbc_crop.png"))
            .unwrap()
            .to_rgb8();
        let tiles =
            crate::imaging::smear::tile(img.as_raw(), img.width() as usize, img.height() as usize);
        let count = tiles.count.min(2);
        let data = &tiles.data[..count * 3 * TILE_IN * TILE_IN];
        let names = [
            ("rbc", Heads::MaskEdge),
            ("wbc", Heads::Mask),
            ("plt", Heads::Mask),
        ];
        let cpu: Vec<Unet> = names
            .iter()
            .map(|(n, h)| Unet::load(weights(&format!("cbc/{n}.safetensors")), *h).unwrap())
            .collect();
        let dev: [GpuUnet<D::Buf>; 3] = names
            .map(|(n, h)| GpuUnet::load(gpu, weights(&format!("cbc/{n}.safetensors")), h).unwrap());
        let got = cell_tiles(gpu, &dev, data, count).unwrap();
        let want = crate::frame::cell_tiles(
            &cpu[0],
            &cpu[1],
            &cpu[2],
            data.to_vec(),
            count,
            &Device::Cpu,
        )
        .unwrap();
        for (g, w) in got.iter().zip(&want) {
            for (name, a, b) in [
                ("rbc", &g[0], &w.rbc),
                ("rbc edge", &g[1], &w.rbc_edge),
                ("wbc", &g[2], &w.wbc),
                ("platelets", &g[3], &w.platelets),
            ] {
                let e = rel_l2(a, b);
                assert!(e < 1e-4, "{name}: relative L2 {e}");
            }
        }
    }

    #[test]
    fn malaria_matches_the_cpu_net() {
        on_every_device!(malaria_matches_the_cpu_net_on);
    }

    fn malaria_matches_the_cpu_net_on<D: Compute>(gpu: &D) {
        let cpu = MalariaNet::load(weights("malaria/malaria.safetensors")).unwrap();
        let dev = GpuMalaria::load(gpu, weights("malaria/malaria.safetensors")).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        // Disc-shaped cells with random texture, as the crops look.
        let crops: Vec<Vec<u8>> = (0..5)
            .map(|_| {
                (0..CROP * CROP)
                    .map(|i| {
                        let (x, y) = ((i % CROP) as f32 - 24.5, (i / CROP) as f32 - 24.5);
                        if x * x + y * y < 22.0 * 22.0 {
                            rng.gen_range(60..220)
                        } else {
                            0
                        }
                    })
                    .collect()
            })
            .collect();
        let refs: Vec<&[u8]> = crops.iter().map(|c| &c[..]).collect();
        let want = cpu.classify(&refs, &Device::Cpu).unwrap();
        let got = dev.classify(gpu, &refs).unwrap();
        let e = rel_l2(&got, &want);
        assert!(e < 1e-4, "malaria: {got:?} against {want:?}");
        assert!(dev.classify(gpu, &[&[0u8; 10][..]]).is_err());
    }

    /// Windows of the real smear fixture, cut as the pipeline cuts them
    /// (around a white cell, over red cells, at the edge): every class
    /// probability within 1e-4 of the CPU backend's kernels.
    #[test]
    fn wbc_matches_the_cpu_kernels_on_a_real_smear() {
        on_every_device!(wbc_matches_the_cpu_kernels_on_a_real_smear_on);
    }

    fn wbc_matches_the_cpu_kernels_on_a_real_smear_on<D: Compute>(gpu: &D) {
        use crate::model::wbc::{sample_window, WbcKernels, WINDOW_RBC};
        let path = format!("{ROOT}/models/wbc/wbc.safetensors");
        let net = WbcNet::from_safetensors(path.as_ref(), &Device::Cpu).unwrap();
        let cpu = WbcKernels::new(&net).unwrap();
        let dev = GpuWbc::new(gpu, &net).unwrap();
        let img = image::open(format!("{ROOT}/tests/fixtures/smear_cbc.jpg"))
            .unwrap()
            .into_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let windows: Vec<Vec<f32>> = [(0.5, 0.5), (0.2, 0.3), (0.8, 0.7), (0.0, 1.0)]
            .iter()
            .map(|&(fx, fy)| {
                let (cx, cy) = (fx * w as f32, fy * h as f32);
                sample_window(img.as_raw(), w, h, cx, cy, WINDOW_RBC * 100.0)
            })
            .collect();
        let refs: Vec<&[f32]> = windows.iter().map(Vec::as_slice).collect();
        let want = cpu.classify(&refs).unwrap();
        let got = dev.classify(gpu, &refs).unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            let sum: f32 = g.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "{g:?} sums to {sum}");
            for (a, b) in g.iter().zip(w) {
                assert!((a - b).abs() < 1e-4, "{g:?} against {w:?}");
            }
        }
        // One window alone gives what it gave in the batch.
        let one = dev.classify(gpu, &refs[1..2]).unwrap();
        for (a, b) in one[0].iter().zip(&got[1]) {
            assert!((a - b).abs() < 1e-6);
        }
        assert!(dev.classify(gpu, &[&[0f32; 10][..]]).is_err());
    }
}
