//! The blood-smear (PBS) family of `../shared/reference/003_*.txt`:
//! `/auth/login`, `/auth/hello`, `/pbs...`, `/heartbeat`. Every answer but
//! the heartbeat is the envelope `{status, results, error, user_message,
//! debug_info}` ([`api::PbsError`]). Analysis runs in the background on
//! the platform's job queue ([`runner`]); reports are announced by signed
//! callbacks through the platform's webhook delivery ([`callbacks`]).

pub mod admin;
pub mod api;
pub mod callbacks;
pub mod caller;
pub mod cli;
pub mod clinic;
pub mod console;
pub mod differential;
pub mod envelope;
pub mod fhir;
pub mod identity;
pub mod manage;
pub mod org;
pub mod pipeline;
pub mod runner;
pub mod scale;
pub mod schema;
pub mod store;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use clinic::{is_known_task, Clinic, ALL_TASKS, TASKS};

use crate::app::{App, Family};
use crate::batch::{queue::Policy, Batcher};
use crate::families::Startup;
use crate::RunError;

/// The PBS family's state: the platform's, plus the clinic service.
pub struct Pbs {
    pub app: Arc<App>,
    pub clinic: Arc<Clinic>,
}

impl Deref for Pbs {
    type Target = App;
    fn deref(&self) -> &App {
        &self.app
    }
}

/// Load the three cell UNets and the malaria classifier on the chosen
/// backend and start their batchers. Blocking.
pub fn start(ctx: &Startup) -> Result<Arc<dyn Family>, RunError> {
    let cells = start_cell_batchers(
        &ctx.app.config,
        &ctx.target,
        &ctx.models,
        ctx.app.metrics.clone(),
    )?;
    let app = &ctx.app;
    let session_key = app
        .store
        .secret("pbs_session_key")
        .map_err(|source| RunError::Store {
            dir: app.config.state_dir.display().to_string(),
            source,
        })?;
    let clinic = Arc::new(
        Clinic::new(app, Arc::new(cells), session_key).map_err(|source| RunError::Store {
            dir: app.config.state_dir.display().to_string(),
            source,
        })?,
    );
    app.webhooks
        .count_outcomes_in("pbs", app.metrics.pbs_callbacks.clone());
    callbacks::migrate_pending(&clinic).map_err(|source| RunError::Store {
        dir: app.config.state_dir.display().to_string(),
        source,
    })?;
    Ok(Arc::new(Pbs {
        app: app.clone(),
        clinic,
    }))
}

/// The clinic path's batchers: smear tiles through the UNets, cell crops
/// through the malaria classifier. Also used by the offline CLI.
pub fn start_cell_batchers(
    cfg: &crate::config::Config,
    target: &crate::backend::Target,
    models: &crate::backend::ModelPaths,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<pipeline::CellBatchers, RunError> {
    use crate::backend::{self, ModelSet};
    use crate::model;
    let max_batch = cfg.batch.max_batch_for(target);
    // Smear tiles come from the analysis queue (one study at a time) and the
    // CLI (one photo at a time), each photo keeping `TILES_IN_FLIGHT` queued:
    // the depth is room for several such, whatever `batch.queue_depth` says
    // of the request queues (a depth below `TILES_IN_FLIGHT` would refuse a
    // photo's own tiles).
    let tile_policy = Policy {
        max_batch,
        max_wait: Duration::from_millis(cfg.batch.max_wait_ms),
        max_depth: pipeline::TILES_IN_FLIGHT * 8,
    };
    let tiles = Batcher::start_work(
        pipeline::TileWork,
        backend::start(target, models, ModelSet::CellTiles, max_batch)?,
        tile_policy,
        (model::unet::TILE_IN, model::unet::TILE_IN),
        metrics.clone(),
    )?;
    // Crops are tiny: hundreds per photo, batched by the hundred.
    let crop_policy = Policy {
        max_batch: 256,
        max_wait: Duration::from_millis(cfg.batch.max_wait_ms),
        max_depth: 16_384,
    };
    let crops = Batcher::start_work(
        pipeline::CropWork,
        backend::start(target, models, ModelSet::Crops, 256)?,
        crop_policy,
        (model::malaria::CROP, model::malaria::CROP),
        metrics.clone(),
    )?;
    // A smear field holds a few white cells: batches gather them across
    // photos and studies.
    let wbc_policy = Policy {
        max_batch: 32,
        max_wait: Duration::from_millis(cfg.batch.max_wait_ms),
        max_depth: 4_096,
    };
    let wbc = Batcher::start_work(
        differential::WbcWork,
        backend::start(target, models, ModelSet::WbcCrops, 32)?,
        wbc_policy,
        (model::wbc::CROP, model::wbc::CROP),
        metrics,
    )?;
    Ok(pipeline::CellBatchers { tiles, crops, wbc })
}

impl Family for Pbs {
    fn name(&self) -> &'static str {
        "pbs"
    }

    fn prefixes(&self) -> &'static [&'static str] {
        &["/pbs", "/auth/", "/heartbeat"]
    }

    fn entry_points(&self) -> &'static [(&'static str, &'static str)] {
        &[("login", "/auth/login"), ("studies", "/pbs")]
    }

    fn console_pages(&self) -> &'static [(&'static str, &'static str)] {
        &[("Studies", "/console/studies")]
    }

    fn router(self: Arc<Self>) -> OpenApiRouter {
        // One `routes!` per path: the handlers' `#[utoipa::path]` give the
        // methods and document them.
        OpenApiRouter::new()
            .routes(routes!(api::login))
            .routes(routes!(api::hello, api::hello_get))
            .routes(routes!(api::heartbeat))
            .routes(routes!(api::create_study, api::find_studies))
            .routes(routes!(admin::list_users, admin::add_user))
            .routes(routes!(admin::remove_user))
            .routes(routes!(admin::list_keys, admin::add_key))
            .routes(routes!(admin::revoke_key))
            .routes(routes!(api::upload_file))
            .routes(routes!(api::request_tasks))
            .routes(routes!(api::study_status))
            .routes(routes!(api::delete_study, api::upload_file_at_study))
            .routes(routes!(api::study_report))
            .routes(routes!(console::studies))
            .routes(routes!(console::study))
            .routes(routes!(console::study_file))
            .layer(axum::extract::DefaultBodyLimit::max(
                self.config.limits.max_body_bytes,
            ))
            .layer(axum::middleware::from_fn(envelope::note_arrival))
            .with_state(self)
    }

    fn error_body(&self, status: StatusCode, message: &str) -> Response {
        api::envelope_error(status, message)
    }

    fn healthy(&self) -> bool {
        self.clinic.healthy()
    }

    fn spawn_background(
        self: Arc<Self>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        // Studies queued before a stop or crash are resumed here.
        let mut tasks = vec![tokio::spawn(runner::run(
            self.clinic.clone(),
            shutdown.clone(),
        ))];
        let days = self.clinic.config.pbs.retention_days;
        if days > 0 {
            // The studies older than that (records, cells, photos).
            let clinic = self.clinic.clone();
            tasks.push(tokio::spawn(crate::jobs::hourly_sweep(
                "PBS studies older than pbs.retention_days",
                days,
                shutdown,
                move || clinic.sweep_older_than(days),
            )));
        }
        tasks
    }

    fn stop(&self) {
        self.clinic.cells.shutdown();
    }
}
