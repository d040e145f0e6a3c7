//! HTTP load over pre-opened HTTP/1.1 connections (hyper's low-level `conn::http1`, one request in
//! flight per connection: the connection count is exactly `--connections`, with no pool deciding
//! for us). The engine here also publishes the events of the WebSocket fan-out run.
//!
//! Latency is recorded three ways, each in its own HDR histogram: **latency** from the intended
//! send time (the open model's coordinated-omission-corrected figure; in the closed model the same
//! as service time), **service time** from the moment the request actually started, and **send
//! lag** (actual − intended start: how far behind its timetable the generator ran). A request
//! that fails without a status is counted by kind and is not in the histograms.
//!
//! What must not break: every ticket taken is counted exactly once, as a status or an error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::report::{self, Header, RunClock};
use crate::schedule::{Dispatcher, Schedule, Ticket};
use crate::stats::{
    ErrorCounts, ErrorKind, Outcomes, Shards, StatusClasses, Summary, Tally, fmt_ms, group,
};
use crate::target::Target;

pub type Sender = SendRequest<Full<Bytes>>;

/// How long after the end of the timetable the dispatcher still hands out late tickets.
pub const DISPATCH_GRACE: Duration = Duration::from_millis(250);

/// Builds the request for a ticket and hears how it ended. The hooks run on the connection's task
/// after the latency is recorded, so what they cost is not in the figures (but they should stay
/// cheap: the connection takes its next ticket only after them).
pub trait RequestSource: Send + Sync + 'static {
    /// Whether `on_status` needs the response body; without it the body is read and dropped.
    const KEEP_BODY: bool = false;
    fn build(&self, ticket: &Ticket) -> Request<Full<Bytes>>;
    /// The request was answered; `body` is empty unless [`RequestSource::KEEP_BODY`].
    fn on_status(&self, _ticket: &Ticket, _status: StatusCode, _body: &[u8]) {}
    /// The request ended without a status.
    fn on_error(&self, _ticket: &Ticket, _kind: ErrorKind) {}
}

/// The same request every time (the `http` subcommand).
#[derive(Debug, Clone)]
pub struct FixedRequest {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl FixedRequest {
    pub fn new(
        target: &Target,
        method: Method,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Self, String> {
        let uri: Uri = target
            .path_and_query
            .parse()
            .map_err(|e| format!("bad path '{}': {e}", target.path_and_query))?;
        let mut headers = headers;
        if !headers.contains_key(header::HOST) {
            let host = HeaderValue::from_str(&target.authority)
                .map_err(|e| format!("bad host '{}': {e}", target.authority))?;
            headers.insert(header::HOST, host);
        }
        Ok(Self {
            method,
            uri,
            headers,
            body,
        })
    }
}

impl RequestSource for FixedRequest {
    fn build(&self, _ticket: &Ticket) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Everything the connection tasks share.
pub struct Engine<S> {
    pub addr: SocketAddr,
    pub source: S,
    pub dispatcher: Arc<Dispatcher>,
    pub timeout: Duration,
    pub outcomes: Outcomes,
    pub latency: Shards,
    pub service: Shards,
    pub lag: Shards,
    /// The 503s' share of `latency` (a server shedding load, S3): how fast a refusal comes back is
    /// its own figure; the admitted answers' is `latency` minus it, derived at the end.
    pub shed: Shards,
}

impl<S: RequestSource> Engine<S> {
    pub fn new(addr: SocketAddr, source: S, dispatcher: Dispatcher, timeout: Duration) -> Self {
        let shards = 4 * std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            addr,
            source,
            dispatcher: Arc::new(dispatcher),
            timeout,
            outcomes: Outcomes::new(),
            latency: Shards::new(shards),
            service: Shards::new(shards),
            lag: Shards::new(shards),
            shed: Shards::new(shards),
        }
    }

