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
use utoipa::ToSchema;

use super::caller::{access, Caller};
use super::Pbs;
use crate::families::pbs::org;
use crate::http::extract::ClientIp;

use super::envelope::{parse_json, Envelope, EnvelopeBody, ErrorBody, PbsError, Res};
use super::schema;
use crate::http::openapi::TAG_PBS;

// ---- organisation admin ----

/// `POST /pbs/admin/users`: a user of the caller's organisation.
#[derive(Debug, Default, Deserialize, ToSchema)]
// A misspelt field would otherwise be dropped and the call refused for
// the field it lacks, or worse, done without it.
#[serde(deny_unknown_fields)]
#[schema(
    as = pbs::AddUser,
    example = json!({
        "user": "scanner-7@clinic-1.example",
        "role": "device",
        "password": "correct horse battery staple"
    })
)]
pub struct AddUserBody {
    /// The user's e-mail address.
    #[serde(default)]
    user: String,
    /// "admin", "user", "device" or "service".
    #[serde(default)]
    role: String,
    /// At least 8 characters; the user signs in with its hex SHA-256.
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

/// The users of the caller's organisation. Role: admin.
#[utoipa::path(
    get,
    path = "/pbs/admin/users",
    operation_id = "pbs_list_users",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    responses(
        (status = 200, description = "The organisation's users.",
         body = EnvelopeBody<Vec<schema::UserView>>),
        (status = 400, description = "The store could not be read.", body = ErrorBody),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role is not admin.", body = ErrorBody),
        (status = 500, description = "The appliance failed.", body = ErrorBody),
    ),
)]
pub async fn list_users(State(app): State<Arc<Pbs>>, caller: Caller<access::ManageOrg>) -> Res {
    let started = Instant::now();
    let p = caller.0;
    admin_result(
        started,
        StatusCode::OK,
        on_store(&app, move |s| org::list_users(s, Some(&p.org))).await?,
    )
}

/// Add a user to the caller's organisation, or reset an existing user's
/// password and role (`updated: true`). Role: admin.
#[utoipa::path(
    post,
    path = "/pbs/admin/users",
    operation_id = "pbs_add_user",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    request_body(content = AddUserBody, content_type = "application/json",
                 description = "The user, its role and its password."),
    responses(
        (status = 201, description = "The user as stored.",
         body = EnvelopeBody<schema::UserAdded>),
        (status = 400, description = "The body is not the expected JSON, not an e-mail \
         address, an unknown role or a password under 8 characters.", body = ErrorBody),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role is not admin.", body = ErrorBody),
        (status = 413, description = "The body is over `limits.max_body_bytes`.",
         body = ErrorBody),
        (status = 500, description = "The appliance failed.", body = ErrorBody),
    ),
)]
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

/// Remove a user of the caller's organisation. Role: admin.
#[utoipa::path(
    delete,
    path = "/pbs/admin/users/{email}",
    operation_id = "pbs_remove_user",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    params(("email" = String, Path, description = "The user's e-mail address.",
            example = "scanner-7@clinic-1.example")),
    responses(
        (status = 200, description = "The user that was removed.",
         body = EnvelopeBody<schema::UserView>),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role is not admin.", body = ErrorBody),
        (status = 404, description = "No such user in the caller's organisation.",
         body = ErrorBody),
        (status = 500, description = "The appliance failed.", body = ErrorBody),
    ),
)]
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

/// `POST /pbs/admin/keys`: an RSA public key the organisation signs its
/// own tokens with.
#[derive(Debug, Default, Deserialize, ToSchema)]
// A misspelt field would otherwise be dropped and the call refused for
// the field it lacks, or worse, done without it.
#[serde(deny_unknown_fields)]
#[schema(
    as = pbs::AddKey,
    example = json!({
        "public_key_pem": "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA...\n-----END PUBLIC KEY-----\n",
        "kid": "scanner-fleet-2025"
    })
)]
pub struct AddKeyBody {
    /// The RSA public key, PEM (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`).
    #[serde(default)]
    public_key_pem: String,
    /// The key's id (1 to 128 printable characters); by default the first
    /// 32 hex digits of the SHA-256 of the key's DER.
    #[serde(default)]
    kid: Option<String>,
}

/// The caller's organisation's signing keys, revoked ones included. Role:
/// admin.
#[utoipa::path(
    get,
    path = "/pbs/admin/keys",
    operation_id = "pbs_list_keys",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    responses(
        (status = 200, description = "The organisation's keys.",
         body = EnvelopeBody<Vec<schema::KeyView>>),
        (status = 400, description = "The store could not be read.", body = ErrorBody),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role is not admin.", body = ErrorBody),
        (status = 500, description = "The appliance failed.", body = ErrorBody),
    ),
)]
pub async fn list_keys(State(app): State<Arc<Pbs>>, caller: Caller<access::ManageOrg>) -> Res {
    let started = Instant::now();
    let p = caller.0;
    admin_result(
        started,
        StatusCode::OK,
        on_store(&app, move |s| org::list_keys(s, Some(&p.org))).await?,
    )
}

/// Register a public key for client-signed tokens (RS256 with `kid`, or
/// RS384). Role: admin.
#[utoipa::path(
    post,
    path = "/pbs/admin/keys",
    operation_id = "pbs_add_key",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    request_body(content = AddKeyBody, content_type = "application/json",
                 description = "The PEM public key and an optional key id."),
    responses(
        (status = 201, description = "The key as registered.",
         body = EnvelopeBody<schema::KeyView>),
        (status = 400, description = "The body is not the expected JSON, not an RSA public \
         key, a bad `kid`, or a `kid` the organisation already has.", body = ErrorBody),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role is not admin.", body = ErrorBody),
        (status = 413, description = "The body is over `limits.max_body_bytes`.",
         body = ErrorBody),
        (status = 500, description = "The appliance failed.", body = ErrorBody),
    ),
)]
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

/// Revoke a signing key: tokens it signs are refused from now on. Revoking
/// a revoked key changes nothing. Role: admin.
#[utoipa::path(
    delete,
    path = "/pbs/admin/keys/{kid}",
    operation_id = "pbs_revoke_key",
    tag = TAG_PBS,
    security(("pbs_jwt" = [])),
    params(("kid" = String, Path, description = "The key's id.")),
    responses(
        (status = 200, description = "The key, now revoked.",
         body = EnvelopeBody<schema::KeyView>),
        (status = 401, description = "No token, or the token was refused.", body = ErrorBody),
        (status = 403, description = "The token's role is not admin.", body = ErrorBody),
        (status = 404, description = "No such key in the caller's organisation.",
         body = ErrorBody),
        (status = 500, description = "The appliance failed.", body = ErrorBody),
    ),
)]
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
