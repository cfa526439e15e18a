//! The operator's browser console under `/console` (reference 004's admin
//! console): sign in with the admin session cookie, a dashboard, stored
//! images and jobs, API keys, and a test page that previews masking.
//!
//! Pages are rendered on the server from askama templates compiled into the
//! binary (`daemon/templates/console/`), with the data the admin API
//! handlers return (the console calls them, so it shows exactly what the
//! API does). The only script is `console.js` (the test page's upload);
//! every asset is embedded and the Content-Security-Policy allows nothing
//! from elsewhere. Every state-changing form carries a CSRF token bound to
//! the session (HMAC-SHA256 of the session token under a key kept in the
//! state dir); sign-in uses a double-submit cookie since there is no
//! session yet.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::admin::{self, Admin};
use super::schema::{ImageDetail, ImageView, JobView, KeyView, Page, Stats};
use super::Faces;
use crate::auth::{ct_eq, random_token};
use crate::http::console::{api_error, page_error, render, Operator};
use crate::http::error::ApiError;
use crate::http::extract::{cookie, ClientIp, QueryMap};
use crate::http::openapi::TAG_CONSOLE;

/// The double-submit cookie of the sign-in form.
const LOGIN_COOKIE: &str = "argus_console_login";

/// The console's pages link files by path, relative to the page the
/// browser already reached (behind a TLS proxy an absolute URL built from
/// the listener's scheme would be mixed content).
fn same_origin() -> crate::http::extract::Origin {
    crate::http::extract::Origin(String::new())
}

/// The operator as the admin API's handlers take them.
fn admin_of(op: &Operator) -> Admin {
    Admin(op.username.clone())
}

// ---- sign in and out ----

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage<'a> {
    token: &'a str,
    error: Option<&'a str>,
    username: &'a str,
}

fn login_page(status: StatusCode, error: Option<&str>, username: &str) -> Response {
    let token = random_token();
    let mut r = render(
        status,
        &LoginPage {
            token: &token,
            error,
            username,
        },
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/console; Max-Age=3600"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The sign-in form.
#[utoipa::path(get, path = "/console/login", tag = TAG_CONSOLE, operation_id = "console_login_page",
    responses((status = 200, description = "The sign-in page.", content_type = "text/html")))]
pub async fn login_form() -> Response {
    login_page(StatusCode::OK, None, "")
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoginForm {
    username: String,
    password: String,
    /// The sign-in page's token (also in its cookie).
    token: String,
}

/// Sign in: sets the admin session cookie and goes to the dashboard.
#[utoipa::path(post, path = "/console/login", tag = TAG_CONSOLE, operation_id = "console_login",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed in: to the dashboard, with the session cookie."),
        (status = 401, description = "Wrong user name or password: the form again.", content_type = "text/html"),
        (status = 403, description = "The form's token does not match its cookie.", content_type = "text/html"),
        (status = 429, description = "Too many failed sign-ins: the form again.", content_type = "text/html"),
    ))]
pub async fn login(
    State(app): State<Arc<Faces>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !ct_eq(expected.as_bytes(), f.token.as_bytes()) {
        return login_page(
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired; please try again."),
            &f.username,
        );
    }
    match admin::sign_in(&app, &ip, f.username.clone(), f.password).await {
        Ok(set_cookie) => {
            let mut r = Redirect::to("/console").into_response();
            if let Ok(v) = HeaderValue::from_str(&set_cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            let status = e.status();
            let msg = if status == StatusCode::UNAUTHORIZED {
                "Wrong user name or password.".to_string()
            } else {
                e.to_string()
            };
            // Keep the limiter's Retry-After on the page.
            let retry = e
                .into_response()
                .headers()
                .get(header::RETRY_AFTER)
                .cloned();
            let mut page = login_page(status, Some(&msg), &f.username);
            if let Some(v) = retry {
                page.headers_mut().insert(header::RETRY_AFTER, v);
            }
            page
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CsrfForm {
    /// The page's CSRF token.
    csrf: String,
}

/// Sign out: ends the session.
#[utoipa::path(post, path = "/console/logout", tag = TAG_CONSOLE, operation_id = "console_logout",
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Signed out: to the sign-in page."),
              (status = 403, description = "Bad CSRF token.", content_type = "text/html")),
    security(("admin_session" = [])))]
pub async fn logout(
    State(app): State<Arc<Faces>>,
    op: Operator,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = op.check(&f.csrf) {
        return r;
    }
    if let Err(e) = admin::logout(State(app), headers).await {
        return api_error(e);
    }
    let mut r = Redirect::to("/console/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "argus_admin_session=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0",
        ),
    );
    r
}

