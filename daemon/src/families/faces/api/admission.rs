//! Admission of detect and mask requests: the refusals that cost nothing
//! come before the upload is read, the scarce slots only once it is in.

use axum::extract::{multipart::MultipartRejection, FromRequest, Multipart, Request};
use axum::http::StatusCode;
use tokio::sync::OwnedSemaphorePermit;

use super::super::Faces;
use crate::http::error::ApiError;
use crate::http::extract::ApiKeyAuth;
use crate::http::ClientAddr;
use crate::store::ApiKeyRecord;

#[derive(Clone, Copy)]
pub(crate) enum Route {
    Detect,
    Mask,
}

/// The refusals that cost nothing, before the upload is read: API key
/// (checked by the [`ApiKeyAuth`] extractor), rate limit, and a full
/// inference queue (429 now rather than after the upload and its decode).
pub(super) async fn admit(
    app: &Faces,
    key: ApiKeyAuth,
    client: Option<&ClientAddr>,
    route: Route,
) -> Result<Option<ApiKeyRecord>, ApiError> {
    let key = key.0;
    let bucket = match (&key, client) {
        (Some(k), _) => k.id.to_string(),
        (None, Some(c)) => c.0.ip().to_string(),
        (None, None) => "anonymous".into(),
    };
    let limiter = match route {
        Route::Detect => &app.limiters.detect,
        Route::Mask => &app.limiters.mask,
    };
    limiter.check(&bucket).map_err(|l| ApiError::RateLimited {
        limit: l.limit,
        retry_after: l.retry_after_secs,
    })?;
    if app.batcher.is_full() {
        return Err(ApiError::QueueFull {
            retry_after: app.config.limits.retry_after_secs,
        });
    }
    if let Some(k) = &key {
        let (store, id) = (app.store.clone(), k.id);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.touch_key(id) {
                tracing::warn!(error = %e, "could not count API key use");
            }
        });
    }
    Ok(key)
}

/// The upload's image field, read under the platform's body deadline
/// (`http::deadline`: 408 when the client falls behind), then an in-flight slot (503 when none is free) and a
/// batcher ticket (429 when the queue has no place left): both are only
/// taken once the upload is in, so slow or stalled clients cannot hold what
/// the others need, and before the decode, so no image is decoded for a
/// request the queue would refuse.
pub(crate) async fn upload_then_slot(
    app: &Faces,
    req: Request,
) -> Result<(Upload, Slot), ApiError> {
    let upload = read_image_field(Multipart::from_request(req, &()).await).await?;
    let retry_after = app.config.limits.retry_after_secs;
    let in_flight = app
        .in_flight
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded { retry_after })?;
    let ticket = app
        .batcher
        .ticket()
        .ok_or(ApiError::QueueFull { retry_after })?;
    Ok((
        upload,
        Slot {
            _in_flight: in_flight,
            ticket: Some(ticket),
        },
    ))
}

/// What an admitted upload holds: its in-flight slot until the answer is
/// sent, its batcher ticket until the inference is done.
pub(crate) struct Slot {
    _in_flight: OwnedSemaphorePermit,
    ticket: Option<OwnedSemaphorePermit>,
}

impl Slot {
    /// The batch ran: the ticket goes to the next request while this one
    /// masks, encodes and stores.
    pub fn inference_done(&mut self) {
        self.ticket = None;
    }
}

pub(crate) struct Upload {
    pub bytes: bytes::Bytes,
    pub filename: Option<String>,
}

/// The multipart field `image`.
pub(crate) async fn read_image_field(
    mp: Result<Multipart, MultipartRejection>,
) -> Result<Upload, ApiError> {
    let mut mp = mp.map_err(|e| match e {
        // axum says "Invalid `boundary`" whenever the Content-Type is not
        // multipart at all (none, or a raw image's), which sends a client
        // looking at the wrong thing.
        MultipartRejection::InvalidBoundary(_) => ApiError::Invalid(
            "Expected a multipart/form-data body with an 'image' file field (the request's \
             Content-Type is not multipart/form-data with a boundary; e.g. curl -F \
             image=@photo.jpg sets it)"
                .into(),
        ),
        e if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("Request body too large".into())
        }
        e => ApiError::Invalid(format!(
            "Expected a multipart/form-data body with an 'image' file field ({})",
            e.body_text()
        )),
    })?;
    let multipart_err = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("Request body too large".into())
        } else {
            ApiError::BadRequest(format!("Malformed multipart body: {}", e.body_text()))
        }
    };
    while let Some(field) = mp.next_field().await.map_err(multipart_err)? {
        if field.name() == Some("image") {
            let filename = field.file_name().map(|s| s.chars().take(255).collect());
            let bytes = field.bytes().await.map_err(multipart_err)?;
            return Ok(Upload { bytes, filename });
        }
    }
    Err(ApiError::Invalid("Field 'image' is required".into()))
}
