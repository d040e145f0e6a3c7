//! The error handler: whatever goes wrong below it (a panic, a deadline, a layer's own error)
//! leaves as a Connect error, never as a dropped connection or a bare 500 page.

use std::any::Any;

use axum::response::{IntoResponse, Response};
use tower::BoxError;

use crate::connect::{Code, ConnectError};

/// For `CatchPanicLayer::custom`: a panic is `internal`, with no internals in the message.
pub fn panic_to_internal(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %detail, "handler panicked");
    ConnectError::new(Code::Internal, "internal error").into_response()
}

/// For `HandleErrorLayer`: the timeout's `Elapsed` is `deadline_exceeded`; anything else `internal`.
pub async fn layer_error(error: BoxError) -> Response {
    if error.is::<tower::timeout::error::Elapsed>() {
        ConnectError::new(Code::DeadlineExceeded, "the call ran past its deadline").into_response()
    } else {
        tracing::error!(error = %error, "interceptor failed");
        ConnectError::new(Code::Internal, "internal error").into_response()
    }
}
