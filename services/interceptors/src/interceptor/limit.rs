//! The concurrency limit: at most `INTERCEPTORS_MAX_CONCURRENCY` calls run at once on the full
//! chain; the next is answered `resource_exhausted` at once instead of queueing (tower's
//! `ConcurrencyLimitLayer` queues without bound, tower#793).
//!
//! One `ConcurrencyLimit` per listener, built once and cloned into the layer: axum's
//! `Router::layer` wraps each route separately, so a limit built inside it would be per route.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::connect::{Code, ConnectError};

#[derive(Clone, Debug)]
pub struct ConcurrencyLimit {
    permits: Arc<Semaphore>,
    max: usize,
}

impl ConcurrencyLimit {
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

/// Middleware: `from_fn_with_state(limit, limit_concurrency)`.
pub async fn limit_concurrency(
    State(limit): State<ConcurrencyLimit>,
    request: Request,
    next: Next,
) -> Response {
    match limit.permits.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ConnectError::new(
            Code::ResourceExhausted,
            format!("more than {} calls in flight", limit.max),
        )
        .into_response(),
    }
}
