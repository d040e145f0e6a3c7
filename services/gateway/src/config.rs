//! The gateway's settings (SPEC "Gateway"), read once at start through `common::config::Lookup`.

use std::time::Duration;

use common::admission::AdmissionConfig;
use common::config::{CommonConfig, ConfigError, Lookup};

use common::publisher;

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub redis_url: String,
    pub jwt_secret: String,
    pub admission: AdmissionConfig,
    /// Largest event body accepted by the publish routes (`MAX_EVENT_BYTES`, 64 KiB).
    pub max_event_bytes: usize,
    /// Frames one socket may have queued before it is closed as a slow consumer (`WS_SEND_QUEUE`).
    pub ws_send_queue: usize,
    /// Open WebSockets allowed at once (`MAX_WS_CONNS`); the next upgrade gets 503.
    pub max_ws_conns: usize,
    /// Subjects and patterns one socket may hold (`WS_MAX_SUBSCRIPTIONS`).
    pub ws_max_subscriptions: usize,
    /// Open WebSockets one user (token `sub`, per tenant) may hold (`WS_MAX_SOCKETS_PER_USER`).
    pub ws_max_sockets_per_user: usize,
    /// Open WebSockets one client IP may hold (`WS_MAX_SOCKETS_PER_IP`).
    pub ws_max_sockets_per_ip: usize,
    /// Distinct glob patterns (Redis PSUBSCRIBEs) this process holds at once (`WS_MAX_PATTERNS`):
    /// Redis matches every pattern on every PUBLISH, so patterns cost every publisher.
    pub ws_max_patterns: usize,
    /// Bound of the Redis → dispatcher channel, in messages (`FANOUT_QUEUE`); past it messages
    /// are dropped and counted (see `fanout`).
    pub fanout_queue: usize,
    pub ws_ping_interval: Duration,
    pub ws_idle_timeout: Duration,
    /// Synthetic users in `GET /api/users` (`USERS_COUNT`).
    pub users_count: usize,
    /// Prepended to every Redis channel name (`PUBSUB_PREFIX`): lets stacks and tests share a Redis.
    pub pubsub_prefix: String,
    /// Bound on one Redis command (publish, subscribe) (`REDIS_TIMEOUT_MS`).
    pub redis_timeout: Duration,
    /// The messages service, for the proxied channel routes (`MESSAGES_URL`).
    pub messages_url: String,
    /// How long the proxy waits for the messages service's answer before 504 (`UPSTREAM_TIMEOUT_MS`).
    pub upstream_timeout: Duration,
}

impl Config {
    pub fn from_lookup(env: &Lookup) -> Result<Self, ConfigError> {
        let mut config = Self {
            common: CommonConfig::from_lookup(env, ":8080", ":6060")?,
            redis_url: env.url("REDIS_URL", "redis://127.0.0.1:6379", &["redis", "rediss"])?,
            jwt_secret: env.secret("JWT_SECRET")?,
            admission: AdmissionConfig::from_lookup(env)?,
            max_event_bytes: env.bounded("MAX_EVENT_BYTES", 64 * 1024, 1, 16 * 1024 * 1024)?,
            ws_send_queue: env.bounded("WS_SEND_QUEUE", 1024, 1, 1_000_000)?,
            max_ws_conns: env.bounded("MAX_WS_CONNS", 50_000, 1, 10_000_000)?,
            ws_max_subscriptions: env.bounded("WS_MAX_SUBSCRIPTIONS", 64, 1, 10_000)?,
            ws_max_sockets_per_user: env.bounded("WS_MAX_SOCKETS_PER_USER", 256, 1, 10_000_000)?,
            ws_max_sockets_per_ip: env.bounded("WS_MAX_SOCKETS_PER_IP", 2048, 1, 10_000_000)?,
            ws_max_patterns: env.bounded("WS_MAX_PATTERNS", 1024, 1, 1_000_000)?,
            fanout_queue: env.bounded("FANOUT_QUEUE", 65_536, 1, 16_777_216)?,
            ws_ping_interval: Duration::from_secs(env.bounded("WS_PING_SECS", 25, 1, 3600)?),
            ws_idle_timeout: Duration::from_secs(env.bounded("WS_IDLE_SECS", 60, 1, 3600)?),
            users_count: env.bounded("USERS_COUNT", 100, 0, 100_000)?,
            pubsub_prefix: publisher::prefix_from_lookup(env)?,
            redis_timeout: Duration::from_millis(env.bounded(
                "REDIS_TIMEOUT_MS",
                2000,
                10,
                600_000,
            )?),
            messages_url: env.url("MESSAGES_URL", "http://127.0.0.1:8081", &["http"])?,
            upstream_timeout: Duration::from_millis(env.bounded(
                "UPSTREAM_TIMEOUT_MS",
                5000,
                1,
                600_000,
            )?),
        };
        // An event is read whole before admission takes a slot (under BODY_READ_TIMEOUT_MS), up to
        // its own limit: a trickled event never holds a worker.
        config.common.max_buffered_body = config.max_event_bytes;
        Ok(config)
    }
}
