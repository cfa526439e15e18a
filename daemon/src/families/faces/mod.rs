//! The face family (`../shared/reference/004_*.txt`): `/api/v1/detect`,
//! `/api/v1/mask`, the admin API under `/api/v1/admin`, signed blob
//! downloads, and the health endpoints the reference service answers.
//! Errors are `{"detail": "..."}` ([`ApiError`](crate::http::error::ApiError)).

pub mod admin;
pub mod api;
pub mod cli;
pub mod console;
pub mod schema;
pub mod store;

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::{App, Family};
use crate::batch::Batcher;
use crate::families::Startup;
use crate::http::error::detail;
use crate::RunError;

/// The detector the appliance runs, as answers name it.
pub const MODEL_NAME: &str = "centerface";

/// The face family's state: the platform's, plus its batcher.
pub struct Faces {
    pub app: Arc<App>,
    pub batcher: Arc<Batcher>,
    /// Uploaded images and their jobs.
    pub records: store::FacesStore,
    /// The detector the appliance runs, as responses name it.
    pub model_name: &'static str,
}

impl Deref for Faces {
    type Target = App;
    fn deref(&self) -> &App {
        &self.app
    }
}

/// Load CenterFace on the chosen backend, warm it up, start its batcher.
/// Blocking.
pub fn start(ctx: &Startup) -> Result<Arc<dyn Family>, RunError> {
    let cfg = &ctx.app.config;
    let batcher = crate::families::face_batcher(
        cfg,
        (cfg.detector.input_width, cfg.detector.input_height),
        &ctx.target,
        &ctx.models,
        ctx.app.metrics.clone(),
    )?;
    let info = batcher.info();
    ctx.app
        .metrics
        .build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION"), info.backend, &info.device])
        .set(1);
    let records = store::FacesStore::open(&ctx.app.store).map_err(|source| RunError::Store {
        dir: cfg.state_dir.display().to_string(),
        source,
    })?;
    Ok(Arc::new(Faces {
        app: ctx.app.clone(),
        batcher: Arc::new(batcher),
        records,
        model_name: MODEL_NAME,
    }))
}

impl Family for Faces {
    fn name(&self) -> &'static str {
        "faces"
    }

    fn prefixes(&self) -> &'static [&'static str] {
        &["/api/v1/", "/blobs/", "/console"]
    }

    fn entry_points(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("detect", "/api/v1/detect"),
            ("mask", "/api/v1/mask"),
            ("admin", "/api/v1/admin/stats"),
            ("console", "/console"),
        ]
    }

    fn console_pages(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("Dashboard", "/console"),
            ("Images", "/console/images"),
            ("Jobs", "/console/jobs"),
            ("API keys", "/console/keys"),
            ("Test masking", "/console/test"),
        ]
    }

    fn router(self: Arc<Self>) -> OpenApiRouter {
        let limit = self.config.limits.max_body_bytes;
        let admin = OpenApiRouter::new()
            .routes(routes!(admin::login))
            .routes(routes!(admin::session))
            .routes(routes!(admin::logout))
            .routes(routes!(admin::stats))
            .routes(routes!(admin::list_images))
            .routes(routes!(admin::get_image, admin::delete_image))
            .routes(routes!(admin::download_image))
            .routes(routes!(admin::list_jobs))
            .routes(routes!(admin::get_job))
            .routes(routes!(admin::download_job))
            .routes(routes!(admin::test_mask))
            .routes(routes!(admin::audit))
            .routes(routes!(admin::list_keys, admin::create_key))
            .routes(routes!(admin::get_key, admin::patch_key, admin::delete_key));
        OpenApiRouter::new()
            .routes(routes!(api::health))
            .routes(routes!(api::live))
            .routes(routes!(api::ready))
            .routes(routes!(api::detect))
            .routes(routes!(api::mask))
            .nest("/api/v1/admin", admin)
            .routes(routes!(admin::blob))
            .routes(routes!(console::dashboard))
            .routes(routes!(console::login_form, console::login))
            .routes(routes!(console::logout))
            .routes(routes!(console::images))
            .routes(routes!(console::image))
            .routes(routes!(console::delete_image))
            .routes(routes!(console::jobs))
            .routes(routes!(console::keys, console::create_key))
            .routes(routes!(console::key_action))
            .routes(routes!(console::test_page))
            .routes(routes!(console::asset))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self)
    }

    fn error_body(&self, status: StatusCode, message: &str) -> Response {
        detail(status, message)
    }

    fn healthy(&self) -> bool {
        self.batcher.healthy()
    }

    fn spawn_background(
        self: Arc<Self>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let days = self.config.storage.retention_days;
        if days == 0 || !self.config.storage.enabled {
            return Vec::new();
        }
        // `storage.retention_days`: the images older than that (records,
        // original, masked outputs).
        let sweep = move || self.records.sweep_older_than(&self.store, days);
        vec![tokio::spawn(crate::jobs::hourly_sweep(
            "images older than storage.retention_days",
            days,
            shutdown,
            sweep,
        ))]
    }

    fn stop(&self) {
        self.batcher.shutdown();
    }
}