    /// One connection's loop: take a ticket, send, record; reconnect after a failure. Hands the
    /// connection back when the dispatcher has no more tickets (for the next phase of a run).
    pub async fn drive(self: Arc<Self>, slot: usize, mut sender: Option<Sender>) -> Option<Sender> {
        while let Some(ticket) = self.dispatcher.next().await {
            let sent_at = Instant::now();
            self.outcomes.sent.fetch_add(1, Ordering::Relaxed);
            let open = self.dispatcher.is_open_model();
            if open {
                self.lag
                    .record(slot, sent_at.saturating_duration_since(ticket.intended));
            }
            let deadline = tokio::time::Instant::from_std(sent_at + self.timeout);
            match tokio::time::timeout_at(deadline, self.exchange(&mut sender, &ticket)).await {
                Ok(Ok((status, body))) => {
                    let done = Instant::now();
                    let latency = done.saturating_duration_since(ticket.intended);
                    self.latency.record(slot, latency);
                    if status == StatusCode::SERVICE_UNAVAILABLE {
                        self.shed.record(slot, latency);
                    }
                    self.service
                        .record(slot, done.saturating_duration_since(sent_at));
                    self.outcomes.status(status.as_u16());
                    self.source.on_status(&ticket, status, &body);
                }
                Ok(Err(kind)) => {
                    sender = None;
                    self.outcomes.error(kind);
                    self.source.on_error(&ticket, kind);
                    if kind == ErrorKind::Connect && !open {
                        // The closed model has no timetable to slow it down: do not spin on a
                        // refused port.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                Err(_elapsed) => {
                    // The connection may still carry the late response: never reuse it.
                    sender = None;
                    self.outcomes.error(ErrorKind::Timeout);
                    self.source.on_error(&ticket, ErrorKind::Timeout);
                }
            }
        }
        sender
    }

    async fn exchange(
        &self,
        sender: &mut Option<Sender>,
        ticket: &Ticket,
    ) -> Result<(StatusCode, Bytes), ErrorKind> {
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            *sender = Some(connect(self.addr).await?);
        }
        let Some(connection) = sender.as_mut() else {
            return Err(ErrorKind::Connect);
        };
        connection.ready().await.map_err(|e| classify(&e))?;
        let response = connection
            .send_request(self.source.build(ticket))
            .await
            .map_err(|e| classify(&e))?;
        let status = response.status();
        // Read the body to its end (the connection is reusable only then), keeping it only if
        // the source asked for it.
        let mut body = response.into_body();
        let mut kept = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| classify(&e))?;
            if S::KEEP_BODY
                && let Some(data) = frame.data_ref()
            {
                kept.extend_from_slice(data);
            }
        }
        Ok((status, kept.freeze()))
    }
}

/// Opens one HTTP/1.1 connection (TCP_NODELAY) and spawns its driver task.
pub async fn connect(addr: SocketAddr) -> Result<Sender, ErrorKind> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|_| ErrorKind::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| ErrorKind::Connect)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Reset (the peer closed or reset the connection mid-exchange) vs anything else.
fn classify(error: &hyper::Error) -> ErrorKind {
    if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
        return ErrorKind::Reset;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as Io;
            return match io.kind() {
                Io::ConnectionReset
                | Io::ConnectionAborted
                | Io::BrokenPipe
                | Io::UnexpectedEof => ErrorKind::Reset,
                Io::TimedOut => ErrorKind::Timeout,
                _ => ErrorKind::Other,
            };
        }
        source = cause.source();
    }
    ErrorKind::Other
}

/// Opens `count` connections before the clock starts, so connection set-up is not in the first
/// requests' latency. Fails only if none can be opened (the target is down).
pub async fn preconnect(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<Option<Sender>>> {
    let mut set = JoinSet::new();
    for _ in 0..count {
        set.spawn(async move {
            tokio::time::timeout(Duration::from_secs(5), connect(addr))
                .await
                .ok()
                .and_then(Result::ok)
        });
    }
    let mut senders = Vec::with_capacity(count);
    while let Some(joined) = set.join_next().await {
        senders.push(joined.ok().flatten());
    }
    if count > 0 && senders.iter().all(Option::is_none) {
        anyhow::bail!("cannot connect to {addr}: is the target running?");
    }
    Ok(senders)
}

/// What the reporter keeps between progress lines.
#[derive(Debug, Default)]
pub struct Totals {
    pub latency: Tally,
    pub service: Tally,
    pub lag: Tally,
    pub shed: Tally,
    last_sent: u64,
    last_2xx: u64,
    last_completed: u64,
    last_at: Option<Instant>,
}

impl Totals {
    /// Harvests the engine's shards and returns the progress line for the interval.
    pub fn progress<S>(&mut self, engine: &Engine<S>, label: &str) -> String {
        let interval = self.latency.absorb(&engine.latency);
        self.service.absorb(&engine.service);
        self.lag.absorb(&engine.lag);
        self.shed.absorb(&engine.shed);
        let counts = engine.outcomes.snapshot();
        let now = Instant::now();
        let seconds = now
            .duration_since(self.last_at.unwrap_or(engine.dispatcher.start()))
            .as_secs_f64()
            .max(1e-9);
        let sent = counts.sent - self.last_sent;
        let completed = counts.completed - self.last_completed;
        let ok = counts.status.c2xx - self.last_2xx;
        self.last_sent = counts.sent;
        self.last_completed = counts.completed;
        self.last_2xx = counts.status.c2xx;
        self.last_at = Some(now);
        let ok_share = if completed == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", ok as f64 * 100.0 / completed as f64)
        };
        let p99 = if interval.is_empty() {
            "-".to_string()
        } else {
            fmt_ms(interval.value_at_quantile(0.99) as f64 / 1000.0)
        };
        let errors = counts.errors.total();
        format!(
            "[{:>3.0}s] {label} {} ({}/s) ok {ok_share} p99 {p99}{}",
            engine.dispatcher.start().elapsed().as_secs_f64(),
            group(counts.sent),
            group((sent as f64 / seconds).round() as u64),
            if errors > 0 {
                format!(" errors {}", group(errors))
            } else {
                String::new()
            }
        )
    }
}

