//! A GPU backend that hands its work to the CPU once its device is gone.
//!
//! A lost wgpu device or a CUDA error that poisons the context does not come
//! back without a restart, and an appliance that answers 500 to every frame
//! until someone restarts it is worse than a slower one. So when a batch
//! fails and the device then reports itself unhealthy, the CPU models are
//! loaded and every later batch runs there; the batch that hit the failure
//! fails with the device's error (it was consumed by the device). /health
//! and `argus_backend_fallback` say that this happened and why.

use std::sync::{Arc, OnceLock};

use super::{cpu::CpuBackend, Backend, BackendError, Batch, BatchOutput, ModelPaths, ModelSet};

pub struct DeviceFallback {
    device: Box<dyn Backend>,
    cpu: Option<CpuBackend>,
    models: ModelPaths,
    set: ModelSet,
    cpu_max_batch: usize,
    why: Arc<OnceLock<String>>,
}

impl DeviceFallback {
    /// `cpu_max_batch`: the batch cap the CPU models get if they take over.
    pub fn new(
        device: Box<dyn Backend>,
        models: &ModelPaths,
        set: ModelSet,
        cpu_max_batch: usize,
    ) -> Self {
        Self {
            device,
            cpu: None,
            models: models.clone(),
            set,
            cpu_max_batch,
            why: Arc::new(OnceLock::new()),
        }
    }

    fn take_over(&mut self, error: &BackendError, unhealthy: BackendError) {
        match CpuBackend::load(&self.models, self.set, self.cpu_max_batch) {
            Ok(cpu) => {
                let why = format!(
                    "{} device failed ({unhealthy}; last batch: {error}); running on the CPU",
                    self.device.name()
                );
                tracing::error!(backend = self.device.name(), device = %self.device.device(), reason = %why, "device lost: the CPU takes over");
                self.cpu = Some(cpu);
                let _ = self.why.set(why);
            }
            Err(e) => tracing::error!(error = %e, "device lost and the CPU models failed to load"),
        }
    }
}

