//! The API families, one folder each, on top of the platform (`app`,
//! `http`, `auth`, `store`, `config`, `metrics`) and the inference stack
//! (`frame`, `batch`, `backend`, `gpu`, `model`, `imaging`). A family uses
//! both and never another family; see `README.md` beside this file for how
//! to add one.

pub mod faces;
pub mod pbs;
pub mod skin;

use std::sync::Arc;

use crate::app::{App, Family};
use crate::backend::{ModelPaths, Target};
use crate::batch::{queue::Policy, Batcher};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::RunError;

/// The face detector (CenterFace) on `target` for `input` (width, height)
/// letterboxes, warmed up behind its micro-batcher: the face family serves
/// it, the skin family finds faces with its own. Blocking.
pub fn face_batcher(
    cfg: &Config,
    input: (u32, u32),
    target: &Target,
    models: &ModelPaths,
    metrics: Arc<Metrics>,
) -> Result<Batcher, RunError> {
    use crate::backend::{self, ModelSet};
    let max_batch = cfg.batch.max_batch_for(target);
    let backend = backend::start(target, models, ModelSet::Faces, max_batch)?;
    tracing::info!(backend = backend.name(), device = %backend.device(), max_batch, "backend selected");
    let policy = Policy {
        max_batch,
        max_wait: std::time::Duration::from_millis(cfg.batch.max_wait_ms),
        max_depth: cfg.batch.queue_depth_for(target),
    };
    Ok(Batcher::start(
        backend,
        policy,
        input.0 as usize,
        input.1 as usize,
        metrics,
    )?)
}

/// What a family's `start` gets: the platform's state, the backend chosen
/// for this machine and the weights the manifest lists.
pub struct Startup {
    pub app: Arc<App>,
    pub target: Target,
    pub models: ModelPaths,
}

/// A family's start: load its models, start its batchers. Blocking.
pub type Start = fn(&Startup) -> Result<Arc<dyn Family>, RunError>;

/// Every family this appliance serves. Registering a family is one line.
pub const FAMILIES: &[(&str, Start)] = &[
    ("faces", faces::start),
    ("pbs", pbs::start),
    ("skin", skin::start),
];

/// Start every family in [`FAMILIES`], in order. Blocking.
pub fn start_all(ctx: &Startup) -> Result<Vec<Arc<dyn Family>>, RunError> {
    FAMILIES
        .iter()
        .map(|(name, start)| {
            tracing::debug!(family = name, "starting");
            start(ctx)
        })
        .collect()
}
