//! The request body read whole before anything that holds a scarce resource: the one layer that
//! does it, `ReadBodyFirstLayer`, innermost of `server::http_layers` (so before any route's
//! admission control) and outermost of every interceptor chain (`interceptors::chains::router`,
//! so before the full chain's concurrency limit). Only the two failure answers differ between
//! them, and each user passes its renderer: [`api_error`] here (the JSON envelope), Connect's in
//! `interceptors::connect`.
//!
//! Without it, a client that sends its headers and then trickles its body would be inside the
//! route (or the chain) while the body arrives, holding an admission or concurrency slot for up to
//! `BODY_READ_TIMEOUT_MS`. Here the body is in hand first, so a slow client holds a connection,
//! never a slot.
//!
//! - **Deadline.** The listener bounds the read (`listener`: the whole body within
//!   `BODY_READ_TIMEOUT_MS` of the headers). Past it the renderer answers
//!   [`BodyReadFailure::TimedOut`] (408 `request_timeout` in the envelope, 504 `deadline_exceeded`
//!   in Connect); any other failure to read the body (the client broke off) is
//!   [`BodyReadFailure::Unreadable`]. Either way this layer adds `Connection: close`: the body is
//!   unfinished (HTTP/2 drops that header and resets the stream instead).
//! - **Memory.** At most `limit` bytes are buffered per request. A larger body (only a route
//!   accepting more would want it) is passed on as what was read followed by the rest, still under
//!   the same deadline, so the route answers as it always did.
//! - **Cost.** A request without a body passes straight through: the inner service's own future,
//!   no allocation. A body that came with its headers is one poll, no timer (the listener makes
//!   one only when the body is not yet in hand) and no copy. The interceptors' baseline chain
//!   depends on this: the layer is not an interceptor, and every chain has it, so a comparison of
//!   two listeners still measures only their interceptors.
//!
//! An answer given here is given before the layers inside it: in the interceptors it has no
//! request id, access log line, span or call metric.

use std::convert::Infallible;
use std::fmt;

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, Either};
use http_body_util::BodyExt;
use tower::{Layer, Service};

use crate::error::ApiError;
use crate::listener::BodyReadTimeout;

/// Why the body could not be read; its `Display` is the message both renderers answer with.
#[derive(Debug)]
pub enum BodyReadFailure {
    /// Past the listener's body-read deadline (`BODY_READ_TIMEOUT_MS`).
    TimedOut(BodyReadTimeout),
    /// Any other failure: the client broke off, or the connection failed.
    Unreadable(axum::BoxError),
}

impl BodyReadFailure {
    /// The listener's timeout, however many body wrappers (each boxing the one below) lie
    /// between it and the reader; anything else is `Unreadable`.
    fn from_error(e: axum::Error) -> Self {
        let inner = e.into_inner();
        let first: &(dyn std::error::Error + 'static) = &*inner;
        let timeout = std::iter::successors(Some(first), |e| e.source())
            .find_map(|e| e.downcast_ref::<BodyReadTimeout>())
            .copied();
        match timeout {
            Some(timeout) => Self::TimedOut(timeout),
            None => Self::Unreadable(inner),
        }
    }
}

impl fmt::Display for BodyReadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimedOut(timeout) => timeout.fmt(f),
            Self::Unreadable(e) => write!(f, "the request body could not be read: {e}"),
        }
    }
}

/// Renders a failure in the caller's error form; the layer adds `Connection: close`.
pub type RenderBodyFailure = fn(BodyReadFailure) -> Response;

/// The JSON envelope's answers (`server::http_layers`): 408 `request_timeout` past the deadline,
/// else 400 `bad_request` (the client broke off; nobody reads the answer).
pub fn api_error(failure: BodyReadFailure) -> Response {
    let message = failure.to_string();
    match failure {
        BodyReadFailure::TimedOut(_) => ApiError::request_timeout(message),
        BodyReadFailure::Unreadable(_) => ApiError::bad_request(message),
    }
    .into_response()
}

