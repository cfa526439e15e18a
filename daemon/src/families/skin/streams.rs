//! The skin API's websockets. The reference's URLs were stripped from its
//! documents; the appliance serves:
//!
//! - `GET /notifications/?user_id={id}` (the path client code uses): one
//!   JSON text message per processed image of the caller's company
//!   (`{event: "image_processed", image_id, batch_id, subject_id,
//!   dataset_id, status, is_ok, quality_issues, detection_error, ...}`);
//! - `GET /api/v1/companies/{company_id}/results_streaming/`: one message
//!   per algorithm result as it is stored (the v1 result row, with
//!   `image_id` and `algorithm_version_id`), the face detector's first.
//!
//! The token goes in `Authorization` (`Bearer <t>` or the bare token, as
//! the reference's examples send it) or in `?token=`. The socket follows
//! the in-process event bus: a client that falls behind loses the oldest
//! messages (and is told how many) rather than slowing the analysis, and
//! closing a socket only drops its subscription.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;
use uuid::Uuid;

use super::accounts::Caller;
use super::error::{SkinError, SkinErrorBody, SkinResult};
use super::runner::company_topic;
use super::service::Skin;

/// Whose notifications.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotifyQuery {
    /// The token's user (any other: 403); may be left out.
    pub user_id: Option<Uuid>,
}

/// Websocket: a JSON message per processed image of the caller's company
/// (`{event: "image_processed", image_id, batch_id, subject_id,
/// dataset_id, status, is_ok, quality_issues, detection_error, ...}`). A
/// client that falls behind loses the oldest messages and is told how
/// many (`{event: "messages_lost", count}`).
#[utoipa::path(
    get,
    path = "/notifications/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_notifications",
    params(NotifyQuery, ("token" = Option<String>, Query, description = "The access or private token, where a header cannot be sent (browsers' websockets).")),
    security(("skin_token" = [])),
    responses(
        (status = 101, description = "Switching to the websocket protocol; then one JSON text message per event."),
        (status = 400, description = "Not a websocket upgrade request, or a parameter is invalid.", body = SkinErrorBody),
        (status = 401, description = "No token (header, `?token=` or a `token`/`access_token` cookie), or not a valid one.", body = SkinErrorBody),
        (status = 403, description = "`user_id` is not the token's user.", body = SkinErrorBody),
        (status = 426, description = "The connection cannot be upgraded."),
    ),
)]
pub async fn notifications(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Query(q): Query<NotifyQuery>,
    ws: WebSocketUpgrade,
) -> SkinResult<Response> {
    if q.user_id.is_some_and(|u| u != caller.user.id) {
        return Err(SkinError::Forbidden(
            "user_id is not the token's user".into(),
        ));
    }
    let company = caller.user.company_id;
    Ok(ws.on_upgrade(move |socket| follow(skin, socket, company, "image", "notifications")))
}

/// Websocket: a JSON message per algorithm result of the company's images
/// as it is stored (the v1 result row), the face detector's first. A
/// client that falls behind loses the oldest messages and is told how
/// many.
#[utoipa::path(
    get,
    path = "/api/v1/companies/{company_id}/results_streaming/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_results_streaming",
    params(("company_id" = Uuid, Path, description = "The caller's company."), ("token" = Option<String>, Query, description = "The access or private token, where a header cannot be sent (browsers' websockets).")),
    security(("skin_token" = [])),
    responses(
        (status = 101, description = "Switching to the websocket protocol; then one JSON text message per event."),
        (status = 400, description = "Not a websocket upgrade request, or a parameter is invalid.", body = SkinErrorBody),
        (status = 401, description = "No token (header, `?token=` or a `token`/`access_token` cookie), or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "Not the caller's company.", body = SkinErrorBody),
        (status = 426, description = "The connection cannot be upgraded."),
    ),
)]
pub async fn results(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path(c): Path<Uuid>,
    ws: WebSocketUpgrade,
) -> SkinResult<Response> {
    let company = caller.company(c)?;
    Ok(ws.on_upgrade(move |socket| follow(skin, socket, company, "result", "results")))
}

/// Forward the company's events of `kind` until either side closes.
async fn follow(
    skin: Arc<Skin>,
    mut socket: WebSocket,
    company: Uuid,
    kind: &'static str,
    label: &'static str,
) {
    let gauge = skin.metrics.skin_open_sockets.with_label_values(&[label]);
    gauge.inc();
    let mut events = skin.events.subscribe(&company_topic(company));
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Ok(ev) if ev.kind == kind => {
                    if socket.send(Message::Text(ev.data.to_string().into())).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    let note = json!({"event": "messages_lost", "count": n}).to_string();
                    if socket.send(Message::Text(note.into())).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Closed) => break,
            },
            m = socket.recv() => match m {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                // Pings are answered by the library; text from the client is ignored.
                Some(Ok(_)) => {}
            },
        }
    }
    gauge.dec();
}
