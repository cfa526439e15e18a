//! The clinic path (PBS family) apart from HTTP: who is calling (tokens),
//! the analysis queue that turns a frozen study into reports, and callback
//! delivery. The HTTP surface is `api::pbs`.

pub mod callbacks;
pub mod identity;
pub mod org;
pub mod runner;

use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::cells::CellBatchers;
use crate::store::Store;

/// Tasks this appliance can run, with what each reports.
pub const TASKS: [(&str, &str); 2] = [
    (
        "MALARIA_ANY_ANY",
        "malaria parasites in red cells: positive_count, negative_count",
    ),
    (
        "CBC_COUNTS",
        "red cells, white cells and platelets, per file and in total",
    ),
];

pub fn is_known_task(t: &str) -> bool {
    TASKS.iter().any(|(name, _)| *name == t)
}

pub struct Clinic {
    pub config: Config,
    pub store: Arc<Store>,
    pub cells: Arc<CellBatchers>,
    pub metrics: Arc<Metrics>,
    /// HMAC key of the appliance's own session tokens.
    pub session_key: Vec<u8>,
    /// Wakes the runner when a study is queued.
    pub wake_runner: tokio::sync::Notify,
    /// Wakes the callback sender when one is queued.
    pub wake_callbacks: tokio::sync::Notify,
}

impl Clinic {
    pub fn new(
        config: Config,
        store: Arc<Store>,
        cells: Arc<CellBatchers>,
        metrics: Arc<Metrics>,
        session_key: Vec<u8>,
    ) -> Self {
        Self {
            config,
            store,
            cells,
            metrics,
            session_key,
            wake_runner: tokio::sync::Notify::new(),
            wake_callbacks: tokio::sync::Notify::new(),
        }
    }

    pub fn healthy(&self) -> bool {
        self.cells.tiles.healthy() && self.cells.crops.healthy()
    }
}
