//! Who calls the skin API: companies (tenants) and their users, login and
//! refresh tokens, private tokens, and the [`Caller`] extractor.
//!
//! - `POST /api/v1/login/` (and `/api/v1/auth/login/`): `{username,
//!   password}` → the reference's login body with an `access_token` (HS256
//!   JWT, `skin_api.access_token_secs`, 1 h) and a `refresh_token`
//!   (`skin_api.refresh_token_secs`). Attempts are limited per address and
//!   per user name (`auth.admin_login_per_minute`), before any password
//!   check.
//! - `POST /api/v1/auth/refresh/`: `{"refresh": token}` (also
//!   `refresh_token`) → `{access, access_token, token_access,
//!   refresh_token}` (the reference leaves the fields open; these are
//!   SimpleJWT's plus the login's names).
//! - Private tokens: 256 random bits, shown once, kept as sha256; deleting
//!   one refuses it at once.
//!
//! A token is taken from `Authorization` (`Bearer <t>`, the quick-start's
//! `Bearer: <t>`, or the bare token the websocket examples send), from the
//! PDF call's `access-token` header, from `?token=` only on image files,
//! v1 results and websockets (a token in a URL ends up in logs), and on
//! websockets also from a `token` or `access_token` cookie.
//!
//! `tokens` holds the private tokens, `users` the appliance admin's
//! user endpoints and the shared `add_user`.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{SkinError, SkinErrorBody, SkinResult};
use super::records::{SkinStore, User};
use super::service::Skin;
use crate::audit::{Event, Outcome};
use crate::auth::{jwt, password};
use crate::http::extract::client_ip;
use crate::store::{blocking, sha256_hex, unix_now};

mod tokens;
mod users;

pub use tokens::*;
pub use users::*;

const ISSUER: &str = "argus-skin";
/// The login limiter's scope for skin users.
const LOGINS: &str = "skin";

/// An authenticated user of the skin API.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
}

impl Caller {
    /// `company` when it is the caller's own; otherwise 404, as for an
    /// unknown one (another tenant's ids are never confirmed).
    pub fn company(&self, company: Uuid) -> SkinResult<Uuid> {
        if company == self.user.company_id {
            Ok(company)
        } else {
            Err(SkinError::not_found("Company"))
        }
    }
}

/// The raw token a request presents, wherever it is.
pub fn presented_token(parts: &Parts) -> Option<String> {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(h) = header("authorization") {
        let t = h
            .strip_prefix("Bearer:")
            .or_else(|| h.strip_prefix("bearer:"))
            .map(str::trim)
            .unwrap_or_else(|| jwt::token_from_header(h));
        return Some(t.to_string());
    }
    if let Some(h) = header("access-token") {
        return Some(h.to_string());
    }
    // A token in a URL ends up in logs: only where the reference puts it
    // there (image files, v1 results links; v3's are read with a header) or a browser cannot send a
    // header (websockets).
    let path = parts.uri.path();
    let websocket = path.starts_with("/notifications") || path.contains("/results_streaming");
    let in_query = websocket
        || path.starts_with("/images/")
        || (path.starts_with("/api/v1/") && path.trim_end_matches('/').ends_with("/results"));
    if websocket {
        for name in ["token", "access_token"] {
            if let Some(t) = crate::http::extract::cookie(&parts.headers, name) {
                return Some(t.to_string());
            }
        }
    }
    if !in_query {
        return None;
    }
    parts.uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    })
}

impl Skin {
    fn sign(&self, user: &User, role: &str, ttl: u64) -> String {
        let now = unix_now();
        jwt::sign_hs256(
            &json!({"jti": Uuid::new_v4().to_string(), "iss": ISSUER, "sub": user.id.to_string(),
                "role": role, "company_id": user.company_id, "iat": now, "exp": now + ttl}),
            &self.token_key,
        )
    }

    /// The user id a login token of `role` names, if it verifies and has
    /// not expired.
    fn verify_jwt(&self, token: &str, role: &str) -> Option<Uuid> {
        let parsed = jwt::parse(token).ok()?;
        parsed.verify_hs256(&self.token_key).ok()?;
        let c = parsed.claims().ok()?;
        (c.iss == ISSUER && c.role == role && c.exp > unix_now())
            .then(|| c.sub.parse().ok())
            .flatten()
    }

