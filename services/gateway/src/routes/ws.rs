//! WebSocket subscriptions: `GET /api/v1/ws?subscribe=…` (subjects and glob patterns, with
//! subscribe/unsubscribe ops), `GET /api/v1/channels/{id}/ws` (one channel's stream) and the S0
//! source's `GET /ws?subject=…|channel_id=…`.
//!
//! The socket's subscriptions are made — and confirmed by Redis — before the 101 answer, so a
//! client that has its socket open receives everything published after that. Each socket task
//! owns one bounded frame queue fed by the hub; it writes frames in batches (feed, then one flush)
//! and closes with 1013 when the hub kicks it as a slow consumer, 1001 on shutdown or when the
//! peer has been silent for `WS_IDLE_SECS`. Every write is raced against those signals, so a peer
//! that stopped reading can never pin the task.
//!
//! Isolation (SPEC "Isolation and safe defaults"): every subscription — the upgrade's subjects and
//! each subscribe/unsubscribe op — is mapped by `subject::scope_subscription` with the token's
//! tenant before it reaches the hub, so `call.*` holds `call.{tenant}.*` and nothing else can hear
//! another tenant's calls. What the socket and the hub hold is the mapped name; acks echo the
//! client's own. Refused upgrades answer in the error envelope:
//! - 400 `bad_request`: an invalid or wildcard-only subscription (`*`, `*.*`, `?*`, `[a-z]*`);
//! - 403 `forbidden`: a `call.` subscription without a tenant in the token, or a pattern that could
//!   match call events (`*.initiated`, `c*`, `[c]all.*`);
//! - **429 `too_many_requests`**: the user already holds `WS_MAX_SOCKETS_PER_USER` sockets, the
//!   client IP `WS_MAX_SOCKETS_PER_IP`, or a new pattern would exceed the process's
//!   `WS_MAX_PATTERNS` (exact subjects do not count);
//! - 503 `overloaded`: `MAX_WS_CONNS` sockets are open.
//!
//! Ops get the same refusals as an error frame `{"op":"error","code":…,"message":…}` (`code`
//! `bad_request`, `forbidden` or `too_many_patterns`); the socket stays open. Every refusal is
//! counted in `gateway_ws_refusals_total{reason}`.

use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use metrics::{Counter, counter, describe_counter, describe_gauge, gauge};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

use common::ApiError;
use common::auth::WsUser;
use common::error::{Path, Query};

use crate::AppState;
use crate::fanout::{Membership, SubscribeError};
use crate::limits::{CapRefusal, SocketLease};
use crate::subject::{self, Refusal};

/// The `reason` labels of `gateway_ws_refusals_total`.
const REFUSAL_REASONS: [&str; 6] = [
    "per_user",
    "per_ip",
    "patterns",
    "wildcard_only",
    "needs_tenant",
    "cross_tenant",
];

fn count_refusal(reason: &'static str) {
    counter!("gateway_ws_refusals_total", "reason" => reason).increment(1);
}

/// Maps one subscription through `scope_subscription`, counting a refusal (invalid input is not
/// a refusal of the isolation rules and is not counted).
fn scoped(subject: &str, tenant: Option<uuid::Uuid>) -> Result<String, Refusal> {
    subject::scope_subscription(subject, tenant).inspect_err(|refusal| {
        if !matches!(refusal, Refusal::Invalid(_)) {
            count_refusal(refusal.reason());
        }
    })
}

fn too_many_patterns_message(cap: usize) -> String {
    format!(
        "this gateway already holds {cap} distinct patterns (WS_MAX_PATTERNS); subscribe to an exact subject or a pattern already in use"
    )
}

/// `WS_MAX_SUBSCRIPTIONS` for the subjects an upgrade asks for.
fn check_subject_count(subjects: &[String], max_subscriptions: usize) -> Result<(), ApiError> {
    if subjects.len() > max_subscriptions {
        return Err(ApiError::bad_request(format!(
            "at most {max_subscriptions} subjects per socket"
        )));
    }
    Ok(())
}

