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
use crate::http::extract::ClientIp;

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

/// Run an `org` action off the async runtime (it reads, writes and
/// flushes the store).
async fn on_store<F>(app: &Pbs, f: F) -> Result<Result<Value, String>, PbsError>
where
    F: FnOnce(&super::store::PbsStore) -> Result<Value, String> + Send + 'static,
{
    let store = app.clinic.pbs.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| PbsError::Internal(e.to_string()))
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
        on_store(&app, move |s| org::list_users(s, Some(&p.org))).await?,
    )
}

pub async fn add_user(
    State(app): State<Arc<Pbs>>,
    ClientIp(ip): ClientIp,
    caller: Caller<access::ManageOrg>,
    body: Bytes,
) -> Res {
    let started = Instant::now();
    let p = caller.0;
    let b: AddUserBody = parse_json(&body)?;
    let (actor, object) = (p.user.email.clone(), b.user.clone());
    let r = on_store(&app, move |s| {
        org::add_user(s, &p.org, &b.user, &b.role, &b.password)
    })
    .await?;
    if r.is_ok() {
        audit_ok(&app, "user_added", &actor, &ip, &object);
    }
    admin_result(started, StatusCode::CREATED, r)
}

pub async fn remove_user(
    State(app): State<Arc<Pbs>>,
    ClientIp(ip): ClientIp,
    Path(email): Path<String>,
    caller: Caller<access::ManageOrg>,
) -> Res {
    let started = Instant::now();
    let p = caller.0;
    let (actor, object) = (p.user.email.clone(), email.clone());
    let r = on_store(&app, move |s| org::remove_user(s, Some(&p.org), &email)).await?;
    if r.is_ok() {
        audit_ok(&app, "user_removed", &actor, &ip, &object);
    }
    r.map(|v| Envelope::ok(StatusCode::OK, v, started))
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
        on_store(&app, move |s| org::list_keys(s, Some(&p.org))).await?,
    )
}

pub async fn add_key(
    State(app): State<Arc<Pbs>>,
    ClientIp(ip): ClientIp,
    caller: Caller<access::ManageOrg>,
    body: Bytes,
) -> Res {
    let started = Instant::now();
    let p = caller.0;
    let actor = p.user.email.clone();
    let b: AddKeyBody = parse_json(&body)?;
    let r = on_store(&app, move |s| {
        org::add_key(s, &p.org, &b.public_key_pem, b.kid.as_deref())
    })
    .await?;
    if let Ok(v) = &r {
        audit_ok(
            &app,
            "key_added",
            &actor,
            &ip,
            v["kid"].as_str().unwrap_or_default(),
        );
    }
    admin_result(started, StatusCode::CREATED, r)
}

pub async fn revoke_key(
    State(app): State<Arc<Pbs>>,
    ClientIp(ip): ClientIp,
    Path(kid): Path<String>,
    caller: Caller<access::ManageOrg>,
) -> Res {
    let started = Instant::now();
    let p = caller.0;
    let (actor, object) = (p.user.email.clone(), kid.clone());
    let r = on_store(&app, move |s| org::revoke_key(s, Some(&p.org), &kid)).await?;
    if r.is_ok() {
        audit_ok(&app, "key_revoked", &actor, &ip, &object);
    }
    r.map(|v| Envelope::ok(StatusCode::OK, v, started))
        .map_err(PbsError::NotFound)
}

/// Record an organisation admin's action in the audit trail.
fn audit_ok(app: &Pbs, action: &str, actor: &str, ip: &str, object: &str) {
    app.audit.record(
        crate::audit::Event {
            family: "pbs",
            action,
            actor: Some(actor),
            address: Some(ip),
            object: Some(object),
            ..Default::default()
        },
        crate::audit::Outcome::Ok,
    );
}
