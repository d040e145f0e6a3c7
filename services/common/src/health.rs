//! `/health` (liveness), `/ready` (every dependency answers) and `/metrics`, shared by all services.
//!
//! Readiness runs each service's probes concurrently, each bounded by a timeout, and answers 503
//! `unavailable` naming every failed dependency. These routes bypass auth and admission control:
//! an orchestrator must be able to ask while the service sheds load.

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

    /// Runs every probe; `Err` lists the failed ones as `name: reason`.
    pub async fn check_all(&self) -> Result<Vec<&'static str>, Vec<String>> {
        let results = join_all(self.0.iter().map(|probe| async move {
            let outcome = match tokio::time::timeout(PROBE_TIMEOUT, probe.check()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis())),
            };
            (probe.name(), outcome)
        }))
        .await;
        let failed: Vec<String> = results
            .iter()
            .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
            .collect();
        if failed.is_empty() {
            Ok(results.into_iter().map(|(name, _)| name).collect())
        } else {
            Err(failed)
        }
    }
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn ready(State(probes): State<Probes>) -> Response {
    match probes.check_all().await {
        Ok(names) => axum::Json(json!({"status": "ready", "dependencies": names})).into_response(),
        Err(failed) => {
            ApiError::unavailable(format!("not ready: {}", failed.join("; "))).into_response()
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
