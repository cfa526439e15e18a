//! Face masking of the full-size frame on the device, with the same rules
//! as `imaging::mask` (regions, privacy floors, three box-blur pairs for the
//! gaussian). Masking reads and writes only inside the regions, so only the
//! band of rows that holds them goes up, is masked in place, and comes back
//! for encoding: for a face in a 720p frame, a fraction of the frame.

use image::RgbImage;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{grid_1d, jpeg, Compute, GpuError, Record, Result, Tensor};
use crate::frame::Resident;
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
    apply_planned(gpu, img, None, boxes, p, &plan)
}

/// [`apply_jpeg`] with the file's layout already worked out, on `copy`
/// (`img`'s pixels already on the device, masked in place) if given.
fn apply_planned<D: Compute>(
    gpu: &D,
    img: &RgbImage,
    copy: Option<&D::Buf>,
    boxes: &[[f32; 4]],
    p: MaskParams,
    plan: &jpeg::Plan,
) -> Result<Encoded> {
    let t0 = Instant::now();
    let (w, h) = img.dimensions();
    // Before any work: a frame the device cannot encode is not masked here.
    plan.fits(gpu)?;
    let regions = padded_regions(boxes, p, w, h);
    let uploaded;
    let frame = match copy {
        Some(buf) => buf,
        None => {
            uploaded = gpu.upload("frame", img.as_raw())?;
            &uploaded
        }
    };
    if !regions.is_empty() {
        let mut r = gpu.recorder();
        record(&mut r, frame, (w as usize, img.as_raw().len()), &regions, p)?;
        r.finish()?;
    }
    let t1 = Instant::now();
    let jpeg = jpeg::finish(gpu, gpu.recorder(), frame, plan)?;
    Ok(Encoded {
        jpeg,
        regions,
        mask: t1 - t0,
        encode: t1.elapsed(),
    })
}

/// Device bytes that requests may hold on one device between them: frames
/// uploaded for their batch and masking, and the scratch of JPEG encodes
/// (frame, coefficients and worst-case slots: about 26 MB for a 720p
/// frame at the default quality, 60 MB at 1080p). Past it, a frame goes
/// up with its batch instead, and a JPEG is masked on the device and
/// encoded on the CPU, so concurrent requests or a huge upload cannot
/// exhaust device memory.
pub const DEVICE_SCRATCH_BUDGET: u64 = 1 << 30;

/// What the request path needs of a device for masking, so it can hold
/// any device behind one pointer.
pub trait DeviceMasker: Send + Sync {
    /// [`apply`] on this device.
    fn mask(&self, img: &mut RgbImage, boxes: &[[f32; 4]], p: MaskParams) -> Result<Vec<Region>>;
    /// `img`'s copy on this device, for the batch to letterbox and then
    /// [`DeviceMasker::mask_jpeg`] to mask and encode; [`GpuError::Busy`]
    /// when the budget is spent, [`GpuError::Shape`] when the device cannot
    /// bind a frame that big.
    fn upload(&self, img: &RgbImage) -> Result<Resident>;
    /// [`apply_jpeg`] on this device, on `copy` (from `upload`, of this
    /// very `img`) rather than a fresh upload when it is given and no one
    /// else holds it; [`GpuError::Busy`] when the encoding's scratch would
    /// not fit what is left of the budget.
    fn mask_jpeg(
        &self,
        img: &RgbImage,
        copy: Option<Resident>,
        boxes: &[[f32; 4]],
        p: MaskParams,
        quality: u8,
    ) -> Result<Encoded>;
}

/// A request's frame in device memory (see [`Resident`]), holding its
/// share of the device's budget.
pub struct DeviceFrame<D: Compute> {
    dev: Arc<D>,
    buf: D::Buf,
    size: (u32, u32),
    _held: Held,
}

impl<D: Compute> DeviceFrame<D> {
    /// The buffer of `copy` if it holds a `size` frame on `gpu` itself.
    pub fn on<'a>(copy: &'a Resident, gpu: &D, size: (u32, u32)) -> Option<&'a D::Buf> {
        copy.get::<Self>()
            .filter(|f| std::ptr::eq(Arc::as_ptr(&f.dev), gpu) && f.size == size)
            .map(|f| &f.buf)
    }
}

/// A device's masker, with the budget its requests' frames and JPEG
/// encodes share.
pub struct OnDevice<D> {
    dev: Arc<D>,
    budget: Budget,
}

impl<D> OnDevice<D> {
    pub fn new(dev: Arc<D>, budget: u64) -> Self {
        Self {
            dev,
            budget: Budget {
                left: Arc::new(Mutex::new(budget)),
                total: budget,
            },
        }
    }
}

impl<D: Compute> DeviceMasker for OnDevice<D> {
    fn mask(&self, img: &mut RgbImage, boxes: &[[f32; 4]], p: MaskParams) -> Result<Vec<Region>> {
        apply(self.dev.as_ref(), img, boxes, p)
    }

    fn upload(&self, img: &RgbImage) -> Result<Resident> {
        let bytes = img.as_raw().len() as u64;
        if bytes > self.dev.max_binding() {
            return Err(GpuError::Shape(format!(
                "a {bytes}-byte frame is over the device's {}-byte binding limit",
                self.dev.max_binding()
            )));
        }
        let held = self.budget.take(bytes, || {
            format!("a {}x{} frame", img.width(), img.height())
        })?;
        Ok(Resident::new(DeviceFrame {
            buf: self.dev.upload("frame", img.as_raw())?,
            dev: self.dev.clone(),
            size: img.dimensions(),
            _held: held,
        }))
    }

