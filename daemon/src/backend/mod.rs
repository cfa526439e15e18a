//! Inference backends: one trait, implemented per device kind.
//!
//! A backend owns its device and loaded models and is driven from one
//! dedicated thread (see `batch::worker`), so it needs `Send` but not `Sync`.

#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod accel;
pub mod cpu;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod fallback;

use std::path::PathBuf;
use std::sync::Arc;

use image::RgbImage;

use crate::model::Face;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("model file {path}: {source}")]
    Load {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
    #[error("bad batch: {0}")]
    BadBatch(String),
    #[error("backend {0:?} is not available: {1}")]
    Unavailable(String, String),
    #[error("device: {0}")]
    Device(String),
}

/// One image of a face batch.
#[derive(Debug, Clone)]
pub enum FaceImage {
    /// Letterboxed on the host: the batch's `width * height * 3` RGB bytes.
    Letterboxed(Vec<u8>),
    /// A decoded frame at its own size; the backend letterboxes it (a GPU
    /// backend on the device, as it lays out the model input), from the
    /// frame's copy on that device when the request already made one.
    Frame(Arc<RgbImage>, Option<Resident>),
}

/// A frame's copy in device memory, made once by the request (see
/// `gpu::mask::DeviceMasker::upload`) so that the batch letterboxes it and
/// the masker then masks and encodes it without a second upload. The
/// device type is erased: the batcher, the CPU backend and a CPU-only
/// build only carry it; the device that made it recognises it.
#[derive(Clone)]
pub struct Resident(Arc<dyn std::any::Any + Send + Sync>);

impl Resident {
    pub fn new<T: std::any::Any + Send + Sync>(copy: T) -> Self {
        Self(Arc::new(copy))
    }

    /// The copy, if it is a `T`.
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }

    /// True when no one else holds this copy, so it may be written in place.
    pub fn is_sole(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }
}

impl std::fmt::Debug for Resident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resident(..)")
    }
}

/// Images for a `width` x `height` model input, plus each image's own
/// detection threshold (requests in one batch may ask for different ones).
#[derive(Debug, Clone)]
pub struct FaceBatch {
    pub images: Vec<FaceImage>,
    pub width: usize,
    pub height: usize,
    pub thresholds: Vec<f32>,
}

impl FaceBatch {
    pub fn len(&self) -> usize {
        self.thresholds.len()
    }

