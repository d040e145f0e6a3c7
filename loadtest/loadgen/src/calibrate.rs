//! The generator's own ceiling on this machine: how many requests per second it completes against
//! a server that does nothing (an in-process `"ok"` handler, or `--url`, e.g. the gateway's
//! `/health`), and how many WebSocket frames per second its subscribers can take in from an
//! in-process server that writes them as fast as it can. A result near these figures measured the
//! generator, not the target. The trivial servers share the process and the cores with the
//! generator, so the ceilings are lower bounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Method};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::engine::{self, Engine, FixedRequest};
use crate::report::{self, Header, RunClock};
use crate::schedule::Dispatcher;
use crate::stats::{Shards, Summary, group};
use crate::target::Target;
use crate::ws::{Frame, parse_frame};

#[derive(Debug, Clone)]
pub struct CalibrateConfig {
    /// `None`: the in-process trivial server.
    pub url: Option<Target>,
    pub connections: usize,
    pub sockets: usize,
    pub duration: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct CalibrateReport {
    #[serde(flatten)]
    pub header: Header,
    pub http: HttpCeiling,
    pub ws: WsCeiling,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpCeiling {
    /// `in-process` or the URL calibrated against.
    pub url: String,
    pub connections: usize,
    pub duration_s: f64,
    pub throughput_rps: f64,
    pub latency_ms: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct WsCeiling {
    pub sockets: usize,
    pub duration_s: f64,
    pub frames_per_s: f64,
}

/// The in-process trivial HTTP server: `GET /` → `ok`. Returns its address.
pub async fn trivial_http_server(stop: CancellationToken) -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().route("/", get(|| async { "ok" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok(addr)
}

/// A frame shaped like the gateway's envelope, so parsing costs what it costs in a real run.
const BLAST_FRAME: &str = r#"{"id":"00000000-0000-0000-0000-000000000000","subject":"calibrate","ts":0,"sub":"loadgen","data":{"seq":0,"sent_us":0}}"#;

/// The in-process frame blaster: every accepted WebSocket gets frames in bursts of 64 until it
/// goes away or `stop`.
pub async fn blast_server(stop: CancellationToken) -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { continue };
            let stop = stop.clone();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let frame = Message::text(BLAST_FRAME);
                while !stop.is_cancelled() {
                    for _ in 0..64 {
                        if socket.feed(frame.clone()).await.is_err() {
                            return;
                        }
                    }
                    if socket.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

pub async fn run_calibrate(
    config: CalibrateConfig,
    clock: RunClock,
) -> anyhow::Result<CalibrateReport> {
    let stop = CancellationToken::new();
    let _stop_servers = stop.clone().drop_guard();

    // HTTP: closed model, as fast as the connections go.
    let target = match &config.url {
        Some(target) => target.clone(),
        None => {
            let addr = trivial_http_server(stop.clone()).await?;
            Target::parse(&format!("http://{addr}/")).map_err(anyhow::Error::msg)?
        }
    };
    let source = FixedRequest::new(&target, Method::GET, HeaderMap::new(), Bytes::new())
        .map_err(anyhow::Error::msg)?;
    let senders = engine::preconnect(target.addr, config.connections).await?;
    let start = Instant::now();
    let engine = Arc::new(Engine::new(
        target.addr,
        source,
        Dispatcher::closed(start, config.duration),
        Duration::from_secs(5),
    ));
    let (totals, _) = engine::run_engine(
        engine.clone(),
        senders,
        config.duration,
        None,
        "sent",
        &mut String::new,
    )
    .await;
    let completed = engine.outcomes.snapshot().status.c2xx;
    let http = HttpCeiling {
        url: config
            .url
            .as_ref()
            .map_or_else(|| "in-process".to_string(), |t| t.url.clone()),
        connections: config.connections,
        duration_s: config.duration.as_secs_f64(),
        throughput_rps: (completed as f64 / config.duration.as_secs_f64() * 10.0).round() / 10.0,
        latency_ms: Summary::of(&totals.latency.total),
    };

    // WebSocket: frames in per second.
    let frames_per_s = ws_ceiling(config.sockets, config.duration, stop.clone()).await?;
    Ok(CalibrateReport {
        header: clock.finish(engine::tokio_threads()),
        http,
        ws: WsCeiling {
            sockets: config.sockets,
            duration_s: config.duration.as_secs_f64(),
            frames_per_s,
        },
    })
}

async fn ws_ceiling(
    sockets: usize,
    duration: Duration,
    stop: CancellationToken,
) -> anyhow::Result<f64> {
    let addr = blast_server(stop.clone()).await?;
    let latency = Arc::new(Shards::new(16));
    let anchor = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    let mut clients = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
        let (socket, _) = tokio_tungstenite::client_async_with_config(
            format!("ws://{addr}/"),
            stream,
            Some(config),
        )
        .await?;
        clients.push(socket);
    }
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + duration);
    for (slot, mut socket) in clients.into_iter().enumerate() {
        let latency = latency.clone();
        readers.spawn(async move {
            let mut frames = 0u64;
            let read = async {
                while let Some(Ok(message)) = socket.next().await {
                    if let Message::Text(text) = message
                        && let Frame::Event { sent_us, .. } = parse_frame(text.as_bytes())
                    {
                        // The same per-frame work as a real subscriber: parse, time, record.
                        let now_us = anchor.elapsed().as_micros() as u64;
                        latency.record(slot, Duration::from_micros(now_us.saturating_sub(sent_us)));
                        frames += 1;
                    }
                }
            };
            let _ = tokio::time::timeout_at(deadline, read).await;
            frames
        });
    }
    let mut frames = 0u64;
    while let Some(joined) = readers.join_next().await {
        frames += joined.unwrap_or(0);
    }
    stop.cancel();
    Ok((frames as f64 / started.elapsed().as_secs_f64()).round())
}

impl CalibrateReport {
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            "== storm-loadgen calibrate: the generator's ceiling on this machine ==".to_string(),
        ];
        lines.extend(report::header_lines(&self.header));
        lines.push(format!(
            "http        {} req/s against {} over {} connections (closed model, {}s); {}",
            group(self.http.throughput_rps.round() as u64),
            self.http.url,
            self.http.connections,
            self.http.duration_s,
            self.http.latency_ms.line()
        ));
        lines.push(format!(
            "ws          {} frames/s taken in by {} subscribers from an in-process blaster ({}s)",
            group(self.ws.frames_per_s as u64),
            self.ws.sockets,
            self.ws.duration_s
        ));
        lines.push(
            "            (the trivial servers run in this process on the same cores: lower bounds)"
                .to_string(),
        );
        lines
    }
}
