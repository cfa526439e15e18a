//! The face family (`../shared/reference/004_*.txt`): `/api/v1/detect`,
//! `/api/v1/mask`, the admin API under `/api/v1/admin`, signed blob
//! downloads, and the health endpoints the reference service answers.
//! Errors are `{"detail": "..."}` ([`ApiError`]).

pub mod admin;
pub mod api;
pub mod cli;
pub mod schema;
pub mod store;

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

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
        &["/api/v1/", "/blobs/"]
    }

    fn entry_points(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("detect", "/api/v1/detect"),
            ("mask", "/api/v1/mask"),
            ("admin", "/api/v1/admin/stats"),
        ]
    }

    fn router(self: Arc<Self>) -> utoipa_axum::router::OpenApiRouter {
        let limit = self.config.limits.max_body_bytes;
        let admin = Router::new()
            .route("/auth/login", post(admin::login))
            .route("/auth/session", get(admin::session))
            .route("/auth/logout", post(admin::logout))
            .route("/stats", get(admin::stats))
            .route("/images", get(admin::list_images))
            .route(
                "/images/{image_id}",
                get(admin::get_image).delete(admin::delete_image),
            )
            .route("/images/{image_id}/download", get(admin::download_image))
            .route("/jobs", get(admin::list_jobs))
            .route("/jobs/{job_id}", get(admin::get_job))
            .route("/jobs/{job_id}/download", get(admin::download_job))
            .route("/test/mask", post(admin::test_mask))
            .route("/audit", get(admin::audit))
            .route("/api-keys", get(admin::list_keys).post(admin::create_key))
            .route(
                "/api-keys/{key_id}",
                get(admin::get_key)
                    .patch(admin::patch_key)
                    .delete(admin::delete_key),
            );
        let plain = Router::new()
            .route("/health", get(api::health))
            .route("/live", get(api::live))
            .route("/ready", get(api::ready))
            .route("/api/v1/detect", post(api::detect))
            .route("/api/v1/mask", post(api::mask))
            .nest("/api/v1/admin", admin)
            .route("/blobs/{kind}/{name}", get(admin::blob))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self);
        utoipa_axum::router::OpenApiRouter::from(plain)
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
        vec![tokio::spawn(retention(self, days, shutdown))]
    }

    fn stop(&self) {
        self.batcher.shutdown();
    }
}

/// `storage.retention_days`: at start and every hour, delete the images
/// older than that (records, original, masked outputs). It works from the
/// records' times, so days that passed while the appliance was off are
/// caught up at the next start.
async fn retention(faces: Arc<Faces>, days: u32, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        let f = faces.clone();
        let swept =
            tokio::task::spawn_blocking(move || f.records.sweep_older_than(&f.store, days)).await;
        match swept {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(
                deleted = n,
                days,
                "retention: deleted images older than storage.retention_days"
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "retention sweep failed; tried again in an hour")
            }
            Err(e) => tracing::warn!(error = %e, "retention sweep panicked"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
    }
}
