//! The operator console's shell, shared by every family's pages under
//! `/console`: who is signed in (the admin session cookie), the session's
//! CSRF token, the navigation the families contribute
//! ([`crate::app::Family::console_pages`]), and the headers and error pages
//! every console page carries.
//!
//! Pages are askama templates compiled into the binary
//! (`daemon/templates/console/`, all extending `base.html`). The CSRF token
//! is HMAC-SHA256 of the session token under a key kept in the state dir,
//! so it is bound to the session and needs no storage.

use std::ops::Deref;
use std::sync::Arc;

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::app::App;
use crate::auth::ct_eq;
use crate::http::error::ApiError;
use crate::http::extract::{cookie, SESSION_COOKIE};
use crate::store::{blocking, sha256_hex, unix_now};

/// A signed-in operator, the CSRF token of their session, and the
/// console's navigation.
pub struct Operator {
    pub username: String,
    pub csrf: String,
    /// (label, path) of every family's console pages.
    pub nav: Vec<(&'static str, &'static str)>,
}

fn csrf_for(app: &App, session_token: &str) -> Result<String, ApiError> {
    let key = app
        .store
        .secret("console_csrf_key")
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut m = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    m.update(b"console-csrf\n");
    m.update(session_token.as_bytes());
    Ok(hex::encode(m.finalize().into_bytes()))
}

impl<S> FromRequestParts<Arc<S>> for Operator
where
    S: Deref<Target = App> + Send + Sync + 'static,
{
    /// Not signed in: to the sign-in page.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<S>) -> Result<Self, Response> {
        let app: &App = state;
        let to_login = || Redirect::to("/console/login").into_response();
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE).map(str::to_string) else {
            return Err(to_login());
        };
        let (store, h) = (app.store.clone(), sha256_hex(token.as_bytes()));
        let session = blocking(move || store.get_session(&h))
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
        match session {
            Some(s) if s.expires_at > unix_now() => Ok(Operator {
                username: s.username,
                csrf: csrf_for(app, &token).map_err(IntoResponse::into_response)?,
                nav: app
                    .families()
                    .iter()
                    .flat_map(|f| f.console_pages().iter().copied())
                    .collect(),
            }),
            _ => Err(to_login()),
        }
    }
}

impl Operator {
    /// Refuse a form whose token is not this session's (403).
    // The refusal is the page itself, returned at once by the handler.
    #[allow(clippy::result_large_err)]
    pub fn check(&self, sent: &str) -> Result<(), Response> {
        if ct_eq(sent.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(page_error(
                StatusCode::FORBIDDEN,
                "The form expired or did not come from this console; reload the page and try again.",
            ))
        }
    }

    /// Whether `path` is the current section (for `aria-current`).
    pub fn is(&self, current: &str, path: &str) -> bool {
        current == path
    }
}

/// Headers every console page carries: nothing loads from elsewhere, no
/// framing, no caching of pages that show keys, faces and patients' smears.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, Html(body)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// A rendered page with the console's headers.
pub fn render(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => html(status, body),
        Err(e) => ApiError::Internal(format!("template: {e}")).into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    status: u16,
    message: &'a str,
}

/// An error page with `status`; `message` is shown as it is.
pub fn page_error(status: StatusCode, message: &str) -> Response {
    render(
        status,
        &ErrorPage {
            status: status.as_u16(),
            message,
        },
    )
}

/// An API error as a page with the same status and its message (server
/// errors without their detail, which is logged).
pub fn api_error(e: ApiError) -> Response {
    let status = e.status();
    let msg = if status.is_server_error() {
        tracing::error!(error = %e, "console page failed");
        "Something went wrong on the appliance; see its log.".to_string()
    } else {
        e.to_string()
    };
    page_error(status, &msg)
}

/// The console's stylesheet and script, embedded.
pub fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "console.css" => Some(("text/css", include_str!("../../assets/console/console.css"))),
        "console.js" => Some((
            "text/javascript",
            include_str!("../../assets/console/console.js"),
        )),
        _ => None,
    }
}
