//! WebSocket fan-out over Redis pub/sub: one Redis subscription per subject or pattern per
//! process, shared by every socket that wants it, delivered in memory.
//!
//! Three parts:
//! - the **topic table**: subject or pattern → the sockets subscribed to it (each socket's bounded
//!   send queue and its "kick" token);
//! - the **subscription manager** task: the only code that sends SUBSCRIBE/UNSUBSCRIBE (and the
//!   P- forms). It reconciles what the table wants with what Redis has, one subject at a time, so a
//!   subscribe racing an unsubscribe can never leave Redis out of step. After Redis drops it
//!   resubscribes everything itself, retrying with backoff, while sockets stay open;
//! - the **dispatcher** task: receives each Redis message once, turns its payload into one shared
//!   `Utf8Bytes` frame (the envelope is serialized once, by the publisher, and never re-encoded),
//!   and `try_send`s a refcounted clone into each subscribed socket's queue. A full queue means a
//!   slow consumer: the socket is kicked (closed with 1013 by its own task), never waited for.
//!
//! Bounds (issue 16): the Redis → dispatcher channel holds at most `FANOUT_QUEUE` messages. redis-rs
//! hands pushes to a synchronous sender, so [`BoundedPushSender`] `try_send`s into it; when the
//! dispatcher is that far behind, the policy is **drop the newest message and count it**
//! (`gateway_fanout_dropped_total`): it was going to every subscriber of its subject, and waiting
//! would only move the pile into Redis's output buffer for this connection (which Redis closes at
//! its pubsub limit) or grow memory without end. A disconnection notice is never dropped: it goes
//! by its own signal, so a full queue cannot stop the resubscription. Memory on this path is thus
//! at most `FANOUT_QUEUE` messages plus, per socket, `WS_SEND_QUEUE` refcounted frames.
//!
//! Distinct patterns are capped per process (`WS_MAX_PATTERNS`): Redis matches every pattern on
//! every PUBLISH, so each one costs every publisher of the stack. A pattern holds its slot from
//! the moment a socket puts it in the table until the manager has PUNSUBSCRIBEd it, so Redis never
//! holds more patterns from this process than the cap. Exact subjects do not count.
//!
//! What must not break: the dispatcher never awaits (one slow socket cannot stall the others), and
//! nothing here opens a Redis connection per socket.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};
use redis::aio::{AsyncPushSender, ConnectionManager, ConnectionManagerConfig, SendError};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::subject;

pub type SocketId = u64;

/// Capacity of the manager's command queue; senders wait (briefly) when it is full.
const COMMAND_QUEUE: usize = 4096;
const RESYNC_MIN_BACKOFF: Duration = Duration::from_millis(100);
const RESYNC_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How the hub reaches one socket: its bounded frame queue and the token that closes it.
#[derive(Clone)]
struct SocketTx {
    frames: mpsc::Sender<Utf8Bytes>,
    kick: CancellationToken,
}

/// Subject or pattern → its sockets, and the patterns holding a `WS_MAX_PATTERNS` slot (those in
/// the table plus those Redis may still hold until the manager has unsubscribed them).
#[derive(Default)]
struct Table {
    topics: HashMap<String, HashMap<SocketId, SocketTx>>,
    patterns: HashSet<String>,
}

type Topics = RwLock<Table>;

/// Why a socket could not be added to a subject or pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeError {
    /// A new pattern beyond `WS_MAX_PATTERNS` (the cap is given); nothing was registered.
    TooManyPatterns(usize),
    /// Registered, but Redis has not confirmed it (yet): the manager keeps retrying.
    Unconfirmed(String),
}

/// The synchronous push sender redis-rs needs, on a bounded channel: past the bound a message is
/// dropped and counted, never queued (see the module doc); a disconnection goes by `resync`.
pub struct BoundedPushSender {
    pushes: mpsc::Sender<PushInfo>,
    resync: Arc<Notify>,
    dropped: Counter,
}

