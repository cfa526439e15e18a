//! Operators' sessions (reference 004's `/auth`): sign in with a user name
//! and password for an HttpOnly session cookie, read who is signed in, and
//! sign out.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use super::{parse_json, Admin, SESSION_COOKIE};
use crate::audit::{Event, Outcome};
use crate::auth::random_token;
use crate::families::faces::{schema, Faces};
use crate::http::error::ApiError;
use crate::http::extract::{admin_attempt, cookie};
use crate::http::ClientAddr;
use crate::store::{blocking, sha256_hex, unix_now, SessionRecord};

#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoginBody {
    username: String,
    #[schema(format = Password)]
    password: String,
}

/// Check an operator's user name and password (rate limited per address
/// and user, audited) and open a session; returns its `Set-Cookie` value.
/// Errors: 429 when limited, 401 on wrong credentials.
pub(in crate::families::faces) async fn sign_in(
    app: &Faces,
    ip: &str,
    username: String,
    password: String,
) -> Result<String, ApiError> {
    let attempt = admin_attempt(app, "admin_login", ip, &username, password).await?;
    let Some(password_tag) = attempt else {
        return Err(ApiError::Unauthorized("Invalid credentials".into()));
    };
    let ev = Event {
        family: "platform",
        action: "admin_login",
        actor: Some(&username),
        address: Some(ip),
        ..Default::default()
    };
    app.audit.record(ev, Outcome::Ok);
    let token = random_token();
    let ttl = app.config.auth.session_ttl_secs;
    let (store, key) = (app.store.clone(), sha256_hex(token.as_bytes()));
    let rec = SessionRecord {
        username,
        expires_at: unix_now() + ttl,
        password_tag,
    };
    blocking(move || store.put_session(&key, &rec)).await?;
    app.store.flush_async().await?;
    let cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={ttl}"
    );
    Ok(cookie)
}

#[utoipa::path(
    post,
    path = "/auth/login",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_login",
    request_body(content = LoginBody, content_type = "application/json"),
    responses((status = 204, description = "Signed in: sets the argus_admin_session cookie (HttpOnly, Secure, SameSite=Strict)."), (status = 401, description = "Wrong user name or password.", body = crate::http::error::Detail), (status = 422, description = "A query parameter or body field is out of range.", body = crate::http::error::Detail), (status = 429, description = "Too many failed sign-ins from this address or for this user; see Retry-After.", body = crate::http::error::Detail)),
)]
pub async fn login(
    State(app): State<Arc<Faces>>,
    client: Option<Extension<ClientAddr>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ip = client
        .map(|c| c.0 .0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let b: LoginBody = parse_json(&body)?;
    let cookie = sign_in(&app, &ip, b.username, b.password).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(resp)
}

#[utoipa::path(
    get,
    path = "/auth/session",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_session",
    responses((status = 200, description = "Who is signed in.", body = schema::Session), (status = 401, description = "No valid session cookie or Basic credentials.", body = crate::http::error::Detail)),
    security(("admin_session" = []), ("admin_basic" = [])),
)]
pub async fn session(admin: Admin) -> Json<schema::Session> {
    Json(schema::Session {
        authenticated: true,
        username: admin.0,
    })
}

#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = crate::http::openapi::TAG_FACES_ADMIN,
    operation_id = "faces_admin_logout",
    responses((status = 204, description = "Signed out; the cookie is cleared.")),
)]
pub async fn logout(
    State(app): State<Arc<Faces>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        let (store, key) = (app.store.clone(), sha256_hex(token.as_bytes()));
        blocking(move || store.delete_session(&key)).await?;
        app.store.flush_async().await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0"
        ))
        .expect("static cookie"),
    );
    Ok(resp)
}
