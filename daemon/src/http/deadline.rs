//! One read deadline for every request body, whatever the route.
//!
//! A client that sends headers and part of a body and then nothing would
//! otherwise hold its connection, its task and whatever the handler took
//! before reading (a login's limiter entry, a JSON upload's buffer) for as
//! long as TCP keeps the connection open. The face uploads had their own
//! timeout; the JSON, form and PUT bodies of the other families had none
//! (issue 18, item 4). So the body each handler reads fails when it is
//! waiting on the client past its deadline: `limits.body_read_timeout_secs`
//! after the request came in, plus one second for every
//! `limits.body_min_bytes_per_sec` bytes received so far. A stalled client
//! or a trickle (slowloris) is cut after about the timeout; a large upload
//! over a slow link that keeps up that minimum average rate is not. The
//! answer becomes a 408 in the shape of the family that owns the path,
//! with `Connection: close`.
//!
//! Data the client has already sent is always handed over, however late
//! the handler reads it: the deadline only cuts a body that is waiting on
//! the client.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

use super::error::{detail, ErrorKind, FailureReason};
use super::{owner, FamilyName};
use crate::app::App;

/// A request body that fails when it waits on the client past `sleep`.
struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    fired: Arc<AtomicBool>,
    secs: u64,
    start: tokio::time::Instant,
    min_rate: u64,
    received: u64,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            let n = match &frame {
                Some(Ok(f)) => f.data_ref().map_or(0, |d| d.len() as u64),
                _ => 0,
            };
            if n > 0 {
                // Each byte in earns the body more time, at the minimum rate.
                self.received += n;
                let earned = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
                let deadline = self.start + Duration::from_secs(self.secs) + earned;
                self.sleep.as_mut().reset(deadline);
            }
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.fired.store(true, Ordering::Relaxed);
        let secs = self.secs;
        Poll::Ready(Some(Err(axum::Error::new(format!(
            "the request body did not arrive within {secs} s"
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: give the request's body the deadline, and answer 408 in the
/// owning family's shape when it cut the body off.
pub async fn body_deadline(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let secs = app.config.limits.body_read_timeout_secs.max(1);
    let min_rate = app.config.limits.body_min_bytes_per_sec.max(1);
    let fired = Arc::new(AtomicBool::new(false));
    let path = req.uri().path().to_string();
    let (parts, inner) = req.into_parts();
    let body = Deadline {
        inner,
        sleep: Box::pin(tokio::time::sleep(Duration::from_secs(secs))),
        fired: fired.clone(),
        secs,
        start: tokio::time::Instant::now(),
        min_rate,
        received: 0,
    };
    let resp = next.run(Request::from_parts(parts, Body::new(body))).await;
    // A handler that answered without the rest of the body keeps its answer;
    // one that failed for want of it gets the timeout's.
    if !fired.load(Ordering::Relaxed) || resp.status().is_success() {
        return resp;
    }
    let message = format!("the request body did not arrive within {secs} s");
    let mut out = match owner(&app, &path) {
        Some(f) => {
            let mut r = f.error_body(StatusCode::REQUEST_TIMEOUT, &message);
            r.extensions_mut().insert(FamilyName(f.name()));
            r
        }
        None => detail(StatusCode::REQUEST_TIMEOUT, &message),
    };
    out.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    out.extensions_mut()
        .insert(FailureReason(ErrorKind::Timeout.reason()));
    out
}
