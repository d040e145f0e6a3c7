//! Serving: the HTTP layers every service stacks, and a run loop with graceful shutdown.
//!
//! Shutdown is one `CancellationToken` per process: SIGTERM/SIGINT (or a test) cancels it, the
//! listeners stop accepting, in-flight requests finish, and long-lived tasks (WebSockets, consumers)
//! registered in the `TaskTracker` observe the token and close cleanly (WebSockets with 1001). The
//! whole drain is bounded by `SHUTDOWN_GRACE_SECS`; past it the process exits anyway.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Request};
use axum::middleware;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::body::{self, ReadBodyFirstLayer};
use crate::config::{CommonConfig, ConfigError, LogFormat};
use crate::error;
use crate::listener::{self, Limits, PerIpLimit, Plain};
use crate::metrics;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The process's stop signal and the tasks that must finish before it exits.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    pub token: CancellationToken,
    pub tasks: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the token on SIGTERM or SIGINT.
    pub fn cancel_on_signal(&self) {
        let token = self.token.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            token.cancel();
            tracing::info!("shutdown signal received; draining");
        });
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The cross-cutting layers, in one place, outermost last: request id (set, then echoed on the
/// response), a tracing span carrying it, the RED metrics, the request body read in full (up to
/// `max_buffered_body` bytes, under `BODY_READ_TIMEOUT_MS`: past it 408 `request_timeout`, see
/// `body`) before any route's own layers, and envelope fallbacks for unknown routes and methods.
/// Admission is not here: it guards only the routes that need it, and runs after the body is in
/// hand.
pub fn http_layers(router: Router, max_buffered_body: usize) -> Router {
    router
        .fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .layer(ReadBodyFirstLayer::new(max_buffered_body, body::api_error))
        .layer(middleware::from_fn(metrics::track_http))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let id = request
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|id| id.header_value().to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
                })
                .on_request(())
                .on_response(())
                .on_body_chunk(())
                .on_eos(())
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// The accept queue asked of the kernel (capped by `net.core.somaxconn`). The standard library's
/// 128 overflows when thousands of clients connect at once (a k6 ramp to 10,000 users): the kernel
/// then drops SYNs and those clients wait a 1 s retransmit — a latency cliff that is the
/// listener's, not the service's.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener, mapping failures to a sentence naming the variable that chose the address.
pub async fn bind(variable: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|e| anyhow::anyhow!("cannot listen on {variable}={addr}: {e}"))
}

/// Serves `router` on `listener` until the shutdown token is cancelled, then drains in-flight
/// requests and tracked tasks for at most `grace`. Every connection gets the listener `limits`;
/// `per_ip` caps connections per client address.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    grace: Duration,
    limits: Limits,
    per_ip: Option<Arc<PerIpLimit>>,
) -> anyhow::Result<()> {
    let server = tokio::spawn(listener::serve(
        listener,
        router,
        limits,
        per_ip,
        Plain,
        shutdown.token.clone(),
    ));
    shutdown.token.cancelled().await;
    shutdown.tasks.close();
    let drained = tokio::time::timeout(grace, async {
        let _ = server.await;
        shutdown.tasks.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "shutdown grace period elapsed with work still in flight"
        );
    }
    Ok(())
}

/// A service process, built the same way by its `main` and by tests: bound listeners (the API and,
/// unless disabled, pprof), its router, and its shutdown handle.
pub struct Application {
    listener: TcpListener,
    pprof_listener: Option<TcpListener>,
    router: Router,
    shutdown: Shutdown,
    grace: Duration,
    limits: Limits,
    per_ip: Arc<PerIpLimit>,
}

impl Application {
    /// Binds `HTTP_ADDR` and `PPROF_ADDR`; `router` gets the common layers here.
    pub async fn bind(
        common: &CommonConfig,
        router: Router,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let listener = bind("HTTP_ADDR", common.http_addr).await?;
        let pprof_listener = match common.pprof_addr {
            Some(addr) => Some(bind("PPROF_ADDR", addr).await?),
            None => None,
        };
        Ok(Self {
            listener,
            pprof_listener,
            router: http_layers(router, common.max_buffered_body),
            shutdown,
            grace: common.shutdown_grace,
            limits: Limits::from_config(common),
            per_ip: PerIpLimit::new(common.max_conns_per_ip),
        })
    }

    /// The process's per-client-IP connection table, for other API listeners to share
    /// (`MAX_CONNS_PER_IP` counts a client's connections across all of them).
    pub fn per_ip_limit(&self) -> Arc<PerIpLimit> {
        self.per_ip.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn pprof_addr(&self) -> Option<SocketAddr> {
        self.pprof_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The handle that stops this application (signals, tests).
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Serves the API and pprof until shutdown, then drains (bounded by the grace period).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        if let Some(pprof_listener) = self.pprof_listener {
            // Not drained: a 30 s CPU profile must not hold up shutdown. Same header, body and
            // idle timeouts as the API; no per-IP cap (it is private: loopback by default).
            tokio::spawn(listener::serve(
                pprof_listener,
                crate::pprof::router(),
                self.limits,
                None,
                Plain,
                self.shutdown.token.clone(),
            ));
        }
        serve(
            self.listener,
            self.router,
            self.shutdown,
            self.grace,
            self.limits,
            Some(self.per_ip),
        )
        .await
    }
}

/// A service binary's `main`: config from the environment (a bad value: one line, exit 2),
/// logging, `build`, then serve until SIGTERM/SIGINT (a failure: one line, exit 1).
pub async fn main<C>(
    binary: &str,
    config: Result<C, ConfigError>,
    log_format: impl FnOnce(&C) -> LogFormat,
    build: impl AsyncFnOnce(C) -> anyhow::Result<Application>,
) -> ExitCode {
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{binary}: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(log_format(&config));
    let app = match build(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("{binary}: {e:#}");
            return ExitCode::from(1);
        }
    };
    app.shutdown().cancel_on_signal();
    let pprof = app
        .pprof_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "off".into());
    tracing::info!(addr = %app.local_addr(), pprof = %pprof, "{binary} listening");
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{binary}: {e:#}");
            ExitCode::from(1)
        }
    }
}
