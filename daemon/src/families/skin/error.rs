//! The skin family's errors, in the reference service's shape (Django
//! REST framework): `{"detail": "..."}` for most, and for a field that
//! failed validation `{"<field>": ["..."]}` with 400. The status of each
//! comes from the platform's [`ErrorKind`] table.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::error::{ErrorKind, FailureReason};
use crate::imaging::ImagingError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SkinError {
    #[error("{0}")]
    BadRequest(String),
    /// A request field failed validation: (field, message).
    #[error("{1}")]
    Field(&'static str, String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// Unknown, or another company's (never told apart).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("Request was throttled. Expected available in {retry_after} seconds.")]
    Throttled { retry_after: u64 },
    #[error("{0}")]
    Busy(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type SkinResult<T> = Result<T, SkinError>;

impl SkinError {
    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("{what} not found."))
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::BadRequest(_) | Self::Field(..) => ErrorKind::BadRequest,
            Self::Unauthorized(_) => ErrorKind::Unauthorized,
            Self::Forbidden(_) => ErrorKind::Forbidden,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Conflict(_) => ErrorKind::Conflict,
            Self::PayloadTooLarge(_) => ErrorKind::PayloadTooLarge,
            Self::UnsupportedMediaType(_) => ErrorKind::UnsupportedMediaType,
            Self::Throttled { .. } => ErrorKind::RateLimited,
            Self::Busy(_) => ErrorKind::Overloaded,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// The family's error body: `{"detail": "..."}`, or for fields that
/// failed validation `{"<field>": ["..."]}` (Django REST framework's two
/// shapes). Every error answer of the skin routes is one of them.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[schema(example = json!({"detail": "Dataset not found."}))]
pub enum SkinErrorBody {
    /// What went wrong, safe to show to the caller (5xx: always
    /// `Internal server error`; the cause is in the log).
    Detail { detail: String },
    /// The messages of each field that failed validation, by field name.
    #[schema(example = json!({"name": ["Must be 1 to 512 characters."]}))]
    Fields(std::collections::BTreeMap<String, Vec<String>>),
}

impl SkinErrorBody {
    pub fn into_response(self, status: StatusCode) -> Response {
        let json = serde_json::to_string(&self).expect("an error body serializes");
        (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json,
        )
            .into_response()
    }
}

/// The family's error body for a status and message.
/// A JSON body's field that did not deserialize, from axum's rejection text
/// (`Failed to deserialize the JSON body into the target type: FIELD: WHY
/// at line L column C`), so that it can be answered keyed by the field as
/// the reference's other field errors are: (field, why).
pub fn json_field_error(message: &str) -> Option<(String, String)> {
    let rest =
        message.strip_prefix("Failed to deserialize the JSON body into the target type: ")?;
    let (field, why) = rest.split_once(": ")?;
    if field.is_empty()
        || !field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
    {
        return None;
    }
    let why = match why.rfind(" at line ") {
        Some(i) => &why[..i],
        None => why,
    };
    Some((field.to_string(), why.to_string()))
}

pub fn body(status: StatusCode, message: &str) -> Response {
    SkinErrorBody::Detail {
        detail: message.to_string(),
    }
    .into_response(status)
}

impl IntoResponse for SkinError {
    fn into_response(self) -> Response {
        let kind = self.kind();
        let status = kind.status();
        let mut resp = match &self {
            Self::Field(field, msg) => {
                SkinErrorBody::Fields([(field.to_string(), vec![msg.clone()])].into())
                    .into_response(status)
            }
            Self::Internal(e) => {
                tracing::error!(error = %e, "skin request failed");
                body(status, "Internal server error")
            }
            _ => body(status, &self.to_string()),
        };
        let retry = match &self {
            Self::Throttled { retry_after } => Some(*retry_after),
            Self::Busy(_) => Some(2),
            _ => None,
        };
        if let Some(s) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Self::Unauthorized(_) = self {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp.extensions_mut().insert(FailureReason(kind.reason()));
        resp
    }
}

impl From<StoreError> for SkinError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<tokio::task::JoinError> for SkinError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<ImagingError> for SkinError {
    fn from(e: ImagingError) -> Self {
        match crate::http::error::ApiError::from(e) {
            crate::http::error::ApiError::PayloadTooLarge(m) => Self::PayloadTooLarge(m),
            crate::http::error::ApiError::UnsupportedMediaType(m) => Self::UnsupportedMediaType(m),
            other => Self::BadRequest(other.to_string()),
        }
    }
}
