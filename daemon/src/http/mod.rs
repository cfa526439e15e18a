//! The listener: TLS (rustls) or plain TCP -> hyper-util auto (HTTP/1.1 and
//! HTTP/2) -> one axum router; request ids, metrics, graceful shutdown.

pub mod console;
pub mod deadline;
pub mod error;
pub mod extract;
pub mod linger;
pub mod openapi;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::Instrument;

use crate::app::{App, Family};
use error::{detail, ErrorKind, FailureReason};

/// A JSON body without the UTF-8 byte-order mark some Windows tools put
/// first (JSON forbids it, RFC 8259 §8.1, but allows a parser to ignore it).
pub fn without_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
}

/// The peer address of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// This request's id: the client's `X-Request-Id` if it sent a sane one, else a new UUID.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn sane_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)))
    .then(|| s.to_string())
}

/// A refusal that asks the client to come back later: 429, or 503 with
/// `Retry-After` (queue full, rate limited, overloaded, not ready).
fn sheds_load(resp: &Response) -> bool {
    matches!(resp.status().as_u16(), 429 | 503) && resp.headers().contains_key(header::RETRY_AFTER)
}

/// Load-shedding refusals are logged one line per interval, not one per
/// request: under a flood of ten times what the appliance can serve, a line
/// per refusal costs a write for each and buries everything else in the
/// log. The first refusal after a quiet interval is logged at once; each
/// request's own line is at debug level, and exact counts are in
/// `argus_http_requests_total`.
struct ShedLog {
    count: std::sync::atomic::AtomicU64,
    last: std::sync::Mutex<Option<Instant>>,
}

static SHED_LOG: ShedLog = ShedLog {
    count: std::sync::atomic::AtomicU64::new(0),
    last: std::sync::Mutex::new(None),
};

impl ShedLog {
    const INTERVAL: Duration = Duration::from_secs(10);

    fn refused(&self) {
        use std::sync::atomic::Ordering;
        self.count.fetch_add(1, Ordering::Relaxed);
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < Self::INTERVAL) {
            return;
        }
        let since = last.map(|t| t.elapsed().as_secs());
        *last = Some(Instant::now());
        let refused = self.count.swap(0, Ordering::Relaxed);
        tracing::warn!(
            refused,
            seconds = since,
            "refusing requests with Retry-After (queue full, rate limited or overloaded); \
             each one is logged at debug level"
        );
    }
}