impl BoundedPushSender {
    pub fn new(pushes: mpsc::Sender<PushInfo>, resync: Arc<Notify>) -> Self {
        Self {
            pushes,
            resync,
            dropped: counter!("gateway_fanout_dropped_total"),
        }
    }
}

impl AsyncPushSender for BoundedPushSender {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        if info.kind == PushKind::Disconnection {
            self.resync.notify_one();
            return Ok(());
        }
        match self.pushes.try_send(info) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.increment(1);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError),
        }
    }
}

/// The hub's limits and timeouts (from `Config`).
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// `WS_SEND_QUEUE`: frames one socket may have queued.
    pub send_queue: usize,
    /// `FANOUT_QUEUE`: messages between Redis and the dispatcher.
    pub fanout_queue: usize,
    /// `WS_MAX_PATTERNS`: distinct patterns per process.
    pub max_patterns: usize,
    /// `REDIS_TIMEOUT_MS`.
    pub redis_timeout: Duration,
}

enum Command {
    /// Make Redis match the table for this subject; answer when done (or failed).
    Sync {
        subject: String,
        done: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Redis dropped: every wanted subscription must be made again.
    Resync,
}

/// The process's fan-out hub. Cheap to share (`Arc`).
pub struct Hub {
    topics: Arc<Topics>,
    commands: mpsc::Sender<Command>,
    next_socket: AtomicU64,
    send_queue: usize,
    max_patterns: usize,
    /// `gateway_pubsub_patterns`, looked up once: it is set under the topic table's write lock.
    patterns_gauge: Gauge,
    redis_timeout: Duration,
}

/// Describes the hub's metrics and returns the `gateway_pubsub_patterns` handle.
fn describe_metrics() -> Gauge {
    describe_counter!(
        "gateway_pubsub_messages_in_total",
        "Messages received from Redis pub/sub."
    );
    describe_counter!(
        "gateway_pubsub_disconnects_total",
        "Times the Redis subscriber connection dropped (messages published meanwhile are lost)."
    );
    describe_counter!(
        "gateway_pubsub_subscribe_errors_total",
        "Redis SUBSCRIBE/PSUBSCRIBE commands that failed (retried by the resync loop)."
    );
    describe_gauge!(
        "gateway_pubsub_subscriptions",
        "Redis subscriptions (subjects plus patterns) held by this process."
    );
    describe_counter!(
        "gateway_ws_frames_dropped_total",
        "Frames not queued because the socket's send queue was full or closed."
    );
    describe_counter!(
        "gateway_pubsub_undeliverable_total",
        "Redis messages dropped because their payload was not UTF-8 or their channel lacked the prefix."
    );
    describe_counter!(
        "gateway_fanout_dropped_total",
        "Redis messages dropped because FANOUT_QUEUE messages were already waiting for the dispatcher."
    );
    describe_gauge!(
        "gateway_pubsub_patterns",
        "Distinct patterns holding a WS_MAX_PATTERNS slot in this process."
    );
    let patterns_gauge = gauge!("gateway_pubsub_patterns");
    patterns_gauge.increment(0.0);
    common::metrics::register_counters(&[
        ("gateway_fanout_dropped_total", &[]),
        ("gateway_pubsub_messages_in_total", &[]),
        ("gateway_pubsub_disconnects_total", &[]),
        ("gateway_pubsub_subscribe_errors_total", &[]),
        ("gateway_ws_frames_dropped_total", &[]),
        ("gateway_pubsub_undeliverable_total", &[]),
    ]);
    gauge!("gateway_pubsub_subscriptions").increment(0.0);
    patterns_gauge
}

impl Hub {
    /// Starts the subscription manager and the dispatcher. The subscriber connection speaks RESP3
    /// (pushes arrive on a channel) and is made lazily, so the gateway starts while Redis is down.
    pub fn start(
        redis_url: &str,
        prefix: String,
        config: HubConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let HubConfig {
            send_queue,
            fanout_queue,
            max_patterns,
            redis_timeout,
        } = config;
        let patterns_gauge = describe_metrics();
        let info = redis_url.into_connection_info()?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        // Bounded: past FANOUT_QUEUE messages are dropped and counted (see the module doc).
        let (push_tx, push_rx) = mpsc::channel::<PushInfo>(fanout_queue);
        let resync = Arc::new(Notify::new());
        let manager_config = ConnectionManagerConfig::new()
            .set_push_sender(BoundedPushSender::new(push_tx, resync.clone()))
            .set_automatic_resubscription()
            .set_connection_timeout(Some(redis_timeout))
            .set_response_timeout(Some(redis_timeout));
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)?;