/// Runs the engine's connections to the end of the run, printing a progress line every
/// `progress` (to stderr) unless `None`; returns the run's totals and the connections (`None`
/// where one was lost), so a run in phases keeps its connections from one phase to the next.
pub async fn run_engine<S: RequestSource>(
    engine: Arc<Engine<S>>,
    senders: Vec<Option<Sender>>,
    duration: Duration,
    progress: Option<Duration>,
    label: &str,
    suffix: &mut dyn FnMut() -> String,
) -> (Totals, Vec<Option<Sender>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let pacer = engine
        .dispatcher
        .spawn_pacer(duration + DISPATCH_GRACE, stop.clone());
    let mut connections = JoinSet::new();
    let count = senders.len();
    for (slot, sender) in senders.into_iter().enumerate() {
        connections.spawn(engine.clone().drive(slot, sender));
    }
    let mut kept = Vec::with_capacity(count);
    let mut totals = Totals::default();
    let every = progress.unwrap_or(Duration::from_secs(3600));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            joined = connections.join_next() => match joined {
                None => break,
                Some(joined) => kept.push(joined.ok().flatten()),
            },
            _ = ticker.tick() => {
                let line = totals.progress(&engine, label);
                if progress.is_some() {
                    eprintln!("{line}{}", suffix());
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(pacer) = pacer {
        let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
    }
    totals.progress(&engine, label);
    (totals, kept)
}

/// The `http` subcommand's settings, validated.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub target: Target,
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `Some(rate)`: open model at `rate`/s; `None`: closed model.
    pub rate: Option<f64>,
    pub connections: usize,
    pub duration: Duration,
    pub timeout: Duration,
    pub progress: Option<Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpReport {
    #[serde(flatten)]
    pub header: Header,
    pub config: HttpReportConfig,
    pub requests: RequestCounts,
    pub status: StatusClasses,
    pub status_codes: std::collections::BTreeMap<String, u64>,
    pub errors: ErrorCounts,
    pub error_rate: f64,
    pub throughput_rps: f64,
    pub latency_ms: Summary,
    pub service_time_ms: Summary,
    pub send_lag_ms: Option<Summary>,
    /// `latency_ms` of the answers other than 503, present when some request was shed (503).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admitted_latency_ms: Option<Summary>,
    /// `latency_ms` of the 503 answers alone, present when some request was shed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shed_latency_ms: Option<Summary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpReportConfig {
    pub url: String,
    pub method: String,
    pub model: &'static str,
    pub rate: Option<f64>,
    pub concurrency: Option<usize>,
    pub connections: usize,
    pub duration_s: f64,
    pub timeout_s: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RequestCounts {
    /// Requests on the timetable (open model), `null` in the closed model.
    pub scheduled: Option<u64>,
    pub sent: u64,
    /// Requests answered with a status (any status).
    pub completed: u64,
    /// Scheduled but never sent: every connection was busy until the run ended. More than 0 means
    /// the target (or `--connections`) could not sustain the rate: raise connections or lower
    /// the rate; their absence from the latency histogram flatters it.
    pub not_sent: u64,
}

/// The `http` subcommand.
pub async fn run_http(config: HttpConfig, clock: RunClock) -> anyhow::Result<HttpReport> {
    let source = FixedRequest::new(
        &config.target,
        config.method.clone(),
        config.headers.clone(),
        config.body.clone(),
    )
    .map_err(anyhow::Error::msg)?;
    let senders = preconnect(config.target.addr, config.connections).await?;
    let start = Instant::now();
    let dispatcher = match config.rate {
        Some(rate) => Dispatcher::open(Schedule::new(rate, config.duration), start),
        None => Dispatcher::closed(start, config.duration),
    };
    let engine = Arc::new(Engine::new(
        config.target.addr,
        source,
        dispatcher,
        config.timeout,
    ));
    let (totals, _) = run_engine(
        engine.clone(),
        senders,
        config.duration,
        config.progress,
        "sent",
        &mut String::new,
    )
    .await;
    let counts = engine.outcomes.snapshot();
    let scheduled = engine.dispatcher.scheduled();
    let header = clock.finish(tokio_threads());
    let measured_for = config.duration.max(Duration::from_millis(1)).as_secs_f64();
    Ok(HttpReport {
        header,
        config: HttpReportConfig {
            url: config.target.url.clone(),
            method: config.method.to_string(),
            model: if config.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            rate: config.rate,
            concurrency: config.rate.is_none().then_some(config.connections),
            connections: config.connections,
            duration_s: config.duration.as_secs_f64(),
            timeout_s: config.timeout.as_secs_f64(),
        },
        requests: RequestCounts {
            scheduled,
            sent: counts.sent,
            completed: counts.completed,
            not_sent: scheduled.map_or(0, |s| s.saturating_sub(counts.sent)),
        },
        error_rate: report::round3(counts.error_rate() * 1000.0) / 1000.0,
        throughput_rps: (counts.completed as f64 / measured_for * 10.0).round() / 10.0,
        status: counts.status.clone(),
        status_codes: counts.status_codes.clone(),
        errors: counts.errors.clone(),
        latency_ms: Summary::of(&totals.latency.total),
        service_time_ms: Summary::of(&totals.service.total),
        send_lag_ms: config.rate.map(|_| Summary::of(&totals.lag.total)),
        admitted_latency_ms: (!totals.shed.total.is_empty()).then(|| {
            let mut admitted = totals.latency.total.clone();
            // Every shed value was recorded in `latency` too, so the subtraction cannot fail.
            let _ = admitted.subtract(&totals.shed.total);
            Summary::of(&admitted)
        }),
        shed_latency_ms: (!totals.shed.total.is_empty()).then(|| Summary::of(&totals.shed.total)),
    })
}

pub fn tokio_threads() -> usize {
    tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_workers())
        .unwrap_or(1)
}

impl HttpReport {
    /// The result block for people.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "== storm-loadgen http: {} {} — {} model, {} ==",
            self.config.method,
            self.config.url,
            self.config.model,
            match (self.config.rate, self.config.concurrency) {
                (Some(rate), _) => format!("{rate}/s over {} connections", self.config.connections),
                (None, Some(c)) => format!("{c} connections as fast as they go"),
                _ => String::new(),
            }
        )];
        lines.extend(report::header_lines(&self.header));
        let r = &self.requests;
        lines.push(format!(
            "requests    sent {}{} completed {}{}",
            group(r.sent),
            r.scheduled
                .map(|s| format!(" of {} scheduled,", group(s)))
                .unwrap_or_else(|| ",".to_string()),
            group(r.completed),
            if r.not_sent > 0 {
                format!(
                    ", NOT SENT {} (connections saturated: latency understates; raise --connections or lower --rate)",
                    group(r.not_sent)
                )
            } else {
                String::new()
            }
        ));
        lines.push(format!(
            "throughput  {:.1} req/s (completed / {}s)",
            self.throughput_rps, self.config.duration_s
        ));
        let s = &self.status;
        lines.push(format!(
            "status      2xx {}  3xx {}  4xx {}  5xx {}  1xx {}   error rate {:.3} %",
            group(s.c2xx),
            group(s.c3xx),
            group(s.c4xx),
            group(s.c5xx),
            group(s.c1xx),
            self.error_rate * 100.0
        ));
        let e = &self.errors;
        lines.push(format!(
            "errors      connect {}  timeout {}  reset {}  other {}",
            e.connect, e.timeout, e.reset, e.other
        ));
        let what = if self.config.model == "open" {
            "latency     (from intended send time, coordinated omission corrected)"
        } else {
            "latency     (closed model: service time; queueing in the generator is hidden)"
        };
        lines.push(what.to_string());
        lines.push(format!("            {}", self.latency_ms.line()));
        if let Some(lag) = &self.send_lag_ms {
            lines.push(format!("service     {}", self.service_time_ms.line()));
            lines.push(format!("send lag    {}", lag.line()));
        }
        if let (Some(admitted), Some(shed)) = (&self.admitted_latency_ms, &self.shed_latency_ms) {
            lines.push(format!("admitted    {}", admitted.line()));
            lines.push(format!("shed (503)  {}", shed.line()));
        }
        lines
    }
}