// ---- dashboard ----

#[derive(Template)]
#[template(path = "console/dashboard.html")]
struct Dashboard<'a> {
    op: &'a Operator,
    nav: &'static str,
    stats: Option<Stats>,
    backend: &'a str,
    device: &'a str,
    fallback: Option<&'a str>,
    max_batch: usize,
    queue_len: usize,
    ready: bool,
    /// (route, requests, average per second since start).
    requests: Vec<(String, u64, String)>,
    faces_detected: u64,
    uptime: String,
}

/// Requests served on `route` since start, every method and status.
fn requests_to(app: &Faces, route: &str) -> u64 {
    use prometheus::core::Collector;
    app.metrics
        .http_requests
        .collect()
        .iter()
        .flat_map(|mf| mf.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.get_name() == "route" && l.get_value() == route)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// The appliance at a glance: stored totals, the backend and device, the
/// inference queue and what has been served since start.
#[utoipa::path(get, path = "/console", tag = TAG_CONSOLE, operation_id = "console_dashboard",
    responses((status = 200, description = "The dashboard.", content_type = "text/html"),
              (status = 303, description = "Not signed in: to the sign-in page.")),
    security(("admin_session" = [])))]
pub async fn dashboard(State(app): State<Arc<Faces>>, op: Operator) -> Response {
    let stats = if app.storage_enabled() {
        match admin::stats(State(app.clone()), admin_of(&op)).await {
            Ok(s) => Some(s.0),
            Err(e) => return api_error(e),
        }
    } else {
        None
    };
    let info = app.batcher.info();
    let secs = app.started.elapsed().as_secs();
    let mut requests = Vec::new();
    for route in ["/api/v1/detect", "/api/v1/mask"] {
        let n = requests_to(&app, route);
        let per_s = n as f64 / secs.max(1) as f64;
        requests.push((route.to_string(), n, format!("{per_s:.2}")));
    }
    render(
        StatusCode::OK,
        &Dashboard {
            op: &op,
            nav: "/console",
            stats,
            backend: info.backend,
            device: &info.device,
            fallback: app.batcher.fallback(),
            max_batch: info.max_batch,
            queue_len: app.batcher.queue_len(),
            ready: app.is_ready(),
            requests,
            faces_detected: app.metrics.faces_detected.get(),
            uptime: format!("{}h {:02}m {:02}s", secs / 3600, secs / 60 % 60, secs % 60),
        },
    )
}

// ---- images and jobs ----

#[derive(Template)]
#[template(path = "console/images.html")]
struct ImagesPage<'a> {
    op: &'a Operator,
    nav: &'static str,
    page: Page<ImageView>,
}

/// Stored uploads, newest first, with the masked output as thumbnail
/// (never the original: it shows the faces).
#[utoipa::path(get, path = "/console/images", tag = TAG_CONSOLE, operation_id = "console_images",
    params(super::schema::PageQuery),
    responses((status = 200, description = "A page of images.", content_type = "text/html"),
        (status = 400, description = "A query parameter is given twice, or is not valid.", content_type = "text/html")),
    security(("admin_session" = [])))]
pub async fn images(
    State(app): State<Arc<Faces>>,
    op: Operator,
    q: Result<QueryMap, ApiError>,
) -> Response {
    // A repeated name is refused as the API refuses it, on the page.
    let q = match q {
        Ok(QueryMap(q)) => q,
        Err(e) => return api_error(e),
    };
    match admin::list_images(State(app), admin_of(&op), same_origin(), QueryMap(q)).await {
        Ok(page) => render(
            StatusCode::OK,
            &ImagesPage {
                op: &op,
                nav: "/console/images",
                page: page.0,
            },
        ),
        Err(e) => api_error(e),
    }
}

#[derive(Template)]
#[template(path = "console/image.html")]
struct ImagePage<'a> {
    op: &'a Operator,
    nav: &'static str,
    image: ImageDetail,
}

/// One upload: its facts, its jobs, downloads, delete.
#[utoipa::path(get, path = "/console/images/{image_id}", tag = TAG_CONSOLE, operation_id = "console_image",
    params(("image_id" = String, Path, description = "The image's id (UUID).")),
    responses((status = 200, description = "The image page.", content_type = "text/html"),
              (status = 404, description = "No such image.", content_type = "text/html")),
    security(("admin_session" = [])))]