/// Subscribes the socket to `subject` (already mapped; `asked` is the client's name, for the
/// log). `Err(cap)`: a new pattern beyond `WS_MAX_PATTERNS`, counted as a refusal. Unconfirmed is
/// not an error: the subscription is registered anyway and the hub resubscribes when Redis is back.
async fn subscribe_capped(
    membership: &mut Membership,
    subject: &str,
    asked: &str,
) -> Result<(), usize> {
    match membership.subscribe(subject).await {
        Ok(()) => Ok(()),
        Err(SubscribeError::TooManyPatterns(cap)) => {
            count_refusal("patterns");
            Err(cap)
        }
        Err(SubscribeError::Unconfirmed(e)) => {
            tracing::warn!(subject = asked, error = %e, "subscription not confirmed by redis");
            Ok(())
        }
    }
}

/// Close codes (RFC 6455 §7.4.1).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Frames taken from the queue per write batch (one flush each).
const WRITE_BATCH: usize = 256;
/// How long a closing socket may take to get its close frame out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-socket read size: clients send only small op frames. tungstenite zero-fills this much on
/// every read attempt, including the ones that find nothing (one per wake of the socket task), so
/// at fan-out rates a 4 KiB buffer shows up in the profile as memset; larger frames take several
/// reads.
const READ_BUFFER: usize = 256;
/// Largest client frame accepted.
const MAX_CLIENT_MESSAGE: usize = 16 * 1024;
/// Write buffer before tungstenite writes to the socket.
const WRITE_BUFFER: usize = 32 * 1024;

pub fn describe_metrics() {
    describe_gauge!("gateway_ws_connections", "Open WebSocket connections.");
    describe_counter!(
        "gateway_ws_connections_total",
        "WebSocket connections accepted."
    );
    describe_counter!(
        "gateway_ws_frames_sent_total",
        "Event frames written to WebSockets."
    );
    describe_counter!(
        "gateway_ws_slow_consumer_closes_total",
        "WebSockets closed with 1013 because their send queue (WS_SEND_QUEUE) filled up."
    );
    describe_counter!(
        "gateway_ws_idle_closes_total",
        "WebSockets closed because the peer was silent for WS_IDLE_SECS."
    );
    describe_counter!(
        "gateway_ws_rejected_total",
        "WebSocket upgrades refused with 503 because MAX_WS_CONNS sockets were open."
    );
    common::metrics::register_counters(&[
        ("gateway_ws_connections_total", &[]),
        ("gateway_ws_frames_sent_total", &[]),
        ("gateway_ws_slow_consumer_closes_total", &[]),
        ("gateway_ws_idle_closes_total", &[]),
        ("gateway_ws_rejected_total", &[]),
    ]);
    describe_counter!(
        "gateway_ws_refusals_total",
        "WebSocket upgrades and subscribe ops refused by reason: per_user / per_ip \
         (WS_MAX_SOCKETS_PER_USER / _PER_IP), patterns (WS_MAX_PATTERNS), wildcard_only, \
         needs_tenant (a call subscription without a tenant), cross_tenant (a pattern that could \
         match call events)."
    );
    for reason in REFUSAL_REASONS {
        counter!("gateway_ws_refusals_total", "reason" => reason).increment(0);
    }
    // Exported (at 0) before the first socket too; `increment(0)` leaves a live count alone.
    gauge!("gateway_ws_connections").increment(0.0);
}

/// Which dialect a socket speaks: v1 answers every client frame; S0 ignores frames that are not ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    V1,
    S0,
}

