//! The chat service's RabbitMQ publisher: one long-lived connection, a fixed pool of channels in
//! confirm mode, and a supervisor that reconnects when the broker goes away.
//!
//! What must not break: a 202 is sent only for `Confirmation::Ack(None)` — the broker has the
//! message and it was routed to the durable queue. No connection, a nack, an unroutable return or
//! no confirm within `PUBLISH_TIMEOUT_MS` is an error for the caller (503). A publish that was on
//! the wire when the connection died is *in doubt* (the broker may have stored it): counted in
//! `chat_publish_in_doubt_total`; the message keeps its unique number, so it can never duplicate.
//! Every message leaves signed (`queue::SigningKey`): the writer stores nothing else.
//!
//! Writes are published in batches ([`Broker::submit`]): the messages that queue up while the
//! channels' publishes are waiting for confirms go together as one persistent message (a
//! `queue` batch: a JSON array) with one confirm, and each of them is answered with that one
//! outcome — so a batch is accepted or refused whole, and the guarantee above holds per message.
//! At low load a batch is one message (the single-message shape); `PUBLISH_BATCH_MAX=1` keeps it
//! so (for writers older than batches).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties};
use metrics::{counter, gauge, histogram};
use tokio::sync::{Notify, RwLock, mpsc, oneshot};

use common::ApiError;
use common::server::Shutdown;

use queue::SigningKey;

use crate::batching::serve_in_batches;

/// Writes waiting for a publish, at most; beyond, callers wait to enqueue.
const PUBLISH_QUEUE: usize = 8192;

/// A write waiting to be published: its encoded message and where its outcome goes.
struct Pending {
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<(), PublishError>>,
}

/// A live connection and its confirm-mode channels.
struct Link {
    connection: Connection,
    channels: Vec<Channel>,
}

struct Inner {
    url: String,
    queue: String,
    channel_count: usize,
    publish_timeout: Duration,
    key: SigningKey,
    link: RwLock<Option<Arc<Link>>>,
    next_channel: AtomicUsize,
    /// Woken by a publish that saw the connection fail, so the supervisor need not wait for its poll.
    broken: Notify,
    /// Writes waiting for their publish's confirm ([`Broker::submit`], which every publish serves):
    /// shutdown closes the connection only once this is 0.
    in_flight: AtomicUsize,
    /// Writes to publish ([`Broker::submit`]), served in batches.
    batches: mpsc::Sender<Pending>,
}

/// Cloneable handle to the publisher.
#[derive(Clone)]
pub struct Broker(Arc<Inner>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// No connection to the broker: nothing was sent.
    NotConnected,
    /// The broker refused it (nack) or could not route it: not stored.
    Refused,
    /// Sent, but neither confirmed nor refused (timeout, connection lost): it may have been stored.
    InDoubt,
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        ApiError::unavailable(match e {
            PublishError::NotConnected => "the message broker is unavailable; nothing was accepted",
            PublishError::Refused => "the message broker refused the message; nothing was accepted",
            PublishError::InDoubt => {
                "the message broker did not confirm the message in time; it was not accepted"
            }
        })
    }
}

impl Broker {
    /// Starts the supervisor, which connects in the background: the service starts (and answers
    /// `/ready` 503) while the broker is down.
    pub fn start(
        url: &str,
        queue: &str,
        channel_count: usize,
        publish_timeout: Duration,
        batch_max: usize,
        key: SigningKey,
        shutdown: Shutdown,
    ) -> Self {
        let (batches, pending) = mpsc::channel(PUBLISH_QUEUE);
        let broker = Broker(Arc::new(Inner {
            url: url.to_string(),
            queue: queue.to_string(),
            channel_count,
            publish_timeout,
            key,
            link: RwLock::new(None),
            next_channel: AtomicUsize::new(0),
            broken: Notify::new(),
            in_flight: AtomicUsize::new(0),
            batches,
        }));
        // As many batches in flight as channels. The loop holds the broker weakly: it ends when
        // the last handle (and with it the sender) is gone.
        let weak = Arc::downgrade(&broker.0);
        tokio::spawn(serve_in_batches(
            pending,
            batch_max,
            channel_count,
            move |batch| publish_batch(weak.clone(), batch),
        ));
        // Tracked: the process waits (within its grace period) for the connection to close cleanly.
        shutdown
            .tasks
            .spawn(broker.clone().supervise(shutdown.clone()));
        broker
    }

    pub async fn is_connected(&self) -> bool {
        match self.0.link.read().await.as_ref() {
            Some(link) => link.connection.status().connected(),
            None => false,
        }
    }