/// An `f32` as the shortest decimal that reads back as it (0.7, not
/// 0.699999988079071): widened to f64 as it is, an f32 prints its binary
/// error in JSON. For parameters and thresholds in answers and records.
pub fn decimal(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// The `method` label of a request's metrics: the standard methods by
/// name, any other as `other`, so a client inventing methods cannot add
/// series without bound.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Request id, tracing span, metrics, and JSON bodies for the router's own 404/405.
pub async fn observe(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let rid = req
        .headers()
        .get("x-request-id")
        .and_then(sane_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(rid.clone()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let span = tracing::info_span!("request", id = %rid, method = %req.method(), route = %route);
    let mut resp = next.run(req).instrument(span.clone()).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && !resp.headers().contains_key(header::CONTENT_TYPE)
    {
        let allow = resp.headers().get(header::ALLOW).cloned();
        resp = detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        if let Some(a) = allow {
            resp.headers_mut().insert(header::ALLOW, a);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let status = resp.status();
    let secs = start.elapsed().as_secs_f64();
    app.metrics
        .http_requests
        .with_label_values(&[&route, method, status.as_str()])
        .inc();
    app.metrics
        .http_duration
        .with_label_values(&[&route, method])
        .observe(secs);
    if let Some(FailureReason(r)) = resp.extensions().get::<FailureReason>() {
        let family = resp
            .extensions()
            .get::<FamilyName>()
            .map_or("platform", |f| f.0);
        app.metrics.failures.with_label_values(&[family, r]).inc();
    }
    span.in_scope(|| {
        if sheds_load(&resp) {
            tracing::debug!(status = status.as_u16(), ms = secs * 1e3, "request done");
            SHED_LOG.refused();
        } else if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), ms = secs * 1e3, "request done");
        } else {
            tracing::info!(status = status.as_u16(), ms = secs * 1e3, "request done");
        }
    });
    resp
}

/// The whole API: the platform's routes, then every family's, each behind
/// [`family_shape`]; a path no route matches is answered in the shape of
/// the family whose prefix it is under (the face family's otherwise).
/// Every route is documented in `/openapi.json` ([`openapi`]).
pub fn router(app: Arc<App>) -> Router {
    let (router, _) = documented_router(app.clone());
    let fallback_app = app.clone();
    with_middleware(
        router.fallback(move |req: Request| {
            let app = fallback_app.clone();
            async move { not_found(&app, req.uri().path()) }
        }),
        app,
    )
}

/// Every route with the OpenAPI document that describes it (already set
/// as the one `/openapi.json` serves).
pub fn documented_router(app: Arc<App>) -> (Router, utoipa::openapi::OpenApi) {
    let document = Arc::new(openapi::Document::default());
    let (mut router, mut doc) = utoipa_axum::router::OpenApiRouter::with_openapi(openapi::base())
        .merge(platform_routes(app.clone()))
        .merge(openapi::routes(document.clone()))
        .split_for_parts();
    for family in app.families() {
        let f = family.clone();
        let (routes, part) = family.clone().router().split_for_parts();
        doc.merge(part);
        router = router.merge(routes.layer(axum::middleware::from_fn(
            move |req: Request, next: Next| family_shape(f.clone(), req, next),
        )));
    }
    document.set(&doc);
    (router, doc)
}

fn platform_routes(app: Arc<App>) -> utoipa_axum::router::OpenApiRouter {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(metrics))
        .with_state(app)
}

/// Only `/metrics`, for `metrics.listen`.
pub fn metrics_router(app: Arc<App>) -> Router {
    let (router, _) = platform_routes(app.clone()).split_for_parts();
    with_middleware(
        router.fallback(|| async { detail(StatusCode::NOT_FOUND, "Not Found") }),
        app,
    )
}

fn with_middleware(router: Router, app: Arc<App>) -> Router {
    let router = router
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            deadline::body_deadline,
        ))
        .layer(axum::middleware::from_fn(linger::linger));
    // Outside the routes, so a preflight is answered whatever methods the
    // route takes; inside `observe`, so it is counted and logged.
    let router = match cors(&app.config.cors) {
        Some(layer) => router.layer(layer),
        None => router,
    };
    router.layer(axum::middleware::from_fn_with_state(app, observe))
}