        let topics: Arc<Topics> = Arc::default();
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let hub = Arc::new(Self {
            topics: topics.clone(),
            commands: commands.clone(),
            next_socket: AtomicU64::new(1),
            send_queue,
            max_patterns,
            patterns_gauge: patterns_gauge.clone(),
            redis_timeout,
        });
        let manager = SubscriptionManager {
            topics: topics.clone(),
            connection,
            prefix: prefix.clone(),
            active: HashSet::new(),
            patterns_gauge,
            redis_timeout,
        };
        tokio::spawn(manager.run(command_rx, shutdown.clone()));
        tokio::spawn(dispatch(
            push_rx, resync, topics, prefix, commands, shutdown,
        ));
        Ok(hub)
    }

    /// A new socket's membership, its frame queue, and the token that kicks it.
    pub fn join(self: &Arc<Self>) -> (Membership, mpsc::Receiver<Utf8Bytes>, CancellationToken) {
        let (frames, rx) = mpsc::channel(self.send_queue);
        let kick = CancellationToken::new();
        let membership = Membership {
            hub: self.clone(),
            id: self.next_socket.fetch_add(1, Ordering::Relaxed),
            tx: SocketTx {
                frames,
                kick: kick.clone(),
            },
            subjects: HashSet::new(),
        };
        (membership, rx, kick)
    }

    /// Asks the manager to reconcile `subject` and waits (bounded) for Redis to confirm.
    async fn sync(&self, subject: String) -> Result<(), String> {
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Command::Sync {
                subject,
                done: Some(done),
            })
            .await
            .map_err(|_| "the subscription manager has stopped".to_string())?;
        match tokio::time::timeout(self.redis_timeout * 2, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the subscription manager has stopped".into()),
            Err(_) => Err("redis did not confirm the subscription in time".into()),
        }
    }

    /// Subjects and patterns with at least one socket (tests and `/api/metrics`).
    pub fn topic_count(&self) -> usize {
        self.topics.read().map(|t| t.topics.len()).unwrap_or(0)
    }

    /// Patterns holding a `WS_MAX_PATTERNS` slot.
    pub fn pattern_count(&self) -> usize {
        self.topics.read().map(|t| t.patterns.len()).unwrap_or(0)
    }
}

/// One socket's subscriptions. Dropping it removes the socket from every topic.
pub struct Membership {
    hub: Arc<Hub>,
    id: SocketId,
    tx: SocketTx,
    subjects: HashSet<String>,
}

impl Membership {
    pub fn len(&self) -> usize {
        self.subjects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty()
    }

    pub fn contains(&self, subject: &str) -> bool {
        self.subjects.contains(subject)
    }

