//! The PBS family's answer shape: every answer but the heartbeat is the
//! envelope `{status, results, error, user_message, debug_info: {delta,
//! version}}` with the HTTP status equal to `status`; [`PbsError`] says
//! which `ErrorKind` (the platform's one status table) each error is.

use std::time::Instant;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::identity::AuthFailure;
use crate::http::error::{ErrorKind, FailureReason};
use crate::store::StoreError;

pub const VERSION: &str = concat!("argusd.", env!("CARGO_PKG_VERSION"));

tokio::task_local! {
    /// When the request being answered arrived: errors are built far from
    /// the handler that knew it (extractors, `?`), yet their `debug_info`
    /// still tells the whole time.
    static ARRIVED: Instant;
}

/// Middleware of the family's routes: remembers the request's arrival for
/// [`PbsError`]'s `debug_info.delta`.
pub async fn note_arrival(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    ARRIVED.scope(Instant::now(), next.run(req)).await
}

/// The arrival noted by [`note_arrival`]; now outside it.
fn arrival() -> Instant {
    ARRIVED.try_with(|t| *t).unwrap_or_else(|_| Instant::now())
}

impl From<crate::imaging::budget::BudgetError> for PbsError {
    fn from(e: crate::imaging::budget::BudgetError) -> Self {
        use crate::imaging::budget::BudgetError;
        match e {
            BudgetError::TooLarge { .. } => Self::TooLarge(e.to_string()),
            BudgetError::Busy => Self::Busy(e.to_string(), 1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PbsError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{}", .0.rejection)]
    Unauthorized(Box<AuthFailure>),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A report asked for before its analysis has finished (409).
    #[error("{0}")]
    NotReady(String),
    /// A report whose analysis failed, so it will never be made (409).
    #[error("{0}")]
    AnalysisFailed(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("too many attempts; retry in {0} s")]
    TooMany(u64),
    /// The appliance cannot take the work now (its decode memory is in use).
    #[error("{0}")]
    Busy(String, u64),
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl PbsError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::BadRequest(_) => ErrorKind::BadRequest,
            Self::Unauthorized(_) => ErrorKind::Unauthorized,
            Self::Forbidden(_) => ErrorKind::Forbidden,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Conflict(_) | Self::NotReady(_) | Self::AnalysisFailed(_) => ErrorKind::Conflict,
            Self::TooLarge(_) => ErrorKind::PayloadTooLarge,
            Self::TooMany(_) => ErrorKind::RateLimited,
            Self::Busy(..) => ErrorKind::Overloaded,
            Self::Store(_) | Self::Internal(_) => ErrorKind::Internal,
        }
    }

    fn status(&self) -> StatusCode {
        self.kind().status()
    }

    fn user_message(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "The request could not be used; see error.",
            Self::Unauthorized(_) => "Please sign in again.",
            Self::Forbidden(_) => "Your account may not do this.",
            Self::NotFound(_) => "Not found.",
            Self::Conflict(_) => "This study cannot be changed now.",
            Self::NotReady(_) => "The results are not ready yet; please try again shortly.",
            Self::AnalysisFailed(_) => "This study could not be analysed; see error.",
            Self::TooLarge(_) => "The file is too large.",
            Self::TooMany(_) => "Too many attempts; please wait a moment.",
            Self::Busy(..) => "The appliance is busy; please try again in a moment.",
            Self::Store(_) | Self::Internal(_) => "Something went wrong on the appliance.",
        }
    }
}

/// `debug_info`: how long the appliance took and which build answered.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = pbs::DebugInfo, example = json!({"delta": "1.2ms", "version": VERSION}))]
pub struct DebugInfo {
    /// Time from the request's arrival to the answer, in Rust's `Duration`
    /// notation (`"463.02ms"`, `"59.07µs"`).
    pub delta: String,
    /// `argusd.<crate version>`.
    #[schema(value_type = String)]
    pub version: &'static str,
}

impl DebugInfo {
    fn since(started: Instant) -> Self {
        Self {
            delta: format!("{:?}", started.elapsed()),
            version: VERSION,
        }
    }
}

/// The envelope every PBS answer but the heartbeat comes in, with the
/// route's `results`. The HTTP status equals `status`. Fields are in the
/// order they have always been written in (alphabetical).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = pbs::Envelope<T>)]
pub struct EnvelopeBody<T> {
    pub debug_info: DebugInfo,
    /// Empty on success.
    pub error: String,
    pub results: T,
    /// The HTTP status code of the answer.
    pub status: u16,
    /// A message for the end user; empty on success.
    pub user_message: String,
}

/// Which claim of a refused token was at fault, and why.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = pbs::AuthRejection, example = json!({"claim": "exp", "reason": "the token expired 30 s ago"}))]
pub struct AuthRejection {
    /// `token` (missing or malformed), `user` (login), `alg`, `kid`,
    /// `signature`, `payload`, `iss`, `aud`, `sub`, `role`, `jti`, `iat`,
    /// `nbf` or `exp`.
    #[schema(value_type = String)]
    pub claim: &'static str,
    pub reason: String,
}

