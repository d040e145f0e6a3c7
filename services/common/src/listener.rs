//! The accept loop every stormstack listener runs (service API, pprof, the interceptor listeners,
//! plain or TLS), with the limits a slow or greedy client must not get around.
//!
//! `axum::serve` gives hyper no timer, so nothing bounded how long a client may take to send its
//! headers or its body, or how long an idle keep-alive connection stays open: a handful of
//! connections trickling bytes could hold sockets (and, through the body, admission slots)
//! indefinitely. Here each accepted connection gets:
//!
//! - **Header-read timeout** (`HEADER_READ_TIMEOUT_MS`): the TLS handshake (if any) and the first
//!   request's headers must arrive within it from accept, or the connection is closed. For later
//!   requests on an HTTP/1 keep-alive connection hyper's own `header_read_timeout` applies; note
//!   that hyper starts that timer as soon as the previous response is written, so on HTTP/1 a
//!   kept-alive connection with no request is closed after min(header, idle) timeout.
//! - **Idle timeout** (`IDLE_TIMEOUT_MS`): a connection with no request in flight (no response
//!   body still being written) for that long is shut down gracefully (HTTP/1: closed; HTTP/2:
//!   GOAWAY). It is what bounds HTTP/2 connections, which have no header-read timer.
//! - **Body-read timeout** (`BODY_READ_TIMEOUT_MS`): the request body must be complete within it
//!   from the moment the headers arrived; past it, reading the body fails with [`BodyReadTimeout`]
//!   (`body::ReadBodyFirstLayer` turns that into an answer — 408 in `server::http_layers` — before
//!   admission takes a slot).
//! - **Per-client-IP connection cap** (`MAX_CONNS_PER_IP`, API listeners only): the cap+1'th
//!   concurrent connection from one address is closed at once, without reading from it, and
//!   counted in `http_connections_refused_total{reason="per_ip_cap"}`.
//!
//! Timers cost one per connection (the watchdog) plus one per request whose body is not already
//! in hand when the handler first reads it. WebSocket upgrades work as before
//! (`serve_connection_with_upgrades`): once upgraded, the socket belongs to its handler and none of
//! these timers apply. Shutdown: the token stops the accept loop and shuts every connection down
//! gracefully; the caller bounds the drain.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::routing::future::RouteFuture;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use metrics::{counter, describe_counter};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::config::CommonConfig;
use crate::limits::{CappedCounts, Lease};

/// The timeouts of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read: Duration,
    pub body_read: Duration,
    pub idle: Duration,
}

impl Limits {
    pub fn from_config(common: &CommonConfig) -> Self {
        Self {
            header_read: common.header_read_timeout,
            body_read: common.body_read_timeout,
            idle: common.idle_timeout,
        }
    }
}

/// Turns an accepted TCP stream into the stream HTTP is served on (plain, or a TLS handshake).
/// The handshake is bounded by the header-read timeout.
pub trait Handshake: Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

/// Plain HTTP: the TCP stream as is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl Handshake for Plain {
    type Io = TcpStream;
    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<TcpStream>> + Send {
        std::future::ready(Ok(tcp))
    }
}

/// The refusal reason label of [`PerIpLimit`].
pub const REFUSED_PER_IP: &str = "per_ip_cap";

/// Open connections per client address, capped. One table per process, shared by its API
/// listeners; an address's entry is removed when its last connection closes, so the table never
/// holds more entries than there are open connections ([`CappedCounts`]).
#[derive(Debug)]
pub struct PerIpLimit {
    open: Arc<CappedCounts<IpAddr>>,
}

/// One open connection counted against its address; released on drop.
pub type IpSlot = Lease<IpAddr>;

impl PerIpLimit {
    pub fn new(cap: usize) -> Arc<Self> {
        describe_counter!(
            "http_connections_refused_total",
            "Connections closed at accept without being served, by reason (per_ip_cap: MAX_CONNS_PER_IP reached)."
        );
        crate::metrics::register_counters(&[(
            "http_connections_refused_total",
            &[("reason", REFUSED_PER_IP)],
        )]);
        Arc::new(Self {
            open: CappedCounts::new(cap),
        })
    }

