//! HTTP API families, one file each, and the router that joins them.

pub mod admin;
pub mod faces;
pub mod pbs;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
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
    let clinic = Router::new()
        .route("/auth/login", post(pbs::login))
        .route("/auth/hello", post(pbs::hello).get(pbs::hello))
        .route("/heartbeat", get(pbs::heartbeat))
        .route("/pbs", post(pbs::create_study).get(pbs::find_studies))
        .route("/pbs/admin/users", get(pbs::list_users).post(pbs::add_user))
        .route("/pbs/admin/users/{email}", delete(pbs::remove_user))
        .route("/pbs/admin/keys", get(pbs::list_keys).post(pbs::add_key))
        .route("/pbs/admin/keys/{kid}", delete(pbs::revoke_key))
        .route("/pbs/{id}/files", post(pbs::upload_file))
        .route("/pbs/{id}/tasks", post(pbs::request_tasks))
        .route("/pbs/{id}/status", get(pbs::study_status))
        .route("/pbs/{id}/report/{task}", get(pbs::study_report));
    Router::new()
        .merge(clinic)
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
