//! Validation: decode the request message and check its rules before the handler runs; a violation
//! is `invalid_argument` naming the field, and the handler never sees the call.
//!
//! The decoded message travels on in the request's extensions (`connect::Decoded`), so a validated
//! call is parsed once, as in the source where interceptors see the decoded message.

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::connect::{self, Decoded};
use crate::greeter::Validate;

/// Middleware for calls whose request message is `T`: `from_fn(validate::<T>)`.
pub async fn validate<T>(request: Request, next: Next) -> Response
where
    T: DeserializeOwned + Validate + Clone + Send + Sync + 'static,
{
    let (parts, body) = request.into_parts();
    if let Err(e) = connect::check_headers(&parts.headers) {
        return e.into_response();
    }
    let bytes = match connect::read_body(body).await {
        Ok(bytes) => bytes,
        Err(e) => return e.into_response(),
    };
    let message: T = match connect::decode(&bytes) {
        Ok(message) => message,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = message.validate() {
        return e.into_response();
    }
    let mut request = Request::from_parts(parts, Body::empty());
    request.extensions_mut().insert(Decoded(message));
    next.run(request).await
}
