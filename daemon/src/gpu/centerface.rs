//! CenterFace on a GPU device: the architecture of `model::centerface`,
//! block for block, with its weights uploaded once and a whole batch
//! recorded into one submission. Input goes up as RGB8 bytes (whole frames,
//! or images the host letterboxed) and is resized and laid out on the
//! device; the heads come back with the heatmap's sigmoid applied.

use candle_core::Tensor as CTensor;
use candle_nn::VarBuilder;

use super::mask::DeviceFrame;
use super::ops::{self, Conv, Prep};
use super::{
    f32s, load_conv, load_err, Compute, GpuError, Record, Result, Tensor, ACTIVATION_BUDGET,
};
use crate::frame::FaceImage;
use crate::model::centerface::{Output, HEAD_CHANNELS, OUT_STRIDE, STAGES, STRIDE, TAPS};

struct InvertedResidual<B> {
    expand: Option<Conv<B>>,
    dw: Conv<B>,
    project: Conv<B>,
    stride: usize,
    residual: bool,
}

impl<B> InvertedResidual<B> {
    fn load<D: Compute<Buf = B>>(
        gpu: &D,
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        t: usize,
        stride: usize,
    ) -> candle_core::Result<Self> {
        let hidden = cin * t;
        Ok(Self {
            expand: if t == 1 {
                None
            } else {
                Some(load_conv(gpu, &vb.pp("expand"), [hidden, cin, 1, 1])?)
            },
            dw: load_conv(gpu, &vb.pp("dw"), [hidden, 1, 3, 3])?,
            project: load_conv(gpu, &vb.pp("project"), [cout, hidden, 1, 1])?,
            stride,
            residual: stride == 1 && cin == cout,
        })
    }

    fn forward<R: Record<Buf = B>>(&self, r: &mut R, x: &Tensor<B>) -> Result<Tensor<B>> {
        let e;
        let hidden = match &self.expand {
            Some(c) => {
                e = ops::conv1x1(r, x, c, true, None)?;
                &e
            }
            None => x,
        };
        let d = ops::depthwise(r, hidden, &self.dw, self.stride, 1, true)?;
        ops::conv1x1(r, &d, &self.project, false, self.residual.then_some(x))
    }
}

struct UpBlock<B> {
    up: Conv<B>,
    lateral: Conv<B>,
}

impl<B> UpBlock<B> {
    fn load<D: Compute<Buf = B>>(
        gpu: &D,
        up: VarBuilder,
        lateral: VarBuilder,
        lateral_cin: usize,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            up: load_conv(gpu, &up, [24, 24, 2, 2])?,
            lateral: load_conv(gpu, &lateral, [24, lateral_cin, 1, 1])?,
        })
    }

    fn forward<R: Record<Buf = B>>(
        &self,
        r: &mut R,
        top: &Tensor<B>,
        skip: &Tensor<B>,
    ) -> Result<Tensor<B>> {
        let up = ops::conv_transpose2x2(r, top, &self.up, true)?;
        ops::conv1x1(r, skip, &self.lateral, true, Some(&up))
    }
}

struct Head<B> {
    feat: Conv<B>,
    out: Conv<B>,
}

