//! Refused uploads are read to the end before the refusal goes out.
//!
//! Most HTTP clients write the whole request body before they read the
//! response. A handler that refuses an upload (too large, bad token, closed
//! study) without reading all of it leaves bytes unread, hyper then closes
//! the connection, and the client sees a broken pipe or a reset instead of
//! the 4xx that says why. So each request's body is lent to the handler;
//! when the answer is an error and the handler dropped the body unread,
//! the rest is read and thrown away, within bounds, before answering.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

/// Beyond this many unread bytes the connection is closed instead.
pub const MAX_BYTES: u64 = 64 << 20;
/// A client still sending after this long is cut off.
pub const MAX_TIME: Duration = Duration::from_secs(10);

type Home = Arc<Mutex<Option<Body>>>;

/// The request body as the handler sees it; dropped, it goes back home.
struct Lent {
    body: Option<Body>,
    home: Home,
}

impl HttpBody for Lent {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.body.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(b) = self.body.take() {
            if !b.is_end_stream() {
                *self.home.lock().unwrap_or_else(|p| p.into_inner()) = Some(b);
            }
        }
    }
}

/// Middleware: lend the body, and drain what an error answer left unread.
pub async fn linger(req: Request, next: Next) -> Response {
    let home: Home = Arc::default();
    let (parts, body) = req.into_parts();
    let lent = Lent {
        body: Some(body),
        home: home.clone(),
    };
    let resp = next.run(Request::from_parts(parts, Body::new(lent))).await;
    // A 408 is for a client that stopped sending: waiting for the rest
    // would hand it back the hold the timeout took away.
    let stalled = resp.status() == axum::http::StatusCode::REQUEST_TIMEOUT;
    if !stalled && (resp.status().is_client_error() || resp.status().is_server_error()) {
        let left = home.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(body) = left {
            drain(body).await;
        }
    }
    resp
}

/// Read and drop up to [`MAX_BYTES`] for up to [`MAX_TIME`].
async fn drain(mut body: Body) {
    let read = async {
        let mut n = 0u64;
        while let Some(Ok(frame)) =
            std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            n += frame.data_ref().map_or(0, |d| d.len() as u64);
            if n > MAX_BYTES {
                tracing::debug!(bytes = n, "refused upload still going; closing");
                return;
            }
        }
    };
    if tokio::time::timeout(MAX_TIME, read).await.is_err() {
        tracing::debug!("refused upload still going after the time limit; closing");
    }
}
