//! Organisation admins' endpoints: `GET/POST /pbs/admin/users`,
//! `DELETE /pbs/admin/users/{email}`, `GET/POST /pbs/admin/keys`,
//! `DELETE /pbs/admin/keys/{kid}`; the same actions as the CLI's
//! `argusd pbs users|keys` (both call `org`).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::caller::{access, Caller};
use super::Pbs;
use crate::families::pbs::org;

use super::envelope::{parse_json, Envelope, PbsError, Res};

// ---- organisation admin ----

#[derive(Debug, Default, Deserialize)]
pub struct AddUserBody {
    #[serde(default)]
    user: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

fn admin_result(started: Instant, status: StatusCode, r: Result<Value, String>) -> Res {
    r.map(|v| Envelope::ok(status, v, started))
        .map_err(PbsError::BadRequest)
}

pub async fn list_users(State(app): State<Arc<Pbs>>, caller: Caller<access::ManageOrg>) -> Res {
    let started = Instant::now();
    let p = caller.0;
    admin_result(
        started,
        StatusCode::OK,
        org::list_users(&app.clinic.pbs, Some(&p.org)),
    )
}

pub async fn add_user(
    State(app): State<Arc<Pbs>>,
    caller: Caller<access::ManageOrg>,
    body: Bytes,
) -> Res {
    let started = Instant::now();
    let p = caller.0;
    let b: AddUserBody = parse_json(&body)?;
    let store = app.clinic.pbs.clone();
    let r = tokio::task::spawn_blocking(move || {
        org::add_user(&store, &p.org, &b.user, &b.role, &b.password)
    })
    .await
    .map_err(|e| PbsError::Internal(e.to_string()))?;
    admin_result(started, StatusCode::CREATED, r)
}

pub async fn remove_user(
    State(app): State<Arc<Pbs>>,
    Path(email): Path<String>,
    caller: Caller<access::ManageOrg>,
) -> Res {
    let started = Instant::now();
    let p = caller.0;
    org::remove_user(&app.clinic.pbs, Some(&p.org), &email)
        .map(|v| Envelope::ok(StatusCode::OK, v, started))
        .map_err(PbsError::NotFound)
}

#[derive(Debug, Default, Deserialize)]
pub struct AddKeyBody {
    #[serde(default)]
    public_key_pem: String,
    #[serde(default)]
    kid: Option<String>,
}

pub async fn list_keys(State(app): State<Arc<Pbs>>, caller: Caller<access::ManageOrg>) -> Res {
    let started = Instant::now();
    let p = caller.0;
    admin_result(
        started,
        StatusCode::OK,
        org::list_keys(&app.clinic.pbs, Some(&p.org)),
    )
}

pub async fn add_key(
    State(app): State<Arc<Pbs>>,
    caller: Caller<access::ManageOrg>,
    body: Bytes,
) -> Res {
    let started = Instant::now();
    let p = caller.0;
    let b: AddKeyBody = parse_json(&body)?;
    admin_result(
        started,
        StatusCode::CREATED,
        org::add_key(&app.clinic.pbs, &p.org, &b.public_key_pem, b.kid.as_deref()),
    )
}

pub async fn revoke_key(
    State(app): State<Arc<Pbs>>,
    Path(kid): Path<String>,
    caller: Caller<access::ManageOrg>,
) -> Res {
    let started = Instant::now();
    let p = caller.0;
    org::revoke_key(&app.clinic.pbs, Some(&p.org), &kid)
        .map(|v| Envelope::ok(StatusCode::OK, v, started))
        .map_err(PbsError::NotFound)
}