#[derive(Debug, Deserialize)]
pub struct V1Params {
    subscribe: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct S0Params {
    subject: Option<String>,
    channel_id: Option<String>,
}

/// `GET /api/v1/ws?subscribe=a,b.*`: refusals as in the module doc (400, 403, 429 for the
/// per-user, per-IP and pattern caps, 503 for `MAX_WS_CONNS`).
pub async fn subscribe_v1(
    State(state): State<AppState>,
    user: WsUser,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(params): Query<V1Params>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let subjects: Vec<String> = params
        .subscribe
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    check_subject_count(&subjects, state.config.ws_max_subscriptions)?;
    let tenant = user.0.tenant;
    let scoped_subjects = subjects
        .iter()
        .map(|s| scoped(s, tenant))
        .collect::<Result<Vec<_>, _>>()?;
    open(state, upgrade, &user, remote, scoped_subjects, Dialect::V1).await
}

/// `GET /api/v1/channels/{id}/ws`: the channel's stream (refusals as `subscribe_v1`).
pub async fn channel_stream(
    State(state): State<AppState>,
    user: WsUser,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(channel_id): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let subject = subject::channel_subject(&channel_id).map_err(ApiError::bad_request)?;
    let subject = scoped(&subject, user.0.tenant)?;
    open(state, upgrade, &user, remote, vec![subject], Dialect::V1).await
}

/// The S0 source's `GET /ws?subject=…|channel_id=…` (refusals as `subscribe_v1`).
pub async fn subscribe_s0(
    State(state): State<AppState>,
    user: WsUser,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(params): Query<S0Params>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let subject = match (params.channel_id.as_deref(), params.subject.as_deref()) {
        (Some(channel_id), _) => {
            subject::channel_subject(channel_id).map_err(ApiError::bad_request)?
        }
        (None, Some(s)) => s.to_string(),
        (None, None) => subject::DEFAULT_SUBJECT.to_string(),
    };
    let subject = scoped(&subject, user.0.tenant)?;
    open(state, upgrade, &user, remote, vec![subject], Dialect::S0).await
}

/// Takes the user's and the IP's socket slots, reserves a connection slot, subscribes (the
/// subjects are already mapped), then upgrades.
async fn open(
    state: AppState,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    user: &WsUser,
    remote: SocketAddr,
    subjects: Vec<String>,
    dialect: Dialect,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|r| {
        ApiError::new(
            r.status(),
            "bad_request",
            format!("not a WebSocket upgrade: {}", r.body_text()),
        )
    })?;
    check_subject_count(&subjects, state.config.ws_max_subscriptions)?;
    let lease = state
        .socket_limits
        .acquire((user.0.tenant, user.subject().to_string()), remote.ip())
        .map_err(|refusal| match refusal {
            CapRefusal::PerUser(cap) => {
                count_refusal("per_user");
                ApiError::too_many_requests(format!(
                    "this user already has {cap} WebSockets open (WS_MAX_SOCKETS_PER_USER)"
                ))
            }
            CapRefusal::PerIp(cap) => {
                count_refusal("per_ip");
                ApiError::too_many_requests(format!(
                    "this client address already has {cap} WebSockets open (WS_MAX_SOCKETS_PER_IP)"
                ))
            }
        })?;
    let Ok(slot) = state.ws_slots.clone().try_acquire_owned() else {
        counter!("gateway_ws_rejected_total").increment(1);
        return Err(ApiError::overloaded(format!(
            "{} WebSockets are open (MAX_WS_CONNS); retry later",
            state.config.max_ws_conns
        )));
    };
    let (mut membership, frames, kick) = state.hub.join();
    for s in &subjects {
        subscribe_capped(&mut membership, s, s)
            .await
            .map_err(|cap| ApiError::too_many_requests(too_many_patterns_message(cap)))?;
    }
    let socket = SocketTask {
        membership,
        tenant: user.0.tenant,
        frames,
        kick,
        shutdown: state.shutdown.token.clone(),
        dialect,
        max_subscriptions: state.config.ws_max_subscriptions,
        ping_interval: state.config.ws_ping_interval,
        idle_timeout: state.config.ws_idle_timeout,
        _slot: OpenSocket::new(slot),
        _lease: lease,
    };
    let tasks = state.shutdown.tasks.clone();
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + 2 * state.config.max_event_bytes + 64 * 1024)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |ws| tasks.track_future(socket.run(ws)))
        .into_response())
}

/// Holds a `MAX_WS_CONNS` slot and the connection gauge for the socket's lifetime.
struct OpenSocket {
    _slot: OwnedSemaphorePermit,
}

