//! The stormstack writer (S4): consumes the chat service's queue and stores every accepted message
//! exactly once in Postgres, in batches. Its HTTP listener serves only `/health`, `/ready` and
//! `/metrics`. `build` makes the `Application` the same way for `main` and tests.

pub mod batch;
pub mod config;
pub mod consumer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use metrics::{describe_counter, describe_gauge, describe_histogram};

use common::db::{self, PostgresProbe};
use common::health::{self, Probe, Probes};
pub use common::server::Application;
use common::server::Shutdown;

pub use config::Config;

/// `/ready`'s broker check: the consumer is attached.
struct BrokerProbe(Arc<AtomicBool>);

impl Probe for BrokerProbe {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let connected = self.0.load(Ordering::Relaxed);
        async move {
            if connected {
                Ok(())
            } else {
                Err("not consuming".to_string())
            }
        }
        .boxed()
    }
}

fn describe_metrics() {
    describe_histogram!("writer_batch_size", "Deliveries per written batch.");
    describe_histogram!(
        "writer_batch_seconds",
        "From a batch's flush to its ack (write and retries included)."
    );
    describe_counter!("writer_rows_written_total", "Message rows inserted.");
    describe_counter!(
        "writer_rows_skipped_total",
        "Deliveries whose row already existed (redeliveries), not inserted again."
    );
    describe_counter!(
        "writer_redeliveries_total",
        "Deliveries the broker flagged as redelivered."
    );
    describe_counter!(
        "writer_dead_letters_total",
        "Deliveries rejected into the dead-letter queue, by reason: unsigned, bad_signature \
         (not signed with QUEUE_SIGNING_KEY), malformed (signed but not a storable version-2 \
         message), conflict ((chat_id, number) stored with another message id), rejected \
         (refused by Postgres)."
    );
    describe_counter!(
        "writer_db_retries_total",
        "Batch writes retried because Postgres was unavailable."
    );
    describe_histogram!(
        "writer_end_to_end_lag_seconds",
        "From the chat service's 202 to the row's commit."
    );
    describe_gauge!(
        "writer_broker_connected",
        "1 while consuming from the broker."
    );
    common::metrics::register_counters(&[
        ("writer_rows_written_total", &[]),
        ("writer_rows_skipped_total", &[]),
        ("writer_redeliveries_total", &[]),
        ("writer_dead_letters_total", &[("reason", "unsigned")]),
        ("writer_dead_letters_total", &[("reason", "bad_signature")]),
        ("writer_dead_letters_total", &[("reason", "malformed")]),
        ("writer_dead_letters_total", &[("reason", "conflict")]),
        ("writer_dead_letters_total", &[("reason", "rejected")]),
        ("writer_db_retries_total", &[]),
    ]);
}

/// The writer process, ready to run: the consumer starts with it and is drained on shutdown.
pub async fn build(config: Config) -> anyhow::Result<Application> {
    common::metrics::install("writer");
    describe_metrics();
    let shutdown = Shutdown::new();
    let pool = db::connect_watched(&config.db, &shutdown).await?;
    let connected = Arc::new(AtomicBool::new(false));
    let probes = Probes::new(vec![
        Box::new(PostgresProbe(pool.clone())),
        Box::new(BrokerProbe(connected.clone())),
    ]);
    shutdown.tasks.spawn(consumer::run(
        config.clone(),
        pool,
        connected,
        shutdown.clone(),
    ));
    Application::bind(
        &config.common,
        health::routes(probes).merge(Router::new()),
        shutdown,
    )
    .await
}