pub async fn image(
    State(app): State<Arc<Faces>>,
    op: Operator,
    Path(id): Path<String>,
) -> Response {
    match admin::get_image(State(app), admin_of(&op), same_origin(), Path(id)).await {
        Ok(image) => render(
            StatusCode::OK,
            &ImagePage {
                op: &op,
                nav: "/console/images",
                image: image.0,
            },
        ),
        Err(e) => api_error(e),
    }
}

/// Delete an upload, its jobs and their files.
#[utoipa::path(post, path = "/console/images/{image_id}/delete", tag = TAG_CONSOLE,
    operation_id = "console_delete_image",
    params(("image_id" = String, Path, description = "The image's id (UUID).")),
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Deleted: to the image list."),
              (status = 403, description = "Bad CSRF token.", content_type = "text/html"),
              (status = 404, description = "No such image.", content_type = "text/html")),
    security(("admin_session" = [])))]
pub async fn delete_image(
    State(app): State<Arc<Faces>>,
    op: Operator,
    ip: ClientIp,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = op.check(&f.csrf) {
        return r;
    }
    match admin::delete_image(State(app), admin_of(&op), ip, Path(id)).await {
        Ok(_) => Redirect::to("/console/images").into_response(),
        Err(e) => api_error(e),
    }
}

#[derive(Template)]
#[template(path = "console/jobs.html")]
struct JobsPage<'a> {
    op: &'a Operator,
    nav: &'static str,
    page: Page<JobView>,
    job_type: &'a str,
    method: &'a str,
}

/// Jobs, newest first, filtered as the API filters them.
#[utoipa::path(get, path = "/console/jobs", tag = TAG_CONSOLE, operation_id = "console_jobs",
    params(super::schema::PageQuery, super::schema::JobsQuery),
    responses((status = 200, description = "A page of jobs.", content_type = "text/html"),
        (status = 400, description = "A query parameter is given twice, or is not valid.", content_type = "text/html")),
    security(("admin_session" = [])))]
pub async fn jobs(
    State(app): State<Arc<Faces>>,
    op: Operator,
    q: Result<QueryMap, ApiError>,
) -> Response {
    // A repeated name is refused as the API refuses it, on the page.
    let q = match q {
        Ok(QueryMap(q)) => q,
        Err(e) => return api_error(e),
    };
    let job_type = q.get("job_type").cloned().unwrap_or_default();
    let method = q.get("method").cloned().unwrap_or_default();
    match admin::list_jobs(State(app), admin_of(&op), same_origin(), QueryMap(q)).await {
        Ok(page) => render(
            StatusCode::OK,
            &JobsPage {
                op: &op,
                nav: "/console/jobs",
                page: page.0,
                job_type: &job_type,
                method: &method,
            },
        ),
        Err(e) => api_error(e),
    }
}

// ---- API keys ----

#[derive(Template)]
#[template(path = "console/keys.html")]
struct KeysPage<'a> {
    op: &'a Operator,
    nav: &'static str,
    page: Page<KeyView>,
    /// A key just created: shown this once.
    created: Option<(String, String)>,
    error: Option<String>,
}

async fn keys_page(
    app: Arc<Faces>,
    op: &Operator,
    q: HashMap<String, String>,
    created: Option<(String, String)>,
    error: Option<String>,
) -> Response {
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    match admin::list_keys(State(app), admin_of(op), QueryMap(q)).await {
        Ok(page) => render(
            status,
            &KeysPage {
                op,
                nav: "/console/keys",
                page: page.0,
                created,
                error,
            },
        ),
        Err(e) => api_error(e),
    }
}

/// API keys: create (the key is shown once), rename, deactivate, delete.
#[utoipa::path(get, path = "/console/keys", tag = TAG_CONSOLE, operation_id = "console_keys",
    params(super::schema::PageQuery),
    responses((status = 200, description = "The key list.", content_type = "text/html"),
        (status = 400, description = "A query parameter is given twice, or is not valid.", content_type = "text/html")),
    security(("admin_session" = [])))]
pub async fn keys(
    State(app): State<Arc<Faces>>,
    op: Operator,
    q: Result<QueryMap, ApiError>,
) -> Response {
    // A repeated name is refused as the API refuses it, on the page.
    let q = match q {
        Ok(QueryMap(q)) => q,
        Err(e) => return api_error(e),
    };
    keys_page(app, &op, q, None, None).await
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct NewKeyForm {
    csrf: String,
    /// 1 to 100 characters.
    name: String,
}

/// Create a key; the page shows it this once.
#[utoipa::path(post, path = "/console/keys", tag = TAG_CONSOLE, operation_id = "console_create_key",
    request_body(content = NewKeyForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 201, description = "The key list with the new key shown once.", content_type = "text/html"),
              (status = 403, description = "Bad CSRF token.", content_type = "text/html"),
              (status = 422, description = "Bad name: the list with the reason.", content_type = "text/html")),
    security(("admin_session" = [])))]
