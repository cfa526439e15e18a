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
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::{SkinError, SkinResult};
use super::records::{Company, PrivateToken, SkinStore, User};
use super::service::Skin;
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

#[derive(Debug, Deserialize)]
pub struct LoginBody {
    #[serde(alias = "email")]
    pub username: Option<String>,
    pub password: Option<String>,
}

fn login_body(skin: &Skin, user: &User) -> Value {
    let access = skin.sign(user, "access", skin.config.skin_api.access_token_secs);
    json!({
        "id": user.id, "email": user.email, "username": user.email, "company_id": user.company_id,
        "token_access": access, "access_token": access,
        "refresh_token": skin.sign(user, "refresh", skin.config.skin_api.refresh_token_secs),
        "expires_in": skin.config.skin_api.access_token_secs,
        "is_verified": true,
        "profile": {"metadata": {}, "full_name": user.full_name, "kyc_enabled": false,
            "terms_payment_accepted_at": null, "terms_and_policy_accepted_at": null, "feature_flags": []},
    })
}

/// `POST /api/v1/login/`.
pub async fn login(
    State(skin): State<Arc<Skin>>,
    parts: Parts,
    body: axum::body::Bytes,
) -> SkinResult<Json<Value>> {
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

#[derive(Debug, Deserialize)]
pub struct RefreshBody {
    #[serde(alias = "refresh_token")]
    pub refresh: Option<String>,
}

/// `POST /api/v1/auth/refresh/`.
pub async fn refresh(
    State(skin): State<Arc<Skin>>,
    Json(b): Json<RefreshBody>,
) -> SkinResult<Json<Value>> {
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
    Ok(Json(json!({
        "access": access, "access_token": access, "token_access": access,
        "refresh_token": skin.sign(&user, "refresh", skin.config.skin_api.refresh_token_secs),
        "expires_in": skin.config.skin_api.access_token_secs,
    })))
}

#[derive(Debug, Deserialize)]
pub struct NewToken {
    pub name: Option<String>,
    pub expiration_time: Option<String>,
}

fn token_view(t: &PrivateToken) -> Value {
    json!({"id": t.id, "name": t.name, "expiration_time": t.expiration_time, "created_at": t.created_at})
}

/// `POST /api/v1/auth/private_tokens/` → 201 with `data`, the token (once).
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
    v["data"] = data.into();
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    pub page: Option<String>,
    pub page_size: Option<String>,
}

/// `GET /api/v1/auth/private_tokens/`: the caller's, paginated.
pub async fn list_tokens(
    State(skin): State<Arc<Skin>>,
    caller: Caller,
    parts: Parts,
    Query(q): Query<PageQuery>,
) -> SkinResult<Json<Value>> {
    let records = skin.records.clone();
    let me = caller.user.id;
    let all =
        blocking(move || SkinStore::scan(&records.tokens, |t: &PrivateToken| t.user_id == me))
            .await?;
    let views: Vec<Value> = all.iter().rev().map(token_view).collect();
    skin.page(&parts, views, &q.page, &q.page_size)
}

/// `DELETE /api/v1/auth/private_tokens/{id}/` → 204; refused at once.
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
) -> Result<Value, String> {
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
    Ok(json!({"id": u.id, "email": u.email, "company_id": c.id, "company": c.name}))
}

/// `GET /api/v1/appliance/skin/users/`: every user (platform admins only).
pub async fn admin_list_users(
    State(skin): State<Arc<Skin>>,
    _admin: crate::http::extract::AdminUser,
) -> SkinResult<Json<Value>> {
    let records = skin.records.clone();
    let users = blocking(move || SkinStore::scan(&records.users, |_: &User| true)).await?;
    Ok(Json(Value::Array(
        users
            .iter()
            .map(|u| json!({"id": u.id, "email": u.email, "company_id": u.company_id}))
            .collect(),
    )))
}

#[derive(Debug, Deserialize)]
pub struct NewUser {
    pub company: String,
    pub email: String,
    pub password: String,
}

/// `POST /api/v1/appliance/skin/users/` (platform admins only) → 201.
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
