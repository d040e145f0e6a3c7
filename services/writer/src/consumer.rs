//! The writer's consume loop: deliveries gathered into batches (size or time bound, whichever
//! comes first), each batch written in one statement, then acknowledged with one multiple-ack.
//!
//! What must not break: **ack only after the batch committed**. While Postgres is down the batch
//! is retried with backoff and nothing is acknowledged (the broker keeps every message; the
//! prefetch window stops further deliveries). A delivery that can never be written is rejected
//! without requeue and dead-lettered — individually, before the batch's ack, which then ends at the
//! highest delivery tag that was not dead-lettered (a rejected tag is unknown to the broker: acking
//! it would close the channel and redeliver the whole committed batch). If the channel breaks,
//! the unacknowledged batch is dropped here and redelivered by the broker (to us or another
//! writer); the idempotent insert makes that harmless. On shutdown the current batch is finished
//! and acknowledged before the connection closes.
//!
//! Only the chat service's messages are stored: a delivery is verified (its `x-signature`) before
//! it is parsed, and an unsigned, mis-signed or unparseable one is dead-lettered with its reason. A
//! row whose `(chat_id, number)` already holds another message id is dead-lettered as a
//! `conflict` — from the batch and from the row-by-row path alike — never acknowledged as if
//! stored; only the same id (a redelivery) is.
//!
//! A delivery may carry several messages (the chat service's batches, `queue::open_all`): its rows
//! share its delivery tag. It is acknowledged or dead-lettered as one: when any of its rows is a
//! conflict or refused, the whole delivery is dead-lettered once (its other rows are stored all the
//! same — the dead-letter queue then holds them too, with the reason in the log and the metric).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use metrics::{counter, gauge, histogram};
use sqlx::PgPool;
use tokio::time::Instant;

use common::server::Shutdown;

use crate::Config;
use crate::batch::{self, Row, WriteError, Written};

/// Why the consume loop returned.
enum Stopped {
    /// Shutdown requested; the last batch is written and acknowledged.
    Shutdown,
    /// The broker connection or channel failed: reconnect.
    Broken(String),
}