impl Backend for DeviceFallback {
    fn name(&self) -> &'static str {
        self.device.name()
    }

    fn device(&self) -> String {
        self.device.device()
    }

    fn health(&self) -> Result<(), BackendError> {
        match &self.cpu {
            Some(cpu) => cpu.health(),
            None => self.device.health(),
        }
    }

    fn max_batch_size(&self) -> usize {
        self.device.max_batch_size()
    }

    fn run(&mut self, batch: Batch) -> Result<BatchOutput, BackendError> {
        if let Some(cpu) = &mut self.cpu {
            return cpu.run(batch);
        }
        let result = self.device.run(batch);
        if let Err(e) = &result {
            if let Err(unhealthy) = self.device.health() {
                self.take_over(e, unhealthy);
            }
        }
        result
    }

    fn letterboxes_frames(&self) -> bool {
        // After a take-over the CPU letterboxes the frames it is sent.
        self.device.letterboxes_frames()
    }

    fn masker(&self) -> super::masker::Masker {
        // The device masker already falls back to the CPU frame by frame.
        self.device.masker()
    }

    fn fallback(&self) -> Option<Arc<OnceLock<String>>> {
        Some(self.why.clone())
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use crate::backend::{FaceBatch, FaceImage};
    use crate::gpu::Compute;

    fn faces(out: BatchOutput) -> Vec<Vec<crate::model::Face>> {
        match out {
            BatchOutput::Faces(f) => f,
            _ => panic!("not a face batch"),
        }
    }

    /// A real device, really destroyed: the failing batch errs, the next
    /// runs on the CPU and finds what the CPU backend finds.
    #[test]
    fn a_lost_wgpu_device_hands_over_to_the_cpu() {
        if crate::gpu::wgpu_device::test_gpu().is_none() {
            return;
        }
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../");
        let models = ModelPaths::in_dir(format!("{root}models").as_ref());
        let img = image::open(format!("{root}tests/fixtures/group.jpg"))
            .unwrap()
            .into_rgb8();
        let lb = crate::imaging::resize::letterbox(&img, 320, 224).unwrap();
        let batch = || {
            Batch::Faces(FaceBatch {
                images: vec![FaceImage::Letterboxed(lb.pixels.clone())],
                width: 320,
                height: 224,
                thresholds: vec![0.5],
            })
        };
        // A device of its own: destroying the shared test device would
        // break every other test.
        let own = crate::gpu::Gpu::open(crate::gpu::AdapterPolicy::AnyPreferHardware).unwrap();
        let accel = crate::backend::accel::AccelBackend::load(
            "wgpu",
            own.clone(),
            &models,
            ModelSet::Faces,
            8,
        )
        .unwrap();
        let mut be = DeviceFallback::new(Box::new(accel), &models, ModelSet::Faces, 4);
        let why = be.fallback().unwrap();
        let on_device = faces(be.run(batch()).unwrap());
        assert!(why.get().is_none());
        // A request's copy of its frame, made before the device is lost.
        let crate::backend::masker::Masker::Device(_, dev) = be.masker() else {
            panic!("a device masker")
        };
        let copy = dev.upload(&img).unwrap();

        own.destroy();
        // Uploading to the lost device errs or not, but never panics.
        let _ = dev.upload(&img);
        assert!(be.run(batch()).is_err(), "a batch on a destroyed device");
        assert!(own.health().is_err());

        // Masking on the lost device errs (rather than panicking inside
        // wgpu), so the masker hands the frame to the CPU: same pixels.
        let boxes: Vec<[f32; 4]> = on_device[0]
            .iter()
            .map(|f| {
                [
                    f.x1 / lb.scale,
                    f.y1 / lb.scale,
                    f.x2 / lb.scale,
                    f.y2 / lb.scale,
                ]
            })
            .collect();
        let params = crate::imaging::MaskParams {
            method: crate::imaging::MaskMethod::Solid,
            strength: 25,
            padding: 0.1,
        };
        let (mut a, mut b) = (img.clone(), img.clone());
        be.masker().apply(&mut a, &boxes, params);
        crate::imaging::mask::apply(&mut b, &boxes, params);
        assert_eq!(a, b);
        assert_ne!(a, img, "the faces were masked");
        // A JPEG answer, which the device would mask and encode, is made on
        // the CPU instead: the CPU masker's and encoder's very bytes.
        let jpeg = crate::imaging::OutputFormat::Jpeg;
        let faces_px: Vec<crate::model::Face> = boxes
            .iter()
            .map(|b| crate::model::Face {
                x1: b[0],
                y1: b[1],
                x2: b[2],
                y2: b[3],
                score: 1.0,
                landmarks: [[0.0; 2]; 5],
            })
            .collect();
        for copy in [None, Some(copy.clone())] {
            let mut c = img.clone();
            let masked = crate::backend::masker::mask_and_encode(
                &be.masker(),
                &mut c,
                copy,
                &faces_px,
                params,
                crate::backend::masker::Encoding::opaque(jpeg, 85),
            )
            .unwrap();
            assert_eq!(masked.regions, boxes.len());
            assert_eq!(masked.encoder, "host");
            assert_eq!(masked.bytes, crate::imaging::encode(&b, jpeg, 85).unwrap());
        }
        let reason = why.get().expect("the CPU took over").clone();
        assert!(reason.contains("wgpu device failed"), "{reason}");
        assert!(be.health().is_ok());

        let on_cpu = faces(be.run(batch()).unwrap());
        let mut reference = CpuBackend::load(&models, ModelSet::Faces, 4).unwrap();
        let expected = faces(reference.run(batch()).unwrap());
        assert_eq!(on_cpu.len(), 1);
        assert_eq!(on_cpu[0].len(), expected[0].len());
        assert_eq!(on_cpu[0].len(), on_device[0].len());
        for (a, b) in on_cpu[0].iter().zip(&expected[0]) {
            assert_eq!([a.x1, a.y1, a.x2, a.y2], [b.x1, b.y1, b.x2, b.y2]);
        }
        // A frame whose copy is on the lost device is letterboxed by the
        // CPU from its pixels, as the CPU backend would.
        let frame = || {
            Batch::Faces(FaceBatch {
                images: vec![FaceImage::Frame(
                    std::sync::Arc::new(img.clone()),
                    Some(copy.clone()),
                )],
                width: 320,
                height: 224,
                thresholds: vec![0.5],
            })
        };
        let from_frame = faces(be.run(frame()).unwrap());
        let expected = faces(reference.run(frame()).unwrap());
        assert_eq!(from_frame[0].len(), expected[0].len());
        assert!(!expected[0].is_empty());
        for (a, b) in from_frame[0].iter().zip(&expected[0]) {
            assert_eq!([a.x1, a.y1, a.x2, a.y2], [b.x1, b.y1, b.x2, b.y2]);
        }
    }
}
