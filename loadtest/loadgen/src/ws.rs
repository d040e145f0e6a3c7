//! WebSocket fan-out truth: N subscribers on the gateway's `/api/v1/ws?subscribe=SUBJECT`, events
//! published at a constant rate through `POST /api/v1/events/{subject}`, each event's data
//! carrying its sequence number and the generator's send time (`{"seq":n,"sent_us":t}`, t in µs
//! of the generator's monotonic clock since the run started). Every subscriber keeps a bitset of
//! the sequence numbers it saw, so the run reports exactly which accepted events each subscriber
//! lost or got twice, and the delivery latency (publish → frame received) of every frame in HDR.
//!
//! Phases: connect all subscribers → warm up (publish a marker on every subject until every
//! subscriber has seen one, so a subscription still on its way to Redis is not counted as loss)
//! → publish on the timetable → drain (until every expected frame arrived or `--drain` passed)
//! → count. What must not break: an event is expected only if its publish was answered 2xx, and a
//! subscriber is expected to see only events of its own subject.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::Full;
use memchr::memmem;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::engine::{self, Engine, RequestSource};
use crate::report::{self, Header, RunClock};
use crate::schedule::{Dispatcher, Schedule, Ticket};
use crate::stats::{ErrorCounts, Shards, StatusClasses, Summary, Tally, fmt_ms, group};
use crate::target::Target;

/// The `ws` subcommand's settings, validated.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// The gateway's base URL (`http://127.0.0.1:8080`).
    pub target: Target,
    pub subscribers: usize,
    /// Subjects the subscribers are spread over (subscriber `i` on subject `i % subjects`);
    /// events are published round-robin over them.
    pub subjects: usize,
    /// Publishes per second, all subjects together.
    pub rate: f64,
    pub duration: Duration,
    pub publish_connections: usize,
    pub connect_concurrency: usize,
    pub drain: Duration,
    pub timeout: Duration,
    pub token: String,
    /// Extra bytes of filler in each event's data (message size).
    pub payload_bytes: usize,
    /// A pause after every frame a subscriber reads: simulates slow consumers.
    pub read_delay: Duration,
    pub progress: Option<Duration>,
}

/// How long the warm-up may take before the run gives up.
const WARMUP_TIMEOUT: Duration = Duration::from_secs(30);
const WARMUP_EVERY: Duration = Duration::from_millis(250);
/// How long subscribers keep reading, without `--read-delay`, after the run is over.
const FLUSH_AFTER_STOP: Duration = Duration::from_secs(1);

type Socket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// What a frame said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    Warmup,
    Event { seq: u64, sent_us: u64 },
    Unparsed,
}

/// Finds our fields in a gateway envelope (`{…,"data":{"seq":1,"sent_us":2}}`) without a full
/// JSON parse: at 500k frames/s the generator's per-frame cost is the measurement's ceiling.
pub fn parse_frame(frame: &[u8]) -> Frame {
    let Some(at) = memmem::rfind(frame, b"\"data\":") else {
        return Frame::Unparsed;
    };
    let data = &frame[at..];
    if memmem::find(data, b"\"warmup\":true").is_some() {
        return Frame::Warmup;
    }
    match (
        number_after(data, b"\"seq\":"),
        number_after(data, b"\"sent_us\":"),
    ) {
        (Some(seq), Some(sent_us)) => Frame::Event { seq, sent_us },
        _ => Frame::Unparsed,
    }
}

fn number_after(haystack: &[u8], key: &[u8]) -> Option<u64> {
    let start = memmem::find(haystack, key)? + key.len();
    haystack[start..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit())
        .try_fold(None, |acc: Option<u64>, b| {
            acc.unwrap_or(0)
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(b - b'0')))
                .map(Some)
        })?
}

/// A fixed-size bitset of sequence numbers, shareable between tasks.
#[derive(Debug)]
pub struct AtomicBits {
    words: Vec<AtomicU64>,
    len: u64,
}

