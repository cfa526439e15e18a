//! HTTP API families, one file each, and the router that joins them.

pub mod admin;
pub mod faces;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::app::App;

pub fn router(app: Arc<App>) -> Router {
    let limit = app.config.limits.max_body_bytes;
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
        .route("/api-keys", get(admin::list_keys).post(admin::create_key))
        .route(
            "/api-keys/{key_id}",
            get(admin::get_key)
                .patch(admin::patch_key)
                .delete(admin::delete_key),
        );
    Router::new()
        .route("/health", get(faces::health))
        .route("/live", get(faces::live))
        .route("/ready", get(faces::ready))
        .route("/metrics", get(faces::metrics))
        .route("/api/v1/detect", post(faces::detect))
        .route("/api/v1/mask", post(faces::mask))
        .nest("/api/v1/admin", admin)
        .route("/blobs/{kind}/{name}", get(admin::blob))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}
