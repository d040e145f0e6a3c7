//! `/health` (liveness), `/ready` (every dependency answers) and `/metrics`, shared by all services.
//!
//! Readiness runs each service's probes concurrently, each bounded by a timeout, and answers 503
//! `unavailable` naming every failed dependency — by name only: a probe's error text (host names,
//! user names, driver messages) goes to the log, not to whoever can reach `/ready`. These routes
//! bypass auth and admission control: an orchestrator must be able to ask while the service
//! sheds load.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::{BoxFuture, join_all};
use serde_json::json;

use crate::error::ApiError;

/// How long one dependency may take to answer a readiness probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A named dependency check, e.g. `("redis", PING)`.
pub trait Probe: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

#[derive(Clone, Default)]
pub struct Probes(Arc<Vec<Box<dyn Probe>>>);

impl Probes {
    pub fn new(probes: Vec<Box<dyn Probe>>) -> Self {
        Self(Arc::new(probes))
    }

    /// Runs every probe; `Err` lists the failed ones as `(name, reason)`.
    pub async fn check_all(&self) -> Result<Vec<&'static str>, Vec<(&'static str, String)>> {
        let results = join_all(self.0.iter().map(|probe| async move {
            let outcome = match tokio::time::timeout(PROBE_TIMEOUT, probe.check()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis())),
            };
            (probe.name(), outcome)
        }))
        .await;
        if results.iter().all(|(_, r)| r.is_ok()) {
            return Ok(results.into_iter().map(|(name, _)| name).collect());
        }
        Err(results
            .into_iter()
            .filter_map(|(name, r)| r.err().map(|e| (name, e)))
            .collect())
    }
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn ready(State(probes): State<Probes>) -> Response {
    match probes.check_all().await {
        Ok(names) => axum::Json(json!({"status": "ready", "dependencies": names})).into_response(),
        Err(failed) => {
            for (name, reason) in &failed {
                tracing::warn!(dependency = name, error = %reason, "readiness probe failed");
            }
            let names: Vec<&str> = failed.iter().map(|(name, _)| *name).collect();
            ApiError::unavailable(format!(
                "not ready: {} unavailable (details in the service log)",
                names.join(", ")
            ))
            .into_response()
        }
    }
}

/// `/health`, `/ready`, `/metrics` as a router to merge into the service's own.
pub fn routes(probes: Probes) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(probes)
        .route("/metrics", get(crate::metrics::render))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Down;

    impl Probe for Down {
        fn name(&self) -> &'static str {
            "postgres"
        }
        fn check(&self) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(async {
                Err("password authentication failed for user \"storm\" at db.internal:5432".into())
            })
        }
    }

    #[tokio::test]
    async fn ready_names_the_dependency_without_its_error_text() {
        let response = ready(State(Probes::new(vec![Box::new(Down)]))).await;
        assert_eq!(response.status(), 503);
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("postgres"), "{message}");
        for leaked in ["password", "storm", "db.internal", "5432"] {
            assert!(!message.contains(leaked), "{leaked} leaked: {message}");
        }
    }
}
