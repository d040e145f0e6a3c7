//! Publishing events: the envelope, serialized once, and the Redis PUBLISH that carries it.
//!
//! The envelope `{"id","subject","ts","sub","origin","tenant"?,"data"}` is built here and is the
//! exact text every subscriber receives: the gateway never re-encodes it on the way out. `data` is
//! embedded as the raw JSON the client sent (validated, not re-serialized). Redis down or slow →
//! 503 `unavailable`. The gateway publishes what clients post (`origin: "client"`); the messages
//! service publishes what it stored (`origin: "messages"`).
//!
//! What must not break: `origin` comes from the `Publisher` (fixed when the service builds it),
//! never from a request; a tenant's event (`tenant: Some`) goes out on the tenant-scoped Redis
//! subject (`call.{state}` → `call.{tenant}.{state}`, see `subject::tenant_subject`) while the
//! envelope keeps the subject clients asked for.

use std::time::Duration;

use metrics::{Counter, counter, describe_counter};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::ApiError;
use crate::config::{ConfigError, Lookup};
use crate::subject;

#[derive(Serialize)]
struct Envelope<'a> {
    id: Uuid,
    subject: &'a str,
    ts: u64,
    sub: &'a str,
    origin: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<Uuid>,
    data: &'a RawValue,
}

/// What a publish answers with (202).
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub id: Uuid,
    pub subject: String,
}

/// Publishes envelopes on one multiplexed, self-reconnecting Redis connection.
#[derive(Clone)]
pub struct Publisher {
    connection: ConnectionManager,
    prefix: String,
    origin: &'static str,
    timeout: Duration,
    published: Counter,
    failed: Counter,
}

impl Publisher {
    /// Connects lazily: the service starts (and reports not ready) while Redis is down. Its
    /// counters are `{service}_events_published_total` and `{service}_publish_failures_total`;
    /// every envelope it sends says `"origin": origin`.
    pub fn new(
        service: &str,
        origin: &'static str,
        redis_url: &str,
        prefix: String,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let published = format!("{service}_events_published_total");
        let failed = format!("{service}_publish_failures_total");
        describe_counter!(published.clone(), "Events published to Redis.");
        describe_counter!(
            failed.clone(),
            "Publishes that failed because Redis failed or was too slow."
        );
        let client = redis::Client::open(redis_url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        Ok(Self {
            connection: ConnectionManager::new_lazy_with_config(client, config)?,
            prefix,
            origin,
            timeout,
            published: counter!(published),
            failed: counter!(failed),
        })
    }

    /// Publishes `data` serialized as JSON (for services publishing their own records); a
    /// tenant's event goes out on the tenant's subject (see the module doc).
    pub async fn publish_value<T: Serialize>(
        &self,
        subject: &str,
        tenant: Option<Uuid>,
        publisher: &str,
        data: &T,
    ) -> Result<Accepted, ApiError> {
        let raw = serde_json::value::to_raw_value(data).map_err(ApiError::internal)?;
        self.publish(subject, tenant, publisher, &raw).await
    }

    /// Wraps `data` in an envelope and publishes it on `subject` (on the tenant's subject when
    /// `tenant` is given).
    pub async fn publish(
        &self,
        subject: &str,
        tenant: Option<Uuid>,
        publisher: &str,
        data: &RawValue,
    ) -> Result<Accepted, ApiError> {
        let id = Uuid::new_v4();
        let envelope = serde_json::to_string(&Envelope {
            id,
            subject,
            ts: now_millis(),
            sub: publisher,
            origin: self.origin,
            tenant,
            data,
        })
        .map_err(ApiError::internal)?;
        let channel = match tenant {
            Some(tenant) => format!(
                "{}{}",
                self.prefix,
                subject::tenant_subject(subject, tenant)
            ),
            None => format!("{}{}", self.prefix, subject),
        };
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("PUBLISH");
        command.arg(&channel).arg(envelope);
        let publish = command.query_async::<i64>(&mut connection);
        match tokio::time::timeout(self.timeout, publish).await {
            Ok(Ok(_receivers)) => {
                self.published.increment(1);
                Ok(Accepted {
                    id,
                    subject: subject.to_string(),
                })
            }
            Ok(Err(e)) => {
                self.failed.increment(1);
                Err(ApiError::unavailable(format!(
                    "redis is unavailable: {}",
                    e.kind_description()
                )))
            }
            Err(_) => {
                self.failed.increment(1);
                Err(ApiError::unavailable("redis did not answer in time"))
            }
        }
    }

    /// PING, for `/ready`.
    pub async fn ping(&self) -> Result<(), String> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// `PUBSUB_PREFIX`: prepended to every Redis channel name, so stacks and tests can share a Redis.
/// At most 64 of `[A-Za-z0-9_.:-]`.
pub fn prefix_from_lookup(env: &Lookup) -> Result<String, ConfigError> {
    let prefix = env.string("PUBSUB_PREFIX", "");
    // Ends in `:` (or is empty): no subject contains one, so a channel of another stack on the
    // same Redis can never read as a subject of this one (the gateway's dispatcher relies on it).
    let valid = prefix.len() <= 64
        && (prefix.is_empty() || prefix.ends_with(':'))
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
    if !valid {
        return Err(ConfigError {
            variable: "PUBSUB_PREFIX".into(),
            reason: format!(
                "{prefix:?} must be empty or at most 64 of [A-Za-z0-9_.:-] ending in ':' (e.g. \"stack-2:\")"
            ),
        });
    }
    Ok(prefix)
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Redis's error kinds, without the connection details.
trait KindDescription {
    fn kind_description(&self) -> String;
}

impl KindDescription for redis::RedisError {
    fn kind_description(&self) -> String {
        if self.is_connection_refusal() {
            "connection refused".into()
        } else if self.is_timeout() {
            "timed out".into()
        } else if self.is_connection_dropped() || self.is_io_error() {
            "connection lost".into()
        } else {
            format!("{:?}", self.kind())
        }
    }
}