/// The CORS rules of `cors.allow_origins`; None when empty (no CORS
/// headers at all). Never credentials: cookies (the console's session)
/// stay same-origin; keys and tokens come in the headers allowed here.
fn cors(c: &crate::config::CorsConfig) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if c.allow_origins.is_empty() {
        return None;
    }
    let origin = if c.allow_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // Validated at start (config::sections::is_origin).
        AllowOrigin::list(
            c.allow_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    let name = |n: &'static str| header::HeaderName::from_static(n);
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([
                axum::http::Method::GET,
                axum::http::Method::POST,
                axum::http::Method::PUT,
                axum::http::Method::PATCH,
                axum::http::Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                name("x-api-key"),
                name("x-request-id"),
                // The skin family's: the v3 upload answer tells a client to
                // send this header with its PUT, and the PDF report takes
                // its token in `access-token`.
                name("x-goog-content-length-range"),
                name("access-token"),
            ])
            .expose_headers([
                name("x-request-id"),
                name("x-face-count"),
                name("x-inference-ms"),
                name("x-mask-ms"),
                name("x-encode-ms"),
                name("x-total-ms"),
                name("x-model"),
                name("x-image-id"),
                name("x-job-id"),
                header::RETRY_AFTER,
                header::CONTENT_DISPOSITION,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// The family that owns `path`: the one with the longest matching prefix
/// (the skin family's `/api/v1/companies/` within the face family's
/// `/api/v1/`).
fn owner(app: &App, path: &str) -> Option<Arc<dyn Family>> {
    app.families()
        .iter()
        .filter_map(|f| {
            let best = f
                .prefixes()
                .iter()
                .filter(|p| path.starts_with(*p))
                .map(|p| p.len())
                .max()?;
            Some((best, f.clone()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, f)| f)
}

fn not_found(app: &App, path: &str) -> Response {
    let mut resp = match owner(app, path) {
        Some(f) => {
            let mut r = f.error_body(StatusCode::NOT_FOUND, "Not Found");
            r.extensions_mut().insert(FamilyName(f.name()));
            r
        }
        None => detail(StatusCode::NOT_FOUND, "Not Found"),
    };
    resp.extensions_mut()
        .insert(FailureReason(ErrorKind::NotFound.reason()));
    resp
}

/// The family that answered, for the failures metric.
#[derive(Debug, Clone, Copy)]
pub struct FamilyName(pub &'static str);

/// Answer every error under a family's routes in its shape: axum's own
/// rejections (a path segment or query that does not parse, a wrong
/// method, a body over the limit) come as plain text or empty, and are
/// rewritten here with their message; the family's own errors pass as
/// they are. Every error is labelled with its family.
pub async fn family_shape(family: Arc<dyn Family>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        // The console's error pages are HTML made for a person: kept.
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    let mut resp = if is_json {
        resp
    } else {
        let (parts, body) = resp.into_parts();
        // Rejection texts are short; anything longer is cut, not buffered.
        let text = axum::body::to_bytes(body, 4096)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        let message = if status.is_server_error() {
            "Internal server error".to_string()
        } else if text.is_empty() {
            status.canonical_reason().unwrap_or("Error").to_string()
        } else {
            text
        };
        let mut new = family.error_body(status, &message);
        for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
            if let Some(v) = parts.headers.get(&name) {
                new.headers_mut().insert(name, v.clone());
            }
        }
        new.extensions_mut().extend(parts.extensions);
        // A rejection axum or a layer made: count it. The family's own
        // errors carry their reason; its diagnostic answers (a 503 from
        // /health, /auth/hello's 401) carry none and are not failures.
        if new.extensions().get::<FailureReason>().is_none() {
            let reason = ErrorKind::from_status(status).reason();
            new.extensions_mut().insert(FailureReason(reason));
        }
        new
    };
    resp.extensions_mut().insert(FamilyName(family.name()));
    resp
}

/// Prometheus text format of every metric.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = openapi::TAG_PLATFORM,
    responses((status = 200, description = "Prometheus text exposition format 0.0.4.",
               content_type = "text/plain")),
)]
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    app.metrics
        .stored_bytes
        .set(app.store.blobs.total_bytes() as i64);
    app.metrics.ready.set(i64::from(app.is_ready()));
    app.webhooks.sample_pending();
    app.metrics.sample_filesystem(&app.config.state_dir);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// Accept connections until `shutdown` turns true, then let open
/// connections finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Slow or idle clients must not hold connections forever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        // Uploads arrive in frames of up to 256 KiB instead of h2's default
        // 16 KiB: each frame wakes the task reading the body, and at
        // hundreds of uploads a second (most refused and drained, under
        // overload) those wake-ups were a large part of the CPU per request.
        .max_frame_size(256 * 1024)
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and similar: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ClientAddr(addr));
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
        let (builder, tls) = (builder.clone(), tls.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match tls {
                Some(acc) => {
                    match tokio::time::timeout(Duration::from_secs(10), acc.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let conn = builder
                                .serve_connection_with_upgrades(TokioIo::new(s), svc)
                                .into_owned();
                            let _ = watcher.watch(conn).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %addr, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %addr, "TLS handshake timed out"),
                    }
                }
                None => {
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "connections still open after the grace period; closing them"
        );
    }
}