/// The layer: `ReadBodyFirstLayer::new(limit, body::api_error)`, or another renderer.
#[derive(Debug, Clone, Copy)]
pub struct ReadBodyFirstLayer {
    limit: usize,
    render: RenderBodyFailure,
}

impl ReadBodyFirstLayer {
    /// Buffers at most `limit` bytes of a body (see the module doc for larger ones); `render`
    /// answers a body that could not be read.
    pub fn new(limit: usize, render: RenderBodyFailure) -> Self {
        Self { limit, render }
    }
}

impl<S> Layer<S> for ReadBodyFirstLayer {
    type Service = ReadBodyFirst<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReadBodyFirst {
            inner,
            limit: self.limit,
            render: self.render,
        }
    }
}

/// The service `ReadBodyFirstLayer` makes.
#[derive(Debug, Clone)]
pub struct ReadBodyFirst<S> {
    inner: S,
    limit: usize,
    render: RenderBodyFailure,
}

impl<S> Service<Request> for ReadBodyFirst<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
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
        let (limit, render) = (self.limit, self.render);
        Either::Right(Box::pin(async move {
            match read_whole(request, limit).await {
                Ok(request) => inner.call(request).await,
                Err(failure) => {
                    let mut response = render(failure);
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    Ok(response)
                }
            }
        }))
    }
}

/// The request with its body in hand (up to `limit` bytes), or why it could not be read.
async fn read_whole(request: Request, limit: usize) -> Result<Request, BodyReadFailure> {
    let (parts, mut body) = request.into_parts();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut read = 0usize;
    let complete = loop {
        if read > limit {
            break false;
        }
        match body.frame().await {
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
            Some(Err(e)) => return Err(BodyReadFailure::from_error(e)),
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
            .layer(ReadBodyFirstLayer::new(limit, api_error))
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

    /// A body that sends `{` and then fails with `error` (the listener's timeout, or a broken
    /// connection).
    fn failing(error: axum::BoxError) -> Body {
        Body::from_stream(
            futures_util::stream::once(async { Ok::<_, axum::BoxError>("{") })
                .chain(futures_util::stream::once(async { Err(error) })),
        )
    }

    /// An error that carries another as its source, as a body wrapper boxing the one below does.
    #[derive(Debug)]
    struct Wrapped(axum::BoxError);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "wrapped: {}", self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
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
    async fn the_body_deadline_is_request_timeout_and_closes() {
        let stalled = futures_util::stream::once(async { Ok::<_, axum::BoxError>("{") }).chain(
            futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Err(BodyReadTimeout(Duration::from_millis(10)).into())
            }),
        );
        let request = Request::post("/").body(Body::from_stream(stalled)).unwrap();
        let response = echo(64).oneshot(request).await.unwrap();
        assert_eq!(response.status(), 408);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        let body: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
        assert_eq!(body["error"]["code"], "request_timeout");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("BODY_READ_TIMEOUT_MS"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_broken_body_is_bad_request_and_closes() {
        let request = Request::post("/")
            .body(failing("connection reset".into()))
            .unwrap();
        let response = echo(64).oneshot(request).await.unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        let body: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
        assert_eq!(
            body["error"]["message"],
            "the request body could not be read: connection reset"
        );
    }

    #[test]
    fn the_deadline_is_found_under_body_wrappers() {
        let timeout = BodyReadTimeout(Duration::from_millis(10));
        let wrapped = Wrapped(Box::new(Wrapped(Box::new(timeout))));
        let failure = BodyReadFailure::from_error(axum::Error::new(wrapped));
        assert!(
            matches!(failure, BodyReadFailure::TimedOut(t) if t.0 == timeout.0),
            "{failure:?}"
        );
        let failure = BodyReadFailure::from_error(axum::Error::new(Wrapped("reset".into())));
        assert!(
            matches!(failure, BodyReadFailure::Unreadable(_)),
            "{failure:?}"
        );
    }
}
