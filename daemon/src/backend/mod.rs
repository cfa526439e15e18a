//! Inference backends: one trait, implemented per device kind.
//!
//! A backend owns its device and loaded models and is driven from one
//! dedicated thread (see `batch::worker`), so it needs `Send` but not `Sync`.

#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod accel;
pub mod cpu;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod fallback;
mod held;
pub mod masker;

pub use held::{hold_devices_until_exit, release_held_devices};

use std::path::PathBuf;

// The types every layer of the inference stack passes around live in the
// leaf module `frame`, so `gpu` can use them without importing `backend`.
pub use crate::frame::{
    BackendError, Batch, BatchOutput, FaceBatch, FaceImage, Resident, TileMaps,
};

/// Which models a backend instance loads: each batcher needs one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSet {
    Faces,
    CellTiles,
    Crops,
    FaceMesh,
    Iris,
    Age,
    /// The white-cell classifier of the differential.
    WbcCrops,
}

impl ModelSet {
    /// Whether the GPU backends run this set; a set without a GPU port
    /// runs on the CPU models whatever the target. Every set has one now;
    /// the match names each so that a new set has to say.
    pub fn on_gpu(self) -> bool {
        match self {
            ModelSet::Faces
            | ModelSet::CellTiles
            | ModelSet::Crops
            | ModelSet::FaceMesh
            | ModelSet::Iris
            | ModelSet::Age
            | ModelSet::WbcCrops => true,
        }
    }
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
    fn masker(&self) -> masker::Masker {
        masker::Masker::Cpu
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

/// The models `models/manifest.toml` lists, by name (`centerface`,
/// `cbc_rbc`, ...), each with its weights file. A family's workload asks
/// for the models it needs by name; a new model is a manifest entry.
#[derive(Debug, Clone, Default)]
pub struct ModelPaths {
    manifest: PathBuf,
    files: std::collections::BTreeMap<String, PathBuf>,
}

#[derive(Debug, serde::Deserialize)]
struct Manifest {
    models: Vec<ManifestModel>,
}

#[derive(Debug, serde::Deserialize)]
struct ManifestModel {
    name: String,
    file: String,
    sha256: String,
}

impl ModelPaths {
    /// Every model `dir/manifest.toml` lists; with `verify`, each file's
    /// sha256 is checked against the manifest (what `argusd` does at start).
    pub fn from_manifest(dir: &std::path::Path, verify: bool) -> Result<Self, String> {
        let manifest = dir.join("manifest.toml");
        let text = std::fs::read_to_string(&manifest)
            .map_err(|e| format!("{}: {e}", manifest.display()))?;
        let m: Manifest =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
        let mut files = std::collections::BTreeMap::new();
        for entry in m.models {
            let path = dir.join(&entry.file);
            if verify {
                let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let got = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
                if got != entry.sha256 {
                    return Err(format!(
                        "{}: sha256 {got} does not match the manifest's {}",
                        path.display(),
                        entry.sha256
                    ));
                }
            }
            files.insert(entry.name, path);
        }
        Ok(Self { manifest, files })
    }

    /// The repository's `models/` as its manifest lays it out, unverified
    /// (benches and tests). Panics when the manifest cannot be read.
    pub fn in_dir(dir: &std::path::Path) -> Self {
        Self::from_manifest(dir, false).expect("models/manifest.toml is readable")
    }

    /// The weights of model `name`.
    pub fn get(&self, name: &str) -> Result<&std::path::Path, BackendError> {
        self.files.get(name).map(PathBuf::as_path).ok_or_else(|| {
            BackendError::Unavailable(
                name.to_string(),
                format!("no model {name:?} in {}", self.manifest.display()),
            )
        })
    }

    /// Names of every listed model.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }
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

    /// A wgpu adapter that runs on the CPU (Mesa's lavapipe): correct,
    /// but far slower than the CPU backend itself.
    pub fn is_software(&self) -> bool {
        match self {
            #[cfg(feature = "wgpu")]
            Target::Wgpu(gpu) => gpu.info.device_type == wgpu::DeviceType::Cpu,
            _ => false,
        }
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
    let target = resolve_open(kind)?;
    held::hold(&target);
    Ok(target)
}

fn resolve_open(kind: BackendKind) -> Result<Target, BackendError> {
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
    if target.is_gpu() && !set.on_gpu() {
        tracing::info!(backend = target.name(), models = ?set, "no GPU port of these models: they run on the CPU");
        return Ok(Box::new(cpu::CpuBackend::load(models, set, max_batch)?));
    }
    match target {
        Target::Cpu => Ok(Box::new(cpu::CpuBackend::load(models, set, max_batch)?)),
        #[cfg(feature = "wgpu")]
        Target::Wgpu(gpu) => on_device("wgpu", gpu.clone(), models, set, max_batch),
        #[cfg(feature = "cuda")]
        Target::Cuda(dev) => on_device("cuda", dev.clone(), models, set, max_batch),
    }
}
