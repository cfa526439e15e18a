//! Face masking of the full-size frame on the device, with the same rules
//! as `imaging::mask` (regions, privacy floors, three box-blur pairs for the
//! gaussian). Masking reads and writes only inside the regions, so only the
//! band of rows that holds them goes up, is masked in place, and comes back
//! for encoding: for a face in a 720p frame, a fraction of the frame.

use image::RgbImage;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{grid_1d, jpeg, Compute, GpuError, Record, Result, Tensor};
use crate::imaging::mask::{blur_sigma, box_radii, pixel_block, MaskMethod, MaskParams, Region};

/// Workgroups covering the u32 words of rows `y0..y1` of a `w`-wide frame.
fn row_words(w: usize, y0: usize, y1: usize) -> [u32; 3] {
    let first = y0 * w * 3 / 4;
    let last = (y1 * w * 3).div_ceil(4);
    grid_1d(last - first)
}

fn region_buf<R: Record>(r: &R, reg: &Region) -> Result<Tensor<R::Buf>> {
    r.tensor([1, reg.h(), reg.w(), 3])
}

/// Mask every box (x1, y1, x2, y2 in image pixels) of `img` in place.
/// Returns the regions masked, as `imaging::mask::apply` does.
pub fn apply<D: Compute>(
    gpu: &D,
    img: &mut RgbImage,
    boxes: &[[f32; 4]],
    p: MaskParams,
) -> Result<Vec<Region>> {
    let (w, h) = img.dimensions();
    let regions = padded_regions(boxes, p, w, h);
    if regions.is_empty() {
        return Ok(regions);
    }
    // The rows any region covers; kernels see them as a frame of their own.
    let top = regions.iter().map(|r| r.y0).min().unwrap_or(0);
    let bottom = regions.iter().map(|r| r.y1).max().unwrap_or(0);
    let w = w as usize;
    let band = (top as usize * w * 3)..(bottom as usize * w * 3);
    let total = band.len();
    if total as u64 > gpu.max_binding() {
        return Err(GpuError::Shape(format!(
            "a {total}-byte band of rows is over the adapter's {}-byte binding limit",
            gpu.max_binding()
        )));
    }
    let mut r = gpu.recorder();
    let frame = gpu.upload("frame rows", &img.as_raw()[band.clone()])?;
    let shifted: Vec<Region> = regions
        .iter()
        .map(|reg| Region {
            y0: reg.y0 - top,
            y1: reg.y1 - top,
            ..*reg
        })
        .collect();
    record(&mut r, &frame, (w, total), &shifted, p)?;
    let rb = r.read(&frame, total as u64)?;
    let out = r.finish()?;
    let bytes = &out[rb.0];
    if bytes.len() != total {
        return Err(GpuError::Run("short frame readback".into()));
    }
    let raw: &mut [u8] = img;
    raw[band].copy_from_slice(bytes);
    Ok(regions)
}

/// A frame masked and encoded as JPEG on the device.
#[derive(Debug)]
pub struct Encoded {
    pub jpeg: Vec<u8>,
    pub regions: Vec<Region>,
    /// Upload and masking.
    pub mask: Duration,
    /// Encoding and bringing the file back.
    pub encode: Duration,
}

/// Mask every box of `img` and encode the result as a JPEG of `quality`,
/// all on the device: the frame goes up once and only the file comes
/// back. `img` is left as it was.
pub fn apply_jpeg<D: Compute>(
    gpu: &D,
    img: &RgbImage,
    boxes: &[[f32; 4]],
    p: MaskParams,
    quality: u8,
) -> Result<Encoded> {
    let plan = jpeg::Plan::new(img.width(), img.height(), quality)?;
    apply_planned(gpu, img, boxes, p, &plan)
}

/// [`apply_jpeg`] with the file's layout already worked out.
fn apply_planned<D: Compute>(
    gpu: &D,
    img: &RgbImage,
    boxes: &[[f32; 4]],
    p: MaskParams,
    plan: &jpeg::Plan,
) -> Result<Encoded> {
    let t0 = Instant::now();
    let (w, h) = img.dimensions();
    // Before any work: a frame the device cannot encode is not masked here.
    plan.fits(gpu)?;
    let regions = padded_regions(boxes, p, w, h);
    let frame = gpu.upload("frame", img.as_raw())?;
    if !regions.is_empty() {
        let mut r = gpu.recorder();
        record(
            &mut r,
            &frame,
            (w as usize, img.as_raw().len()),
            &regions,
            p,
        )?;
        r.finish()?;
    }
    let t1 = Instant::now();
    let jpeg = jpeg::finish(gpu, gpu.recorder(), &frame, plan)?;
    Ok(Encoded {
        jpeg,
        regions,
        mask: t1 - t0,
        encode: t1.elapsed(),
    })
}