    fn mask_jpeg(
        &self,
        img: &RgbImage,
        copy: Option<Resident>,
        boxes: &[[f32; 4]],
        p: MaskParams,
        quality: u8,
    ) -> Result<Encoded> {
        let plan = jpeg::Plan::new(img.width(), img.height(), quality)?;
        // Masking writes the copy in place: only a copy no batch still reads.
        let copy = copy.filter(Resident::is_sole);
        let buf = copy
            .as_ref()
            .and_then(|c| DeviceFrame::on(c, self.dev.as_ref(), img.dimensions()));
        // A copy already holds the frame's share of the budget.
        let frame_bytes = if buf.is_some() {
            img.as_raw().len() as u64
        } else {
            0
        };
        let _held = self.budget.take(plan.device_bytes() - frame_bytes, || {
            format!("a {}x{} JPEG", img.width(), img.height())
        })?;
        apply_planned(self.dev.as_ref(), img, buf, boxes, p, &plan)
    }
}

/// Device bytes left to hand out, of `total`.
struct Budget {
    left: Arc<Mutex<u64>>,
    total: u64,
}

/// Bytes taken from a [`Budget`], given back on drop.
struct Held(Arc<Mutex<u64>>, u64);

impl Budget {
    /// `n` bytes for `what`, or [`GpuError::Busy`].
    fn take(&self, n: u64, what: impl FnOnce() -> String) -> Result<Held> {
        let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        if n > *left {
            return Err(GpuError::Busy(format!(
                "{} needs {} MiB of device memory; not that much of the {} MiB budget is free",
                what(),
                n.div_ceil(1 << 20),
                self.total >> 20
            )));
        }
        *left -= n;
        Ok(Held(self.left.clone(), n))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += self.1;
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
    use crate::gpu::{on_every_device, on_every_shared_device, Compute};
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

    /// A request's copy of its frame on the device is what gets masked and
    /// encoded: the same file as a fresh upload gives, with no second
    /// upload (the budget below has room for only one frame). A copy that
    /// someone else still holds is not written, and one of another frame
    /// is not used. What the copies held is given back.
    #[test]
    fn a_request_copy_is_masked_in_place_and_not_uploaded_again() {
        on_every_shared_device!(copy_case);
    }

    fn copy_case<D: Compute>(dev: Arc<D>) {
        let img = photo();
        let boxes = [[170.0, 60.0, 330.0, 250.0], [20.0, 300.0, 90.0, 380.0]];
        let p = MaskParams {
            method: MaskMethod::Gaussian,
            strength: 25,
            padding: 0.1,
        };
        let want = apply_jpeg(dev.as_ref(), &img, &boxes, p, 90).unwrap().jpeg;
        let need = jpeg::Plan::new(img.width(), img.height(), 90)
            .unwrap()
            .device_bytes();
        let frame = img.as_raw().len() as u64;

        // Room for one frame and its encoding's scratch.
        let one = OnDevice::new(dev.clone(), need);
        let copy = one.upload(&img).unwrap();
        // While the copy holds its share, a fresh upload would not fit...
        let err = one.mask_jpeg(&img, None, &boxes, p, 90).unwrap_err();
        assert!(matches!(err, GpuError::Busy(_)), "{err}");
        // ...and the copy's encoding does.
        let got = one.mask_jpeg(&img, Some(copy), &boxes, p, 90).unwrap();
        assert_eq!(got.jpeg, want, "the copy's file is a fresh upload's");
        assert_eq!(got.regions.len(), 2);
        // Everything was given back: a fresh upload fits again.
        assert_eq!(one.mask_jpeg(&img, None, &boxes, p, 90).unwrap().jpeg, want);

        // A copy still held elsewhere (a batch reading it) is left alone.
        let two = OnDevice::new(dev.clone(), need + frame);
        let copy = two.upload(&img).unwrap();
        let batch = copy.clone();
        let got = two.mask_jpeg(&img, Some(copy), &boxes, p, 90).unwrap();
        assert_eq!(got.jpeg, want);
        let buf = DeviceFrame::on(&batch, dev.as_ref(), img.dimensions()).unwrap();
        let mut r = dev.recorder();
        let rb = r.read(buf, frame).unwrap();
        assert_eq!(r.finish().unwrap()[rb.0], *img.as_raw(), "not masked");

        // Another frame's copy (here a crop of it) is not taken for this one.
        let crop = image::imageops::crop_imm(&img, 0, 0, 64, 64).to_image();
        let other = two.upload(&crop).unwrap();
        assert!(DeviceFrame::on(&other, dev.as_ref(), img.dimensions()).is_none());
        drop(batch);
        let got = two.mask_jpeg(&img, Some(other), &boxes, p, 90).unwrap();
        assert_eq!(got.jpeg, want);
        assert!(
            two.budget.take(need + frame, String::new).is_ok(),
            "all given back"
        );
    }

    /// An encode that would overspend the device's scratch budget is
    /// refused as busy, and the pipeline then masks on the device and
    /// encodes on the CPU; what an encode takes is given back.
    #[test]
    fn a_spent_budget_leaves_the_encoding_to_the_cpu() {
        on_every_shared_device!(budget_case);
    }

    fn budget_case<D: Compute>(dev: Arc<D>) {
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
        let err = small.mask_jpeg(&img, None, &boxes, p, 95).unwrap_err();
        assert!(matches!(err, GpuError::Busy(_)), "{err}");
        let exact = OnDevice::new(dev, need);
        for _ in 0..2 {
            exact.mask_jpeg(&img, None, &boxes, p, 95).unwrap();
        }
    }
}