/// Consumes until shutdown, reconnecting to the broker with backoff.
pub async fn run(config: Config, pool: PgPool, connected: Arc<AtomicBool>, shutdown: Shutdown) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match connect(&config).await {
            Ok((connection, channel)) => {
                backoff = Duration::from_millis(100);
                gauge!("writer_broker_connected").set(1.0);
                connected.store(true, Ordering::Relaxed);
                tracing::info!(queue = %config.queue, "consuming");
                let stopped = consume(&config, &pool, &channel, &shutdown).await;
                gauge!("writer_broker_connected").set(0.0);
                connected.store(false, Ordering::Relaxed);
                let _ = connection.close(200, "writer stopping".into()).await;
                match stopped {
                    Stopped::Shutdown => return,
                    Stopped::Broken(why) => {
                        tracing::warn!(reason = %why, "lost the broker; reconnecting")
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "cannot reach the broker"),
        }
        tokio::select! {
            _ = shutdown.token.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn connect(config: &Config) -> lapin::Result<(Connection, Channel)> {
    let connection = Connection::connect(
        &config.amqp_url,
        ConnectionProperties::default().with_connection_name("storm-writer".into()),
    )
    .await?;
    let channel = connection.create_channel().await?;
    queue::declare(&channel, &config.queue).await?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;
    Ok((connection, channel))
}

async fn consume(
    config: &Config,
    pool: &PgPool,
    channel: &Channel,
    shutdown: &Shutdown,
) -> Stopped {
    let mut consumer = match channel
        .basic_consume(
            config.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    {
        Ok(consumer) => consumer,
        Err(e) => return Stopped::Broken(format!("basic.consume: {e}")),
    };
    let mut batch: Vec<Delivery> = Vec::with_capacity(config.batch_size);
    let mut deadline = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.token.cancelled() => {
                let _ = channel
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await;
                return match flush(config, pool, channel, &mut batch, shutdown).await {
                    Ok(()) => Stopped::Shutdown,
                    Err(why) => Stopped::Broken(why),
                };
            }
            _ = tokio::time::sleep_until(deadline), if !batch.is_empty() => {
                if let Err(why) = flush(config, pool, channel, &mut batch, shutdown).await {
                    return Stopped::Broken(why);
                }
            }
            delivery = consumer.next() => match delivery {
                Some(Ok(delivery)) => {
                    if batch.is_empty() {
                        deadline = Instant::now() + config.batch_max_wait;
                    }
                    batch.push(delivery);
                    if batch.len() >= config.batch_size
                        && let Err(why) = flush(config, pool, channel, &mut batch, shutdown).await
                    {
                        return Stopped::Broken(why);
                    }
                }
                Some(Err(e)) => return Stopped::Broken(format!("consumer: {e}")),
                None => return Stopped::Broken("the broker cancelled the consumer".into()),
            },
        }
    }
}

/// Writes the batch (retrying while Postgres is unavailable), dead-letters what can never be
/// written, then acknowledges the rest with one multiple-ack up to the highest delivery tag that
/// was not dead-lettered (see [`ack_tag`]). Leaves `batch` empty.
async fn flush(
    config: &Config,
    pool: &PgPool,
    channel: &Channel,
    batch: &mut Vec<Delivery>,
    shutdown: &Shutdown,
) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    histogram!("writer_batch_size").record(batch.len() as f64);
    let mut rows = Vec::with_capacity(batch.len());
    let mut row_tags = Vec::with_capacity(batch.len());
    for delivery in batch.iter() {
        if delivery.redelivered {
            counter!("writer_redeliveries_total").increment(1);
        }
        match batch::parse(&config.queue_key, &delivery.properties, &delivery.data) {
            Ok(parsed) => {
                row_tags.extend(std::iter::repeat_n(delivery.delivery_tag, parsed.len()));
                rows.extend(parsed);
            }
            Err(rejection) => {
                dead_letter(
                    channel,
                    delivery.delivery_tag,
                    rejection.reason(),
                    &rejection.to_string(),
                )
                .await?
            }
        }
    }
    let stored = write_with_retry(config, pool, channel, &rows, &row_tags, shutdown).await?;
    let Some(Stored { inserted, dead }) = stored else {
        // Shutting down with Postgres still unavailable: leave the batch unacknowledged; the broker
        // redelivers it when this connection closes.
        batch.clear();
        return Ok(());
    };
    counter!("writer_rows_written_total").increment(inserted);
    let settled = (rows.len() - dead.len()) as u64;
    counter!("writer_rows_skipped_total").increment(settled - inserted.min(settled));
    let now = chrono::Utc::now();
    for (_, row) in rows.iter().enumerate().filter(|(i, _)| !dead.contains(i)) {
        let lag = (now - row.created_at)
            .num_microseconds()
            .unwrap_or(0)
            .max(0);
        histogram!("writer_end_to_end_lag_seconds").record(lag as f64 / 1e6);
    }
    // Every nack above was sent (awaited) on this channel before this ack, and the broker handles
    // a channel's methods in order: the dead-lettered tags are no longer outstanding when the
    // multiple-ack arrives, so it covers exactly the committed rows.
    if let Some(tag) = ack_tag(&row_tags, &dead) {
        channel
            .basic_ack(tag, BasicAckOptions { multiple: true })
            .await
            .map_err(|e| format!("basic.ack after commit: {e}"))?;
    }
    histogram!("writer_batch_seconds").record(started.elapsed().as_secs_f64());
    batch.clear();
    Ok(())
}

/// The delivery tag a committed batch is acknowledged up to (`multiple: true`): the highest tag of
/// a row that was not dead-lettered, `None` when every delivery was. Never the batch's last tag
/// blindly: a tag already rejected (`nack`) is unknown to the broker, and acknowledging it is a
/// `406 PRECONDITION_FAILED` that closes the channel — every committed row of the batch would be
/// redelivered and the consumer would reconnect. Never 0 either: a multiple-ack of tag 0 means
/// "everything outstanding", deliveries of the next batch included. Tags that failed to parse were
/// dead-lettered before the write and have no row here.
fn ack_tag(row_tags: &[u64], dead: &HashSet<usize>) -> Option<u64> {
    row_tags
        .iter()
        .enumerate()
        .filter(|(index, _)| !dead.contains(index))
        .map(|(_, &tag)| tag)
        .max()
}

/// What became of a batch's rows once committed.
struct Stored {
    inserted: u64,
    /// Indexes of the rows dead-lettered (conflicts, rows Postgres refuses, and every other row of
    /// their deliveries).
    dead: HashSet<usize>,
}

impl Stored {
    /// Dead-letters the delivery of row `index` (once per delivery) and counts every row of that
    /// delivery as dead, so the ack never covers it.
    async fn dead_letter_row(
        &mut self,
        channel: &Channel,
        tags: &[u64],
        index: usize,
        reason: &'static str,
        why: &str,
    ) -> Result<(), String> {
        // Every row of a dead-lettered delivery is in `dead`: a row already there means its
        // delivery was dead-lettered before.
        if self.dead.contains(&index) {
            return Ok(());
        }
        let tag = tags[index];
        dead_letter(channel, tag, reason, why).await?;
        self.dead.extend(
            tags.iter()
                .enumerate()
                .filter(|(_, t)| **t == tag)
                .map(|(i, _)| i),
        );
        Ok(())
    }
}

/// `Some` once the rows are committed, with the conflicting rows and the rows Postgres refuses
/// dead-lettered one by one; `None` when shutdown came while Postgres was still unavailable.
async fn write_with_retry(
    config: &Config,
    pool: &PgPool,
    channel: &Channel,
    rows: &[Row],
    tags: &[u64],
    shutdown: &Shutdown,
) -> Result<Option<Stored>, String> {
    let mut stored = Stored {
        inserted: 0,
        dead: HashSet::new(),
    };
    let refused = match write_until_done(config, pool, rows, shutdown).await {
        None => return Ok(None),
        Some(Ok(written)) => {
            settle(channel, rows, tags, 0, written, &mut stored).await?;
            return Ok(Some(stored));
        }
        Some(Err(refused)) => refused,
    };
    // Isolate the rows Postgres refuses (e.g. a chat that does not exist).
    tracing::warn!(error = %refused, rows = rows.len(), "batch refused; writing rows one by one");
    for (index, row) in rows.iter().enumerate() {
        match write_until_done(config, pool, std::slice::from_ref(row), shutdown).await {
            None => return Ok(None),
            Some(Ok(written)) => settle(channel, rows, tags, index, written, &mut stored).await?,
            Some(Err(e)) => {
                stored
                    .dead_letter_row(channel, tags, index, "rejected", &e.to_string())
                    .await?;
            }
        }
    }
    Ok(Some(stored))
}

/// Adds a committed write of `rows[offset..]` to `stored` and dead-letters its conflicts: a
/// `(chat_id, number)` that holds another message id is never acknowledged as stored.
async fn settle(
    channel: &Channel,
    rows: &[Row],
    tags: &[u64],
    offset: usize,
    written: Written,
    stored: &mut Stored,
) -> Result<(), String> {
    stored.inserted += written.inserted;
    for conflict in written.conflicts {
        let index = offset + conflict.index;
        let row = &rows[index];
        let stored_id = conflict
            .stored
            .map_or_else(|| "none".to_string(), |id| id.to_string());
        let why = format!(
            "chat {} number {} is already stored with message id {stored_id}, not {}",
            row.chat_id, row.number, row.id
        );
        stored
            .dead_letter_row(channel, tags, index, "conflict", &why)
            .await?;
    }
    Ok(())
}

/// Writes `rows`, retrying with backoff while Postgres is unavailable: `Some(Ok(written))`,
/// `Some(Err(_))` when Postgres refuses the rows themselves, `None` on shutdown before success.
async fn write_until_done(
    config: &Config,
    pool: &PgPool,
    rows: &[Row],
    shutdown: &Shutdown,
) -> Option<Result<Written, sqlx::Error>> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match batch::write(pool, rows).await {
            Ok(written) => return Some(Ok(written)),
            Err(WriteError::Rejected(e)) => return Some(Err(e)),
            Err(WriteError::Transient(e)) => {
                counter!("writer_db_retries_total").increment(1);
                tracing::warn!(error = %e, retry_in = ?backoff, "rows not written; retrying");
                if shutdown.token.is_cancelled() {
                    return None;
                }
                tokio::select! {
                    _ = shutdown.token.cancelled() => {}
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(config.retry_max);
            }
        }
    }
}