    /// Adds the socket to `subject`'s topic (a name already mapped by
    /// `subject::scope_subscription`). Returns once Redis has confirmed the subscription;
    /// `TooManyPatterns` when it is a new pattern beyond `WS_MAX_PATTERNS` (nothing registered);
    /// `Unconfirmed` when Redis could not confirm (the subscription stays registered and the
    /// manager keeps retrying, so delivery starts when Redis is back).
    pub async fn subscribe(&mut self, subject: &str) -> Result<(), SubscribeError> {
        if self.subjects.contains(subject) {
            return Ok(());
        }
        {
            let Ok(mut table) = self.hub.topics.write() else {
                return Err(SubscribeError::Unconfirmed(
                    "the topic table is poisoned".into(),
                ));
            };
            let new_pattern = subject::is_pattern(subject) && !table.patterns.contains(subject);
            if new_pattern {
                if table.patterns.len() >= self.hub.max_patterns {
                    return Err(SubscribeError::TooManyPatterns(self.hub.max_patterns));
                }
                table.patterns.insert(subject.to_string());
                self.hub.patterns_gauge.set(table.patterns.len() as f64);
            }
            table
                .topics
                .entry(subject.to_string())
                .or_default()
                .insert(self.id, self.tx.clone());
        }
        self.subjects.insert(subject.to_string());
        self.hub
            .sync(subject.to_string())
            .await
            .map_err(SubscribeError::Unconfirmed)
    }

    /// Removes the socket from `subject`; false when it was not subscribed.
    pub async fn unsubscribe(&mut self, subject: &str) -> bool {
        if !self.subjects.remove(subject) {
            return false;
        }
        if self.remove_from_topic(subject) {
            // Best effort: a failed UNSUBSCRIBE only means unwanted messages are dropped.
            let _ = self.hub.sync(subject.to_string()).await;
        }
        true
    }

    /// Removes this socket from the topic; true when the topic became empty.
    fn remove_from_topic(&self, subject: &str) -> bool {
        let Ok(mut table) = self.hub.topics.write() else {
            return false;
        };
        let Some(sockets) = table.topics.get_mut(subject) else {
            return false;
        };
        sockets.remove(&self.id);
        if sockets.is_empty() {
            table.topics.remove(subject);
            true
        } else {
            false
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        for subject in std::mem::take(&mut self.subjects) {
            if self.remove_from_topic(&subject) {
                let command = Command::Sync {
                    subject,
                    done: None,
                };
                if let Err(mpsc::error::TrySendError::Full(command)) =
                    self.hub.commands.try_send(command)
                {
                    let commands = self.hub.commands.clone();
                    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                        runtime.spawn(async move { commands.send(command).await });
                    }
                }
            }
        }
    }
}

/// Owns the subscriber connection and the set of subscriptions Redis has confirmed.
struct SubscriptionManager {
    topics: Arc<Topics>,
    connection: ConnectionManager,
    prefix: String,
    active: HashSet<String>,
    /// The hub's `gateway_pubsub_patterns` handle (set under the table's write lock).
    patterns_gauge: Gauge,
    redis_timeout: Duration,
}