/// Device bytes that JPEG encodes in flight on one device may hold
/// between them (frame, coefficients and worst-case slots: about 26 MB for
/// a 720p frame at the default quality, 60 MB at 1080p). A frame that
/// would go over is masked on the device and encoded on the CPU, so
/// concurrent requests or a huge upload cannot exhaust device memory.
pub const JPEG_SCRATCH_BUDGET: u64 = 1 << 30;

/// What the request path needs of a device for masking, so it can hold
/// any device behind one pointer.
pub trait DeviceMasker: Send + Sync {
    /// [`apply`] on this device.
    fn mask(&self, img: &mut RgbImage, boxes: &[[f32; 4]], p: MaskParams) -> Result<Vec<Region>>;
    /// [`apply_jpeg`] on this device; [`GpuError::Busy`] when its scratch
    /// would not fit what is left of the budget.
    fn mask_jpeg(
        &self,
        img: &RgbImage,
        boxes: &[[f32; 4]],
        p: MaskParams,
        quality: u8,
    ) -> Result<Encoded>;
}

/// A device's masker, with the budget its JPEG encodes share.
pub struct OnDevice<D> {
    dev: Arc<D>,
    budget: Budget,
}

impl<D> OnDevice<D> {
    pub fn new(dev: Arc<D>, budget: u64) -> Self {
        Self {
            dev,
            budget: Budget(Mutex::new(budget)),
        }
    }
}

impl<D: Compute + Send + Sync> DeviceMasker for OnDevice<D> {
    fn mask(&self, img: &mut RgbImage, boxes: &[[f32; 4]], p: MaskParams) -> Result<Vec<Region>> {
        apply(self.dev.as_ref(), img, boxes, p)
    }

    fn mask_jpeg(
        &self,
        img: &RgbImage,
        boxes: &[[f32; 4]],
        p: MaskParams,
        quality: u8,
    ) -> Result<Encoded> {
        let plan = jpeg::Plan::new(img.width(), img.height(), quality)?;
        let _held = self.budget.take(plan.device_bytes()).ok_or_else(|| {
            GpuError::Busy(format!(
                "a {}x{} JPEG needs {} MiB of device scratch; not that much of the {} MiB budget is free",
                img.width(),
                img.height(),
                plan.device_bytes() >> 20,
                JPEG_SCRATCH_BUDGET >> 20
            ))
        })?;
        apply_planned(self.dev.as_ref(), img, boxes, p, &plan)
    }
}

/// Bytes left to hand out.
struct Budget(Mutex<u64>);

/// Bytes taken from a [`Budget`], given back on drop.
struct Held<'a>(&'a Budget, u64);

impl Budget {
    fn take(&self, n: u64) -> Option<Held<'_>> {
        let mut left = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if n > *left {
            return None;
        }
        *left -= n;
        Some(Held(self, n))
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        *self.0 .0.lock().unwrap_or_else(|p| p.into_inner()) += self.1;
    }
}

fn padded_regions(boxes: &[[f32; 4]], p: MaskParams, w: u32, h: u32) -> Vec<Region> {
    boxes
        .iter()
        .filter_map(|b| Region::padded(*b, p.padding, w, h))
        .collect()
}

