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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::Router;
    use axum::body::Body;
    use axum::middleware::from_fn_with_state;
    use axum::routing::post;
    use tokio::sync::Notify;
    use tower::ServiceExt;

    use super::*;

    /// A call that holds its slot until `release`; the next is shed with `resource_exhausted`, and
    /// once the slot is free a call is admitted again.
    #[tokio::test]
    async fn a_call_beyond_the_limit_is_shed_at_once() {
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let handler = {
            let (entered, release) = (entered.clone(), release.clone());
            move |body: String| async move {
                if body == "hold" {
                    entered.notify_one();
                    release.notified().await;
                }
                body
            }
        };
        let router = Router::new()
            .route("/", post(handler))
            .layer(from_fn_with_state(
                ConcurrencyLimit::new(1),
                limit_concurrency,
            ));
        let call = |body: &'static str| {
            router
                .clone()
                .oneshot(Request::post("/").body(Body::from(body)).unwrap())
        };
        let held = tokio::spawn(call("hold"));
        entered.notified().await;
        let shed = call("next").await.unwrap();
        assert_eq!(shed.status(), 429);
        let body = axum::body::to_bytes(shed.into_body(), usize::MAX)
            .await
            .unwrap();
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error["code"], "resource_exhausted");
        release.notify_one();
        assert_eq!(held.await.unwrap().unwrap().status(), 200);
        assert_eq!(call("again").await.unwrap().status(), 200);
    }
}