impl SubscriptionManager {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let mut resync_due: Option<tokio::time::Instant> = None;
        let mut backoff = RESYNC_MIN_BACKOFF;
        loop {
            let wait_resync = async {
                match resync_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Sync { subject, done }) => {
                        let result = self.reconcile(&subject).await;
                        if result.is_err() && resync_due.is_none() {
                            resync_due = Some(tokio::time::Instant::now() + backoff);
                        }
                        if let Some(done) = done {
                            let _ = done.send(result);
                        }
                    }
                    Some(Command::Resync) => {
                        counter!("gateway_pubsub_disconnects_total").increment(1);
                        self.active.clear();
                        self.release_patterns(None);
                        self.publish_gauge();
                        backoff = RESYNC_MIN_BACKOFF;
                        resync_due = Some(tokio::time::Instant::now());
                    }
                },
                _ = wait_resync => {
                    if self.resync().await {
                        resync_due = None;
                        backoff = RESYNC_MIN_BACKOFF;
                        tracing::info!(subscriptions = self.active.len(), "redis subscriptions restored");
                    } else {
                        backoff = (backoff * 2).min(RESYNC_MAX_BACKOFF);
                        resync_due = Some(tokio::time::Instant::now() + backoff);
                    }
                }
            }
        }
    }

    fn wanted(&self, subject: &str) -> bool {
        self.topics
            .read()
            .map(|t| t.topics.contains_key(subject))
            .unwrap_or(false)
    }

    /// Frees the `WS_MAX_PATTERNS` slot of `subject` (of every pattern with `None`) when no socket
    /// wants it and Redis no longer holds it. Checked under the table's lock, so a socket taking
    /// the pattern meanwhile keeps its slot.
    fn release_patterns(&self, subject: Option<&str>) {
        let Ok(mut table) = self.topics.write() else {
            return;
        };
        let Table { topics, patterns } = &mut *table;
        match subject {
            Some(subject) => {
                if !topics.contains_key(subject) && !self.active.contains(subject) {
                    patterns.remove(subject);
                }
            }
            None => patterns.retain(|p| topics.contains_key(p) || self.active.contains(p)),
        }
        self.patterns_gauge.set(patterns.len() as f64);
    }

    /// Makes Redis hold `subject` exactly when some socket wants it.
    async fn reconcile(&mut self, subject: &str) -> Result<(), String> {
        let wanted = self.wanted(subject);
        let active = self.active.contains(subject);
        if wanted == active {
            if !wanted && subject::is_pattern(subject) {
                self.release_patterns(Some(subject));
            }
            return Ok(());
        }
        let channel = format!("{}{}", self.prefix, subject);
        let pattern = subject::is_pattern(subject);
        let mut connection = self.connection.clone();
        let command = async {
            match (wanted, pattern) {
                (true, false) => connection.subscribe(&channel).await,
                (true, true) => connection.psubscribe(&channel).await,
                (false, false) => connection.unsubscribe(&channel).await,
                (false, true) => connection.punsubscribe(&channel).await,
            }
        };
        let outcome = match tokio::time::timeout(self.redis_timeout, command).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("redis: {e}")),
            Err(_) => Err("redis did not answer in time".to_string()),
        };
        match &outcome {
            Ok(()) if wanted => {
                self.active.insert(subject.to_string());
            }
            Ok(()) => {
                self.active.remove(subject);
            }
            Err(e) if wanted => {
                counter!("gateway_pubsub_subscribe_errors_total").increment(1);
                tracing::warn!(subject, error = %e, "subscribe failed; will retry");
            }
            Err(e) => {
                // The connection is gone or failing: its subscriptions go with it on reconnect.
                self.active.remove(subject);
                tracing::warn!(subject, error = %e, "unsubscribe failed");
            }
        }
        self.publish_gauge();
        if pattern {
            self.release_patterns(Some(subject));
        }
        outcome
    }

    /// Subscribes everything wanted and not active; true when nothing is left to do.
    async fn resync(&mut self) -> bool {
        let wanted: Vec<String> = match self.topics.read() {
            Ok(table) => table.topics.keys().cloned().collect(),
            Err(_) => return true,
        };
        self.active.retain(|s| wanted.contains(s));
        let mut complete = true;
        for subject in wanted {
            if !self.active.contains(&subject) && self.reconcile(&subject).await.is_err() {
                complete = false;
                break;
            }
        }
        complete
    }

    fn publish_gauge(&self) {
        gauge!("gateway_pubsub_subscriptions").set(self.active.len() as f64);
    }
}

/// True when `channel` is `prefix` + a subject this stack publishes on (a `PUBSUB_PREFIX` ends in
/// `:`, which no subject contains, so another stack's channel never passes for one of ours).
fn is_own_subject(channel: &[u8], prefix: &str) -> bool {
    channel
        .strip_prefix(prefix.as_bytes())
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .is_some_and(|subject| subject::check_publish(subject).is_ok())
}