/// Record the masking of `regions` into `frame`, packed RGB8 rows `w`
/// wide, `total` bytes; region rows count from the buffer's first row.
fn record<R: Record>(
    r: &mut R,
    frame: &R::Buf,
    (w, total): (usize, usize),
    regions: &[Region],
    p: MaskParams,
) -> Result<()> {
    for reg in regions {
        let (x0, y0, rw, rh) = (reg.x0, reg.y0, reg.w() as u32, reg.h() as u32);
        let words = row_words(w, y0 as usize, reg.y1 as usize);
        match p.method {
            MaskMethod::Solid => r.dispatch(
                "mask_fill",
                &[w as u32, total as u32, x0, y0, reg.x1, reg.y1, 0, 0],
                &[frame],
                words,
            )?,
            MaskMethod::Pixelate => {
                let avg = region_buf(r, reg)?;
                let block = pixel_block(reg, p.strength) as u32;
                r.dispatch(
                    "mask_pixelate",
                    &[w as u32, x0, y0, rw, rh, block, 0, 0],
                    &[frame, &avg.buf],
                    grid_1d(avg.len()),
                )?;
                put(r, &avg, frame, (w, total), reg, false, words)?;
            }
            MaskMethod::Gaussian | MaskMethod::Elliptical => {
                let a = region_buf(r, reg)?;
                let b = region_buf(r, reg)?;
                let n = grid_1d(a.len());
                for (i, radius) in box_radii(blur_sigma(reg, p.strength))
                    .into_iter()
                    .enumerate()
                {
                    let radius = radius as u32;
                    // a -> b along rows (from the frame the first time), b -> a along columns.
                    let first = (i == 0) as u32;
                    r.dispatch(
                        "mask_box_blur",
                        &[w as u32, x0, y0, rw, rh, radius, 1, first],
                        &[frame, &a.buf, &b.buf],
                        n,
                    )?;
                    r.dispatch(
                        "mask_box_blur",
                        &[w as u32, x0, y0, rw, rh, radius, 0, 0],
                        &[frame, &b.buf, &a.buf],
                        n,
                    )?;
                }
                let ellipse = p.method == MaskMethod::Elliptical;
                put(r, &a, frame, (w, total), reg, ellipse, words)?;
            }
        }
    }
    Ok(())
}

