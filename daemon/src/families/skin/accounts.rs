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

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{SkinError, SkinErrorBody, SkinResult};
use super::records::{Company, PrivateToken, SkinStore, User};
use super::service::Skin;
use super::views::Page;
use crate::audit::{Event, Outcome};
use crate::auth::{jwt, password, random_token};
use crate::http::extract::client_ip;
use crate::store::{blocking, now_rfc3339, sha256_hex, unix_now};

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
    // there (image files, results links) or a browser cannot send a
    // header (websockets).
    let path = parts.uri.path();
    let websocket = path.starts_with("/notifications") || path.contains("/results_streaming");
    let in_query = websocket
        || path.starts_with("/images/")
        || path.trim_end_matches('/').ends_with("/results");
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

/// Log in with an e-mail address and password.
///
/// Answers an access token (HS256 JWT, valid `skin_api.access_token_secs`,
/// 1 h by default) and a refresh token. Attempts are limited per client
/// address and per user name (`auth.admin_login_per_minute`) before any
/// password is checked: over the limit, 429 with `Retry-After` (seconds).
/// A UTF-8 byte-order mark before the JSON is ignored.
#[utoipa::path(
    post,
    path = "/api/v1/login/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_login",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Logged in.", body = LoginResponse),
        (status = 400, description = "Not JSON, or `username` or `password` missing.", body = SkinErrorBody),
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
    let b: LoginBody = serde_json::from_slice(crate::http::without_bom(&body))
        .map_err(|e| SkinError::BadRequest(format!("JSON parse error - {e}")))?;
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
    request_body = LoginBody,
    responses(
        (status = 200, description = "Logged in.", body = LoginResponse),
        (status = 400, description = "Not JSON, or `username` or `password` missing.", body = SkinErrorBody),
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

/// A private token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"name": "kiosk 3", "expiration_time": "2026-01-01T00:00:00Z"}))]
pub struct NewToken {
    /// 1 to 255 characters.
    pub name: Option<String>,
    /// When it stops working: RFC 3339, in the future.
    pub expiration_time: Option<String>,
}

/// A private token (its secret only in the answer that created it).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"created_at": "2025-01-31T09:30:00Z",
    "data": "skn_4f9c0d6e2b7a41c5a8e3f1d2c6b9a7e0", "expiration_time": "2026-01-01T00:00:00Z",
    "id": "0190f5a4-c1d2-7e3f-8a4b-5c6d7e8f9a0b", "name": "kiosk 3"}))]
pub struct TokenView {
    pub created_at: String,
    /// The token itself (`Authorization: Bearer <data>`): shown once, at
    /// creation; only its sha256 is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// RFC 3339, as given.
    pub expiration_time: String,
    pub id: Uuid,
    pub name: String,
}

fn token_view(t: &PrivateToken) -> TokenView {
    TokenView {
        created_at: t.created_at.clone(),
        data: None,
        expiration_time: t.expiration_time.clone(),
        id: t.id,
        name: t.name.clone(),
    }
}

/// Create a private token (a long-lived API token) for the caller.
///
/// The answer's `data` is the token; it is shown this once (only its
/// sha256 is kept).
#[utoipa::path(
    post,
    path = "/api/v1/auth/private_tokens/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_create_private_token",
    request_body = NewToken,
    security(("skin_token" = [])),
    responses(
        (status = 201, description = "Created; `data` is the token.", body = TokenView),
        (status = 400, description = "Not JSON, or a field is missing or invalid (name length, expiration in the past or not RFC 3339).", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn create_token(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Json(b): Json<NewToken>,
) -> SkinResult<Response> {
    let name = b.name.unwrap_or_default().trim().to_string();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(SkinError::Field(
            "name",
            "Must be 1 to 255 characters.".into(),
        ));
    }
    let exp_s = b
        .expiration_time
        .ok_or_else(|| SkinError::Field("expiration_time", "This field is required.".into()))?;
    let exp = time::OffsetDateTime::parse(&exp_s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
        SkinError::Field(
            "expiration_time",
            "Datetime has wrong format. Use RFC 3339.".into(),
        )
    })?;
    let expires_at = exp.unix_timestamp();
    if expires_at <= unix_now() as i64 {
        return Err(SkinError::Field(
            "expiration_time",
            "Must be in the future.".into(),
        ));
    }
    let data = format!("skn_{}", random_token());
    let rec = PrivateToken {
        id: Uuid::now_v7(),
        user_id: caller.user.id,
        name,
        expiration_time: exp_s,
        expires_at: expires_at as u64,
        token_hash: sha256_hex(data.as_bytes()),
        created_at: now_rfc3339(),
    };
    let (records, store, r) = (skin.records.clone(), skin.store.clone(), rec.clone());
    blocking(move || {
        SkinStore::put(&records.tokens, r.id, &r)?;
        records
            .token_hashes
            .insert(r.token_hash.as_bytes(), r.id.as_bytes())?;
        store.flush()
    })
    .await?;
    audit_ok(
        &skin,
        "private_token_created",
        &caller.user.email,
        &rec.id.to_string(),
    );
    let mut v = token_view(&rec);
    v.data = Some(data);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// DRF page-number pagination.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-based page number, or `last`; past the last page: 404.
    pub page: Option<String>,
    /// Items per page: default 20, at most 100; not a positive number
    /// means the default.
    pub page_size: Option<String>,
}

