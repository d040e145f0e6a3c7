//! Postgres for every service that has one: its settings, the pool, the database created if
//! missing, migrations under the advisory lock, the pool gauge, and how database failures become
//! API errors.
//!
//! A failure to reach Postgres (refused, pool exhausted past `DB_ACQUIRE_TIMEOUT_MS`, connection
//! lost) is the dependency's fault: 503 `unavailable`, never a 500. Only a query the code got wrong
//! is `internal`.

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use metrics::gauge;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgPool};

use crate::ApiError;
use crate::config::{ConfigError, Lookup};
use crate::health::Probe;
use crate::server::Shutdown;

/// `migrations/` at the workspace root, embedded at build time: one schema for the stack.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// A service's Postgres settings.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// `DATABASE_URL`.
    pub url: String,
    /// Apply `migrations/` at start under Postgres's advisory lock (`MIGRATE`, default true).
    pub migrate: bool,
    /// Postgres connections in the pool (`DB_POOL_MAX`, default `pool_max_default`).
    pub pool_max: u32,
    /// How long a request waits for a pooled connection before 503 (`DB_ACQUIRE_TIMEOUT_MS`).
    pub acquire_timeout: Duration,
    /// How long start-up waits for an unreachable Postgres before giving up (`DB_START_TIMEOUT_SECS`).
    pub start_timeout: Duration,
}

impl DbConfig {
    pub fn from_lookup(env: &Lookup, pool_max_default: u32) -> Result<Self, ConfigError> {
        Ok(Self {
            url: env.url(
                "DATABASE_URL",
                "postgres://postgres@localhost:5432/stormstack",
                &["postgres", "postgresql"],
            )?,
            migrate: env.parse("MIGRATE", true)?,
            pool_max: env.bounded("DB_POOL_MAX", pool_max_default, 1, 1000)?,
            acquire_timeout: Duration::from_millis(env.bounded(
                "DB_ACQUIRE_TIMEOUT_MS",
                2000u64,
                1,
                600_000,
            )?),
            start_timeout: Duration::from_secs(env.bounded(
                "DB_START_TIMEOUT_SECS",
                30u64,
                0,
                3600,
            )?),
        })
    }
}

/// [`connect`], and the pool's gauge sampled until `shutdown`: what every service with a database
/// does at start.
pub async fn connect_watched(config: &DbConfig, shutdown: &Shutdown) -> anyhow::Result<PgPool> {
    let pool = connect(config).await?;
    watch_pool(pool.clone(), shutdown.clone());
    Ok(pool)
}

/// Creates the database if it is missing, applies migrations (unless `MIGRATE=false`) and returns
/// the pool. Postgres still starting is waited for (bounded); anything else fails start-up.
pub async fn connect(config: &DbConfig) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = config
        .url
        .parse()
        .map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
    let deadline = tokio::time::Instant::now() + config.start_timeout;
    let mut backoff = Duration::from_millis(100);
    loop {
        match ensure_database(&options).await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() < deadline && is_unreachable(&e) => {
                tracing::warn!(error = %e, "postgres not reachable yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => anyhow::bail!("cannot prepare the database: {e}"),
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(config.pool_max)
        .acquire_timeout(config.acquire_timeout)
        .connect_lazy_with(options);
    if config.migrate {
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("migrations failed: {e}"))?;
    }
    Ok(pool)
}

/// `CREATE DATABASE` through the `postgres` maintenance database when the target is missing. Two
/// services starting at once may both try: the loser's "already exists" is success.
async fn ensure_database(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let name = options.get_database().unwrap_or("postgres").to_string();
    if let Ok(connection) = options.connect().await {
        return connection.close().await;
    }
    let mut admin = options.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        // The name is quoted as an identifier: it cannot end the statement.
        match sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
            .execute(&mut admin)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created the database"),
            // 42P04 "already exists"; 23505 when the other CREATE DATABASE was still in flight.
            Err(e) if matches!(sqlstate(&e).as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => return Err(e),
        }
    }
    admin.close().await?;
    // The target must now accept connections.
    options.connect().await?.close().await
}

/// `/ready`'s Postgres check: one `SELECT 1` through the pool.
pub struct PostgresProbe(pub PgPool);

impl Probe for PostgresProbe {
    fn name(&self) -> &'static str {
        "postgres"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        async move {
            sqlx::query("SELECT 1")
                .execute(&self.0)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        .boxed()
    }
}

/// Samples the pool's size every second into `db_pool_connections{state}` until shutdown.
pub fn watch_pool(pool: PgPool, shutdown: Shutdown) {
    metrics::describe_gauge!(
        "db_pool_connections",
        "Postgres pool connections by state (in_use, idle)."
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.token.cancelled() => break,
                _ = tick.tick() => {
                    let idle = pool.num_idle() as f64;
                    gauge!("db_pool_connections", "state" => "idle").set(idle);
                    gauge!("db_pool_connections", "state" => "in_use").set(f64::from(pool.size()) - idle);
                }
            }
        }
    });
}

/// Refused, reset, timed out or still starting: worth waiting for.
pub fn is_unreachable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)
        // 57P03: the database system is starting up.
        || sqlstate(e).as_deref() == Some("57P03")
}

/// The SQLSTATE of a database error, if it is one.
pub fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// A database failure as the API reports it.
pub fn api_error(e: sqlx::Error) -> ApiError {
    match &e {
        sqlx::Error::PoolTimedOut => {
            ApiError::unavailable("the database is busy: no connection free in time")
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            ApiError::unavailable("the database is unavailable")
        }
        // 08xxx connection exceptions, 57P0x admin shutdown / crash / cannot connect now, 53300 too many connections.
        _ if sqlstate(&e)
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300") =>
        {
            ApiError::unavailable("the database is unavailable")
        }
        _ => ApiError::internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaching_the_database_is_a_503_and_a_bad_query_a_500() {
        assert_eq!(api_error(sqlx::Error::PoolTimedOut).status.as_u16(), 503);
        assert_eq!(api_error(sqlx::Error::PoolClosed).status.as_u16(), 503);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(api_error(sqlx::Error::Io(refused)).status.as_u16(), 503);
        let bug = api_error(sqlx::Error::ColumnNotFound("nope".into()));
        assert_eq!((bug.status.as_u16(), bug.code), (500, "internal"));
        assert!(!bug.message.contains("nope"));
    }

    #[tokio::test]
    async fn server_side_connection_errors_are_503() {
        // Both sides of the rule with the server's own errors: a syntax error (42601) is our bug,
        // "terminating connection due to administrator command" (57P01) is the database's state.
        let Ok(pool) = PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres").await else {
            panic!("the tests need the machine's Postgres on 127.0.0.1:5432");
        };
        let syntax = sqlx::query("SELEC 1").execute(&pool).await.unwrap_err();
        assert_eq!(sqlstate(&syntax).as_deref(), Some("42601"));
        assert_eq!(api_error(syntax).status.as_u16(), 500);
        let shutdown = sqlx::query("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '57P01'; END $$")
            .execute(&pool)
            .await
            .unwrap_err();
        assert_eq!(api_error(shutdown).status.as_u16(), 503);
        pool.close().await;
    }
}