impl OpenSocket {
    fn new(slot: OwnedSemaphorePermit) -> Self {
        gauge!("gateway_ws_connections").increment(1.0);
        counter!("gateway_ws_connections_total").increment(1);
        Self { _slot: slot }
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        gauge!("gateway_ws_connections").decrement(1.0);
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ClientOp {
    Subscribe { subject: String },
    Unsubscribe { subject: String },
}

#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ServerOp<'a> {
    Ack {
        subject: &'a str,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<&'a str>,
        message: &'a str,
    },
}

impl<'a> ServerOp<'a> {
    fn error(message: &'a str) -> Self {
        ServerOp::Error {
            code: None,
            message,
        }
    }
}

/// Why the socket stops.
enum Stop {
    /// The peer closed or the connection failed: nothing more to send.
    Gone,
    Close(u16, &'static str),
}

struct SocketTask {
    membership: Membership,
    /// The token's tenant: what `call.` subscriptions are scoped to.
    tenant: Option<uuid::Uuid>,
    frames: mpsc::Receiver<Utf8Bytes>,
    kick: CancellationToken,
    shutdown: CancellationToken,
    dialect: Dialect,
    max_subscriptions: usize,
    ping_interval: Duration,
    idle_timeout: Duration,
    _slot: OpenSocket,
    _lease: SocketLease,
}

type Sink = SplitSink<WebSocket, Message>;

impl SocketTask {
    async fn run(mut self, ws: WebSocket) {
        let (mut sink, mut stream) = ws.split();
        let sent = counter!("gateway_ws_frames_sent_total");
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + self.ping_interval,
            self.ping_interval,
        );
        let mut last_heard = Instant::now();
        // Both stop signals in one future, registered once for the socket's life rather than once
        // per frame (re-creating them per loop showed in the fan-out profile).
        let shutdown = self.shutdown.clone().cancelled_owned();
        let kicked = self.kick.clone().cancelled_owned();
        let mut stopped = pin!(async move {
            tokio::select! {
                biased;
                _ = shutdown => Stop::Close(CLOSE_GOING_AWAY, "server shutting down"),
                _ = kicked => slow_consumer(),
            }
        });
        let stop = loop {
            tokio::select! {
                biased;
                stop = &mut stopped => break stop,
                received = self.frames.recv_many(&mut batch, WRITE_BATCH) => {
                    if received == 0 {
                        break Stop::Close(CLOSE_GOING_AWAY, "server shutting down");
                    }
                    if let Err(stop) = write_batch(&mut sink, &mut batch, &sent, stopped.as_mut()).await {
                        break stop;
                    }
                }
                incoming = stream.next() => {
                    last_heard = Instant::now();
                    match incoming {
                        Some(Ok(Message::Text(text))) => {
                            if let Some(reply) = self.handle_text(&text).await
                                && let Err(stop) = send_guarded(&mut sink, Message::Text(reply), stopped.as_mut()).await
                            {
                                break stop;
                            }
                        }
                        Some(Ok(Message::Binary(_))) if self.dialect == Dialect::V1 => {
                            let reply = reply(ServerOp::error("binary frames are not supported; send JSON text"));
                            if let Err(stop) = send_guarded(&mut sink, Message::Text(reply), stopped.as_mut()).await {
                                break stop;
                            }
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break Stop::Gone,
                        Some(Ok(_)) => {} // pings are answered by tungstenite; pongs only refresh last_heard
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= self.idle_timeout {
                        counter!("gateway_ws_idle_closes_total").increment(1);
                        break Stop::Close(CLOSE_GOING_AWAY, "idle timeout");
                    }
                    if let Err(stop) = send_guarded(&mut sink, Message::Ping(Default::default()), stopped.as_mut()).await {
                        break stop;
                    }
                }
            }
        };
        // Leave every topic and drop the queue first: a socket waiting for its close frame to get
        // through holds no frames and receives none.
        let Self {
            membership,
            frames,
            idle_timeout,
            ..
        } = self;
        drop(membership);
        drop(frames);
        if let Stop::Close(code, reason) = stop {
            // A slow consumer gets its 1013 once it reads again, for as long as an idle peer is
            // tolerated; other closes are bounded by the shutdown drain.
            let patience = if code == CLOSE_TRY_AGAIN_LATER {
                idle_timeout
            } else {
                CLOSE_TIMEOUT
            };
            let frame = Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            }));
            let _ = tokio::time::timeout(patience, async {
                let _ = sink.send(frame).await;
                let _ = sink.close().await;
            })
            .await;
        }
    }

