//! The Connect protocol's unary JSON form, as much of it as the source's clients use: a request is
//! `POST /<service>/<method>` with `Content-Type: application/json` (and `Connect-Protocol-Version:
//! 1`), the body is the message as JSON; a success is 200 with the response message as JSON; an
//! error is `{"code":"…","message":"…"}` with the HTTP status Connect maps the code to.
//!
//! Decoding happens once per call: `Unary<T>` takes the message an interceptor already decoded (the
//! validation interceptor stores it in the request's extensions) and parses the body only when no
//! interceptor did. Nothing a client sends can make a call answer 500: every decoding failure is
//! `invalid_argument`.

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use common::body::BodyReadFailure;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest request message accepted, in bytes; larger is `resource_exhausted`.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The Connect error codes this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    Unauthenticated,
    NotFound,
    Unimplemented,
    ResourceExhausted,
    DeadlineExceeded,
    Unavailable,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::Unauthenticated => "unauthenticated",
            Code::NotFound => "not_found",
            Code::Unimplemented => "unimplemented",
            Code::ResourceExhausted => "resource_exhausted",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal",
        }
    }

    /// Connect's code → HTTP status mapping.
    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::NotFound | Code::Unimplemented => StatusCode::NOT_FOUND,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A Connect error, rendered as `{"code","message"}` with its mapped status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
    /// The code's mapped status, except where the protocol says otherwise (415 for a codec this
    /// server does not speak).
    pub status: StatusCode,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status: code.status(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            code: self.code.as_str(),
            message: &self.message,
        })
        .unwrap_or_default();
        (
            self.status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response()
    }
}

/// The answer when a request body could not be read (`common::body::ReadBodyFirstLayer`, outside
/// every chain, adds `Connection: close`): past `BODY_READ_TIMEOUT_MS`, `deadline_exceeded` (504)
/// — the code for a call that did not complete in time, here because its request did not — and
/// `invalid_argument` for any other failure (the client broke off).
pub fn body_read_failure(failure: BodyReadFailure) -> Response {
    let code = match failure {
        BodyReadFailure::TimedOut(_) => Code::DeadlineExceeded,
        BodyReadFailure::Unreadable(_) => Code::InvalidArgument,
    };
    ConnectError::new(code, failure.to_string()).into_response()
}

/// A success: the response message as JSON.
pub struct Reply<T>(pub T);

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => (
                [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                body,
            )
                .into_response(),
            Err(e) => ConnectError::new(Code::Internal, format!("encoding the reply: {e}"))
                .into_response(),
        }
    }
}

/// A message decoded by an interceptor ahead of the handler, so the body is parsed once.
#[derive(Debug, Clone)]
pub struct Decoded<T>(pub T);

/// Checks the unary call's headers: JSON content (with or without a charset) and, when sent,
/// protocol version 1.
pub fn check_headers(headers: &HeaderMap) -> Result<(), ConnectError> {
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false);
    if !json {
        let mut error = ConnectError::new(
            Code::Unimplemented,
            "content-type must be application/json (this server speaks Connect's JSON codec only)",
        );
        error.status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return Err(error);
    }
    match headers.get("connect-protocol-version") {
        None => Ok(()),
        Some(v) if v.as_bytes() == b"1" => Ok(()),
        Some(v) => Err(ConnectError::invalid_argument(format!(
            "connect-protocol-version must be 1, got {:?}",
            String::from_utf8_lossy(v.as_bytes())
        ))),
    }
}

/// Reads the whole body, bounded by `MAX_MESSAGE_BYTES`.
pub async fn read_body(body: axum::body::Body) -> Result<Bytes, ConnectError> {
    axum::body::to_bytes(body, MAX_MESSAGE_BYTES)
        .await
        .map_err(|e| {
            ConnectError::new(
                Code::ResourceExhausted,
                format!("message larger than {MAX_MESSAGE_BYTES} bytes or unreadable: {e}"),
            )
        })
}

/// Parses a message from JSON; any failure is `invalid_argument` with serde's position.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ConnectError> {
    serde_json::from_slice(body)
        .map_err(|e| ConnectError::invalid_argument(format!("cannot decode the message: {e}")))
}

/// The request message of a unary call.
pub struct Unary<T>(pub T);

impl<S, T> FromRequest<S> for Unary<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send + Sync + 'static,
{
    type Rejection = ConnectError;

    async fn from_request(mut request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(Decoded(message)) = request.extensions_mut().remove::<Decoded<T>>() {
            return Ok(Unary(message));
        }
        check_headers(request.headers())?;
        let body = read_body(request.into_body()).await?;
        decode(&body).map(Unary)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::http::header;
    use axum::routing::post;
    use common::body::ReadBodyFirstLayer;
    use common::listener::BodyReadTimeout;
    use futures_util::StreamExt;
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn codes_map_to_connect_statuses() {
        assert_eq!(Code::InvalidArgument.status(), 400);
        assert_eq!(Code::Unauthenticated.status(), 401);
        assert_eq!(Code::ResourceExhausted.status(), 429);
        assert_eq!(Code::DeadlineExceeded.status(), 504);
        assert_eq!(Code::Unavailable.status(), 503);
        assert_eq!(Code::Internal.status(), 500);
    }

    #[test]
    fn json_content_types_are_accepted_with_a_charset() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(check_headers(&headers).is_ok());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/proto"));
        assert_eq!(check_headers(&headers).unwrap_err().status, 415);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("connect-protocol-version", HeaderValue::from_static("2"));
        assert_eq!(
            check_headers(&headers).unwrap_err().code,
            Code::InvalidArgument
        );
    }

    #[tokio::test]
    async fn the_body_deadline_is_deadline_exceeded_and_closes() {
        let echo = Router::new()
            .route("/", post(|body: Bytes| async move { body }))
            .layer(ReadBodyFirstLayer::new(64, body_read_failure));
        let stalled = futures_util::stream::once(async { Ok::<_, axum::BoxError>("{") }).chain(
            futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Err(BodyReadTimeout(Duration::from_millis(10)).into())
            }),
        );
        let request = Request::post("/").body(Body::from_stream(stalled)).unwrap();
        let response = echo.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 504);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["code"], "deadline_exceeded");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("BODY_READ_TIMEOUT_MS"),
            "{body}"
        );
    }

    #[test]
    fn a_broken_body_is_invalid_argument() {
        let response = body_read_failure(BodyReadFailure::Unreadable("connection reset".into()));
        assert_eq!(response.status(), 400);
    }
}