/// The caller's private tokens, newest first, paginated (never their
/// secrets).
#[utoipa::path(
    get,
    path = "/api/v1/auth/private_tokens/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_list_private_tokens",
    params(PageQuery),
    security(("skin_token" = [])),
    responses(
        (status = 200, description = "A page of tokens.", body = Page<TokenView>),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "`page` is past the last page or not a number (`Invalid page.`).", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn list_tokens(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Query(q): Query<PageQuery>,
) -> SkinResult<Json<Page<TokenView>>> {
    let records = skin.records.clone();
    let me = caller.user.id;
    let all =
        blocking(move || SkinStore::scan(&records.tokens, |t: &PrivateToken| t.user_id == me))
            .await?;
    let views: Vec<TokenView> = all.iter().rev().map(token_view).collect();
    skin.page(&parts, views, &q.page, &q.page_size)
}

/// Delete one of the caller's private tokens; it is refused from then on.
#[utoipa::path(
    delete,
    path = "/api/v1/auth/private_tokens/{token_id}/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_delete_private_token",
    params(("token_id" = Uuid, Path, description = "The token's id.")),
    security(("skin_token" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "`token_id` is not a UUID.", body = SkinErrorBody),
        (status = 401, description = "No token, or not a valid one.", body = SkinErrorBody),
        (status = 404, description = "No such token of the caller's.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn delete_token(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> SkinResult<StatusCode> {
    let (records, store) = (skin.records.clone(), skin.store.clone());
    let me = caller.user.id;
    let found = blocking(move || {
        let t: Option<PrivateToken> = SkinStore::get(&records.tokens, id)?;
        match t {
            Some(t) if t.user_id == me => {
                records.delete_token(&t)?;
                store.flush()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    })
    .await?;
    if found {
        audit_ok(
            &skin,
            "private_token_deleted",
            &caller.user.email,
            &id.to_string(),
        );
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(SkinError::not_found("Token"))
    }
}

/// Add a user to company `company` (created when new); the command line's
/// `argusd skin users add` and the appliance admin endpoint both call it.
pub fn add_user(
    records: &SkinStore,
    company: &str,
    email: &str,
    pw: &str,
) -> Result<AddedUser, String> {
    let company = company.trim();
    let email = email.trim().to_lowercase();
    if company.is_empty() || company.chars().count() > 255 {
        return Err("the company name must be 1 to 255 characters".into());
    }
    if !email.contains('@') || email.len() > 254 {
        return Err(format!("{email:?} is not an e-mail address"));
    }
    if pw.chars().count() < 8 {
        return Err("the password must be at least 8 characters".into());
    }
    let e = |e: crate::store::StoreError| e.to_string();
    let c = match records.company_by_name(company).map_err(e)? {
        Some(c) => c,
        None => {
            let c = Company {
                id: Uuid::now_v7(),
                name: company.to_string(),
                created_at: now_rfc3339(),
            };
            records.put_company(&c).map_err(e)?;
            c
        }
    };
    if let Some(u) = records.user_by_email(&email).map_err(e)? {
        if u.company_id != c.id {
            return Err(format!("{email} already belongs to another company"));
        }
    }
    let existing = records.user_by_email(&email).map_err(e)?;
    let u = User {
        id: existing.as_ref().map(|u| u.id).unwrap_or_else(Uuid::now_v7),
        email: email.clone(),
        company_id: c.id,
        password_hash: password::hash(pw)?,
        full_name: existing.map(|u| u.full_name).unwrap_or_default(),
        created_at: now_rfc3339(),
    };
    records.put_user(&u).map_err(e)?;
    Ok(AddedUser {
        company: c.name,
        company_id: c.id,
        email: u.email,
        id: u.id,
    })
}

/// A user added (or whose password was set) and their company.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"company": "Clinic A", "company_id": "0190f5a4-8a8e-7c3e-9a51-3f4f8a0c2b11",
    "email": "jane@clinic.example", "id": "0190f5a4-8a8e-7c3e-9a51-3f4f8a0c2b12"}))]