    /// Handles a client text frame; returns the reply, if any.
    async fn handle_text(&mut self, text: &str) -> Option<Utf8Bytes> {
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(_) if self.dialect == Dialect::S0 => return None,
            Err(e) => {
                return Some(reply(ServerOp::error(&format!("malformed JSON: {e}"))));
            }
        };
        if value.get("op").is_none() {
            return match self.dialect {
                Dialect::S0 => None,
                Dialect::V1 => Some(reply(ServerOp::error(
                    r#"expected {"op":"subscribe"|"unsubscribe","subject":"…"}"#,
                ))),
            };
        }
        let op = match serde_json::from_value::<ClientOp>(value) {
            Ok(op) => op,
            Err(e) => {
                return Some(reply(ServerOp::error(&format!("bad op: {e}"))));
            }
        };
        Some(match op {
            ClientOp::Subscribe { subject } => self.subscribe_op(&subject).await,
            // Mapped like a subscribe, but a refusal here refuses nothing new: not counted.
            ClientOp::Unsubscribe { subject } => {
                match subject::scope_subscription(&subject, self.tenant) {
                    Err(refusal) => refusal_frame(&refusal),
                    Ok(mapped) if self.membership.unsubscribe(&mapped).await => {
                        reply(ServerOp::Ack { subject: &subject })
                    }
                    Ok(_) => reply(ServerOp::error(&format!("not subscribed to {subject:?}"))),
                }
            }
        })
    }

    /// A subscribe op: mapped like the upgrade's subjects; the ack echoes the client's name.
    async fn subscribe_op(&mut self, subject: &str) -> Utf8Bytes {
        let mapped = match scoped(subject, self.tenant) {
            Ok(mapped) => mapped,
            Err(refusal) => return refusal_frame(&refusal),
        };
        if !self.membership.contains(&mapped) && self.membership.len() >= self.max_subscriptions {
            return reply(ServerOp::error(&format!(
                "at most {} subscriptions per socket",
                self.max_subscriptions
            )));
        }
        if let Err(cap) = subscribe_capped(&mut self.membership, &mapped, subject).await {
            return reply(ServerOp::Error {
                code: Some("too_many_patterns"),
                message: &too_many_patterns_message(cap),
            });
        }
        reply(ServerOp::Ack { subject })
    }
}

/// The error frame of a refused subscription: `code` as the upgrade's status would say.
fn refusal_frame(refusal: &Refusal) -> Utf8Bytes {
    let (_, code) = refusal.status_and_code();
    reply(ServerOp::Error {
        code: Some(code),
        message: refusal.message(),
    })
}

fn reply(op: ServerOp<'_>) -> Utf8Bytes {
    Utf8Bytes::from(
        serde_json::to_string(&op)
            .unwrap_or_else(|_| r#"{"op":"error","message":"encoding failed"}"#.into()),
    )
}

fn slow_consumer() -> Stop {
    counter!("gateway_ws_slow_consumer_closes_total").increment(1);
    Stop::Close(CLOSE_TRY_AGAIN_LATER, "slow consumer: send queue full")
}

/// Feeds the batch and flushes once, giving up if the socket is kicked or the server stops.
async fn write_batch(
    sink: &mut Sink,
    batch: &mut Vec<Utf8Bytes>,
    sent: &Counter,
    stopped: Pin<&mut impl Future<Output = Stop>>,
) -> Result<(), Stop> {
    let count = batch.len() as u64;
    let write = async {
        for frame in batch.drain(..) {
            sink.feed(Message::Text(frame)).await?;
        }
        sink.flush().await
    };
    tokio::select! {
        biased;
        stop = stopped => Err(stop),
        written = write => {
            written.map_err(|_| Stop::Gone)?;
            sent.increment(count);
            Ok(())
        }
    }
}

/// Sends one message, giving up if the socket is kicked or the server stops.
async fn send_guarded(
    sink: &mut Sink,
    message: Message,
    stopped: Pin<&mut impl Future<Output = Stop>>,
) -> Result<(), Stop> {
    tokio::select! {
        biased;
        stop = stopped => Err(stop),
        written = sink.send(message) => written.map_err(|_| Stop::Gone),
    }
}