impl AtomicBits {
    pub fn new(len: u64) -> Self {
        Self {
            words: (0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            len,
        }
    }

    pub fn set(&self, i: u64) {
        if i < self.len {
            self.words[(i / 64) as usize].fetch_or(1 << (i % 64), Ordering::Relaxed);
        }
    }

    pub fn get(&self, i: u64) -> bool {
        i < self.len && self.words[(i / 64) as usize].load(Ordering::Relaxed) & (1 << (i % 64)) != 0
    }
}

/// One subscriber's view: which sequence numbers arrived, how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqTracker {
    seen: Vec<u64>,
    len: u64,
    pub unique: u64,
    pub duplicated: u64,
    /// Frames that arrived after a higher sequence number of the same subscriber.
    pub reordered: u64,
    /// Sequence numbers outside the run (never published by it).
    pub out_of_range: u64,
    highest: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    New,
    Duplicate,
    OutOfRange,
}

impl SeqTracker {
    pub fn new(len: u64) -> Self {
        Self {
            seen: vec![0; len.div_ceil(64) as usize],
            len,
            unique: 0,
            duplicated: 0,
            reordered: 0,
            out_of_range: 0,
            highest: None,
        }
    }

    pub fn record(&mut self, seq: u64) -> Seen {
        if seq >= self.len {
            self.out_of_range += 1;
            return Seen::OutOfRange;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.seen[word] & bit != 0 {
            self.duplicated += 1;
            return Seen::Duplicate;
        }
        self.seen[word] |= bit;
        self.unique += 1;
        match self.highest {
            Some(h) if seq < h => self.reordered += 1,
            _ => self.highest = Some(seq),
        }
        Seen::New
    }

    pub fn has(&self, seq: u64) -> bool {
        seq < self.len && self.seen[(seq / 64) as usize] & (1 << (seq % 64)) != 0
    }

    /// Expected events (those `expected` says were accepted on `subject` of `subjects`) this
    /// subscriber never received.
    pub fn lost(&self, subject: usize, subjects: usize, expected: &AtomicBits) -> u64 {
        (subject as u64..self.len)
            .step_by(subjects.max(1))
            .filter(|&seq| expected.get(seq) && !self.has(seq))
            .count() as u64
    }
}

/// A counter written by many tasks without sharing one cache line.
#[derive(Debug)]
struct Striped {
    stripes: Vec<Padded>,
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

impl Striped {
    fn new(count: usize) -> Self {
        Self {
            stripes: (0..count.max(1)).map(|_| Padded::default()).collect(),
        }
    }

    fn add(&self, slot: usize, n: u64) {
        self.stripes[slot % self.stripes.len()]
            .0
            .fetch_add(n, Ordering::Relaxed);
    }

