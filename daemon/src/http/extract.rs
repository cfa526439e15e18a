//! Authentication as axum extractors, one per access level of the
//! platform's own credentials: [`ApiKeyAuth`] (the face API's keys) and
//! [`AdminUser`] (the admin console and API: session cookie or HTTP Basic).
//! Each works with any family state that derefs to the platform's
//! [`App`]. Per-family tokens (PBS JWTs) are that family's extractor.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap};
use base64::Engine;

use super::error::ApiError;
use super::ClientAddr;
use crate::app::App;
use crate::audit::{Event, Outcome};
use crate::auth::{keys, password};
use crate::store::{sha256_hex, unix_now, ApiKeyRecord};

pub const SESSION_COOKIE: &str = "argus_admin_session";

/// The login limiter's scope of admin credentials.
pub const ADMIN_LOGINS: &str = "admin";

/// The caller's address as an extractor (for audit records).
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts)))
    }
}

/// The caller's address, for rate limits and logs.
pub fn client_ip(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ClientAddr>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether `pw` is admin `username`'s password; argon2 off the runtime's
/// threads, and as slow for an unknown user as for a known one.
/// The `password::tag` of the hash `pw` was verified against, or None
/// when it does not verify (or there is no such admin).
async fn check_admin_password(
    app: &App,
    username: String,
    pw: String,
) -> Result<Option<String>, ApiError> {
    let store = app.store.clone();
    Ok(
        tokio::task::spawn_blocking(move || match store.get_admin(&username) {
            Ok(Some(rec)) => Ok(password::verify(&pw, &rec.password_hash)
                .then(|| password::tag(&rec.password_hash))),
            Ok(None) => {
                password::burn_time(&pw);
                Ok(None)
            }
            Err(e) => Err(e),
        })
        .await??,
    )
}

/// Take a login attempt of the admin console's (form and HTTP Basic) from
/// the address and the user name before verifying; refused when either
/// has none left (see `RateLimiter::gate`).
fn login_gate(app: &App, ip: &str, user: &str) -> Result<(), ApiError> {
    app.limiters
        .login
        .gate(ADMIN_LOGINS, ip, user)
        .map_err(|l| ApiError::RateLimited {
            limit: l.limit,
            retry_after: l.retry_after_secs,
        })
}

/// One operator sign-in attempt, by the login form or HTTP Basic (`action`
/// in the audit trail): limited per address and user (`login_gate`), the
/// password checked, each refusal audited with its reason, and the
/// limiter's count given back when the password is right. Returns the
/// password hash's tag when right, None when wrong; 429 when limited.
pub async fn admin_attempt(
    app: &App,
    action: &str,
    ip: &str,
    user: &str,
    password: String,
) -> Result<Option<String>, ApiError> {
    let ev = Event {
        family: "platform",
        action,
        actor: Some(user),
        address: Some(ip),
        ..Default::default()
    };
    if let Err(e) = login_gate(app, ip, user) {
        let ev = Event {
            detail: Some("rate limited"),
            ..ev
        };
        app.audit.record(ev, Outcome::Denied);
        return Err(e);
    }
    let tag = check_admin_password(app, user.to_string(), password).await?;
    if tag.is_some() {
        app.limiters.login.refund(ADMIN_LOGINS, ip, user);
    } else {
        let ev = Event {
            detail: Some("invalid credentials"),
            ..ev
        };
        app.audit.record(ev, Outcome::Denied);
    }
    Ok(tag)
}

/// An authenticated admin (the user name): by session cookie, or by HTTP
/// Basic, which goes through the same login limits as the login form.
pub struct AdminUser(pub String);

impl<S> FromRequestParts<Arc<S>> for AdminUser
where
    S: Deref<Target = App> + Send + Sync + 'static,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<S>) -> Result<Self, ApiError> {
        let app: &App = state;
        if let Some(token) = cookie(&parts.headers, SESSION_COOKIE) {
            let (store, h) = (app.store.clone(), sha256_hex(token.as_bytes()));
            // A session counts while it is unexpired and its admin still
            // has the password it began with.
            let live = tokio::task::spawn_blocking(move || {
                let Some(s) = store.get_session(&h)? else {
                    return Ok::<_, crate::store::StoreError>(None);
                };
                let same_password = store.get_admin(&s.username)?.is_some_and(|a| {
                    !s.password_tag.is_empty() && password::tag(&a.password_hash) == s.password_tag
                });
                Ok((same_password && s.expires_at > unix_now()).then_some(s.username))
            })
            .await??;
            if let Some(username) = live {
                same_site_only(parts)?;
                return Ok(AdminUser(username));
            }
        }
        let basic = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok());
        let Some(creds) = basic else {
            return Err(ApiError::UnauthorizedBasic("Not authenticated".into()));
        };
        let (user, pw) = creds.split_once(':').unwrap_or((&creds, ""));
        let ip = client_ip(parts);
        if admin_attempt(app, "admin_basic_auth", &ip, user, pw.to_string())
            .await?
            .is_some()
        {
            return Ok(AdminUser(user.to_string()));
        }
        Err(ApiError::UnauthorizedBasic("Invalid credentials".into()))
    }
}