async fn dead_letter(
    channel: &Channel,
    tag: u64,
    reason: &'static str,
    why: &str,
) -> Result<(), String> {
    counter!("writer_dead_letters_total", "reason" => reason).increment(1);
    tracing::warn!(reason, error = why, "dead-lettering a message");
    channel
        .basic_nack(
            tag,
            BasicNackOptions {
                multiple: false,
                requeue: false,
            },
        )
        .await
        .map_err(|e| format!("basic.nack: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ack_skips_dead_lettered_tags() {
        let dead = |indexes: &[usize]| indexes.iter().copied().collect::<HashSet<_>>();
        // Nothing dead-lettered: the last tag.
        assert_eq!(ack_tag(&[3, 4, 5], &dead(&[])), Some(5));
        // The last row dead-lettered (a conflict): the highest tag still outstanding.
        assert_eq!(ack_tag(&[3, 4, 5], &dead(&[2])), Some(4));
        // A row dead-lettered in the middle: the multiple-ack still ends at the last row.
        assert_eq!(ack_tag(&[3, 4, 5], &dead(&[1])), Some(5));
        // Every row dead-lettered, or no row at all (every delivery refused before the write):
        // nothing to acknowledge — never tag 0.
        assert_eq!(ack_tag(&[3, 4, 5], &dead(&[0, 1, 2])), None);
        assert_eq!(ack_tag(&[], &dead(&[])), None);
        // Rows of one batch delivery share its tag; a dead-lettered delivery's rows are all dead.
        assert_eq!(ack_tag(&[3, 3, 3, 4, 4], &dead(&[3, 4])), Some(3));
        assert_eq!(ack_tag(&[3, 3, 4], &dead(&[0, 1])), Some(4));
    }
}
