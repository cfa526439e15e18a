//! The blood-smear (PBS) family of `003`: `/auth/login`, `/auth/hello`,
//! `/pbs...`, `/heartbeat`. Every answer but the heartbeat is the envelope
//! `{status, results, error, user_message, debug_info}` with the HTTP status
//! equal to `status`; `PbsError` is this family's one mapping to HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{request::Parts, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use sha2::Digest;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::caller::{access, Caller};
use super::schema;
use super::Pbs;
use crate::audit::{Event, Outcome};
use crate::families::pbs::identity::{AuthFailure, Principal};
use crate::families::pbs::store::{
    FileRecord, ReportStatus, Role, StudyRecord, StudyRemoval, UserRecord,
};
use crate::families::pbs::{self as clinic, Clinic};
use crate::http::extract::ClientIp;
use crate::http::ClientAddr;
use crate::store::{blocking, now_rfc3339, StoreError};

pub use super::envelope::{envelope_error, Envelope, EnvelopeBody, ErrorBody, PbsError};
use super::envelope::{parse_json, Res, VERSION};
use crate::http::openapi::TAG_PBS;

mod files;
mod studies;
mod tasks;

pub use files::*;
pub use studies::*;
pub use tasks::*;

fn clinic(app: &Pbs) -> &Arc<Clinic> {
    &app.clinic
}

/// The study, if it exists and belongs to the caller's organisation (other
/// organisations' studies are indistinguishable from missing ones).
async fn own_study(app: &Pbs, p: &Principal, id: &str) -> Result<StudyRecord, PbsError> {
    let missing = || PbsError::NotFound(format!("no PBS study {id}"));
    let uuid = Uuid::parse_str(id).map_err(|_| missing())?;
    let pbs = app.clinic.pbs.clone();
    match blocking(move || pbs.get_study(uuid)).await? {
        Some(s) if s.org == p.org => Ok(s),
        _ => Err(missing()),
    }
}

// ---- auth ----

/// `POST /auth/login`: a user name and the hex SHA-256 of the password
/// (never the password itself).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(
    as = pbs::LoginRequest,
    example = json!({
        "user": "ali@example.com",
        "pass_hash": "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
    })
)]
pub struct LoginBody {
    /// The user's e-mail address (case does not matter).
    #[serde(default)]
    user: String,
    /// The hex SHA-256 of the password: 64 hex digits.
    #[serde(default)]
    pass_hash: String,
    /// The organisation to sign in to: optional, and needed only by a user
    /// whose user name and password are also another organisation's user's
    /// (without it the first of them, by organisation name, signs in).
    /// Not in the cloud API, which has one organisation per user name.
    #[serde(default)]
    org: Option<String>,
}

