//! The blood-smear family's service object: its store, batchers, keys and
//! the notifications that wake its background work.

use std::sync::Arc;

use super::store::{PbsStore, StudyRemoval};
use crate::config::Config;
use crate::events::EventBus;
use crate::families::pbs::pipeline::CellBatchers;
use crate::jobs::JobQueue;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::webhooks::Webhooks;

/// Tasks this appliance can run, with what each reports.
pub const TASKS: [(&str, &str); 3] = [
    (
        "MALARIA_ANY_ANY",
        "malaria parasites in red cells: positive_count, negative_count",
    ),
    (
        "CBC_COUNTS",
        "red cells, white cells and platelets, per file and in total, with the white-cell \
         differential",
    ),
    (
        "WBC_DIFFERENTIAL",
        "white cells by class (neutrophil segmented/band, lymphocyte, monocyte, eosinophil, \
         basophil, immature granulocyte; nucleated red cells per 100 leukocytes), each cell's \
         box and probabilities, cells the classifier is unsure of left for review",
    ),
];

/// The name the reference's examples send (`{"diagnostic_tasks":
/// ["pbs_v1"]}`): on the appliance it asks for every task in [`TASKS`].
pub const ALL_TASKS: &str = "pbs_v1";

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
    /// Studies waiting for analysis (the tree `pbs_queue`).
    pub queue: Arc<JobQueue>,
    /// Where report callbacks are delivered from.
    pub webhooks: Arc<Webhooks>,
    /// Study progress, on the topic `jobs/pbs/<study id>`.
    pub events: Arc<EventBus>,
    /// The appliance's memory for decoded pixels (shared with uploads).
    pub decode_budget: crate::imaging::budget::PixelBudget,
}

impl Clinic {
    /// The family's state on top of the platform's `app`.
    pub fn new(
        app: &crate::app::App,
        cells: Arc<CellBatchers>,
        session_key: Vec<u8>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            pbs: PbsStore::open(app.store.db())?,
            queue: Arc::new(JobQueue::open(&app.store, "pbs")?),
            webhooks: app.webhooks.clone(),
            events: app.events.clone(),
            decode_budget: app.decode_budget.clone(),
            config: app.config.clone(),
            store: app.store.clone(),
            cells,
            metrics: app.metrics.clone(),
            session_key,
        })
    }

    pub fn healthy(&self) -> bool {
        self.cells.healthy()
    }

    /// Delete study `id`: its record, the cells found, and its photos
    /// unless another study holds the same blob; flushed before it
    /// returns. Refused (`Busy`) while its analysis is queued or running.
    /// Blocking.
    pub fn delete_study(&self, id: uuid::Uuid) -> Result<StudyRemoval, StoreError> {
        let removal = self.pbs.remove_study(id)?;
        if let StudyRemoval::Removed(s) = &removal {
            // The record goes first: a crash between leaves files no study
            // names, never a study whose photos are gone.
            self.store.flush()?;
            let blobs = s.files.iter().map(|f| f.blob.clone()).collect();
            for blob in self.pbs.unheld_blobs(blobs)? {
                self.store.blobs.delete(&blob)?;
            }
        }
        Ok(removal)
    }

    /// `pbs.retention_days`: delete the studies created more than `days`
    /// ago, except those being analysed (taken at a later sweep). Returns
    /// how many went. Blocking.
    pub fn sweep_older_than(&self, days: u32) -> Result<usize, StoreError> {
        let cutoff = (time::OffsetDateTime::now_utc() - time::Duration::days(days.into()))
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut n = 0;
        for id in self.pbs.created_before(&cutoff)? {
            if matches!(self.delete_study(id)?, StudyRemoval::Removed(_)) {
                n += 1;
            }
        }
        Ok(n)
    }
}
