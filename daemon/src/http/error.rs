//! The one place where errors become HTTP status codes: [`ErrorKind`].
//! Every family's error type says which kind each of its errors is and
//! supplies its own body shape; this module also holds the face family's
//! (`{"detail": "..."}`, [`ApiError`]). 5xx bodies stay generic; their
//! cause goes to the log with the request id.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::backend::BackendError;
use crate::batch::SubmitError;
use crate::imaging::ImagingError;
use crate::store::StoreError;

/// What went wrong, whatever the family: the status code and the
/// `reason` label of `argus_failures_total` follow from it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    /// A parameter or field failed validation (FastAPI's 422).
    Invalid,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Timeout,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    QueueFull,
    Overloaded,
    NotImplemented,
    Unavailable,
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited | Self::QueueFull => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A bounded label for the failures metric.
    pub fn reason(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Invalid => "invalid_parameter",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Timeout => "body_timeout",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "too_large",
            Self::UnsupportedMediaType => "unsupported_format",
            Self::RateLimited => "rate_limited",
            Self::QueueFull => "queue_full",
            Self::Overloaded => "overloaded",
            Self::NotImplemented => "not_implemented",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The kind of a status that axum or a layer produced on its own.
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNPROCESSABLE_ENTITY => Self::Invalid,
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            StatusCode::FORBIDDEN => Self::Forbidden,
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => Self::Timeout,
            StatusCode::CONFLICT => Self::Conflict,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimited,
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable,
            StatusCode::NOT_IMPLEMENTED => Self::NotImplemented,
            s if s.is_server_error() => Self::Internal,
            _ => Self::BadRequest,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// A parameter or form field failed validation (FastAPI's 422).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthorized(String),
    /// HTTP Basic challenge for the admin API.
    #[error("{0}")]
    UnauthorizedBasic(String),
    /// Authenticated, but this request is not allowed (e.g. a cross-site
    /// request riding on the session cookie).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The upload did not arrive within `limits.body_read_timeout_secs`.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("Rate limit exceeded: {limit} per 1 minute")]
    RateLimited { limit: u32, retry_after: u64 },
    #[error("The server is busy: the inference queue is full")]
    QueueFull { retry_after: u64 },
    #[error("The server is overloaded; try again shortly")]
    Overloaded { retry_after: u64 },
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::BadRequest(_) => ErrorKind::BadRequest,
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::Unauthorized(_) | Self::UnauthorizedBasic(_) => ErrorKind::Unauthorized,
            Self::Forbidden(_) => ErrorKind::Forbidden,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Timeout(_) => ErrorKind::Timeout,
            Self::PayloadTooLarge(_) => ErrorKind::PayloadTooLarge,
            Self::UnsupportedMediaType(_) => ErrorKind::UnsupportedMediaType,
            Self::RateLimited { .. } => ErrorKind::RateLimited,
            Self::QueueFull { .. } => ErrorKind::QueueFull,
            Self::Overloaded { .. } => ErrorKind::Overloaded,
            Self::NotImplemented(_) => ErrorKind::NotImplemented,
            Self::Unavailable(_) => ErrorKind::Unavailable,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind().status()
    }

    /// A bounded label for the failures metric.
    pub fn reason(&self) -> &'static str {
        self.kind().reason()
    }
}

/// The reason an error response carried, for the metrics middleware.
#[derive(Debug, Clone, Copy)]
pub struct FailureReason(pub &'static str);

/// The face family's and the platform's error body (reference 004):
/// `{"detail": "why"}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"detail": "Missing API key: send it in the X-API-Key header"}))]
pub struct Detail {
    /// What went wrong, safe to show to the caller.
    pub detail: String,
}

pub fn detail(status: StatusCode, message: &str) -> Response {
    let body = serde_json::to_string(&Detail {
        detail: message.to_string(),
    })
    .expect("a string serializes");
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Only faults are hidden; "not on this appliance" and "busy" are
        // answers the client should read.
        let message = if status.is_server_error()
            && !matches!(
                self,
                Self::Overloaded { .. } | Self::Unavailable(_) | Self::NotImplemented(_)
            ) {
            tracing::error!(error = %self, "request failed");
            "Internal server error".to_string()
        } else {
            self.to_string()
        };
        let mut resp = detail(status, &message);
        let retry = match self {
            Self::RateLimited { retry_after, .. }
            | Self::QueueFull { retry_after }
            | Self::Overloaded { retry_after } => Some(retry_after),
            Self::Unavailable(_) => Some(1),
            _ => None,
        };
        if let Some(s) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Self::Timeout(_) = self {
            // The rest of the body is not read: the connection cannot be reused.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Self::UnauthorizedBasic(_) = self {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"argus admin\", charset=\"UTF-8\""),
            );
        }
        resp.extensions_mut().insert(FailureReason(self.reason()));
        resp
    }
}

impl From<ImagingError> for ApiError {
    fn from(e: ImagingError) -> Self {
        match e {
            ImagingError::TooManyPixels { .. } | ImagingError::TooManyTiles { .. } => {
                Self::PayloadTooLarge(e.to_string())
            }
            ImagingError::UnsupportedFormat(..)
            | ImagingError::UnknownFormat
            | ImagingError::UnsupportedCoding(_) => Self::UnsupportedMediaType(e.to_string()),
            ImagingError::Empty | ImagingError::TooSmall { .. } | ImagingError::Corrupt(_) => {
                Self::BadRequest(e.to_string())
            }
            ImagingError::Encode(_) => Self::Internal(e.to_string()),
        }
    }
}

impl From<crate::imaging::budget::BudgetError> for ApiError {
    fn from(e: crate::imaging::budget::BudgetError) -> Self {
        use crate::imaging::budget::BudgetError;
        match e {
            BudgetError::TooLarge { .. } => Self::PayloadTooLarge(e.to_string()),
            BudgetError::Busy => Self::Overloaded { retry_after: 1 },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl ApiError {
    pub fn from_submit(e: SubmitError, retry_after: u64) -> Self {
        match e {
            SubmitError::QueueFull => Self::QueueFull { retry_after },
            SubmitError::ShutDown => Self::Unavailable("The server is shutting down".into()),
            SubmitError::WrongSize { .. } => Self::Internal(e.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Internal(format!("worker task failed: {e}"))
    }
}