    pub fn cap(&self) -> usize {
        self.open.cap()
    }

    /// Open connections from `ip` now.
    pub fn open(&self, ip: IpAddr) -> usize {
        self.open.count(&ip)
    }

    /// Addresses with at least one open connection.
    pub fn addresses(&self) -> usize {
        self.open.keys()
    }

    /// A slot for one more connection from `ip`, or `None` (counted) when it already has `cap`.
    pub fn try_acquire(&self, ip: IpAddr) -> Option<IpSlot> {
        let slot = self.open.try_acquire(ip);
        if slot.is_none() {
            counter!("http_connections_refused_total", "reason" => REFUSED_PER_IP).increment(1);
        }
        slot
    }
}

/// Serves `router` on `listener` until `token` is cancelled, then shuts every connection down
/// gracefully and returns once they have all closed (the caller bounds how long it waits).
pub async fn serve<H: Handshake>(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    per_ip: Option<Arc<PerIpLimit>>,
    handshake: H,
    token: CancellationToken,
) {
    let handshake = Arc::new(handshake);
    let connections = TaskTracker::new();
    loop {
        let (tcp, remote) = tokio::select! {
            () = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        let slot = match &per_ip {
            Some(limit) => match limit.try_acquire(remote.ip()) {
                Some(slot) => Some(slot),
                // Closed without reading a byte: the cheapest answer to a flood.
                None => continue,
            },
            None => None,
        };
        // TCP_NODELAY on every accepted socket: with Nagle on, a small write (a WebSocket frame)
        // that follows one the peer has not acknowledged yet waits for the peer's delayed ACK — a
        // 40 ms tail on a few percent of frames.
        let _ = tcp.set_nodelay(true);
        connections.spawn(connection(
            tcp,
            remote,
            router.clone(),
            limits,
            handshake.clone(),
            token.clone(),
            slot,
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// As `axum::serve`: errors of one connection are skipped; others (EMFILE) pause accepting for a
/// second rather than spinning.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept error; pausing the listener for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// What the watchdog knows about one connection's requests.
struct Activity {
    accepted: Instant,
    /// A request's headers have arrived (the service was called at least once).
    served: AtomicBool,
    /// Requests whose response body has not been dropped yet.
    inflight: AtomicUsize,
    /// When `inflight` last went to 0, in ms since `accepted`.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn since_accept(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.accepted).as_millis()).unwrap_or(u64::MAX)
    }

    /// `None`: close the connection now; `Some(t)`: look again at `t`. While a request may be in
    /// flight the watchdog looks every half idle timeout, so a connection that goes idle is seen
    /// before its idle deadline and closed exactly at it.
    fn next_check(&self, now: Instant, limits: Limits) -> Option<Instant> {
        let poll = now + limits.idle / 2;
        if !self.served.load(Ordering::Acquire) {
            let deadline = self.accepted + limits.header_read;
            return (now < deadline).then_some(deadline.min(poll));
        }
        if self.inflight.load(Ordering::Acquire) > 0 {
            return Some(poll);
        }
        let idle_since =
            self.accepted + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        let deadline = idle_since + limits.idle;
        (now < deadline).then_some(deadline)
    }
}

async fn connection<H: Handshake>(
    tcp: TcpStream,
    remote: SocketAddr,
    router: Router,
    limits: Limits,
    handshake: Arc<H>,
    token: CancellationToken,
    _slot: Option<IpSlot>,
) {
    let accepted = Instant::now();
    let io = match tokio::time::timeout(limits.header_read, handshake.handshake(tcp)).await {
        Ok(Ok(io)) => io,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "handshake not done within HEADER_READ_TIMEOUT_MS");
            return;
        }
    };
    let activity = Arc::new(Activity {
        accepted,
        served: AtomicBool::new(false),
        inflight: AtomicUsize::new(0),
        idle_since_ms: AtomicU64::new(0),
    });
    let service = ConnService {
        router,
        remote: ConnectInfo(remote),
        body_read: limits.body_read,
        activity: activity.clone(),
    };
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    // The CONNECT protocol carries WebSockets over HTTP/2.
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
    let watchdog = tokio::time::sleep_until(accepted + limits.header_read.min(limits.idle / 2));
    let mut watchdog = pin!(watchdog);
    // When the watchdog asked the connection to close: past one more header-read timeout it is
    // dropped (a peer that does not read our GOAWAY or FIN must not keep it).
    let mut closing: Option<Instant> = None;
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
                break;
            }
            () = &mut watchdog => {
                let now = Instant::now();
                if closing.is_some() {
                    tracing::debug!(%remote, "connection did not close after a graceful shutdown; dropped");
                    break;
                }
                match activity.next_check(now, limits) {
                    Some(at) => watchdog.as_mut().reset(at),
                    None => {
                        tracing::debug!(%remote, "closing a connection: header-read or idle timeout");
                        conn.as_mut().graceful_shutdown();
                        closing = Some(now);
                        watchdog.as_mut().reset(now + limits.header_read);
                    }
                }
            }
            () = token.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The hyper service of one connection: the router, with the client's address, the body deadline
/// and the in-flight count.
#[derive(Clone)]
struct ConnService {
    router: Router,
    remote: ConnectInfo<SocketAddr>,
    body_read: Duration,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = TrackedFuture;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        self.activity.served.store(true, Ordering::Release);
        self.activity.inflight.fetch_add(1, Ordering::AcqRel);
        let guard = Inflight(self.activity.clone());
        request.extensions_mut().insert(self.remote);
        let deadline = Instant::now() + self.body_read;
        let request = request.map(|body| TimedBody {
            inner: body,
            deadline,
            timeout: self.body_read,
            sleep: None,
        });
        let mut router = self.router.clone();
        TrackedFuture {
            inner: router.call(request),
            guard: Some(guard),
        }
    }
}

/// Counts one request in flight until its response body is dropped (fully written or abandoned).
struct Inflight(Arc<Activity>);

impl Drop for Inflight {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let now = self.0.since_accept(Instant::now());
            self.0.idle_since_ms.store(now, Ordering::Release);
        }
    }
}

