//! The API families, one folder each, on top of the platform (`app`,
//! `http`, `auth`, `store`, `config`, `metrics`) and the inference stack
//! (`frame`, `batch`, `backend`, `gpu`, `model`, `imaging`). A family uses
//! both and never another family; see `README.md` beside this file for how
//! to add one.

pub mod faces;
pub mod pbs;

use std::sync::Arc;

use crate::app::{App, Family};
use crate::backend::{ModelPaths, Target};
use crate::RunError;

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
pub const FAMILIES: &[(&str, Start)] = &[("faces", faces::start), ("pbs", pbs::start)];

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
