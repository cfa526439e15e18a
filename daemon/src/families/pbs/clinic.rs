//! The blood-smear family's service object: its store, batchers, keys and
//! the notifications that wake its background work.

use std::sync::Arc;

use super::store::PbsStore;
use crate::config::Config;
use crate::families::pbs::pipeline::CellBatchers;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

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
    /// The family's own records (organisations, users, studies, queue).
    pub pbs: PbsStore,
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
    ) -> Result<Self, StoreError> {
        Ok(Self {
            pbs: PbsStore::open(store.db())?,
            config,
            store,
            cells,
            metrics,
            session_key,
            wake_runner: tokio::sync::Notify::new(),
            wake_callbacks: tokio::sync::Notify::new(),
        })
    }

    pub fn healthy(&self) -> bool {
        self.cells.tiles.healthy() && self.cells.crops.healthy()
    }
}