pub async fn create_key(
    State(app): State<Arc<Faces>>,
    op: Operator,
    ClientIp(ip): ClientIp,
    Form(f): Form<NewKeyForm>,
) -> Response {
    if let Err(r) = op.check(&f.csrf) {
        return r;
    }
    match admin::new_key(&app, &op.username, &ip, &f.name).await {
        Ok(k) => {
            let mut r = keys_page(app, &op, HashMap::new(), Some((k.view.name, k.key)), None).await;
            if r.status() == StatusCode::OK {
                *r.status_mut() = StatusCode::CREATED;
            }
            r
        }
        Err(ApiError::Invalid(m)) => keys_page(app, &op, HashMap::new(), None, Some(m)).await,
        Err(e) => api_error(e),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct KeyActionForm {
    csrf: String,
    /// `rename`, `deactivate`, `activate` or `delete`.
    action: String,
    /// The new name, for `rename`.
    #[serde(default)]
    name: String,
}

/// Rename, deactivate, reactivate or delete a key.
#[utoipa::path(post, path = "/console/keys/{key_id}", tag = TAG_CONSOLE, operation_id = "console_key_action",
    params(("key_id" = String, Path, description = "The key's id (UUID).")),
    request_body(content = KeyActionForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Done: to the key list."),
              (status = 403, description = "Bad CSRF token.", content_type = "text/html"),
              (status = 404, description = "No such key.", content_type = "text/html"),
              (status = 422, description = "Bad action or name.", content_type = "text/html")),
    security(("admin_session" = [])))]
pub async fn key_action(
    State(app): State<Arc<Faces>>,
    op: Operator,
    ip: ClientIp,
    Path(id): Path<String>,
    Form(f): Form<KeyActionForm>,
) -> Response {
    if let Err(r) = op.check(&f.csrf) {
        return r;
    }
    let patch = match f.action.as_str() {
        "rename" => serde_json::json!({ "name": f.name }),
        "deactivate" => serde_json::json!({ "is_active": false }),
        "activate" => serde_json::json!({ "is_active": true }),
        "delete" => {
            return match admin::delete_key(State(app), admin_of(&op), ip, Path(id)).await {
                Ok(_) => Redirect::to("/console/keys").into_response(),
                Err(e) => api_error(e),
            }
        }
        other => {
            return page_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("Unknown action {other:?}"),
            )
        }
    };
    let body = Bytes::from(patch.to_string());
    match admin::patch_key(State(app.clone()), admin_of(&op), ip, Path(id), body).await {
        Ok(_) => Redirect::to("/console/keys").into_response(),
        Err(ApiError::Invalid(m)) => keys_page(app, &op, HashMap::new(), None, Some(m)).await,
        Err(e) => api_error(e),
    }
}

// ---- the test page ----

#[derive(Template)]
#[template(path = "console/test.html")]
struct TestPage<'a> {
    op: &'a Operator,
    nav: &'static str,
    methods: &'static [&'static str],
    formats: &'static [&'static str],
}

/// Upload a photo, choose method, strength, padding and format, and see
/// the original and the masked preview side by side with the boxes and
/// timings (through `POST /api/v1/admin/test/mask`; nothing is stored).
#[utoipa::path(get, path = "/console/test", tag = TAG_CONSOLE, operation_id = "console_test",
    responses((status = 200, description = "The test page.", content_type = "text/html")),
    security(("admin_session" = [])))]
pub async fn test_page(op: Operator) -> Response {
    render(
        StatusCode::OK,
        &TestPage {
            op: &op,
            nav: "/console/test",
            methods: &crate::imaging::MaskMethod::ALL,
            formats: &crate::imaging::OutputFormat::ALL,
        },
    )
}

// ---- assets ----

/// The console's stylesheet and script.
#[utoipa::path(get, path = "/console/assets/{asset}", tag = TAG_CONSOLE, operation_id = "console_asset",
    params(("asset" = String, Path, description = "`console.css` or `console.js`.")),
    responses((status = 200, description = "The asset."),
              (status = 404, description = "No such asset.", body = crate::http::error::Detail)))]
pub async fn asset(Path(asset): Path<String>) -> Response {
    let Some((ctype, body)) = crate::http::console::asset(&asset) else {
        return ApiError::NotFound("No such asset".into()).into_response();
    };
    let mut r = ([(header::CONTENT_TYPE, ctype)], body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
