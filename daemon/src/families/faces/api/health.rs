//! The face family's operational endpoints: /health, /live, /ready.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::super::schema::{Health, Status};
use super::super::Faces;
use crate::http::error::ApiError;

#[utoipa::path(
    get,
    path = "/health",
    tag = crate::http::openapi::TAG_FACES,
    operation_id = "faces_health",
    responses((status = 200, description = "Ready: model loaded, storage writable.", body = super::super::schema::Health), (status = 503, description = "Not ready; the body says what is missing.", body = super::super::schema::Health)),
)]
pub async fn health(State(app): State<Arc<Faces>>) -> Response {
    let info = app.batcher.info();
    let model_loaded = app.batcher.healthy();
    let storage_ready = storage_ready(&app);
    let ready = app.is_ready() && storage_ready;
    let body = Health {
        status: if ready { "ok" } else { "unavailable" },
        model: app.model_name,
        model_loaded,
        input_size: [info.input_width, info.input_height],
        supports_landmarks: true,
        database_enabled: true,
        database_ready: true,
        storage_enabled: app.storage_enabled(),
        storage_ready,
        backend: info.backend,
        device: info.device.clone(),
        fallback: app.batcher.fallback().map(str::to_string),
        max_batch_size: info.max_batch,
        letterbox: if info.frames { "device" } else { "host" },
        jpeg_encode: if app.batcher.masker().name() == "cpu" {
            "host"
        } else {
            "device"
        },
        version: env!("CARGO_PKG_VERSION"),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[utoipa::path(
    get,
    path = "/live",
    tag = crate::http::openapi::TAG_FACES,
    operation_id = "faces_live",
    responses((status = 200, description = "The process answers.", body = super::super::schema::Status)),
)]
pub async fn live() -> Response {
    (StatusCode::OK, Json(Status { status: "alive" })).into_response()
}

#[utoipa::path(
    get,
    path = "/ready",
    tag = crate::http::openapi::TAG_FACES,
    operation_id = "faces_ready",
    responses((status = 200, description = "Ready to take requests.", body = super::super::schema::Status), (status = 503, description = "Not ready (models loading, device lost, or the image store's folder missing).", body = crate::http::error::Detail)),
)]
pub async fn ready(State(app): State<Arc<Faces>>) -> Response {
    if !app.is_ready() {
        ApiError::Unavailable("not ready".into()).into_response()
    } else if !storage_ready(&app) {
        // Every stored request would fail: take no traffic, as /health says.
        ApiError::Unavailable("not ready: the image store's folder is missing".into())
            .into_response()
    } else {
        (StatusCode::OK, Json(Status { status: "ready" })).into_response()
    }
}

/// Whether uploads can be stored: storage off, or its folder is there.
fn storage_ready(app: &Faces) -> bool {
    !app.storage_enabled()
        || app
            .store
            .blobs
            .path("originals/probe")
            .is_some_and(|p| p.parent().is_some_and(|d| d.is_dir()))
}
