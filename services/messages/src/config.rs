//! The messages service's settings (SPEC "Messages service"), read once at start.

use std::time::Duration;

use common::config::{CommonConfig, ConfigError, Lookup};
use common::publisher;

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub database_url: String,
    pub redis_url: String,
    pub jwt_secret: String,
    /// Apply `migrations/` at start under Postgres's advisory lock (`MIGRATE`, default true).
    pub migrate: bool,
    /// Postgres connections in the pool (`DB_POOL_MAX`, default 20).
    pub db_pool_max: u32,
    /// How long a request waits for a pooled connection before 503 (`DB_ACQUIRE_TIMEOUT_MS`).
    pub db_acquire_timeout: Duration,
    /// How long start-up waits for an unreachable Postgres before giving up (`DB_START_TIMEOUT_SECS`).
    pub db_start_timeout: Duration,
    /// Prepended to every Redis channel name (`PUBSUB_PREFIX`), as on the gateway.
    pub pubsub_prefix: String,
    /// Bound on one Redis publish (`REDIS_TIMEOUT_MS`).
    pub redis_timeout: Duration,
}

impl Config {
    pub fn from_lookup(env: &Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_lookup(env, ":8081", ":6061")?,
            database_url: env.url(
                "DATABASE_URL",
                "postgres://postgres@localhost:5432/stormstack",
                &["postgres", "postgresql"],
            )?,
            redis_url: env.url("REDIS_URL", "redis://127.0.0.1:6379", &["redis", "rediss"])?,
            jwt_secret: env.required("JWT_SECRET")?,
            migrate: env.parse("MIGRATE", true)?,
            db_pool_max: env.bounded("DB_POOL_MAX", 20u32, 1, 1000)?,
            db_acquire_timeout: Duration::from_millis(env.bounded(
                "DB_ACQUIRE_TIMEOUT_MS",
                2000u64,
                1,
                600_000,
            )?),
            db_start_timeout: Duration::from_secs(env.bounded(
                "DB_START_TIMEOUT_SECS",
                30u64,
                0,
                3600,
            )?),
            pubsub_prefix: publisher::prefix_from_lookup(env)?,
            redis_timeout: Duration::from_millis(env.bounded(
                "REDIS_TIMEOUT_MS",
                2000u64,
                10,
                600_000,
            )?),
        })
    }
}
