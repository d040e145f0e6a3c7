//! The messages service's settings (SPEC "Messages service"), read once at start.

use std::time::Duration;

use common::config::{CommonConfig, ConfigError, Lookup};
use common::db::DbConfig;
use common::publisher;

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub redis_url: String,
    pub jwt_secret: String,
    pub db: DbConfig,
    /// Prepended to every Redis channel name (`PUBSUB_PREFIX`), as on the gateway.
    pub pubsub_prefix: String,
    /// Bound on one Redis publish (`REDIS_TIMEOUT_MS`).
    pub redis_timeout: Duration,
}

impl Config {
    pub fn from_lookup(env: &Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_lookup(env, ":8081", ":6061")?,
            redis_url: env.url("REDIS_URL", "redis://127.0.0.1:6379", &["redis", "rediss"])?,
            jwt_secret: env.secret("JWT_SECRET")?,
            db: DbConfig::from_lookup(env, 20)?,
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