/// A request that changes state on the strength of the session cookie
/// must come from the appliance's own pages. SameSite=Strict keeps other
/// sites' requests from carrying the cookie, but not other services on the
/// same host (cookies ignore the port) or sibling subdomains; browsers say
/// where a request comes from in `Sec-Fetch-Site` and `Origin`. Clients
/// that send neither (curl with a cookie jar) are not browsers and pass.
fn same_site_only(parts: &Parts) -> Result<(), ApiError> {
    if matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::HEAD
    ) {
        return Ok(());
    }
    let h = &parts.headers;
    let fetch_site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|v| v != "same-origin") {
        return Err(ApiError::Forbidden(
            "Cross-site request refused: the admin session only works from this appliance's own pages".into(),
        ));
    }
    let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if let Some(o) = origin {
        let o_host = o.split_once("://").map_or(o, |(_, rest)| rest);
        let same = request_host(parts).is_some_and(|host| o_host.eq_ignore_ascii_case(host));
        if o == "null" || !same {
            return Err(ApiError::Forbidden(
                "Cross-origin request refused: the admin session only works from this appliance's own pages".into(),
            ));
        }
    }
    Ok(())
}

/// The host (and port) a request was sent to: HTTP/1.1's `Host` header,
/// or HTTP/2's `:authority`, which arrives in the URI and not as a header.
pub fn request_host(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
}

/// `scheme://host[:port]` of the appliance as this request reached it, for
/// the absolute URLs answers carry (signed downloads, page links). The
/// host is the request's own (a client behind a name or a port mapping
/// gets URLs it can use); one with characters no host has is replaced by
/// the listen address. The scheme is the listener's.
pub fn origin(parts: &Parts, config: &crate::config::Config) -> String {
    let host = request_host(parts)
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| config.listen.to_string());
    let scheme = if config.tls.enabled { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// [`origin`] as an extractor.
pub struct Origin(pub String);

impl<S> FromRequestParts<Arc<S>> for Origin
where
    S: Deref<Target = App> + Send + Sync + 'static,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<S>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(origin(parts, &state.config)))
    }
}

/// An optional JSON body. No body, or one of only whitespace, is `None`
/// whatever `Content-Type` says: clients (Swagger's curl, many HTTP
/// libraries) send `Content-Type: application/json` with nothing after it,
/// and the reference services (Django REST framework) read that as `{}`.
/// Any other body is JSON as axum's `Json` reads it, with its rejections
/// (400; 415 for another content type; 413 past the route's body limit),
/// except that a body without `Content-Type` is taken for JSON and a UTF-8
/// byte-order mark is skipped.
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> axum::extract::FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = axum::response::Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        let headers = req.headers().clone();
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let body = super::without_bom(&bytes);
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        let json = headers.get(header::CONTENT_TYPE).is_none_or(|ct| {
            ct.to_str().is_ok_and(|ct| {
                let essence = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                essence == "application/json"
                    || (essence.starts_with("application/") && essence.ends_with("+json"))
            })
        });
        if !json {
            // axum's own 415, which it answers before reading a body.
            let mut again = axum::extract::Request::new(axum::body::Body::empty());
            *again.headers_mut() = headers;
            return match axum::Json::<T>::from_request(again, state).await {
                Ok(axum::Json(t)) => Ok(Self(Some(t))),
                Err(e) => Err(e.into_response()),
            };
        }
        axum::Json::<T>::from_bytes(body)
            .map(|axum::Json(t)| Self(Some(t)))
            .map_err(IntoResponse::into_response)
    }
}

/// A caller of the face API: the API key it presented in `X-API-Key`
/// (active, known), or `None` when `auth.api_key_enabled` is off.
pub struct ApiKeyAuth(pub Option<ApiKeyRecord>);

impl<S> FromRequestParts<Arc<S>> for ApiKeyAuth
where
    S: Deref<Target = App> + Send + Sync + 'static,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<S>) -> Result<Self, ApiError> {
        let app: &App = state;
        if !app.config.auth.api_key_enabled {
            return Ok(ApiKeyAuth(None));
        }
        let presented = parts
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("Missing API key: send it in the X-API-Key header".into())
            })?;
        let refused = |detail: &str, key: Option<&str>| {
            app.audit.record(
                Event {
                    family: "faces",
                    action: "credential_refused",
                    actor: key,
                    address: Some(&client_ip(parts)),
                    detail: Some(detail),
                    ..Default::default()
                },
                Outcome::Denied,
            );
        };
        let Some(hash) = keys::hash_presented(presented) else {
            refused("invalid API key", None);
            return Err(ApiError::Unauthorized("Invalid API key".into()));
        };
        match app.store.key_by_hash(&hash) {
            Some(r) if r.is_active => Ok(ApiKeyAuth(Some(r))),
            Some(r) => {
                refused("revoked API key", Some(&r.id.to_string()));
                Err(ApiError::Unauthorized("API key has been revoked".into()))
            }
            None => {
                refused("invalid API key", None);
                Err(ApiError::Unauthorized("Invalid API key".into()))
            }
        }
    }
}

/// The query string as a map of each name to its value, every name at most
/// once. axum's `Query` into a map keeps a repeated name's last value, so
/// `confidence=0.5&confidence=0.9` would be read as 0.9 without a word; a
/// client that repeats a name has made a mistake worth telling. Rejection:
/// 400 naming the parameter.
pub struct QueryMap(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let mut map = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if map.contains_key(k.as_ref()) {
                return Err(ApiError::BadRequest(format!(
                    "query parameter `{k}` is given more than once"
                )));
            }
            map.insert(k.into_owned(), v.into_owned());
        }
        Ok(Self(map))
    }
}
