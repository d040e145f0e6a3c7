//! The stormstack messages service: channel messages, the call state machine and call reporting
//! on Postgres, with every stored message and call event published over Redis for the gateway's
//! WebSockets. `router` shows every route; `build` makes the `Application` the same way for
//! `main` and tests.

pub mod calls;
pub mod config;
pub mod reporting;
pub mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use metrics::{counter, describe_counter};
use serde::Serialize;
use sqlx::PgPool;

use common::auth::JwtKeys;
use common::db::{self, PostgresProbe};
use common::health::{self, Probe, Probes};
use common::publisher::Publisher;
pub use common::server::Application;
use common::server::Shutdown;

pub use config::Config;

/// Largest request body: a 4,096-character message is at most 16 KiB of UTF-8, plus JSON.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Everything a handler needs, behind one `Arc` (axum clones the state per request).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub pool: PgPool,
    pub publisher: Publisher,
    pub keys: Arc<JwtKeys>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<AppState> for Arc<JwtKeys> {
    fn from_ref(state: &AppState) -> Self {
        state.keys.clone()
    }
}

impl Shared {
    /// Publishes a stored record. The record is already committed, so a Redis failure costs
    /// only its live delivery: counted and logged, not the request's failure.
    pub async fn publish<T: Serialize>(&self, subject: &str, publisher: &str, data: &T) {
        self.publish_for_tenant(subject, None, publisher, data)
            .await
    }

    /// [`Shared::publish`] for a tenant's event: out on the tenant's Redis subject
    /// (`call.{state}` → `call.{tenant}.{state}`), the envelope carrying `"tenant"`.
    pub async fn publish_for_tenant<T: Serialize>(
        &self,
        subject: &str,
        tenant: Option<uuid::Uuid>,
        publisher: &str,
        data: &T,
    ) {
        if let Err(e) = self
            .publisher
            .publish_value(subject, tenant, publisher, data)
            .await
        {
            counter!("messages_live_delivery_lost_total").increment(1);
            tracing::warn!(subject, error = %e, "stored but not published");
        }
    }
}

struct RedisProbe(Publisher);

impl Probe for RedisProbe {
    fn name(&self) -> &'static str {
        "redis"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        self.0.ping().boxed()
    }
}

/// Every route of the messages service, in one place.
pub fn router(state: AppState) -> Router {
    let probes = Probes::new(vec![
        Box::new(PostgresProbe(state.pool.clone())),
        Box::new(RedisProbe(state.publisher.clone())),
    ]);
    let api = Router::new()
        .route(
            "/api/v1/channels/{channel_id}/messages",
            post(routes::channels::post).get(routes::channels::list),
        )
        .route("/api/v1/demo/events/call", post(routes::calls::post_event))
        .route("/api/v1/reporting/metrics", get(routes::reporting::metrics))
        .route("/api/v1/reporting/calls", get(routes::reporting::calls))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state);
    health::routes(probes).merge(api)
}

fn describe_metrics() {
    describe_counter!(
        "messages_live_delivery_lost_total",
        "Stored messages and call events that could not be published to Redis."
    );
    describe_counter!(
        "messages_call_events_total",
        "Call-state events by the state they asked for and what the state machine did: transition \
         (stored, published), repeat (already in that state, nothing changed), conflict (409), \
         invalid (another 4xx) or error (the database failed)."
    );
    common::metrics::register_counters(&[("messages_live_delivery_lost_total", &[])]);
    routes::calls::register_metrics();
}

/// The messages process, ready to run.
pub async fn build(config: Config) -> anyhow::Result<Application> {
    common::metrics::install("messages");
    describe_metrics();
    let shutdown = Shutdown::new();
    let pool = db::connect_watched(&config.db, &shutdown).await?;
    let publisher = Publisher::new(
        "messages",
        "messages",
        &config.redis_url,
        config.pubsub_prefix.clone(),
        config.redis_timeout,
    )?;
    let state = AppState(Arc::new(Shared {
        pool,
        publisher,
        keys: Arc::new(JwtKeys::new(config.jwt_secret.as_bytes())),
    }));
    Application::bind(&config.common, router(state), shutdown).await
}
