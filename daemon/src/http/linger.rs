//! What happens to the unread rest of a refused upload.
//!
//! Most HTTP/1.1 clients write the whole request body before they read the
//! response. A handler that refuses an upload (too large, bad token, closed
//! study, full queue) without reading all of it leaves bytes unread, hyper
//! then closes the connection, and the client sees a broken pipe or a reset
//! instead of the 4xx that says why. So each request's body is lent to the
//! handler; when the answer is an error and the handler dropped the body
//! unread, an HTTP/1.1 body is read and thrown away, within bounds, before
//! answering.
//!
//! HTTP/2 has a better way (RFC 9113 8.1): answer at once, then reset the
//! stream with NO_ERROR, which tells the client to stop sending without
//! failing the request. The client cannot have sent more than the stream's
//! flow-control window ([`H2_STREAM_WINDOW`], nginx's preread size), so a
//! refusal under overload costs both sides that much of the body rather
//! than all of it. The unread body is kept [`H2_HOLD`] after the answer
//! before it is dropped (which sends the reset): DATA frames the client had
//! already sent then land on a stream h2 still knows, instead of on a
//! forgotten one, where each would make h2 send a STREAM_CLOSED reset and
//! count it towards its per-connection limit of locally caused resets
//! (1024, then GOAWAY, which would fail every request on the connection).

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
/// The HTTP/2 flow-control window a stream starts with, in bytes: what a
/// client may send before the handler reads (nginx's
/// `http2_body_preread_size` default). Reading the body opens it further.
pub const H2_STREAM_WINDOW: u32 = 64 << 10;
/// The HTTP/2 connection window, in bytes: room for the first
/// [`H2_STREAM_WINDOW`] of this many streams' bodies at once.
pub const H2_CONNECTION_WINDOW: u32 = 64 * H2_STREAM_WINDOW;
/// How long a refused HTTP/2 body is kept unread after the answer.
pub const H2_HOLD: Duration = Duration::from_millis(50);
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

/// Middleware: lend the body; after an error answer, drain what was left
/// unread (HTTP/1.1) or reset the stream (HTTP/2).
pub async fn linger(req: Request, next: Next) -> Response {
    let home: Home = Arc::default();
    let (parts, body) = req.into_parts();
    let h2 = parts.version == axum::http::Version::HTTP_2;
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
        match left {
            Some(body) if h2 => {
                tokio::spawn(async move {
                    tokio::time::sleep(H2_HOLD).await;
                    drop(body);
                });
            }
            Some(body) => drain(body).await,
            None => {}
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
