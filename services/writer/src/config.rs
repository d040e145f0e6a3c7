//! The writer's settings (SPEC "Chat service and writer"), read once at start.

use std::time::Duration;

use common::config::{CommonConfig, ConfigError, Lookup};
use common::db::DbConfig;

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub db: DbConfig,
    pub amqp_url: String,
    /// The queue to consume (`CHAT_QUEUE`, default `chat.messages`), as the chat service publishes.
    pub queue: String,
    /// Verifies every delivery (`QUEUE_SIGNING_KEY`, required; the chat service signs with it).
    pub queue_key: queue::SigningKey,
    /// Unacknowledged deliveries the broker may push ahead (`WRITER_PREFETCH`, default 2000).
    pub prefetch: u16,
    /// A batch is written when it holds this many messages (`WRITER_BATCH_SIZE`, default 500) …
    pub batch_size: usize,
    /// … or when its first message has waited this long (`WRITER_BATCH_MAX_WAIT_MS`, default 20).
    pub batch_max_wait: Duration,
    /// Longest pause between attempts while Postgres is unavailable (`WRITER_RETRY_MAX_MS`).
    pub retry_max: Duration,
}

impl Config {
    pub fn from_lookup(env: &Lookup) -> Result<Self, ConfigError> {
        let config = Self {
            common: CommonConfig::from_lookup(env, ":8083", ":6063")?,
            db: DbConfig::from_lookup(env, 4)?,
            amqp_url: env.url(
                "AMQP_URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                &["amqp", "amqps"],
            )?,
            queue: queue::queue_name(env)?,
            queue_key: queue::signing_key(env)?,
            prefetch: env.bounded("WRITER_PREFETCH", 2000u16, 1, 65_535)?,
            batch_size: env.bounded("WRITER_BATCH_SIZE", 500usize, 1, 10_000)?,
            batch_max_wait: Duration::from_millis(env.bounded(
                "WRITER_BATCH_MAX_WAIT_MS",
                20u64,
                1,
                60_000,
            )?),
            retry_max: Duration::from_millis(env.bounded(
                "WRITER_RETRY_MAX_MS",
                2000u64,
                10,
                600_000,
            )?),
        };
        if usize::from(config.prefetch) < config.batch_size {
            return Err(ConfigError {
                variable: "WRITER_PREFETCH".into(),
                reason: format!(
                    "{} is below WRITER_BATCH_SIZE {}: a batch could never fill",
                    config.prefetch, config.batch_size
                ),
            });
        }
        Ok(config)
    }
}