/// Sign in with a user name and password hash.
///
/// Answers 202 with a session token (`results.token.HY_APP_AUTH_v1`) to
/// send as `Authorization: Bearer <token>`. The password is sent as its
/// hex SHA-256; a raw password is refused (400). Unknown users and wrong
/// passwords are one 401. Attempts are limited per client address and per
/// user name (429 with `Retry-After`, in seconds).
#[utoipa::path(
    post,
    path = "/auth/login",
    operation_id = "pbs_login",
    tag = TAG_PBS,
    request_body(content = LoginBody, content_type = "application/json",
                 description = "The user and the hex SHA-256 of the password."),
    responses(
        (status = 202, description = "Signed in: the session token and the user.",
         body = EnvelopeBody<schema::Login>),
        (status = 400, description = "The body is not the expected JSON, `user` is missing, \
         or `pass_hash` is not 64 hex digits.", body = ErrorBody),
        (status = 401, description = "Unknown user or wrong password (`results.claim` is \
         `user`).", body = ErrorBody),
        (status = 413, description = "The body is over `limits.max_body_bytes`.",
         body = ErrorBody),
        (status = 429, description = "Too many attempts from this address or for this user.",
         body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn login(State(app): State<Arc<Pbs>>, parts: Parts, body: Bytes) -> Res {
    let started = Instant::now();
    let ip = parts
        .extensions
        .get::<ClientAddr>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let b: LoginBody = parse_json(&body)?;
    let user = b.user.trim().to_ascii_lowercase();
    let ev = Event {
        family: "pbs",
        action: "login",
        actor: Some(&user),
        address: Some(&ip),
        ..Default::default()
    };
    // Before any password is verified: per address and per user name.
    if let Err(l) = app.limiters.login.gate("pbs", &ip, &user) {
        app.audit.record(
            Event {
                detail: Some("rate limited"),
                ..ev
            },
            Outcome::Denied,
        );
        return Err(PbsError::TooMany(l.retry_after_secs));
    }
    let hash = b.pass_hash.trim().to_ascii_lowercase();
    if user.is_empty() {
        return Err(PbsError::BadRequest("user is required".into()));
    }
    if hash.len() != 64 || !hash.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(PbsError::BadRequest(
            "pass_hash must be the hex sha256 of the password (64 hex digits); raw passwords are not accepted".into(),
        ));
    }
    let org = b
        .org
        .map(|o| o.trim().to_string())
        .filter(|o| !o.is_empty());
    let found = user_with_password(&app, user.clone(), hash, org).await?;
    let Some(u) = found else {
        app.audit.record(
            Event {
                detail: Some("unknown user or wrong password"),
                ..ev
            },
            Outcome::Denied,
        );
        return Err(PbsError::Unauthorized(Box::new(AuthFailure {
            rejection: crate::auth::jwt::Rejection::new("user", "unknown user or wrong password"),
            alg: None,
            kid: None,
            iss: None,
        })));
    };
    app.audit.record(ev, Outcome::Ok);
    app.limiters.login.refund("pbs", &ip, &user);
    let token = clinic(&app).session_token(&u);
    Ok(Envelope::ok(
        StatusCode::ACCEPTED,
        login_reply(&u, token),
        started,
    ))
}

/// The user whose password hash `hash` is, among the users named `user`
/// (in organisation `org` when the login names one, else in any): a login
/// need not name its organisation. Time is spent as for a real check when
/// no such user exists, so a wrong name takes as long as a wrong password.
async fn user_with_password(
    app: &Pbs,
    user: String,
    hash: String,
    org: Option<String>,
) -> Result<Option<UserRecord>, PbsError> {
    let store = app.clinic.clone();
    tokio::task::spawn_blocking(move || -> Result<Option<_>, StoreError> {
        let mut users = store.pbs.users_named(&user)?;
        if let Some(org) = &org {
            users.retain(|u| &u.org == org);
        }
        if users.is_empty() {
            crate::auth::password::burn_time(&hash);
        }
        Ok(users
            .into_iter()
            .find(|u| crate::auth::password::verify(&hash, &u.pass_hash)))
    })
    .await
    .map_err(|e| PbsError::Internal(e.to_string()))?
    .map_err(PbsError::from)
}

/// The login's reply: the session token, the user, and the time of the
/// login in nanoseconds since the epoch (the reference's string).
fn login_reply(u: &UserRecord, token: String) -> schema::Login {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    schema::Login {
        login_timestamp: nanos.to_string(),
        token: schema::Token {
            hy_app_auth_v1: token,
        },
        user: schema::LoginUser {
            email: u.email.clone(),
            id: u.id,
            screen_name: u.screen_name.clone(),
            user_name: u.email.clone(),
            organisation: u.org.clone(),
            role: u.role.as_str(),
        },
    }
}

/// Check a token: what is right or wrong with it.
///
/// Verifies the `Authorization` token as every authenticated route does,
/// without spending it (a client-signed token's `jti` stays usable).
/// Answers 200 with who the token speaks for, or 401 with the claim at
/// fault and what the appliance expects (`aud`, algorithms).
#[utoipa::path(
    post,
    path = "/auth/hello",
    operation_id = "pbs_hello",
    tag = TAG_PBS,
    security((), ("pbs_jwt" = [])),
    responses(
        (status = 200, description = "The token is accepted.",
         body = EnvelopeBody<schema::HelloValid>),
        (status = 401, description = "The token is missing or refused; `results` says why.",
         body = EnvelopeBody<schema::HelloRefused>),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn hello(State(app): State<Arc<Pbs>>, headers: HeaderMap) -> Res {
    let started = Instant::now();
    let h = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let c = app.clinic.clone();
    // Verifying reads the store (keys, spent token ids).
    let verdict = tokio::task::spawn_blocking(move || c.authenticate(h.as_deref(), false))
        .await
        .map_err(|e| PbsError::Internal(e.to_string()))?;
    match verdict {
        Ok(p) => Ok(Envelope::ok(
            StatusCode::OK,
            schema::HelloValid {
                valid: true,
                organisation: p.org,
                user: p.user.email,
                user_id: p.user.id,
                role: p.role.as_str(),
                verified_with: p.via,
                audience: app.config.pbs.public_host.clone(),
            },
            started,
        )),
        Err(f) => {
            let mut e = Envelope::ok(
                StatusCode::UNAUTHORIZED,
                schema::HelloRefused {
                    valid: false,
                    claim: f.rejection.claim.to_string(),
                    reason: f.rejection.reason.clone(),
                    alg: f.alg,
                    kid: f.kid.clone(),
                    iss: f.iss.clone(),
                    expected_audience: app.config.pbs.public_host.clone(),
                    accepted_algorithms: ["RS256 (with kid)", "RS384"],
                },
                started,
            );
            e.error = f.rejection.to_string();
            e.user_message = "The token was not accepted; see results for why.".into();
            Ok(e)
        }
    }
}

/// Check a token: what is right or wrong with it (as `POST /auth/hello`).
#[utoipa::path(
    get,
    path = "/auth/hello",
    operation_id = "pbs_hello_get",
    tag = TAG_PBS,
    security((), ("pbs_jwt" = [])),
    responses(
        (status = 200, description = "The token is accepted.",
         body = EnvelopeBody<schema::HelloValid>),
        (status = 401, description = "The token is missing or refused; `results` says why.",
         body = EnvelopeBody<schema::HelloRefused>),
        (status = 500, description = "The appliance's store failed.", body = ErrorBody),
    ),
)]
pub async fn hello_get(app: State<Arc<Pbs>>, headers: HeaderMap) -> Res {
    hello(app, headers).await
}

/// Is the blood-smear service up? Not enveloped, and needs no token.
///
/// 200 when the cell models' batchers are running, 503 (same body) when
/// they are not.
#[utoipa::path(
    get,
    path = "/heartbeat",
    operation_id = "pbs_heartbeat",
    tag = TAG_PBS,
    responses(
        (status = 200, description = "The service is up.", body = schema::Heartbeat),
        (status = 503, description = "The analysis is not running.", body = schema::Heartbeat),
    ),
)]
pub async fn heartbeat(State(app): State<Arc<Pbs>>) -> Response {
    let started = Instant::now();
    let beat = hex::encode(rand::random::<[u8; 10]>());
    let ok = app.clinic.healthy();
    let body = schema::Heartbeat {
        delta: format!("{:?}", started.elapsed()),
        heartbeat: beat,
        request_timestamp: crate::store::unix_now(),
        version: VERSION,
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