    /// Resolve a presented token to its user: a login access token, or a
    /// private token that exists and has not expired.
    pub async fn authenticate(&self, token: &str) -> SkinResult<User> {
        let unauthorized =
            || SkinError::Unauthorized("Given token not valid for any token type".into());
        let records = self.records.clone();
        let user_id = match self.verify_jwt(token, "access") {
            Some(id) => Some(id),
            None => {
                let h = sha256_hex(token.as_bytes());
                let r = records.clone();
                blocking(move || r.token_by_hash(&h))
                    .await?
                    .filter(|t| t.expires_at > unix_now())
                    .map(|t| t.user_id)
            }
        };
        let id = user_id.ok_or_else(unauthorized)?;
        blocking(move || SkinStore::get::<User>(&records.users, id))
            .await?
            .ok_or_else(unauthorized)
    }
}

impl FromRequestParts<Arc<Skin>> for Caller {
    type Rejection = SkinError;

    async fn from_request_parts(parts: &mut Parts, skin: &Arc<Skin>) -> SkinResult<Self> {
        let token = presented_token(parts).ok_or_else(|| {
            SkinError::Unauthorized("Authentication credentials were not provided.".into())
        })?;
        match skin.authenticate(&token).await {
            Ok(user) => Ok(Caller { user }),
            Err(e) => {
                if matches!(e, SkinError::Unauthorized(_)) {
                    skin.audit.record(
                        Event {
                            family: "skin",
                            action: "credential_refused",
                            address: Some(&client_ip(parts)),
                            object: Some(parts.uri.path()),
                            detail: Some("token not valid (unknown, expired or revoked)"),
                            ..Default::default()
                        },
                        Outcome::Denied,
                    );
                }
                Err(e)
            }
        }
    }
}

/// A user's credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"username": "jane@clinic.example", "password": "correct horse battery"}))]
pub struct LoginBody {
    /// The user's e-mail address (also accepted as `email`).
    #[serde(alias = "email")]
    pub username: Option<String>,
    pub password: Option<String>,
}

/// The reference's user profile; the appliance keeps only the full name.
#[derive(Debug, Serialize, ToSchema)]
pub struct Profile {
    /// Always empty.
    pub feature_flags: Vec<String>,
    pub full_name: String,
    /// Always false.
    pub kyc_enabled: bool,
    /// Always `{}`.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, Value>,
    /// Always null.
    pub terms_and_policy_accepted_at: Option<String>,
    /// Always null.
    pub terms_payment_accepted_at: Option<String>,
}

/// A successful login: the user and a pair of tokens. (Fields in
/// alphabetical order, as the body has always had them.)
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"access_token": "eyJhbGciOiJIUzI1NiJ9.e30.sig",
    "company_id": "0190f5a4-8a8e-7c3e-9a51-3f4f8a0c2b11", "email": "jane@clinic.example",
    "expires_in": 3600, "id": "0190f5a4-8a8e-7c3e-9a51-3f4f8a0c2b12", "is_verified": true,
    "profile": {"feature_flags": [], "full_name": "Jane Roe", "kyc_enabled": false, "metadata": {},
        "terms_and_policy_accepted_at": null, "terms_payment_accepted_at": null},
    "refresh_token": "eyJhbGciOiJIUzI1NiJ9.e30.sig2", "token_access": "eyJhbGciOiJIUzI1NiJ9.e30.sig",
    "username": "jane@clinic.example"}))]
pub struct LoginResponse {
    /// The access token (HS256 JWT): `Authorization: Bearer <token>`.
    pub access_token: String,
    pub company_id: Uuid,
    pub email: String,
    /// Seconds the access token is valid (`skin_api.access_token_secs`).
    pub expires_in: u64,
    pub id: Uuid,
    /// Always true.
    pub is_verified: bool,
    pub profile: Profile,
    /// For `POST /api/v1/auth/refresh/` (`skin_api.refresh_token_secs`).
    pub refresh_token: String,
    /// The access token again, under the reference's other name.
    pub token_access: String,
    /// The e-mail address.
    pub username: String,
}