impl<B> Head<B> {
    fn load<D: Compute<Buf = B>>(gpu: &D, vb: VarBuilder) -> candle_core::Result<Self> {
        let (mut w, mut b) = (Vec::new(), Vec::new());
        for (name, c) in [
            ("heatmap", 1),
            ("scale", 2),
            ("offset", 2),
            ("landmarks", 10),
        ] {
            let v = vb.pp(name);
            w.extend(
                v.get((c, 24, 1, 1), "weight")?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
            b.extend(v.get(c, "bias")?.to_vec1::<f32>()?);
        }
        Ok(Self {
            feat: load_conv(gpu, &vb.pp("feat"), [24, 24, 3, 3])?,
            out: Conv::new(gpu, &w, &b, HEAD_CHANNELS, 24, 1).map_err(load_err)?,
        })
    }

    fn forward<R: Record<Buf = B>>(&self, r: &mut R, x: &Tensor<B>) -> Result<Tensor<B>> {
        let y = ops::conv2d(r, x, &self.feat, 1, 1, true)?;
        let out = ops::conv1x1(r, &y, &self.out, false, None)?;
        ops::sigmoid(r, &out, 0, 1)?;
        Ok(out)
    }
}

pub struct GpuCenterFace<B> {
    stem: Conv<B>,
    blocks: Vec<InvertedResidual<B>>,
    top: Conv<B>,
    ups: Vec<UpBlock<B>>,
    head: Head<B>,
}

impl<B> GpuCenterFace<B> {
    pub fn load<D: Compute<Buf = B>>(gpu: &D, vb: VarBuilder) -> candle_core::Result<Self> {
        let stem = load_conv(gpu, &vb.pp("stem"), [32, 3, 3, 3])?;
        let mut blocks = Vec::with_capacity(17);
        let mut cin = 32;
        for (t, c, n, s) in STAGES {
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                let vbb = vb.pp(format!("blocks.{}", blocks.len()));
                blocks.push(InvertedResidual::load(gpu, vbb, cin, c, t, stride)?);
                cin = c;
            }
        }
        let top = load_conv(gpu, &vb.pp("neck.top"), [24, 320, 1, 1])?;
        let ups = [96, 32, 24]
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                UpBlock::load(
                    gpu,
                    vb.pp(format!("neck.up.{i}")),
                    vb.pp(format!("neck.lateral.{i}")),
                    c,
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            stem,
            blocks,
            top,
            ups,
            head: Head::load(gpu, vb.pp("head"))?,
        })
    }

    /// Bytes of activations one image of `h x w` allocates, and the largest
    /// single tensor among them.
    fn activation_bytes(h: usize, w: usize) -> (u64, u64) {
        let (mut total, mut peak) = (0u64, 0u64);
        let mut add = |c: usize, hh: usize, ww: usize| {
            let b = (c * hh * ww * 4) as u64;
            total += b;
            peak = peak.max(b);
        };
        add(3, h, w);
        let (mut hh, mut ww, mut cin) = (h / 2, w / 2, 32);
        add(32, hh, ww);
        for (t, c, n, s) in STAGES {
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                if t > 1 {
                    add(cin * t, hh, ww);
                }
                hh = hh.div_ceil(stride);
                ww = ww.div_ceil(stride);
                add(cin * t, hh, ww);
                add(c, hh, ww);
                cin = c;
            }
        }
        // Neck and heads: a few 24-channel maps per level, 15 head channels.
        for d in [16, 8, 4] {
            add(24 * 3, h / d, w / d);
        }
        add(24 + HEAD_CHANNELS, h / OUT_STRIDE, w / OUT_STRIDE);
        (total, peak)
    }

    /// Images per submission at `h x w` on this device.
    pub fn chunk<D: Compute>(gpu: &D, h: usize, w: usize) -> usize {
        let (total, peak) = Self::activation_bytes(h, w);
        ((ACTIVATION_BUDGET / total.max(1)).min(gpu.max_binding() / peak.max(1)) as usize).max(1)
    }

    /// A batch of whole frames and host-letterboxed images to the heads:
    /// each is uploaded as it is and letterboxed into its slot of the input
    /// on the device (`ops::letterbox`), so the host never resizes a frame.
    pub fn forward_images<D>(
        &self,
        gpu: &D,
        images: &[FaceImage],
        h: usize,
        w: usize,
    ) -> Result<Output>
    where
        D: Compute<Buf = B>,
    {
        if h == 0 || w == 0 || !h.is_multiple_of(STRIDE) || !w.is_multiple_of(STRIDE) {
            return Err(GpuError::Shape(format!(
                "centerface: H and W must be non-zero multiples of {STRIDE}, got {w}x{h}"
            )));
        }
        let n = images.len();
        let (oh, ow) = (h / OUT_STRIDE, w / OUT_STRIDE);
        let per = HEAD_CHANNELS * oh * ow;
        let mut all = Vec::with_capacity(n * per);
        let plain = Prep {
            bgr: false,
            scale: 1.0,
            offset: 0.0,
        };
        for range in frame_chunks(images, Self::chunk(gpu, h, w), (w, h)) {
            let k = range.len();
            let mut r = gpu.recorder();
            let x = r.tensor([k, 3, h, w])?;
            // Uploads live until the recording has run.
            let mut sources = Vec::with_capacity(k);
            for (slot, image) in images[range].iter().enumerate() {
                let host: Vec<u8>;
                let (bytes, src_size, fit_size): (&[u8], _, _) = match image {
                    FaceImage::Letterboxed(p) if p.len() == w * h * 3 => (p, (w, h), (w, h)),
                    FaceImage::Letterboxed(p) => {
                        return Err(GpuError::Shape(format!(
                            "centerface: {} bytes for a {w}x{h} input",
                            p.len()
                        )))
                    }
                    FaceImage::Frame(f, _) if (f.as_raw().len() as u64) <= gpu.max_binding() => {
                        let (_, rw, rh) =
                            crate::imaging::resize::fit(f.width(), f.height(), w as u32, h as u32);
                        (
                            f.as_raw(),
                            (f.width() as usize, f.height() as usize),
                            (rw as usize, rh as usize),
                        )
                    }
                    FaceImage::Frame(f, _) => {
                        // Bigger than one kernel argument may be on this
                        // device: letterboxed on the host instead.
                        host = crate::imaging::resize::letterbox(f, w as u32, h as u32)
                            .map_err(|e| GpuError::Shape(e.to_string()))?
                            .pixels;
                        (&host, (w, h), (w, h))
                    }
                };
                // The request's own copy on this device, else an upload.
                let copy = match image {
                    FaceImage::Frame(f, Some(c)) => DeviceFrame::on(c, gpu, f.dimensions()),
                    _ => None,
                };
                let src = match copy {
                    Some(buf) => buf,
                    None => {
                        sources.push(gpu.upload("frame", bytes)?);
                        &sources[sources.len() - 1]
                    }
                };
                ops::letterbox(&mut r, src, src_size, fit_size, &x, slot, plain)?;
            }
            let heads = self.forward(&mut r, &x)?;
            let rb = r.read(&heads.buf, (heads.len() * 4) as u64)?;
            let out = r.finish()?;
            all.extend(f32s(&out[rb.0])[..k * per].iter().copied());
            drop(sources);
        }
        heads_output(all, n, oh, ow)
    }

    /// An [n, 3, H, W] input (RGB, 0-255) to the [n, 15, H/4, W/4] heads.
    pub fn forward<R: Record<Buf = B>>(&self, r: &mut R, x: &Tensor<B>) -> Result<Tensor<B>> {
        let mut y = ops::conv2d(r, x, &self.stem, 2, 1, true)?;
        let mut taps = Vec::with_capacity(TAPS.len());
        for (i, block) in self.blocks.iter().enumerate() {
            let next = block.forward(r, &y)?;
            let prev = std::mem::replace(&mut y, next);
            if i > 0 && TAPS.contains(&(i - 1)) {
                taps.push(prev);
            }
        }
        taps.push(y);
        let mut y = ops::conv1x1(r, &taps[3], &self.top, true, None)?;
        for (up, skip) in self.ups.iter().zip([&taps[2], &taps[1], &taps[0]]) {
            y = up.forward(r, &y, skip)?;
        }
        self.head.forward(r, &y)
    }
}