    /// Every image letterboxed on the host, packed HWC one after another.
    pub fn packed(&self) -> Result<Vec<u8>, BackendError> {
        let per = self.width * self.height * 3;
        if self.images.len() != self.len() {
            return Err(BackendError::BadBatch(format!(
                "{} images and {} thresholds",
                self.images.len(),
                self.len()
            )));
        }
        let mut out = Vec::with_capacity(self.len() * per);
        for image in &self.images {
            match image {
                FaceImage::Letterboxed(p) if p.len() == per => out.extend_from_slice(p),
                FaceImage::Letterboxed(p) => {
                    return Err(BackendError::BadBatch(format!(
                        "{} bytes for a {}x{} input",
                        p.len(),
                        self.width,
                        self.height
                    )))
                }
                FaceImage::Frame(f, _) => {
                    let lb =
                        crate::imaging::resize::letterbox(f, self.width as u32, self.height as u32)
                            .map_err(|e| BackendError::BadBatch(e.to_string()))?;
                    out.extend_from_slice(&lb.pixels);
                }
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.thresholds.is_empty()
    }
}

/// A unit of work for a backend. New model families add variants.
#[derive(Debug)]
pub enum Batch {
    Faces(FaceBatch),
    /// Smear tiles, each [3, 188, 188] BGR in [-1, 1] (`imaging::smear::tile`),
    /// run through all three cell UNets.
    CellTiles {
        data: Vec<f32>,
        count: usize,
    },
    /// 50x50 grayscale red-cell crops for the malaria classifier.
    Crops {
        data: Vec<u8>,
        count: usize,
    },
}

/// The four 100x100 probability maps of one smear tile.
#[derive(Debug, Clone)]
pub struct TileMaps {
    pub rbc: Vec<f32>,
    pub rbc_edge: Vec<f32>,
    pub wbc: Vec<f32>,
    pub platelets: Vec<f32>,
}

#[derive(Debug)]
pub enum BatchOutput {
    /// Per image, the candidates above its threshold in model-input pixels, before NMS.
    Faces(Vec<Vec<Face>>),
    CellTiles(Vec<TileMaps>),
    /// P(parasitized) per crop.
    Parasitized(Vec<f32>),
}

/// Which models a backend instance loads: each batcher needs one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSet {
    Faces,
    CellTiles,
    Crops,
}

pub trait Backend: Send {
    /// Short stable name: "cpu", "cuda", "wgpu".
    fn name(&self) -> &'static str;
    /// Human description of the device, for /health and logs.
    fn device(&self) -> String;
    /// Ok when the device still answers.
    fn health(&self) -> Result<(), BackendError>;
    /// Largest batch worth forming on this device.
    fn max_batch_size(&self) -> usize;
    fn run(&mut self, batch: Batch) -> Result<BatchOutput, BackendError>;
    /// Whether face batches should carry whole frames rather than host
    /// letterboxed images: the backend letterboxes them itself, on its
    /// device. Either kind is accepted by every backend.
    fn letterboxes_frames(&self) -> bool {
        false
    }
    /// Where frames found on this backend get masked.
    fn masker(&self) -> crate::pipeline::faces::Masker {
        crate::pipeline::faces::Masker::Cpu
    }
    /// For a device backend that can hand over to the CPU: set, with the
    /// reason, once it has.
    fn fallback(&self) -> Option<std::sync::Arc<std::sync::OnceLock<String>>> {
        None
    }
}

/// Which backend to start, from config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Auto,
    Cpu,
    Cuda,
    Wgpu,
}

/// Where the weights of every model live.
#[derive(Debug, Clone)]
pub struct ModelPaths {
    pub centerface: PathBuf,
    pub cbc_rbc: PathBuf,
    pub cbc_wbc: PathBuf,
    pub cbc_plt: PathBuf,
    pub malaria: PathBuf,
}

impl ModelPaths {
    /// The repository's layout under `models/` (the manifest's `file`
    /// entries), without the checksum check `argus::model_paths` does.
    pub fn in_dir(dir: &std::path::Path) -> Self {
        Self {
            centerface: dir.join("centerface/centerface.safetensors"),
            cbc_rbc: dir.join("cbc/rbc.safetensors"),
            cbc_wbc: dir.join("cbc/wbc.safetensors"),
            cbc_plt: dir.join("cbc/plt.safetensors"),
            malaria: dir.join("malaria/malaria.safetensors"),
        }
    }
}

/// The crops of a [`Batch::Crops`], checked against its count.
pub(crate) fn split_crops(data: &[u8], count: usize) -> Result<Vec<&[u8]>, BackendError> {
    let crops: Vec<&[u8]> = data
        .chunks_exact(crate::model::malaria::CROP.pow(2))
        .collect();
    if crops.len() != count || data.len() != count * crate::model::malaria::CROP.pow(2) {
        return Err(BackendError::BadBatch(format!(
            "{} bytes for {count} crops",
            data.len()
        )));
    }
    Ok(crops)
}

/// A backend resolved from config, its device (if any) already open.
#[derive(Clone)]
pub enum Target {
    Cpu,
    #[cfg(feature = "wgpu")]
    Wgpu(std::sync::Arc<crate::gpu::Gpu>),
    #[cfg(feature = "cuda")]
    Cuda(std::sync::Arc<crate::gpu::Cuda>),
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Cpu => "cpu",
            #[cfg(feature = "wgpu")]
            Target::Wgpu(_) => "wgpu",
            #[cfg(feature = "cuda")]
            Target::Cuda(_) => "cuda",
        }
    }

    /// GPUs take bigger batches: one dispatch per layer serves the whole batch.
    pub fn is_gpu(&self) -> bool {
        !matches!(self, Target::Cpu)
    }
}

