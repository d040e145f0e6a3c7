//! The stormstack gateway: JWT-authenticated HTTP publish and WebSocket fan-out over Redis
//! pub/sub, the S0 source's drop-in routes, and the S3 worker-pool endpoints behind admission
//! control. `router` shows every route; `Application` is built the same way by `main` and tests.

pub mod config;
pub mod fanout;
pub mod publisher;
pub mod routes;
pub mod subject;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use futures_util::FutureExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use common::admission::{self, Admission};
use common::auth::JwtKeys;
use common::health::{self, Probe, Probes};
use common::server::{self, Shutdown};

pub use config::Config;
use fanout::Hub;
use publisher::Publisher;
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
    pub users: Arc<Vec<User>>,
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
    server::http_layers(open.merge(admitted))
}

/// The gateway process: bound listeners and a router, ready to run.
pub struct Application {
    listener: TcpListener,
    pprof_listener: Option<TcpListener>,
    router: Router,
    shutdown: Shutdown,
    grace: std::time::Duration,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        common::metrics::install("gateway");
        routes::ws::describe_metrics();
        let shutdown = Shutdown::new();
        let hub = Hub::start(
            &config.redis_url,
            config.pubsub_prefix.clone(),
            config.ws_send_queue,
            config.redis_timeout,
            shutdown.token.clone(),
        )?;
        let publisher = Publisher::new(
            &config.redis_url,
            config.pubsub_prefix.clone(),
            config.redis_timeout,
        )?;
        let listener = server::bind("HTTP_ADDR", config.common.http_addr).await?;
        let pprof_listener = match config.common.pprof_addr {
            Some(addr) => Some(server::bind("PPROF_ADDR", addr).await?),
            None => None,
        };
        let state = AppState::new(Shared {
            keys: Arc::new(JwtKeys::new(config.jwt_secret.as_bytes())),
            hub,
            publisher,
            admission: Admission::new(config.admission),
            ws_slots: Arc::new(Semaphore::new(config.max_ws_conns)),
            users: Arc::new(routes::s3::synthetic_users(config.users_count)),
            shutdown: shutdown.clone(),
            config: Arc::new(config.clone()),
        });
        Ok(Self {
            listener,
            pprof_listener,
            router: router(state),
            shutdown,
            grace: config.common.shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn pprof_addr(&self) -> Option<SocketAddr> {
        self.pprof_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The handle that stops this application (signals, tests).
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        server::run(
            self.listener,
            self.router,
            self.pprof_listener,
            self.shutdown,
            self.grace,
        )
        .await
    }
}