/// The router's future, handing the in-flight guard to the response body.
struct TrackedFuture {
    inner: RouteFuture<Infallible>,
    guard: Option<Inflight>,
}

impl Future for TrackedFuture {
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Poll::Ready(Ok(response)) = Pin::new(&mut this.inner).poll(cx) else {
            return Poll::Pending;
        };
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| TrackedBody {
            inner,
            _guard: guard,
        })))
    }
}

/// A response body that keeps its request counted in flight while it is written.
pub struct TrackedBody {
    inner: Body,
    _guard: Option<Inflight>,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reading the request body took longer than `BODY_READ_TIMEOUT_MS` from its headers.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

impl std::fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within BODY_READ_TIMEOUT_MS ({} ms)",
            self.0.as_millis()
        )
    }
}

impl std::error::Error for BodyReadTimeout {}

/// The request body under the body-read deadline. The timer is made only when the body is not
/// already in hand (the first `Pending`), so a body that came with its headers costs none; data
/// that has arrived is always delivered, even past the deadline.
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(Box::new(BodyReadTimeout(this.timeout)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_table_drops_an_address_with_no_connection() {
        let limit = PerIpLimit::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = limit.try_acquire(ip).unwrap();
        let b = limit.try_acquire(ip).unwrap();
        assert!(limit.try_acquire(ip).is_none(), "the third is refused");
        let other = limit.try_acquire("10.0.0.2".parse().unwrap()).unwrap();
        assert_eq!((limit.open(ip), limit.addresses()), (2, 2));
        drop(a);
        assert_eq!(limit.open(ip), 1);
        let c = limit.try_acquire(ip).expect("room again after one closed");
        drop((b, c, other));
        assert_eq!(limit.addresses(), 0, "no entry outlives its connections");
    }
}