pub struct AddedUser {
    /// The company's name.
    pub company: String,
    pub company_id: Uuid,
    pub email: String,
    pub id: Uuid,
}

/// A user of the skin API, as the appliance's admin sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub company_id: Uuid,
    pub email: String,
    pub id: Uuid,
}

/// Every skin API user of every company (the appliance's administrator).
///
/// Authenticated as the platform's admin routes are: the admin console's
/// session cookie, or the operator's user name and password (HTTP Basic;
/// attempts are rate limited).
#[utoipa::path(
    get,
    path = "/api/v1/appliance/skin/users/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_admin_list_users",
    security(("admin_session" = []), ("admin_basic" = [])),
    responses(
        (status = 200, description = "Every user.", body = [UserView]),
        (status = 401, description = "Not the appliance's administrator.", body = SkinErrorBody),
        (status = 429, description = "Too many Basic attempts; `Retry-After` says when to try again.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn admin_list_users(
    State(skin): State<Arc<Skin>>,
    _admin: crate::http::extract::AdminUser,
) -> SkinResult<Json<Vec<UserView>>> {
    let records = skin.records.clone();
    let users = blocking(move || SkinStore::scan(&records.users, |_: &User| true)).await?;
    Ok(Json(
        users
            .iter()
            .map(|u| UserView {
                company_id: u.company_id,
                email: u.email.clone(),
                id: u.id,
            })
            .collect(),
    ))
}

/// A user to add to a company (created when new).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"company": "Clinic A", "email": "jane@clinic.example", "password": "correct horse battery"}))]
pub struct NewUser {
    /// The company's name, 1 to 255 characters; created when new.
    pub company: String,
    /// The user's e-mail address (their login name); an existing user of
    /// the same company gets the new password.
    pub email: String,
    /// At least 8 characters.
    pub password: String,
}

/// Add a skin API user (the appliance's administrator), as `argusd skin
/// users add` does.
#[utoipa::path(
    post,
    path = "/api/v1/appliance/skin/users/",
    tag = crate::http::openapi::TAG_SKIN,
    operation_id = "skin_admin_add_user",
    request_body = NewUser,
    security(("admin_session" = []), ("admin_basic" = [])),
    responses(
        (status = 201, description = "Added (or the password set).", body = AddedUser),
        (status = 400, description = "Not JSON, a field missing, or invalid (company name, e-mail, password under 8 characters, e-mail of another company).", body = SkinErrorBody),
        (status = 401, description = "Not the appliance's administrator.", body = SkinErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = SkinErrorBody),
        (status = 429, description = "Too many Basic attempts; `Retry-After` says when to try again.", body = SkinErrorBody),
        (status = 500, description = "Internal error.", body = SkinErrorBody),
    ),
)]
pub async fn admin_add_user(
    State(skin): State<Arc<Skin>>,
    admin: crate::http::extract::AdminUser,
    Json(b): Json<NewUser>,
) -> SkinResult<Response> {
    let email = b.email.clone();
    let (records, store) = (skin.records.clone(), skin.store.clone());
    let out = blocking(move || {
        let r = add_user(&records, &b.company, &b.email, &b.password);
        store.flush()?;
        Ok(r)
    })
    .await?
    .map_err(SkinError::BadRequest)?;
    audit_ok(&skin, "user_added", &admin.0, &email);
    Ok((StatusCode::CREATED, Json(out)).into_response())
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