    fn sum(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// What the subscriber tasks share.
struct Subscribers {
    anchor: Instant,
    total: u64,
    read_delay: Duration,
    delivery: Shards,
    connect: Shards,
    delivered: Striped,
    warmed: AtomicUsize,
    connected: AtomicUsize,
    attempts_done: AtomicUsize,
    failed: AtomicUsize,
    unparsed: AtomicU64,
    closed_codes: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    eof: AtomicU64,
}

/// What one subscriber task hands back.
struct SubscriberResult {
    subject: usize,
    tracker: SeqTracker,
    last_frame_us: u64,
}

impl Subscribers {
    async fn run(
        self: Arc<Self>,
        slot: usize,
        subject: usize,
        url: Uri,
        addr: std::net::SocketAddr,
        connect_permits: Arc<Semaphore>,
        stop: CancellationToken,
    ) -> Option<SubscriberResult> {
        let connected = {
            let _permit = connect_permits.acquire().await.ok()?;
            let started = Instant::now();
            let attempt = tokio::time::timeout(Duration::from_secs(10), async {
                let stream = TcpStream::connect(addr).await.ok()?;
                let _ = stream.set_nodelay(true);
                // Small read buffers: thousands of sockets in one process (the default is 128 KiB).
                let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
                tokio_tungstenite::client_async_with_config(url, stream, Some(config))
                    .await
                    .ok()
            })
            .await
            .ok()
            .flatten();
            if attempt.is_some() {
                self.connect.record(slot, started.elapsed());
                self.connected.fetch_add(1, Ordering::Relaxed);
            } else {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            self.attempts_done.fetch_add(1, Ordering::Relaxed);
            attempt
        };
        let (mut socket, _response) = connected?;
        let mut result = SubscriberResult {
            subject,
            tracker: SeqTracker::new(self.total),
            last_frame_us: 0,
        };
        let mut warmed = false;
        let reading =
            self.read_frames(slot, &mut socket, &mut result, &mut warmed, self.read_delay);
        if stop.run_until_cancelled(reading).await.is_none() {
            // The run is over, but frames (or the server's close frame) may still sit in this
            // socket's buffers, behind a slow reader: take them in without the read delay for a
            // moment, so a consumer the server closed is reported as closed.
            let _ = tokio::time::timeout(
                FLUSH_AFTER_STOP,
                self.read_frames(slot, &mut socket, &mut result, &mut warmed, Duration::ZERO),
            )
            .await;
        }
        Some(result)
    }

    /// Reads until the server closes the socket (counting how), pausing `delay` after each frame.
    async fn read_frames(
        &self,
        slot: usize,
        socket: &mut Socket,
        result: &mut SubscriberResult,
        warmed: &mut bool,
        delay: Duration,
    ) {
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Text(text)) => {
                    self.on_frame(slot, text.as_bytes(), result, warmed);
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                }
                Ok(Message::Close(frame)) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    let mut codes = self.closed_codes.lock().unwrap_or_else(|e| e.into_inner());
                    *codes.entry(code.to_string()).or_default() += 1;
                    return;
                }
                Ok(Message::Binary(_)) => {
                    self.unparsed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {} // ping/pong: tungstenite answers pings itself
                Err(_) => break,
            }
        }
        self.eof.fetch_add(1, Ordering::Relaxed);
    }