fn unavailable(kind: &str, why: impl Into<String>) -> BackendError {
    BackendError::Unavailable(kind.into(), why.into())
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<Target, String> {
    crate::gpu::Cuda::open(0)
        .map(Target::Cuda)
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<Target, String> {
    Err(
        "this build has no CUDA backend (built without the `cuda` feature; \
         see scripts/build-cuda.sh)"
            .into(),
    )
}

#[cfg(feature = "wgpu")]
fn open_wgpu(policy: crate::gpu::AdapterPolicy) -> Result<Target, String> {
    crate::gpu::Gpu::open(policy)
        .map(Target::Wgpu)
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "wgpu"))]
fn open_wgpu(_hardware_only: ()) -> Result<Target, String> {
    Err("this build has no wgpu backend (built without the `wgpu` feature)".into())
}

/// Decide which backend `kind` means on this machine and open its device.
/// `auto` tries CUDA, then a hardware wgpu adapter (never a software one),
/// then the CPU, logging why each was passed over. An explicit backend that
/// is not compiled in or has no device is an error.
pub fn resolve(kind: BackendKind) -> Result<Target, BackendError> {
    #[cfg(feature = "wgpu")]
    let (hardware, any) = (
        crate::gpu::AdapterPolicy::Hardware,
        crate::gpu::AdapterPolicy::AnyPreferHardware,
    );
    #[cfg(not(feature = "wgpu"))]
    let (hardware, any) = ((), ());
    match kind {
        BackendKind::Cpu => Ok(Target::Cpu),
        BackendKind::Cuda => open_cuda().map_err(|e| unavailable("cuda", e)),
        BackendKind::Wgpu => open_wgpu(any).map_err(|e| unavailable("wgpu", e)),
        BackendKind::Auto => {
            match open_cuda() {
                Ok(t) => return Ok(t),
                Err(e) => tracing::info!(reason = %e, "backend auto: skipping cuda"),
            }
            match open_wgpu(hardware) {
                Ok(t) => Ok(t),
                Err(e) => {
                    tracing::info!(reason = %e, "backend auto: skipping wgpu");
                    Ok(Target::Cpu)
                }
            }
        }
    }
}

/// The models of `set` on a GPU device, with the CPU models behind them
/// for when the device is lost.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn on_device<D>(
    name: &'static str,
    dev: std::sync::Arc<D>,
    models: &ModelPaths,
    set: ModelSet,
    max_batch: usize,
) -> Result<Box<dyn Backend>, BackendError>
where
    D: crate::gpu::Compute,
{
    let device = accel::AccelBackend::load(name, dev, models, set, max_batch)?;
    Ok(Box::new(fallback::DeviceFallback::new(
        Box::new(device),
        models,
        set,
        max_batch,
    )))
}

/// Start a backend instance on `target` holding the models of `set`. On a
/// GPU the CPU models take over if the device is lost (see `fallback`).
pub fn start(
    target: &Target,
    models: &ModelPaths,
    set: ModelSet,
    max_batch: usize,
) -> Result<Box<dyn Backend>, BackendError> {
    match target {
        Target::Cpu => Ok(Box::new(cpu::CpuBackend::load(models, set, max_batch)?)),
        #[cfg(feature = "wgpu")]
        Target::Wgpu(gpu) => on_device("wgpu", gpu.clone(), models, set, max_batch),
        #[cfg(feature = "cuda")]
        Target::Cuda(dev) => on_device("cuda", dev.clone(), models, set, max_batch),
    }
}
