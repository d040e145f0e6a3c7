//! The stormstack gateway: JWT-authenticated HTTP publish and WebSocket fan-out over Redis
//! pub/sub, the S0 source's drop-in routes, and the S3 worker-pool endpoints behind admission
//! control. `router` shows every route; `build` makes the `Application` the same way for `main` and tests.

pub mod config;
pub mod fanout;
pub mod limits;
pub mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use futures_util::FutureExt;
use tokio::sync::Semaphore;

use common::admission::{self, Admission};
use common::auth::JwtKeys;
use common::health::{self, Probe, Probes};
pub use common::server::Application;
use common::server::Shutdown;
pub use common::subject;

use common::publisher::Publisher;
pub use config::Config;
use fanout::{Hub, HubConfig};
use limits::SocketLimits;
use routes::s3::User;

/// Everything a handler may need. axum clones the state for every request, so handlers share it
/// behind one `Arc` (one refcount bump per request, not one per field).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state's contents; reached through `AppState`'s `Deref`.
pub struct Shared {
    pub config: Arc<Config>,
    pub keys: Arc<JwtKeys>,
    pub hub: Arc<Hub>,
    pub publisher: Publisher,
    pub admission: Arc<Admission>,
    /// One permit per open WebSocket (`MAX_WS_CONNS`).
    pub ws_slots: Arc<Semaphore>,
    /// Open WebSockets per user and per client IP (`WS_MAX_SOCKETS_PER_USER`, `_PER_IP`).
    pub socket_limits: Arc<SocketLimits>,
    pub users: Arc<Vec<User>>,
    /// The messages service, behind the proxied channel routes.
    pub upstream: routes::proxy::Upstream,
    pub shutdown: Shutdown,
}

impl Shared {
    pub fn ws_connections(&self) -> usize {
        self.config.max_ws_conns - self.ws_slots.available_permits()
    }
}

impl FromRef<AppState> for Arc<JwtKeys> {
    fn from_ref(state: &AppState) -> Self {
        state.keys.clone()
    }
}

/// Readiness: Redis answers PING.
struct RedisProbe(Publisher);

impl Probe for RedisProbe {
    fn name(&self) -> &'static str {
        "redis"
    }
    fn check(&self) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        self.0.ping().boxed()
    }
}

/// Every route of the gateway, in one place.
pub fn router(state: AppState) -> Router {
    let probes = Probes::new(vec![Box::new(RedisProbe(state.publisher.clone()))]);
    let admitted = Router::new()
        .route("/api/v1/events/{subject}", post(routes::events::publish_v1))
        .route("/api/v1/ws", get(routes::ws::subscribe_v1))
        .route(
            "/api/v1/channels/{channel_id}/ws",
            get(routes::ws::channel_stream),
        )
        .route(
            "/api/v1/channels/{channel_id}/messages",
            get(routes::proxy::channel_messages).post(routes::proxy::channel_messages),
        )
        .route("/api/users", get(routes::s3::users))
        .route("/api/echo", post(routes::s3::echo))
        .route("/api/metrics", get(routes::s3::metrics))
        // The S0 source's routes, so its own k6 script runs unchanged.
        .route("/publish", post(routes::events::publish_s0))
        .route("/ws", get(routes::ws::subscribe_s0))
        .layer(DefaultBodyLimit::max(state.config.max_event_bytes))
        .route_layer(from_fn_with_state(
            state.admission.clone(),
            admission::admit,
        ))
        .with_state(state);
    let open = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(health::routes(probes));
    open.merge(admitted)
}

/// The gateway process, ready to run: `main` and the tests both build it here.
pub async fn build(config: Config) -> anyhow::Result<Application> {
    common::metrics::install("gateway");
    routes::ws::describe_metrics();
    let shutdown = Shutdown::new();
    let hub = Hub::start(
        &config.redis_url,
        config.pubsub_prefix.clone(),
        HubConfig {
            send_queue: config.ws_send_queue,
            fanout_queue: config.fanout_queue,
            max_patterns: config.ws_max_patterns,
            redis_timeout: config.redis_timeout,
        },
        shutdown.token.clone(),
    )?;
    // What clients post through the publish routes: `"origin":"client"` in every envelope.
    let publisher = Publisher::new(
        "gateway",
        "client",
        &config.redis_url,
        config.pubsub_prefix.clone(),
        config.redis_timeout,
    )?;
    let state = AppState::new(Shared {
        keys: Arc::new(JwtKeys::new(config.jwt_secret.as_bytes())),
        hub,
        publisher,
        admission: Admission::new(config.admission),
        ws_slots: Arc::new(Semaphore::new(config.max_ws_conns)),
        socket_limits: SocketLimits::new(
            config.ws_max_sockets_per_user,
            config.ws_max_sockets_per_ip,
        ),
        users: Arc::new(routes::s3::synthetic_users(config.users_count)),
        upstream: routes::proxy::Upstream::new(&config.messages_url, config.upstream_timeout)?,
        shutdown: shutdown.clone(),
        config: Arc::new(config.clone()),
    });
    Application::bind(&config.common, router(state), shutdown).await
}