/// Hands every Redis message to the sockets of its subject or pattern.
async fn dispatch(
    mut pushes: mpsc::Receiver<PushInfo>,
    resync: Arc<Notify>,
    topics: Arc<Topics>,
    prefix: String,
    commands: mpsc::Sender<Command>,
    shutdown: CancellationToken,
) {
    let messages_in = counter!("gateway_pubsub_messages_in_total");
    let undeliverable = counter!("gateway_pubsub_undeliverable_total");
    let dropped = counter!("gateway_ws_frames_dropped_total");
    loop {
        let push = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = resync.notified() => {
                tracing::warn!("redis subscriber connection dropped; resubscribing");
                let _ = commands.send(Command::Resync).await;
                continue;
            }
            push = pushes.recv() => match push {
                Some(push) => push,
                None => return,
            },
        };
        let PushInfo { kind, mut data } = push;
        let (key, payload) = match (kind, data.as_mut_slice()) {
            (PushKind::Message, [Value::BulkString(channel), Value::BulkString(payload)]) => {
                (std::mem::take(channel), std::mem::take(payload))
            }
            (
                PushKind::PMessage,
                [
                    Value::BulkString(pattern),
                    Value::BulkString(channel),
                    Value::BulkString(payload),
                ],
            ) => {
                // Redis matches a pattern against every channel of the server, other stacks'
                // included (another PUBSUB_PREFIX, keyspace notifications): deliver only what was
                // published on one of this stack's subjects. The subject rules leave no way for a
                // pattern of ours to reach another tenant's calls inside our prefix; this keeps
                // it so outside it.
                if !is_own_subject(channel, &prefix) {
                    undeliverable.increment(1);
                    continue;
                }
                (std::mem::take(pattern), std::mem::take(payload))
            }
            _ => continue,
        };
        messages_in.increment(1);
        let Some(subject) = key
            .strip_prefix(prefix.as_bytes())
            .and_then(|s| std::str::from_utf8(s).ok())
        else {
            undeliverable.increment(1);
            continue;
        };
        let Ok(text) = String::from_utf8(payload) else {
            undeliverable.increment(1);
            continue;
        };
        let frame = Utf8Bytes::from(text);
        let mut closed = Vec::new();
        let mut not_queued = 0u64;
        if let Ok(table) = topics.read() {
            let Some(sockets) = table.topics.get(subject) else {
                continue;
            };
            for (id, socket) in sockets {
                match socket.frames.try_send(frame.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        not_queued += 1;
                        socket.kick.cancel();
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        not_queued += 1;
                        closed.push(*id);
                    }
                }
            }
        }
        if not_queued > 0 {
            dropped.increment(not_queued);
        }
        // A socket task that ended without dropping its membership (it panicked) is removed here.
        if !closed.is_empty()
            && let Ok(mut table) = topics.write()
            && let Some(sockets) = table.topics.get_mut(subject)
        {
            for id in &closed {
                sockets.remove(id);
            }
            if sockets.is_empty() {
                table.topics.remove(subject);
                let _ = commands.try_send(Command::Sync {
                    subject: subject.to_string(),
                    done: None,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: u8) -> PushInfo {
        PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(b"chan".to_vec()),
                Value::BulkString(vec![n]),
            ],
        }
    }

    #[tokio::test]
    async fn the_push_sender_drops_past_its_bound_and_never_loses_a_disconnection() {
        let (tx, mut rx) = mpsc::channel(4);
        let resync = Arc::new(Notify::new());
        let sender = BoundedPushSender::new(tx, resync.clone());
        for n in 0..10 {
            assert!(AsyncPushSender::send(&sender, message(n)).is_ok());
        }
        // The queue is full; the disconnection still gets through.
        assert!(
            AsyncPushSender::send(
                &sender,
                PushInfo {
                    kind: PushKind::Disconnection,
                    data: vec![],
                }
            )
            .is_ok()
        );
        tokio::time::timeout(Duration::from_secs(1), resync.notified())
            .await
            .expect("the disconnection is signalled");
        let mut kept = Vec::new();
        while let Ok(push) = rx.try_recv() {
            kept.push(push.data[1].clone());
        }
        assert_eq!(
            kept,
            (0..4)
                .map(|n| Value::BulkString(vec![n]))
                .collect::<Vec<_>>(),
            "the first FANOUT_QUEUE messages are kept, the rest dropped"
        );
        drop(rx);
        assert!(AsyncPushSender::send(&sender, message(0)).is_err());
    }
}