/// Bytes of source images one submission may upload, beside its activations.
const SOURCE_BUDGET: u64 = ACTIVATION_BUDGET / 2;

/// Consecutive runs of at most `chunk` images whose uploads fit
/// [`SOURCE_BUDGET`] (a single image always makes a run).
fn frame_chunks(
    images: &[FaceImage],
    chunk: usize,
    (w, h): (usize, usize),
) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, image) in images.iter().enumerate() {
        let b = match image {
            FaceImage::Letterboxed(_) => (w * h * 3) as u64,
            // Already on the device.
            FaceImage::Frame(_, Some(_)) => 0,
            FaceImage::Frame(f, None) => f.as_raw().len() as u64,
        };
        if i > start && (i - start == chunk || bytes + b > SOURCE_BUDGET) {
            runs.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += b;
    }
    if start < images.len() {
        runs.push(start..images.len());
    }
    runs
}

/// Heads read back from the device as the CPU model's [`Output`].
fn heads_output(all: Vec<f32>, n: usize, oh: usize, ow: usize) -> Result<Output> {
    let dev = candle_core::Device::Cpu;
    let t = |e: candle_core::Error| GpuError::Run(e.to_string());
    let out = CTensor::from_vec(all, (n, HEAD_CHANNELS, oh, ow), &dev).map_err(t)?;
    Ok(Output {
        heatmap: out
            .narrow(1, 0, 1)
            .and_then(|v| v.contiguous())
            .map_err(t)?,
        scale: out.narrow(1, 1, 2).map_err(t)?,
        offset: out.narrow(1, 3, 2).map_err(t)?,
        landmarks: out.narrow(1, 5, 10).map_err(t)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{on_every_device, Compute};
    use crate::model::centerface::CenterFace;
    use candle_core::Device;

    const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

    fn weights() -> VarBuilder<'static> {
        let path = format!("{ROOT}/models/centerface/centerface.safetensors");
        crate::model::load_weights(path.as_ref(), &Device::Cpu).unwrap()
    }

    fn photos() -> Vec<image::RgbImage> {
        ["astronaut.jpg", "group.jpg"]
            .map(|name| {
                image::open(format!("{ROOT}/tests/fixtures/{name}"))
                    .unwrap()
                    .to_rgb8()
            })
            .to_vec()
    }

    fn rel_l2(a: &CTensor, b: &CTensor) -> f32 {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let num: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum();
        let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        (num / den.max(1e-30)).sqrt() as f32
    }

    /// Letterboxed real photos (as the batcher makes them) through both
    /// paths: every head within relative L2 1e-4 of the CPU model.
    #[test]
    fn heads_match_the_cpu_model_on_real_photos() {
        on_every_device!(heads_match_the_cpu_model_on_real_photos_on);
    }

    fn heads_match_the_cpu_model_on_real_photos_on<D: Compute>(gpu: &D) {
        let cpu = CenterFace::load(weights()).unwrap();
        let dev = GpuCenterFace::load(gpu, weights()).unwrap();
        let (w, h) = (320, 224);
        let images: Vec<FaceImage> = photos()
            .iter()
            .map(|img| {
                let lb = crate::imaging::resize::letterbox(img, w as u32, h as u32).unwrap();
                FaceImage::Letterboxed(lb.pixels)
            })
            .collect();
        let pixels: Vec<u8> = images
            .iter()
            .flat_map(|i| match i {
                FaceImage::Letterboxed(p) => p.clone(),
                FaceImage::Frame(..) => unreachable!(),
            })
            .collect();
        let a = cpu.forward_rgb8(&pixels, 2, h, w).unwrap();
        let b = dev.forward_images(gpu, &images, h, w).unwrap();
        for (name, p, q) in [
            ("heatmap", &a.heatmap, &b.heatmap),
            ("scale", &a.scale, &b.scale),
            ("offset", &a.offset, &b.offset),
            ("landmarks", &a.landmarks, &b.landmarks),
        ] {
            let e = rel_l2(&q.contiguous().unwrap(), &p.contiguous().unwrap());
            assert!(e < 1e-4, "{name}: relative L2 {e}");
        }
    }

    /// Whole frames letterboxed on the device against the CPU model on the
    /// host's letterbox: the same faces. The two letterboxes differ by the
    /// host's 8-bit rounding (ops tests), so boxes agree to a pixel, not
    /// bit for bit.
    #[test]
    fn frames_letterboxed_on_the_device_find_the_cpu_faces() {
        on_every_device!(frames_letterboxed_on_the_device_find_the_cpu_faces_on);
    }

    fn frames_letterboxed_on_the_device_find_the_cpu_faces_on<D: Compute>(gpu: &D) {
        use crate::frame::FaceBatch;
        use std::sync::Arc;
        let cpu = CenterFace::load(weights()).unwrap();
        let dev = GpuCenterFace::load(gpu, weights()).unwrap();
        let (w, h) = (320, 224);
        let mut frames: Vec<FaceImage> = photos()
            .into_iter()
            .map(|img| FaceImage::Frame(Arc::new(img), None))
            .collect();
        // A host-letterboxed image in the same batch takes the copy path.
        frames.push(FaceImage::Letterboxed(vec![90; w * h * 3]));
        let batch = FaceBatch {
            images: frames.clone(),
            width: w,
            height: h,
            thresholds: vec![0.5; frames.len()],
        };
        let a = cpu.forward_rgb8(&batch.packed().unwrap(), 3, h, w).unwrap();
        let b = dev.forward_images(gpu, &frames, h, w).unwrap();
        let e = rel_l2(&b.heatmap, &a.heatmap);
        assert!(e < 0.05, "heatmap: relative L2 {e}");
        let fa = crate::frame::decode_faces(&a, &batch).unwrap();
        let fb = crate::frame::decode_faces(&b, &batch).unwrap();
        assert!(fa[1].len() >= 2, "the group photo has faces: {:?}", fa[1]);
        for (i, (x, y)) in fa.iter().zip(&fb).enumerate() {
            assert_eq!(x.len(), y.len(), "image {i}: {x:?} against {y:?}");
            for (p, q) in x.iter().zip(y) {
                for (u, v) in [(p.x1, q.x1), (p.y1, q.y1), (p.x2, q.x2), (p.y2, q.y2)] {
                    assert!((u - v).abs() < 1.0, "image {i}: {p:?} against {q:?}");
                }
                assert!((p.score - q.score).abs() < 0.02, "{p:?} against {q:?}");
            }
        }
    }

    /// Frames the requests already put on the device give the very heads
    /// the batch's own uploads give; a copy that does not match its frame
    /// is not read (the batch uploads that frame).
    #[test]
    fn request_copies_give_the_batch_uploads_heads() {
        crate::gpu::on_every_shared_device!(request_copies_on);
    }

    fn request_copies_on<D: Compute>(gpu: std::sync::Arc<D>) {
        use crate::gpu::mask::{DeviceMasker, OnDevice};
        use std::sync::Arc;
        let net = GpuCenterFace::load(gpu.as_ref(), weights()).unwrap();
        let masker = OnDevice::new(gpu.clone(), 1 << 30);
        let (w, h) = (320, 224);
        let photos: Vec<Arc<image::RgbImage>> = photos().into_iter().map(Arc::new).collect();
        let plain: Vec<FaceImage> = photos
            .iter()
            .map(|f| FaceImage::Frame(f.clone(), None))
            .collect();
        let copies: Vec<FaceImage> = photos
            .iter()
            .map(|f| FaceImage::Frame(f.clone(), Some(masker.upload(f).unwrap())))
            .collect();
        let a = net.forward_images(gpu.as_ref(), &plain, h, w).unwrap();
        let b = net.forward_images(gpu.as_ref(), &copies, h, w).unwrap();
        for (p, q) in [(&a.heatmap, &b.heatmap), (&a.landmarks, &b.landmarks)] {
            let (p, q) = (p.flatten_all().unwrap(), q.flatten_all().unwrap());
            assert_eq!(p.to_vec1::<f32>().unwrap(), q.to_vec1::<f32>().unwrap());
        }
        // A copy of another frame's size is not taken for this frame.
        let small = Arc::new(image::imageops::crop_imm(&*photos[0], 0, 0, 50, 40).to_image());
        let wrong = vec![
            FaceImage::Frame(photos[0].clone(), Some(masker.upload(&small).unwrap())),
            plain[1].clone(),
        ];
        let c = net.forward_images(gpu.as_ref(), &wrong, h, w).unwrap();
        let (p, q) = (
            a.heatmap.flatten_all().unwrap(),
            c.heatmap.flatten_all().unwrap(),
        );
        assert_eq!(p.to_vec1::<f32>().unwrap(), q.to_vec1::<f32>().unwrap());
    }

    #[test]
    fn frame_chunks_respect_the_count_and_the_upload_budget() {
        use std::sync::Arc;
        let small = FaceImage::Letterboxed(Vec::new());
        let imgs = vec![small.clone(); 7];
        assert_eq!(frame_chunks(&imgs, 3, (8, 8)), vec![0..3, 3..6, 6..7]);
        assert!(frame_chunks(&[], 3, (8, 8)).is_empty());
        // 200 MP frames (600 MB each): one per submission.
        let big = FaceImage::Frame(Arc::new(image::RgbImage::new(20_000, 10_000)), None);
        let imgs = vec![small.clone(), big.clone(), big, small];
        assert_eq!(frame_chunks(&imgs, 32, (8, 8)), vec![0..2, 2..4]);
    }

    #[test]
    fn rejects_bad_input() {
        on_every_device!(rejects_bad_input_on);
    }

    fn rejects_bad_input_on<D: Compute>(gpu: &D) {
        let dev = GpuCenterFace::load(gpu, weights()).unwrap();
        let input = |n: usize| vec![FaceImage::Letterboxed(vec![0; n])];
        assert!(dev
            .forward_images(gpu, &input(40 * 64 * 3), 40, 64)
            .is_err());
        assert!(dev.forward_images(gpu, &input(10), 32, 32).is_err());
        assert!(dev.forward_images(gpu, &input(32 * 32 * 3), 32, 32).is_ok());
    }
}