fn login_body(skin: &Skin, user: &User) -> LoginResponse {
    let access = skin.sign(user, "access", skin.config.skin_api.access_token_secs);
    LoginResponse {
        access_token: access.clone(),
        company_id: user.company_id,
        email: user.email.clone(),
        expires_in: skin.config.skin_api.access_token_secs,
        id: user.id,
        is_verified: true,
        profile: Profile {
            feature_flags: Vec::new(),
            full_name: user.full_name.clone(),
            kyc_enabled: false,
            metadata: serde_json::Map::new(),
            terms_and_policy_accepted_at: None,
            terms_payment_accepted_at: None,
        },
        refresh_token: skin.sign(user, "refresh", skin.config.skin_api.refresh_token_secs),
        token_access: access,
        username: user.email.clone(),
    }
}

/// The credentials of a login body: a form when `Content-Type` says so,
/// else JSON. A name given twice in a form is refused, as the appliance
/// refuses a repeated query name.
fn login_body_of(parts: &Parts, body: &[u8]) -> SkinResult<LoginBody> {
    let form = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|e| {
            e.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return serde_json::from_slice(crate::http::without_bom(body))
            .map_err(|e| SkinError::BadRequest(format!("JSON parse error - {e}")));
    }
    let mut b = LoginBody {
        username: None,
        password: None,
    };
    for (k, v) in url::form_urlencoded::parse(body) {
        let slot = match k.as_ref() {
            "username" | "email" => &mut b.username,
            "password" => &mut b.password,
            _ => continue,
        };
        if slot.replace(v.into_owned()).is_some() {
            return Err(SkinError::BadRequest(format!(
                "Form parse error - `{k}` is given more than once."
            )));
        }
    }
    Ok(b)
}