fn put<R: Record>(
    r: &mut R,
    src: &Tensor<R::Buf>,
    frame: &R::Buf,
    (w, total): (usize, usize),
    reg: &Region,
    ellipse: bool,
    words: [u32; 3],
) -> Result<()> {
    let p = [
        w as u32,
        total as u32,
        reg.x0,
        reg.y0,
        reg.w() as u32,
        reg.h() as u32,
        ellipse as u32,
        0,
    ];
    r.dispatch("mask_put", &p, &[&src.buf, frame], words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{on_every_device, Compute};
    use crate::imaging::mask;

    fn photo() -> RgbImage {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/astronaut.png"
        );
        image::open(path).expect("fixture").to_rgb8()
    }

    /// Every method, on a real photo with overlapping and edge-clipped
    /// boxes, against the CPU masker: identical regions, and pixels equal
    /// but for rounding (blur sums run in another order) and the odd pixel
    /// on the ellipse's edge.
    #[test]
    fn every_method_matches_the_cpu_masker() {
        on_every_device!(every_method_matches_the_cpu_masker_on);
    }

    fn every_method_matches_the_cpu_masker_on<D: Compute>(gpu: &D) {
        let base = photo();
        // Overlapping and edge-clipped boxes over most of the frame, and one
        // small face, whose band of rows starts mid-frame.
        let spread = [
            [170.0, 60.0, 330.0, 250.0],
            [300.0, 200.0, 420.0, 330.0],
            [-20.0, 480.0, 61.5, 530.0],
        ];
        let one = [[201.3, 277.0, 263.0, 341.6]];
        for (boxes, method) in ["gaussian", "pixelate", "solid", "elliptical"]
            .into_iter()
            .flat_map(|m| [(&spread[..], m), (&one[..], m)])
        {
            for strength in [1, 31] {
                let p = MaskParams {
                    method: MaskMethod::parse(method).unwrap(),
                    strength,
                    padding: 0.1,
                };
                let mut cpu = base.clone();
                let mut dev = base.clone();
                let want = mask::apply(&mut cpu, boxes, p);
                let got = apply(gpu, &mut dev, boxes, p).unwrap();
                assert_eq!(got, want, "{method}: regions");
                let (mut off, mut worst) = (0usize, 0u8);
                for (a, b) in cpu.as_raw().iter().zip(dev.as_raw()) {
                    if a != b {
                        off += 1;
                        worst = worst.max(a.abs_diff(*b));
                    }
                }
                let changed = cpu
                    .as_raw()
                    .iter()
                    .zip(base.as_raw())
                    .filter(|(a, b)| a != b)
                    .count();
                assert!(
                    changed > 1_000,
                    "{method}: the CPU masker changed {changed} bytes"
                );
                assert!(
                    off * 1000 <= changed && worst <= 1 || method == "elliptical" && off * 200 <= changed,
                    "{method} strength {strength}: {off} of {changed} masked bytes differ, worst by {worst}"
                );
            }
        }
    }

    /// Masked and encoded on the device, the file decodes to what the CPU
    /// masker and encoder make of the same frame, and the frame itself is
    /// left alone.
    #[test]
    fn masked_jpeg_matches_the_cpu_path() {
        on_every_device!(masked_jpeg_matches_the_cpu_path_on);
    }

    fn masked_jpeg_matches_the_cpu_path_on<D: Compute>(gpu: &D) {
        use crate::imaging::{encode, OutputFormat};
        let base = photo();
        let boxes = [[170.0, 60.0, 330.0, 250.0], [201.3, 277.0, 263.0, 341.6]];
        for (method, quality) in [("gaussian", 80), ("pixelate", 95), ("elliptical", 60)] {
            let p = MaskParams {
                method: MaskMethod::parse(method).unwrap(),
                strength: 25,
                padding: 0.1,
            };
            let mut cpu = base.clone();
            let want = mask::apply(&mut cpu, &boxes, p);
            let cpu_px =
                image::load_from_memory(&encode(&cpu, OutputFormat::Jpeg, quality).unwrap())
                    .unwrap()
                    .to_rgb8();
            let got = apply_jpeg(gpu, &base, &boxes, p, quality).unwrap();
            assert_eq!(got.regions, want, "{method}: regions");
            let dev_px = image::load_from_memory(&got.jpeg).unwrap().to_rgb8();
            let mut worst_mean = 0.0f64;
            // Region by region: the masked pixels must be there, not the face.
            for reg in &want {
                let (mut to_cpu, mut to_face, mut n) = (0u64, 0u64, 0u64);
                for y in reg.y0..reg.y1 {
                    for x in reg.x0..reg.x1 {
                        for c in 0..3 {
                            let d = dev_px.get_pixel(x, y)[c];
                            to_cpu += d.abs_diff(cpu_px.get_pixel(x, y)[c]) as u64;
                            to_face += d.abs_diff(base.get_pixel(x, y)[c]) as u64;
                            n += 1;
                        }
                    }
                }
                let mean = to_cpu as f64 / n as f64;
                worst_mean = worst_mean.max(mean);
                assert!(
                    mean < 2.0 && to_cpu * 4 < to_face,
                    "{method}: {mean:.2} from the CPU's, {:.2} from the face",
                    to_face as f64 / n as f64
                );
            }
            assert_eq!(got.jpeg[..2], [0xff, 0xd8]);
            assert_eq!(
                image::load_from_memory(&got.jpeg)
                    .unwrap()
                    .to_rgb8()
                    .dimensions(),
                base.dimensions()
            );
            eprintln!("{method} q{quality}: worst region mean difference {worst_mean:.2}");
        }
        assert_eq!(base, photo(), "the frame is left as it was");
    }

    /// An encode that would overspend the device's scratch budget is
    /// refused as busy, and the pipeline then masks on the device and
    /// encodes on the CPU; what an encode takes is given back.
    #[test]
    fn a_spent_budget_leaves_the_encoding_to_the_cpu() {
        #[cfg(feature = "wgpu")]
        if let Some(g) = crate::gpu::wgpu_device::test_gpu() {
            budget_case(g);
        }
        if let Some(h) = crate::gpu::cuda_host::test_cuda_host() {
            budget_case(h);
        }
    }

    fn budget_case<D: Compute + Send + Sync + 'static>(dev: Arc<D>) {
        let img = photo();
        let boxes = [[170.0, 60.0, 330.0, 250.0]];
        let p = MaskParams {
            method: MaskMethod::Solid,
            strength: 25,
            padding: 0.1,
        };
        let need = jpeg::Plan::new(img.width(), img.height(), 95)
            .unwrap()
            .device_bytes();
        let small = OnDevice::new(dev.clone(), need - 1);
        let err = small.mask_jpeg(&img, &boxes, p, 95).unwrap_err();
        assert!(matches!(err, GpuError::Busy(_)), "{err}");
        let exact = OnDevice::new(dev, need);
        for _ in 0..2 {
            exact.mask_jpeg(&img, &boxes, p, 95).unwrap();
        }
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        {
            use crate::imaging::{encode, OutputFormat};
            use crate::pipeline::faces::{mask_and_encode, Masker};
            let masker = Masker::Device("test", Arc::new(small));
            let face = crate::model::Face {
                score: 1.0,
                x1: boxes[0][0],
                y1: boxes[0][1],
                x2: boxes[0][2],
                y2: boxes[0][3],
                landmarks: [[0.0; 2]; 5],
            };
            let mut frame = img.clone();
            let m =
                mask_and_encode(&masker, &mut frame, &[face], p, OutputFormat::Jpeg, 95).unwrap();
            assert_eq!((m.encoder, m.regions), ("host", 1));
            assert_ne!(frame, img, "masked in place");
            assert_eq!(m.bytes, encode(&frame, OutputFormat::Jpeg, 95).unwrap());
        }
    }
}