    fn on_frame(
        &self,
        slot: usize,
        frame: &[u8],
        result: &mut SubscriberResult,
        warmed: &mut bool,
    ) {
        match parse_frame(frame) {
            Frame::Warmup => {
                if !*warmed {
                    *warmed = true;
                    self.warmed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Frame::Event { seq, sent_us } => {
                let now_us = self.anchor.elapsed().as_micros() as u64;
                if result.tracker.record(seq) == Seen::New {
                    self.delivered.add(slot, 1);
                    self.delivery
                        .record(slot, Duration::from_micros(now_us.saturating_sub(sent_us)));
                    result.last_frame_us = now_us;
                }
            }
            Frame::Unparsed => {
                self.unparsed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Builds the publishes: event `seq` goes to subject `seq % subjects`.
struct EventSource {
    anchor: Instant,
    uris: Vec<Uri>,
    headers: http::HeaderMap,
    padding: String,
    accepted: Arc<AtomicBits>,
}

impl RequestSource for EventSource {
    fn build(&self, ticket: &Ticket) -> Request<Full<Bytes>> {
        let seq = ticket.index;
        let sent_us = self.anchor.elapsed().as_micros();
        let body = if self.padding.is_empty() {
            format!(r#"{{"seq":{seq},"sent_us":{sent_us}}}"#)
        } else {
            format!(
                r#"{{"seq":{seq},"sent_us":{sent_us},"pad":"{}"}}"#,
                self.padding
            )
        };
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.uris[(seq % self.uris.len() as u64) as usize].clone();
        *request.headers_mut() = self.headers.clone();
        request
    }

    fn on_status(&self, ticket: &Ticket, status: StatusCode, _body: &[u8]) {
        if status.is_success() {
            self.accepted.set(ticket.index);
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WsReport {
    #[serde(flatten)]
    pub header: Header,
    pub config: WsReportConfig,
    pub connect: ConnectReport,
    pub publish: PublishReport,
    pub frames: FrameReport,
    pub delivery_latency_ms: Summary,
    pub closed_by_server: ClosedReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct WsReportConfig {
    pub url: String,
    pub subscribers: usize,
    pub subjects: usize,
    pub rate: f64,
    pub duration_s: f64,
    pub publish_connections: usize,
    pub drain_s: f64,
    pub payload_bytes: usize,
    pub read_delay_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectReport {
    pub opened: usize,
    pub failed: usize,
    pub latency_ms: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    pub scheduled: u64,
    pub sent: u64,
    pub accepted: u64,
    pub failed: u64,
    pub status: StatusClasses,
    pub errors: ErrorCounts,
    /// From the intended publish time (coordinated omission corrected).
    pub latency_ms: Summary,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FrameReport {
    /// Accepted publishes × the subscribers of their subject that were connected.
    pub expected: u64,
    /// Distinct expected-or-not events received, over all subscribers.
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub unparsed: u64,
    pub subscribers_with_loss: u64,
    pub max_lost_per_subscriber: u64,
    /// `delivered` over the time from the first publish to the last frame received.
    pub frames_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClosedReport {
    /// Sockets the server closed (close frame or dropped connection) before the run ended.
    pub count: u64,
    pub codes: std::collections::BTreeMap<String, u64>,
    /// Connections that ended without a close frame.
    pub eof: u64,
}

/// Distinct per run, so two runs (or a run and a test) never share subjects (ws) or e-mails (chat).
pub(crate) fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:06x}", std::process::id(), nanos & 0xff_ffff)
}

/// The `ws` subcommand.
pub async fn run_ws(config: WsConfig, clock: RunClock) -> anyhow::Result<WsReport> {
    let id = run_id();
    let subjects: Vec<String> = (0..config.subjects)
        .map(|i| format!("loadgen-{id}.s{i}"))
        .collect();
    let base = config.target.base_path().to_string();
    let anchor = Instant::now();
    let schedule = Schedule::new(config.rate, config.duration);
    let total = schedule.total();

    // 1. subscribers
    let shared = Arc::new(Subscribers {
        anchor,
        total,
        read_delay: config.read_delay,
        delivery: Shards::new(16),
        connect: Shards::new(16),
        delivered: Striped::new(16),
        warmed: AtomicUsize::new(0),
        connected: AtomicUsize::new(0),
        attempts_done: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        unparsed: AtomicU64::new(0),
        closed_codes: Default::default(),
        eof: AtomicU64::new(0),
    });
    let stop = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(config.connect_concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for slot in 0..config.subscribers {
        let subject = slot % config.subjects;
        let url: Uri = format!(
            "{}{base}/api/v1/ws?subscribe={}&access_token={}",
            config.target.origin("ws"),
            subjects[subject],
            config.token
        )
        .parse()?;
        tasks.spawn(shared.clone().run(
            slot,
            subject,
            url,
            config.target.addr,
            permits.clone(),
            stop.clone(),
        ));
    }
    let connect_started = Instant::now();
    while shared.attempts_done.load(Ordering::Relaxed) < config.subscribers {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if connect_started.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    let connected = shared.connected.load(Ordering::Relaxed);
    if connected == 0 {
        stop.cancel();
        anyhow::bail!(
            "no subscriber could connect to {}{base}/api/v1/ws: is the gateway running (and the token valid)?",
            config.target.origin("ws")
        );
    }
    if config.progress.is_some() {
        eprintln!(
            "[connect] {} of {} subscribers connected in {:.1}s",
            group(connected as u64),
            group(config.subscribers as u64),
            connect_started.elapsed().as_secs_f64()
        );
    }

    // 2. warm-up: every subscription is live in Redis before the clock starts.
    let mut headers = http::HeaderMap::new();
    headers.insert(
        header::HOST,
        HeaderValue::from_str(&config.target.authority)?,
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", config.token))?,
    );
    let uris = subjects
        .iter()
        .map(|s| format!("{base}/api/v1/events/{s}").parse::<Uri>())
        .collect::<Result<Vec<_>, _>>()?;
    warm_up(&config, &shared, &uris, &headers, connected).await?;

    // 3. publish on the timetable.
    let accepted = Arc::new(AtomicBits::new(total));
    let source = EventSource {
        anchor,
        uris,
        headers,
        padding: "x".repeat(config.payload_bytes),
        accepted: accepted.clone(),
    };
    let senders = engine::preconnect(config.target.addr, config.publish_connections).await?;
    let publish_start = Instant::now();
    let first_publish_us = anchor.elapsed().as_micros() as u64;
    let engine = Arc::new(Engine::new(
        config.target.addr,
        source,
        Dispatcher::open(schedule, publish_start),
        config.timeout,
    ));
    let mut frames_tally = Tally::default();
    let (mut last_frames, mut last_at) = (0u64, publish_start);
    let mut suffix = || {
        let frames = shared.delivered.sum();
        let now = Instant::now();
        let rate =
            (frames - last_frames) as f64 / now.duration_since(last_at).as_secs_f64().max(1e-9);
        let interval = frames_tally.absorb(&shared.delivery);
        (last_frames, last_at) = (frames, now);
        format!(
            " | frames {} ({}/s) delivery p99 {}",
            group(frames),
            group(rate.round() as u64),
            if interval.is_empty() {
                "-".to_string()
            } else {
                fmt_ms(interval.value_at_quantile(0.99) as f64 / 1000.0)
            }
        )
    };
    let (totals, _) = engine::run_engine(
        engine.clone(),
        senders,
        config.duration,
        config.progress,
        "published",
        &mut suffix,
    )
    .await;
    let publish_counts = engine.outcomes.snapshot();
    let accepted_count = publish_counts.status.c2xx;

    // 4. drain: wait for the frames still in flight.
    let expected_upper = accepted_count * connected as u64;
    let drain_deadline = Instant::now() + config.drain;
    while shared.delivered.sum() < expected_upper && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();

    // 5. count.
    let mut frames = FrameReport {
        expected: 0,
        delivered: 0,
        lost: 0,
        duplicated: 0,
        reordered: 0,
        unparsed: shared.unparsed.load(Ordering::Relaxed),
        subscribers_with_loss: 0,
        max_lost_per_subscriber: 0,
        frames_per_s: 0.0,
    };
    let mut last_frame_us = first_publish_us;
    let mut accepted_per_subject = vec![0u64; config.subjects];
    for seq in 0..total {
        if accepted.get(seq) {
            accepted_per_subject[(seq % config.subjects as u64) as usize] += 1;
        }
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok(Some(result)) = joined else { continue };
        let lost = result
            .tracker
            .lost(result.subject, config.subjects, &accepted);
        frames.expected += accepted_per_subject[result.subject];
        frames.delivered += result.tracker.unique;
        frames.duplicated += result.tracker.duplicated;
        frames.reordered += result.tracker.reordered;
        frames.unparsed += result.tracker.out_of_range;
        frames.lost += lost;
        if lost > 0 {
            frames.subscribers_with_loss += 1;
        }
        frames.max_lost_per_subscriber = frames.max_lost_per_subscriber.max(lost);
        last_frame_us = last_frame_us.max(result.last_frame_us);
    }
    let window_s = (last_frame_us.saturating_sub(first_publish_us) as f64 / 1e6)
        .max(config.duration.as_secs_f64());
    frames.frames_per_s = (frames.delivered as f64 / window_s).round();
    frames_tally.absorb(&shared.delivery);
    let mut connect_tally = Tally::default();
    connect_tally.absorb(&shared.connect);
    let codes = shared
        .closed_codes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let eof = shared.eof.load(Ordering::Relaxed);
    let header = clock.finish(engine::tokio_threads());
    Ok(WsReport {
        header,
        config: WsReportConfig {
            url: config.target.url.clone(),
            subscribers: config.subscribers,
            subjects: config.subjects,
            rate: config.rate,
            duration_s: config.duration.as_secs_f64(),
            publish_connections: config.publish_connections,
            drain_s: config.drain.as_secs_f64(),
            payload_bytes: config.payload_bytes,
            read_delay_ms: config.read_delay.as_secs_f64() * 1000.0,
        },
        connect: ConnectReport {
            opened: connected,
            failed: shared.failed.load(Ordering::Relaxed),
            latency_ms: Summary::of(&connect_tally.total),
        },
        publish: PublishReport {
            scheduled: total,
            sent: publish_counts.sent,
            accepted: accepted_count,
            failed: publish_counts.sent - accepted_count,
            status: publish_counts.status.clone(),
            errors: publish_counts.errors.clone(),
            latency_ms: Summary::of(&totals.latency.total),
        },
        frames,
        delivery_latency_ms: Summary::of(&frames_tally.total),
        closed_by_server: ClosedReport {
            count: codes.values().sum::<u64>() + eof,
            codes,
            eof,
        },
    })
}

/// Publishes a warm-up marker on every subject until each connected subscriber has seen one.
async fn warm_up(
    config: &WsConfig,
    shared: &Subscribers,
    uris: &[Uri],
    headers: &http::HeaderMap,
    connected: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut sender = None;
    while shared.warmed.load(Ordering::Relaxed) < connected {
        if started.elapsed() > WARMUP_TIMEOUT {
            anyhow::bail!(
                "only {} of {connected} subscribers received the warm-up event within {}s: are their subscriptions reaching Redis?",
                shared.warmed.load(Ordering::Relaxed),
                WARMUP_TIMEOUT.as_secs()
            );
        }
        for uri in uris {
            let mut request = Request::new(Full::new(Bytes::from_static(br#"{"warmup":true}"#)));
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = uri.clone();
            *request.headers_mut() = headers.clone();
            if sender
                .as_ref()
                .is_none_or(|s: &engine::Sender| s.is_closed())
            {
                sender = engine::connect(config.target.addr).await.ok();
            }
            let Some(s) = sender.as_mut() else {
                anyhow::bail!("cannot connect to {} to publish", config.target.addr);
            };
            if s.ready().await.is_err() {
                sender = None;
                continue;
            }
            match s.send_request(request).await {
                Ok(response) if response.status().is_success() => {
                    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                }
                Ok(response) => {
                    let status = response.status();
                    let body = http_body_util::BodyExt::collect(response.into_body())
                        .await
                        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                        .unwrap_or_default();
                    anyhow::bail!("publishing to {uri} answered {status}: {body}");
                }
                Err(_) => sender = None,
            }
        }
        let wait_until = Instant::now() + WARMUP_EVERY;
        while Instant::now() < wait_until && shared.warmed.load(Ordering::Relaxed) < connected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}

impl WsReport {
    pub fn lines(&self) -> Vec<String> {
        let c = &self.config;
        let mut lines = vec![format!(
            "== storm-loadgen ws: {} subscribers on {} subject(s) at {}, {}/s published for {}s ==",
            group(c.subscribers as u64),
            c.subjects,
            c.url,
            c.rate,
            c.duration_s
        )];
        lines.extend(report::header_lines(&self.header));
        lines.push(format!(
            "connect     {} opened, {} failed; {}",
            group(self.connect.opened as u64),
            self.connect.failed,
            self.connect.latency_ms.line()
        ));
        let p = &self.publish;
        lines.push(format!(
            "publish     {} of {} scheduled sent, {} accepted, {} failed (errors: connect {} timeout {} reset {} other {}); {}",
            group(p.sent),
            group(p.scheduled),
            group(p.accepted),
            group(p.failed),
            p.errors.connect,
            p.errors.timeout,
            p.errors.reset,
            p.errors.other,
            p.latency_ms.line()
        ));
        let f = &self.frames;
        lines.push(format!(
            "frames      {} delivered of {} expected — {} frames/s; lost {} ({} subscribers, max {} each), duplicated {}, reordered {}, unparsed {}",
            group(f.delivered),
            group(f.expected),
            group(f.frames_per_s as u64),
            group(f.lost),
            f.subscribers_with_loss,
            f.max_lost_per_subscriber,
            f.duplicated,
            f.reordered,
            f.unparsed
        ));
        lines.push(format!(
            "delivery    (publish → frame received) {}",
            self.delivery_latency_ms.line()
        ));
        lines.push(format!(
            "closed      {} by the server (codes {:?}, without close frame {})",
            self.closed_by_server.count, self.closed_by_server.codes, self.closed_by_server.eof
        ));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_from_the_gateway_envelope() {
        let frame =
            br#"{"id":"x","subject":"s","ts":1,"sub":"seq","data":{"seq":42,"sent_us":123456}}"#;
        assert_eq!(
            parse_frame(frame),
            Frame::Event {
                seq: 42,
                sent_us: 123456
            }
        );
        let padded = br#"{"id":"x","data":{"seq":7,"sent_us":9,"pad":"xxxx"}}"#;
        assert_eq!(parse_frame(padded), Frame::Event { seq: 7, sent_us: 9 });
        assert_eq!(
            parse_frame(br#"{"id":"x","data":{"warmup":true}}"#),
            Frame::Warmup
        );
        for bad in [
            &br#"{"id":"x"}"#[..],
            br#"{"data":{"seq":"a","sent_us":1}}"#,
            br#"{"data":{"seq":99999999999999999999999,"sent_us":1}}"#,
            br#"{"data":{"sent_us":1}}"#,
            b"",
        ] {
            assert_eq!(
                parse_frame(bad),
                Frame::Unparsed,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn tracker_counts_new_duplicate_reordered_and_out_of_range() {
        let mut t = SeqTracker::new(10);
        assert_eq!(t.record(0), Seen::New);
        assert_eq!(t.record(2), Seen::New);
        assert_eq!(t.record(1), Seen::New); // after 2: reordered
        assert_eq!(t.record(2), Seen::Duplicate);
        assert_eq!(t.record(2), Seen::Duplicate);
        assert_eq!(t.record(10), Seen::OutOfRange);
        assert_eq!(
            (t.unique, t.duplicated, t.reordered, t.out_of_range),
            (3, 2, 1, 1)
        );
    }

    #[test]
    fn loss_counts_only_accepted_events_of_the_subscribers_subject() {
        // 12 events over 3 subjects: subject 1 gets 1, 4, 7, 10. Event 7's publish failed.
        let accepted = AtomicBits::new(12);
        for seq in (0..12).filter(|s| *s != 7) {
            accepted.set(seq);
        }
        let mut t = SeqTracker::new(12);
        t.record(1);
        t.record(10);
        // 4 is lost; 7 was never accepted, so not lost; other subjects' events are not ours.
        assert_eq!(t.lost(1, 3, &accepted), 1);
        t.record(4);
        assert_eq!(t.lost(1, 3, &accepted), 0);
        let silent = SeqTracker::new(12);
        assert_eq!(silent.lost(0, 3, &accepted), 4);
        assert_eq!(silent.lost(0, 1, &accepted), 11);
    }

    #[test]
    fn striped_counter_sums_all_stripes() {
        let c = Striped::new(4);
        for slot in 0..10 {
            c.add(slot, 2);
        }
        assert_eq!(c.sum(), 20);
    }
}
