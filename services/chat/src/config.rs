//! The chat service's settings (SPEC "Chat service"), read once at start.

use std::time::Duration;

use common::config::{CommonConfig, ConfigError, Lookup};
use common::db::DbConfig;

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub db: DbConfig,
    pub redis_url: String,
    pub amqp_url: String,
    pub jwt_secret: String,
    /// The queue messages are published to (`CHAT_QUEUE`, default `chat.messages`); the writer
    /// must consume the same one.
    pub queue: String,
    /// Signs every published message (`QUEUE_SIGNING_KEY`, required; the writer holds the same).
    pub queue_key: queue::SigningKey,
    /// Confirm-mode channels on the one broker connection (`AMQP_CHANNELS`, default 8).
    pub amqp_channels: usize,
    /// How long a publish waits for the broker's confirm before 503 (`PUBLISH_TIMEOUT_MS`).
    pub publish_timeout: Duration,
    /// Most writes in one published message (`PUBLISH_BATCH_MAX`, default 64; 1 publishes every
    /// write alone, the shape writers older than batches read).
    pub publish_batch_max: usize,
    /// Prepended to the chat-number keys on Redis (`REDIS_KEY_PREFIX`, default `storm:chat:`).
    pub redis_key_prefix: String,
    /// Lifetime of the token `POST /api/v1/users` returns (`USER_TOKEN_TTL_SECS`, default a day).
    pub user_token_ttl: Duration,
    /// Memory for read pages served without a query (`READ_CACHE_MB`, default 64; 0 turns the
    /// read cache off: every read queries Postgres).
    pub read_cache_bytes: u64,
    /// Longest a cached page is served (`READ_CACHE_TTL_MS`, default 5000): a bound for anything
    /// the commit notifications do not cover.
    pub read_cache_ttl: Duration,
}

impl Config {
    pub fn from_lookup(env: &Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_lookup(env, ":8082", ":6062")?,
            db: DbConfig::from_lookup(env, default_pool_max())?,
            redis_url: env.url("REDIS_URL", "redis://127.0.0.1:6379", &["redis", "rediss"])?,
            amqp_url: env.url(
                "AMQP_URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                &["amqp", "amqps"],
            )?,
            jwt_secret: env.secret("JWT_SECRET")?,
            queue: queue::queue_name(env)?,
            queue_key: queue::signing_key(env)?,
            amqp_channels: env.bounded("AMQP_CHANNELS", 8usize, 1, 256)?,
            publish_timeout: Duration::from_millis(env.bounded(
                "PUBLISH_TIMEOUT_MS",
                5000u64,
                10,
                600_000,
            )?),
            publish_batch_max: env.bounded("PUBLISH_BATCH_MAX", 64usize, 1, 1000)?,
            redis_key_prefix: env.string("REDIS_KEY_PREFIX", "storm:chat:"),
            user_token_ttl: Duration::from_secs(env.bounded(
                "USER_TOKEN_TTL_SECS",
                86_400u64,
                60,
                31_536_000,
            )?),
            read_cache_bytes: env.bounded("READ_CACHE_MB", 64u64, 0, 65_536)? << 20,
            read_cache_ttl: Duration::from_millis(env.bounded(
                "READ_CACHE_TTL_MS",
                5000u64,
                1,
                3_600_000,
            )?),
        })
    }
}

/// `DB_POOL_MAX` unless set: twice the cores. The chat service's queries are short, and measured
/// at the S4 knee on 2 cores (BASELINES.md, S4 notes) 20 busy backends queued behind each other:
/// read p99 47 ms (median of 3) with 20 connections, 16 ms with 4, at the same rates.
pub fn default_pool_max() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cores).clamp(2, 1000) as u32
}
