//! The logger: one structured access-log line per call — procedure, listener, status, duration and
//! request id — written when the response head is ready (a unary reply is complete by then).
//!
//! The line goes through the process's `tracing` subscriber (JSON on stderr by default), so its
//! cost includes formatting and the write; `RUST_LOG=warn` silences it.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use common::server::REQUEST_ID;

/// Middleware: `from_fn_with_state(listener_name, access_log)`.
pub async fn access_log(
    State(listener): State<&'static str>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let procedure = request.uri().path().to_owned();
    let request_id = request.headers().get(REQUEST_ID).cloned();
    let response = next.run(request).await;
    let request_id = request_id
        .as_ref()
        .or_else(|| response.headers().get(REQUEST_ID))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info!(
        target: "access",
        listener,
        procedure = %procedure,
        status = response.status().as_u16(),
        duration_us = started.elapsed().as_micros() as u64,
        request_id,
        "call"
    );
    response
}
