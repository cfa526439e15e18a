//! The PBS family's answer shape: every answer but the heartbeat is the
//! envelope `{status, results, error, user_message, debug_info: {delta,
//! version}}` with the HTTP status equal to `status`; [`PbsError`] says
//! which `ErrorKind` (the platform's one status table) each error is.

use std::time::Instant;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::identity::AuthFailure;
use crate::http::error::{ErrorKind, FailureReason};
use crate::store::StoreError;

pub const VERSION: &str = concat!("argusd.", env!("CARGO_PKG_VERSION"));

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
            Self::Conflict(_) => ErrorKind::Conflict,
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
            Self::TooLarge(_) => "The file is too large.",
            Self::TooMany(_) => "Too many attempts; please wait a moment.",
            Self::Busy(..) => "The appliance is busy; please try again in a moment.",
            Self::Store(_) | Self::Internal(_) => "Something went wrong on the appliance.",
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
    extra: Vec<(&'static str, String)>,
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
            extra: Vec::new(),
        }
    }
}

impl IntoResponse for Envelope {
    fn into_response(self) -> Response {
        let body = json!({
            "status": self.status.as_u16(),
            "results": self.results,
            "error": self.error,
            "user_message": self.user_message,
            "debug_info": {
                "delta": format!("{:?}", self.started.elapsed()),
                "version": VERSION,
            },
        });
        let mut r = (self.status, Json(body)).into_response();
        for (k, v) in self.extra {
            if let Ok(v) = v.parse() {
                r.headers_mut().insert(k, v);
            }
        }
        r
    }
}

/// An error the router or an extractor produced (unknown path, wrong
/// method, a path or query that does not parse), as an envelope.
pub fn envelope_error(status: StatusCode, message: &str) -> Response {
    let mut e = Envelope::ok(status, Value::Null, Instant::now());
    e.error = message.to_string();
    e.user_message = match status {
        StatusCode::NOT_FOUND => "Not found.",
        StatusCode::METHOD_NOT_ALLOWED => "This address does not take that method.",
        s if s.is_server_error() => "Something went wrong on the appliance.",
        _ => "The request could not be used; see error.",
    }
    .into();
    e.into_response()
}

/// An error as an envelope; `started` is unknown here, so delta is ~0.
impl IntoResponse for PbsError {
    fn into_response(self) -> Response {
        let mut e = Envelope::ok(self.status(), Value::Null, Instant::now());
        e.error = self.to_string();
        e.user_message = self.user_message().into();
        match &self {
            Self::Unauthorized(f) => {
                e.results = json!({
                    "claim": f.rejection.claim,
                    "reason": f.rejection.reason,
                });
                e.extra.push(("www-authenticate", "Bearer".into()));
            }
            Self::TooMany(secs) | Self::Busy(_, secs) => {
                e.extra.push(("retry-after", secs.to_string()))
            }
            Self::Store(err) => tracing::error!(error = %err, "PBS store error"),
            Self::Internal(err) => tracing::error!(error = %err, "PBS internal error"),
            _ => {}
        }
        let mut r = e.into_response();
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