    /// Publishes `payload` (a [`queue::QueuedMessage`]'s JSON) with the writes queued beside it,
    /// and returns once the broker confirmed (or refused) the batch it went in.
    pub async fn submit(&self, payload: Vec<u8>) -> Result<(), PublishError> {
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        let (reply, outcome) = oneshot::channel();
        let result = match self.0.batches.send(Pending { payload, reply }).await {
            // No answer at all: the publisher is gone mid-publish (the process is stopping).
            Ok(()) => outcome.await.unwrap_or(Err(PublishError::InDoubt)),
            Err(_) => Err(PublishError::NotConnected),
        };
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// Signs `payload` (`messages` writes) and publishes it persistently to the queue, then waits
    /// for the broker's confirm.
    async fn publish(&self, payload: &[u8], messages: usize) -> Result<(), PublishError> {
        let started = std::time::Instant::now();
        let result = self.publish_confirmed(payload).await;
        let outcome = match result {
            Ok(()) => "confirmed",
            Err(PublishError::NotConnected) => "not_connected",
            Err(PublishError::Refused) => "refused",
            Err(PublishError::InDoubt) => "in_doubt",
        };
        counter!("chat_publish_total", "outcome" => outcome).increment(messages as u64);
        histogram!("chat_publish_confirm_seconds").record(started.elapsed().as_secs_f64());
        histogram!("chat_publish_batch_size").record(messages as f64);
        if let Err(e) = result {
            if e == PublishError::InDoubt {
                counter!("chat_publish_in_doubt_total").increment(messages as u64);
            }
            if e != PublishError::Refused {
                self.0.broken.notify_one();
            }
        }
        result
    }

    async fn publish_confirmed(&self, payload: &[u8]) -> Result<(), PublishError> {
        let link = self.0.link.read().await.clone();
        let Some(link) = link else {
            return Err(PublishError::NotConnected);
        };
        let index = self.0.next_channel.fetch_add(1, Ordering::Relaxed) % link.channels.len();
        let channel = &link.channels[index];
        let send = channel.basic_publish(
            "".into(),
            self.0.queue.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            payload,
            self.0.key.properties(payload),
        );
        let confirm = match tokio::time::timeout(self.0.publish_timeout, send).await {
            Ok(Ok(confirm)) => confirm,
            // The channel refused the frame before sending it (closed, not connected).
            Ok(Err(_)) => return Err(PublishError::NotConnected),
            Err(_) => return Err(PublishError::InDoubt),
        };
        match tokio::time::timeout(self.0.publish_timeout, confirm).await {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(_))) => {
                Err(PublishError::Refused)
            }
            Ok(Ok(Confirmation::NotRequested)) => {
                // Only if confirm_select was skipped: a bug, but never a false 202.
                tracing::error!("publisher confirms not enabled on a pool channel");
                Err(PublishError::Refused)
            }
            Ok(Err(_)) | Err(_) => Err(PublishError::InDoubt),
        }
    }

    /// Connects, opens the channels, declares the topology; on failure or loss, drops the link
    /// (publishes fail fast with 503) and retries with backoff until shutdown.
    async fn supervise(self, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.connect().await {
                Ok(link) => {
                    backoff = Duration::from_millis(100);
                    let link = Arc::new(link);
                    *self.0.link.write().await = Some(link.clone());
                    gauge!("chat_broker_connected").set(1.0);
                    tracing::info!(channels = self.0.channel_count, "connected to the broker");
                    let lost = self.watch(&link, &shutdown).await;
                    if lost {
                        *self.0.link.write().await = None;
                    }
                    gauge!("chat_broker_connected").set(0.0);
                    if !lost {
                        self.close_when_idle(&link).await;
                        return;
                    }
                    tracing::warn!("lost the broker connection; reconnecting");
                    let _ = link.connection.close(320, "reconnecting".into()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot reach the broker");
                }
            }
            tokio::select! {
                _ = shutdown.token.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn connect(&self) -> lapin::Result<Link> {
        let connection = Connection::connect(
            &self.0.url,
            ConnectionProperties::default().with_connection_name("storm-chat".into()),
        )
        .await?;
        let mut channels = Vec::with_capacity(self.0.channel_count);
        for _ in 0..self.0.channel_count {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channels.push(channel);
        }
        queue::declare(&channels[0], &self.0.queue).await?;
        Ok(Link {
            connection,
            channels,
        })
    }

    /// On shutdown: requests still being served keep publishing on the link; it closes once no
    /// publish has been in flight for a moment (the HTTP server has drained by then).
    async fn close_when_idle(&self, link: &Link) {
        let mut quiet_polls = 0;
        while quiet_polls < 4 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.0.in_flight.load(Ordering::SeqCst) == 0 {
                quiet_polls += 1;
            } else {
                quiet_polls = 0;
            }
        }
        *self.0.link.write().await = None;
        let _ = link.connection.close(200, "shutting down".into()).await;
    }

    /// Returns true when the link broke, false on shutdown.
    async fn watch(&self, link: &Link, shutdown: &Shutdown) -> bool {
        let mut events = link.connection.events_listener();
        let mut poll = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = shutdown.token.cancelled() => return false,
                event = events.next() => {
                    if matches!(event, None | Some(lapin::Event::Error(_))) {
                        return true;
                    }
                }
                _ = self.0.broken.notified() => {}
                _ = poll.tick() => {}
            }
            let healthy = link.connection.status().connected()
                && link.channels.iter().all(|c| c.status().connected());
            if !healthy {
                return true;
            }
        }
    }
}

/// Publishes one batch of writes as one message (the single-message shape for a batch of one) and
/// answers each with the outcome.
async fn publish_batch(broker: Weak<Inner>, batch: Vec<Pending>) {
    let result = match broker.upgrade() {
        Some(inner) => {
            let broker = Broker(inner);
            if let [one] = batch.as_slice() {
                broker.publish(&one.payload, 1).await
            } else {
                let body = queue::batch_body(batch.iter().map(|p| p.payload.as_slice()));
                broker.publish(&body, batch.len()).await
            }
        }
        None => Err(PublishError::NotConnected),
    };
    for pending in batch {
        let _ = pending.reply.send(result);
    }
}
