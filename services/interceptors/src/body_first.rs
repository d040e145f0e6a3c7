//! The request body read whole before any interceptor: the outermost layer of every chain
//! (`chains::router`), the Connect counterpart of `common::server::read_body_first`.
//!
//! Without it, a client that sends its headers and then trickles its body would be inside the
//! chain while the body arrives: on the full chain it would hold a concurrency-limit slot (and run
//! down the call's deadline) for up to `BODY_READ_TIMEOUT_MS`. Here the body is in hand before the
//! first interceptor sees the request, so a slow client holds a connection, never a slot.
//!
//! - **Deadline.** The listener bounds the read (`common::listener`: the whole body within
//!   `BODY_READ_TIMEOUT_MS` of the headers). Past it the answer is the Connect error
//!   `deadline_exceeded` — the code for a call that did not complete in time, here because its
//!   request did not — with its mapped status, 504, and `Connection: close` (the body is
//!   unfinished; HTTP/2 drops that header and resets the stream instead). Any other failure to
//!   read the body (the client broke off) is `invalid_argument`, also closing the connection.
//! - **Memory.** At most `limit` bytes (the chains use `connect::MAX_MESSAGE_BYTES`) are buffered
//!   per request. A larger body is passed on as what was read followed by the rest, so the route
//!   answers as it always did (`SayHello`: `resource_exhausted` at once, without reading further).
//! - **Cost.** One layer; a request without a body passes straight through, and a body that came
//!   with its headers is one poll, no timer (the listener makes one only when the body is not yet
//!   in hand) and no copy. It is not an interceptor: `Chain::interceptor_count` does not count
//!   it, and every chain has it, so a comparison of two listeners still measures only their
//!   interceptors.
//!
//! An answer given here is given before the chain: on the full chain it has no request id, access
//! log line, span or call metric.

use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, Either};
use tower::{Layer, Service};

use common::listener::BodyReadTimeout;

use crate::connect::{Code, ConnectError};

/// The layer: `ReadBodyFirstLayer::new(connect::MAX_MESSAGE_BYTES)`.
#[derive(Debug, Clone, Copy)]
pub struct ReadBodyFirstLayer {
    limit: usize,
}

impl ReadBodyFirstLayer {
    /// Buffers at most `limit` bytes of a body (see the module doc for larger ones).
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for ReadBodyFirstLayer {
    type Service = ReadBodyFirst<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReadBodyFirst {
            inner,
            limit: self.limit,
        }
    }
}

/// The service `ReadBodyFirstLayer` makes.
#[derive(Debug, Clone)]
pub struct ReadBodyFirst<S> {
    inner: S,
    limit: usize,
}

impl<S> Service<Request> for ReadBodyFirst<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.body().is_end_stream() {
            return Either::Left(self.inner.call(request));
        }
        // The ready service is the one to call; leave a fresh clone in its place (tower's usual
        // pattern for a call that runs later).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.limit;
        Either::Right(Box::pin(async move {
            match read_whole(request, limit).await {
                Ok(request) => inner.call(request).await,
                Err(response) => Ok(response),
            }
        }))
    }
}

/// The request with its body in hand (up to `limit` bytes), or the answer when it could not be read.
async fn read_whole(request: Request, limit: usize) -> Result<Request, Response> {
    let (parts, mut body) = request.into_parts();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut read = 0usize;
    let complete = loop {
        if read > limit {
            break false;
        }
        match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => break true,
            Some(Ok(frame)) => {
                // Trailers are dropped: no route reads them.
                if let Ok(data) = frame.into_data() {
                    read += data.len();
                    chunks.push(data);
                }
                if body.is_end_stream() {
                    break true;
                }
            }
            Some(Err(e)) => return Err(body_error(e)),
        }
    };
    let buffered = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(read);
            for chunk in &chunks {
                all.extend_from_slice(chunk);
            }
            all.freeze()
        }
    };
    let body = if complete {
        Body::from(buffered)
    } else {
        let rest = body.into_data_stream();
        Body::from_stream(futures_util::stream::once(async move { Ok(buffered) }).chain(rest))
    };
    Ok(Request::from_parts(parts, body))
}

/// `deadline_exceeded` past the body-read deadline, else `invalid_argument`; the connection closes
/// either way.
fn body_error(e: axum::Error) -> Response {
    let inner = e.into_inner();
    // The listener's error, however many body wrappers (each boxing the one below) lie between.
    let first: &(dyn std::error::Error + 'static) = &*inner;
    let timeout = std::iter::successors(Some(first), |e| e.source())
        .find_map(|e| e.downcast_ref::<BodyReadTimeout>());
    let error = match timeout {
        Some(timeout) => ConnectError::new(Code::DeadlineExceeded, timeout.to_string()),
        None => {
            ConnectError::invalid_argument(format!("the request body could not be read: {inner}"))
        }
    };
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::Router;
    use axum::routing::post;
    use tower::ServiceExt;

    use super::*;

    /// Echoes the body, and says whether it was already whole (a `Full` body's exact size hint).
    fn echo(limit: usize) -> Router {
        Router::new()
            .route(
                "/",
                post(|request: Request| async move {
                    let whole = request.body().size_hint().exact().is_some();
                    let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
                        .await
                        .unwrap();
                    format!("{whole} {}", bytes.len())
                }),
            )
            .layer(ReadBodyFirstLayer::new(limit))
    }

    async fn text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn chunked(chunks: Vec<&'static str>) -> Body {
        Body::from_stream(futures_util::stream::iter(
            chunks.into_iter().map(Ok::<_, Infallible>),
        ))
    }

    #[tokio::test]
    async fn a_chunked_body_reaches_the_route_whole() {
        let request = Request::post("/")
            .body(chunked(vec!["ab", "cd", "e"]))
            .unwrap();
        let response = echo(64).oneshot(request).await.unwrap();
        assert_eq!(text(response).await, "true 5");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_passed_on_whole_but_not_buffered() {
        let request = Request::post("/")
            .body(chunked(vec!["abcd", "efgh", "ij"]))
            .unwrap();
        let response = echo(3).oneshot(request).await.unwrap();
        assert_eq!(text(response).await, "false 10");
    }

    #[tokio::test]
    async fn the_body_deadline_is_deadline_exceeded_and_closes() {
        let stalled = futures_util::stream::once(async { Ok::<_, axum::BoxError>("{") }).chain(
            futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Err(BodyReadTimeout(Duration::from_millis(10)).into())
            }),
        );
        let request = Request::post("/").body(Body::from_stream(stalled)).unwrap();
        let response = echo(64).oneshot(request).await.unwrap();
        assert_eq!(response.status(), 504);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        let body: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
        assert_eq!(body["code"], "deadline_exceeded");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("BODY_READ_TIMEOUT_MS"),
            "{body}"
        );
    }
}
