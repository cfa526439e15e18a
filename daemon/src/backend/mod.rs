//! Inference backends: one trait, implemented per device kind.
//!
//! A backend owns its device and loaded models and is driven from one
//! dedicated thread (see `batch::worker`), so it needs `Send` but not `Sync`.

pub mod cpu;

use std::path::PathBuf;

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
}

/// Letterboxed RGB images of one size, packed HWC, plus each image's own
/// detection threshold (requests in one batch may ask for different ones).
#[derive(Debug, Clone)]
pub struct FaceBatch {
    pub pixels: Vec<u8>,
    pub width: usize,
    pub height: usize,
    pub thresholds: Vec<f32>,
}

impl FaceBatch {
    pub fn len(&self) -> usize {
        self.thresholds.len()
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

/// Start the backend the config asks for. Only the CPU backend is compiled in
/// so far: `auto` resolves to it, and asking for a GPU backend fails start-up.
pub fn select(
    kind: BackendKind,
    models: &ModelPaths,
    set: ModelSet,
    max_batch: usize,
) -> Result<Box<dyn Backend>, BackendError> {
    match kind {
        BackendKind::Auto | BackendKind::Cpu => {
            Ok(Box::new(cpu::CpuBackend::load(models, set, max_batch)?))
        }
        other => Err(BackendError::Unavailable(
            format!("{other:?}").to_lowercase(),
            "this build has no GPU backends compiled in; use backend = \"cpu\" or \"auto\"".into(),
        )),
    }
}