/// Log in with an e-mail address and password.
///
/// Answers an access token (HS256 JWT, valid `skin_api.access_token_secs`,
/// 1 h by default) and a refresh token. Attempts are limited per client
/// address and per user name (`auth.admin_login_per_minute`) before any
/// password is checked: over the limit, 429 with `Retry-After` (seconds).
/// The body is JSON (a UTF-8 byte-order mark before it is ignored) or, as
/// the reference's parsers take it too, an HTML form
/// (`application/x-www-form-urlencoded`: Python's `requests.post(url,
/// data=...)`).
#[utoipa::path(
    post,
    path = "/api/v1/login/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_login",
    request_body(content(
        (LoginBody = "application/json"),
        (LoginBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Logged in.", body = LoginResponse),
        (status = 400, description = "Neither JSON nor a form, or `username` or `password` missing.", body = SkinErrorBody),
        (status = 401, description = "No active account with these credentials.", body = SkinErrorBody),
        (status = 429, description = "Too many attempts; `Retry-After` says when to try again (seconds).", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn login(
    State(skin): State<Arc<Skin>>,
    parts: Parts,
    body: axum::body::Bytes,
) -> SkinResult<Json<LoginResponse>> {
    let b = login_body_of(&parts, &body)?;
    let username = b.username.unwrap_or_default().trim().to_string();
    let pw = b.password.unwrap_or_default();
    if username.is_empty() {
        return Err(SkinError::Field(
            "username",
            "This field is required.".into(),
        ));
    }
    if pw.is_empty() {
        return Err(SkinError::Field(
            "password",
            "This field is required.".into(),
        ));
    }
    let ip = client_ip(&parts);
    let ev = Event {
        family: "skin",
        action: "login",
        actor: Some(&username),
        address: Some(&ip),
        ..Default::default()
    };
    if let Err(l) = skin.limiters.login.gate(LOGINS, &ip, &username) {
        skin.audit.record(
            Event {
                detail: Some("rate limited"),
                ..ev
            },
            Outcome::Denied,
        );
        return Err(SkinError::Throttled {
            retry_after: l.retry_after_secs,
        });
    }
    let records = skin.records.clone();
    let name = username.clone();
    let user = blocking(move || {
        let u = records.user_by_email(&name)?;
        Ok(match u {
            Some(u) if password::verify(&pw, &u.password_hash) => Some(u),
            Some(_) => None,
            None => {
                password::burn_time(&pw);
                None
            }
        })
    })
    .await?;
    let Some(user) = user else {
        skin.audit.record(
            Event {
                detail: Some("invalid credentials"),
                ..ev
            },
            Outcome::Denied,
        );
        return Err(SkinError::Unauthorized(
            "No active account found with the given credentials".into(),
        ));
    };
    skin.audit.record(ev, Outcome::Ok);
    skin.limiters.login.refund(LOGINS, &ip, &username);
    Ok(Json(login_body(&skin, &user)))
}

/// Log in (`POST /api/v1/login/` under the reference's other path).
///
/// The same operation as `POST /api/v1/login/`.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_auth_login",
    request_body(content(
        (LoginBody = "application/json"),
        (LoginBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Logged in.", body = LoginResponse),
        (status = 400, description = "Neither JSON nor a form, or `username` or `password` missing.", body = SkinErrorBody),
        (status = 401, description = "No active account with these credentials.", body = SkinErrorBody),
        (status = 429, description = "Too many attempts; `Retry-After` says when to try again (seconds).", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn auth_login(
    skin: State<Arc<Skin>>,
    parts: Parts,
    body: axum::body::Bytes,
) -> SkinResult<Json<LoginResponse>> {
    login(skin, parts, body).await
}

/// A refresh token.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"refresh": "eyJhbGciOiJIUzI1NiJ9.e30.sig2"}))]
pub struct RefreshBody {
    /// The login's `refresh_token` (also accepted as `refresh_token`).
    #[serde(alias = "refresh_token")]
    pub refresh: Option<String>,
}

/// A new access token, under each name clients read it by, and a new
/// refresh token.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshResponse {
    /// The access token (SimpleJWT's name).
    pub access: String,
    /// The access token (the login's name).
    pub access_token: String,
    /// Seconds the access token is valid.
    pub expires_in: u64,
    pub refresh_token: String,
    /// The access token (the reference's other name).
    pub token_access: String,
}

/// Trade a refresh token for a new access token.
///
/// The refresh token must be one this appliance signed and unexpired
/// (`skin_api.refresh_token_secs`); its user must still exist.
#[utoipa::path(
    post,
    path = "/api/v1/auth/refresh/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_refresh",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "A new access token.", body = RefreshResponse),
        (status = 400, description = "Not JSON, or `refresh` missing.", body = SkinErrorBody),
        (status = 401, description = "The refresh token is invalid or expired.", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn refresh(
    State(skin): State<Arc<Skin>>,
    Json(b): Json<RefreshBody>,
) -> SkinResult<Json<RefreshResponse>> {
    let token = b
        .refresh
        .ok_or_else(|| SkinError::Field("refresh", "This field is required.".into()))?;
    let invalid = || SkinError::Unauthorized("Token is invalid or expired".into());
    let id = skin.verify_jwt(&token, "refresh").ok_or_else(invalid)?;
    let records = skin.records.clone();
    let user = blocking(move || SkinStore::get::<User>(&records.users, id))
        .await?
        .ok_or_else(invalid)?;
    let access = skin.sign(&user, "access", skin.config.skin_api.access_token_secs);
    Ok(Json(RefreshResponse {
        access: access.clone(),
        access_token: access.clone(),
        expires_in: skin.config.skin_api.access_token_secs,
        refresh_token: skin.sign(&user, "refresh", skin.config.skin_api.refresh_token_secs),
        token_access: access,
    }))
}

/// Refresh (`POST /api/v1/auth/refresh/` under the reference's other path).
///
/// The same operation as `POST /api/v1/auth/refresh/`.
#[utoipa::path(
    post,
    path = "/api/v1/refresh/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_refresh_alias",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "A new access token.", body = RefreshResponse),
        (status = 400, description = "Not JSON, or `refresh` missing.", body = SkinErrorBody),
        (status = 401, description = "The refresh token is invalid or expired.", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn refresh_alias(
    skin: State<Arc<Skin>>,
    body: Json<RefreshBody>,
) -> SkinResult<Json<RefreshResponse>> {
    refresh(skin, body).await
}

/// Record a user's or admin's account action in the audit trail.
pub fn audit_ok(skin: &Skin, action: &str, actor: &str, object: &str) {
    skin.audit.record(
        Event {
            family: "skin",
            action,
            actor: Some(actor),
            object: Some(object),
            ..Default::default()
        },
        Outcome::Ok,
    );
}
