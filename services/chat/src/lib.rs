//! The stormstack chat service (S4): users, applications, numbered chats and numbered messages.
//! Writes of messages go through RabbitMQ (202 after the broker's confirm) to the writer, which
//! stores them in Postgres; everything else reads and writes Postgres directly. `router` shows
//! every route; `build` makes the `Application` the same way for `main` and tests.

pub mod batching;
pub mod broker;
pub mod config;
pub mod directory;
pub mod numbering;
pub mod read_cache;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use metrics::{describe_counter, describe_gauge, describe_histogram};
use sqlx::PgPool;

use common::auth::JwtKeys;
use common::db::{self, PostgresProbe};
use common::health::{self, Probe, Probes};
pub use common::server::Application;
use common::server::Shutdown;

pub use config::Config;

use broker::Broker;
use directory::Directory;
use numbering::{ChatNumbers, MessageNumbers};
use read_cache::ReadCache;
use routes::chats::ChatFields;

/// Largest request body: a 4,096-character message is at most 16 KiB of UTF-8, plus JSON.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Everything a handler needs, behind one `Arc` (axum clones the state per request).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub pool: PgPool,
    pub broker: Broker,
    pub keys: Arc<JwtKeys>,
    pub directory: Directory,
    pub chat_numbers: ChatNumbers,
    pub message_numbers: MessageNumbers,
    pub read_cache: Arc<ReadCache<ChatFields>>,
    pub user_token_ttl: Duration,
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

struct BrokerProbe(Broker);

impl Probe for BrokerProbe {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        async move {
            if self.0.is_connected().await {
                Ok(())
            } else {
                Err("not connected".to_string())
            }
        }
        .boxed()
    }
}

struct RedisProbe(redis::aio::ConnectionManager);

impl Probe for RedisProbe {
    fn name(&self) -> &'static str {
        "redis"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let mut redis = self.0.clone();
            redis::cmd("PING")
                .query_async::<String>(&mut redis)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        .boxed()
    }
}

/// Every route of the chat service, in one place.
pub fn router(state: AppState, probes: Probes) -> Router {
    use routes::{applications, chats, messages, users};
    let app = "/api/v1/applications/{token}";
    let api = Router::new()
        .route("/api/v1/users", post(users::create))
        .route(
            "/api/v1/applications",
            post(applications::create).get(applications::list),
        )
        .route(app, get(applications::get).patch(applications::update))
        .route(
            &format!("{app}/chats"),
            post(chats::create).get(chats::list),
        )
        .route(&format!("{app}/chats/{{number}}"), get(chats::get))
        .route(
            &format!("{app}/chats/{{number}}/messages"),
            post(messages::create).get(messages::list),
        )
        .route(
            &format!("{app}/chats/{{number}}/messages/search"),
            get(messages::search),
        )
        .route(
            &format!("{app}/chats/{{number}}/messages/{{message}}"),
            get(messages::get),
        )
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state);
    health::routes(probes).merge(api)
}

fn describe_metrics() {
    describe_counter!(
        "chat_publish_total",
        "Writes published, by outcome of the publish they went in (confirmed, not_connected, refused, in_doubt)."
    );
    describe_histogram!(
        "chat_publish_confirm_seconds",
        "Time from publish to the broker's confirm (or failure)."
    );
    describe_histogram!(
        "chat_write_stage_seconds",
        "An accepted write's time by stage: number (waiting for its message number), publish (for its batch's confirm)."
    );
    describe_histogram!(
        "chat_publish_batch_size",
        "Writes per published message (one persistent message and one confirm for all of them)."
    );
    describe_counter!(
        "chat_publish_in_doubt_total",
        "Writes sent but neither confirmed nor refused (answered 503; the broker may hold them)."
    );
    describe_gauge!(
        "chat_broker_connected",
        "1 while the broker connection is up."
    );
    describe_histogram!(
        "chat_number_batch_size",
        "Message numbers allocated per Postgres statement."
    );
    describe_counter!(
        "chat_read_cache_total",
        "Reads of a cacheable page by cache (messages, chats) and outcome (hit, miss)."
    );
    describe_gauge!(
        "chat_read_cache_live",
        "1 while the read cache hears the writer's commit notifications (and so serves pages)."
    );
    describe_counter!(
        "chat_number_collisions_total",
        "Chat numbers found taken (Redis counter behind the database) and retried."
    );
    common::metrics::register_counters(&[
        ("chat_publish_total", &[("outcome", "confirmed")]),
        ("chat_publish_total", &[("outcome", "not_connected")]),
        ("chat_publish_total", &[("outcome", "refused")]),
        ("chat_publish_total", &[("outcome", "in_doubt")]),
        ("chat_publish_in_doubt_total", &[]),
        ("chat_number_collisions_total", &[]),
        (
            "chat_read_cache_total",
            &[("cache", "messages"), ("outcome", "hit")],
        ),
        (
            "chat_read_cache_total",
            &[("cache", "messages"), ("outcome", "miss")],
        ),
        (
            "chat_read_cache_total",
            &[("cache", "chats"), ("outcome", "hit")],
        ),
        (
            "chat_read_cache_total",
            &[("cache", "chats"), ("outcome", "miss")],
        ),
    ]);
}

/// The chat process, ready to run.
pub async fn build(config: Config) -> anyhow::Result<Application> {
    common::metrics::install("chat");
    describe_metrics();
    let shutdown = Shutdown::new();
    let pool = db::connect_watched(&config.db, &shutdown).await?;
    let redis = redis::Client::open(config.redis_url.as_str())
        .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?;
    let redis = redis::aio::ConnectionManager::new_with_config(
        redis,
        redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2))),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot reach Redis at REDIS_URL: {e}"))?;
    let broker = Broker::start(
        &config.amqp_url,
        &config.queue,
        config.amqp_channels,
        config.publish_timeout,
        config.publish_batch_max,
        config.queue_key.clone(),
        shutdown.clone(),
    );
    let probes = Probes::new(vec![
        Box::new(PostgresProbe(pool.clone())),
        Box::new(RedisProbe(redis.clone())),
        Box::new(BrokerProbe(broker.clone())),
    ]);
    let read_cache = Arc::new(ReadCache::new(
        config.read_cache_bytes,
        config.read_cache_ttl,
        routes::chats::encode_page,
    ));
    if config.read_cache_bytes > 0 {
        shutdown.tasks.spawn(read_cache::listen(
            config.db.url.clone(),
            read_cache.clone(),
            shutdown.clone(),
        ));
    }
    let state = AppState(Arc::new(Shared {
        message_numbers: MessageNumbers::start(pool.clone()),
        chat_numbers: ChatNumbers::new(redis, config.redis_key_prefix.clone()),
        pool,
        broker,
        keys: Arc::new(JwtKeys::chat(config.jwt_secret.as_bytes())),
        directory: Directory::default(),
        read_cache,
        user_token_ttl: config.user_token_ttl,
    }));
    Application::bind(&config.common, router(state, probes), shutdown).await
}