/// Every PBS error: the envelope with `results` null, except a refused
/// token (401), whose `results` names the claim at fault.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = pbs::Error,
    example = json!({
        "debug_info": {"delta": "25.1µs", "version": VERSION},
        "error": "no PBS study 62dd0300-880e-4069-bea8-66c9ca73c207",
        "results": null,
        "status": 404,
        "user_message": "Not found."
    })
)]
pub struct ErrorBody {
    pub debug_info: DebugInfo,
    /// What went wrong, for the developer.
    pub error: String,
    /// Null, or for a 401 the claim at fault.
    pub results: Option<AuthRejection>,
    /// The HTTP status code of the answer.
    pub status: u16,
    /// A message that can be shown to the end user.
    pub user_message: String,
}

impl ErrorBody {
    fn new(status: StatusCode, error: String, user_message: &str) -> Self {
        Self {
            debug_info: DebugInfo::since(arrival()),
            error,
            results: None,
            status: status.as_u16(),
            user_message: user_message.into(),
        }
    }
}

/// The envelope, with `debug_info` timings.
pub struct Envelope {
    status: StatusCode,
    results: Value,
    pub(super) error: String,
    pub(super) user_message: String,
    started: Instant,
}

impl Envelope {
    /// A successful answer with typed `results`.
    pub fn ok(status: StatusCode, results: impl serde::Serialize, started: Instant) -> Self {
        let results = serde_json::to_value(results).expect("results serialize");
        Self {
            status,
            results,
            error: String::new(),
            user_message: String::new(),
            started,
        }
    }
}

impl IntoResponse for Envelope {
    fn into_response(self) -> Response {
        let body = EnvelopeBody {
            debug_info: DebugInfo::since(self.started),
            error: self.error,
            results: self.results,
            status: self.status.as_u16(),
            user_message: self.user_message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// An error the router or an extractor produced (unknown path, wrong
/// method, a path or query that does not parse), as an envelope.
pub fn envelope_error(status: StatusCode, message: &str) -> Response {
    let user_message = match status {
        StatusCode::NOT_FOUND => "Not found.",
        StatusCode::METHOD_NOT_ALLOWED => "This address does not take that method.",
        s if s.is_server_error() => "Something went wrong on the appliance.",
        _ => "The request could not be used; see error.",
    };
    (
        status,
        Json(ErrorBody::new(status, message.into(), user_message)),
    )
        .into_response()
}

/// An error as an envelope. A fault's text (a store error, a failed worker)
/// is logged, not sent: `error` then says only that the appliance failed.
impl IntoResponse for PbsError {
    fn into_response(self) -> Response {
        let status = self.status();
        let error = match &self {
            Self::Store(_) | Self::Internal(_) => {
                "internal error on the appliance; its log has the cause".to_string()
            }
            _ => self.to_string(),
        };
        let mut body = ErrorBody::new(status, error, self.user_message());
        if let Self::Unauthorized(f) = &self {
            body.results = Some(AuthRejection {
                claim: f.rejection.claim,
                reason: f.rejection.reason.clone(),
            });
        }
        let mut r = (status, Json(body)).into_response();
        match &self {
            Self::Unauthorized(_) => {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooMany(secs) | Self::Busy(_, secs) => {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            Self::Store(err) => tracing::error!(error = %err, "PBS store error"),
            Self::Internal(err) => tracing::error!(error = %err, "PBS internal error"),
            _ => {}
        }
        r.extensions_mut()
            .insert(FailureReason(self.kind().reason()));
        r
    }
}

pub type Res = Result<Envelope, PbsError>;

pub fn parse_json<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, PbsError> {
    let body = crate::http::without_bom(body);
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| PbsError::BadRequest(format!("body is not the expected JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use axum::response::IntoResponse;

    use super::{PbsError, ARRIVED};

    async fn body_of(e: PbsError) -> serde_json::Value {
        let r = e.into_response();
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn an_error_times_the_whole_request_and_hides_faults() {
        let arrived = Instant::now() - Duration::from_millis(250);
        let v = ARRIVED
            .scope(arrived, async {
                body_of(PbsError::Internal(
                    "sled: /var/lib/argus/db: disk full".into(),
                ))
                .await
            })
            .await;
        let delta = v["debug_info"]["delta"].as_str().unwrap();
        assert!(delta.ends_with("ms") && !delta.ends_with("µs"), "{delta}");
        let ms: f64 = delta.trim_end_matches("ms").parse().unwrap();
        assert!(ms >= 250.0, "{delta}");
        assert_eq!(v["status"], 500);
        assert!(!v["error"].as_str().unwrap().contains("sled"), "{v}");

        // A client's error is its own to read.
        let v = body_of(PbsError::BadRequest("version \"x\" is not a number".into())).await;
        assert_eq!(v["error"], "version \"x\" is not a number");
    }
}
