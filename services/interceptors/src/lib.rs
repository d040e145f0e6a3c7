//! The interceptor-overhead server (S1): one Connect unary call, `SayHello`, served on five
//! listeners whose only difference is their interceptor chain (`chains.rs`), plus `/health`,
//! `/ready` and `/metrics` on `HTTP_ADDR` and pprof on `PPROF_ADDR` like every service. It needs
//! no other service. `start` (tests) and `build` (`main`) make the same process.

pub mod chains;
pub mod config;
pub mod connect;
pub mod greeter;
pub mod interceptor;
pub mod tls;

use std::net::SocketAddr;

use axum_server::accept::Accept;
use axum_server::tls_rustls::RustlsAcceptor;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;

use common::health::{self, Probes};
use common::listener::{self, Handshake, Limits, Plain};
pub use common::server::Application;
use common::server::Shutdown;

pub use chains::Chain;
pub use config::{Config, TlsMode};

/// The running server: the admin application and where each chain listens.
pub struct Interceptors {
    pub app: Application,
    pub listeners: Vec<(Chain, SocketAddr)>,
    /// The self-signed certificate the listeners present, in TLS mode.
    pub tls_certificate: Option<CertificateDer<'static>>,
}

impl Interceptors {
    pub fn addr(&self, chain: Chain) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(c, _)| *c == chain)
            .map(|(_, addr)| *addr)
            .expect("every chain has a listener")
    }
}

/// Binds every listener and starts serving the five chains; the admin listener (health, ready,
/// metrics) serves once the returned application runs. Shutdown drains all six. Every call
/// listener has the same header, body and idle timeouts as the admin one, and shares its
/// per-client-IP connection cap (`MAX_CONNS_PER_IP`, see `common::listener`).
pub async fn start(config: Config) -> anyhow::Result<Interceptors> {
    common::metrics::install("interceptors");
    let tls = match config.tls {
        TlsMode::Off => None,
        TlsMode::SelfSigned => Some(tls::self_signed()?),
    };
    let mut bound = Vec::with_capacity(config.listeners.len());
    for &(chain, addr) in &config.listeners {
        bound.push((chain, common::server::bind(chain.variable(), addr).await?));
    }
    let shutdown = Shutdown::new();
    let app = Application::bind(
        &config.common,
        health::routes(Probes::default()),
        shutdown.clone(),
    )
    .await?;
    let limits = Limits::from_config(&config.common);
    let per_ip = app.per_ip_limit();
    let mut listeners = Vec::with_capacity(bound.len());
    for (chain, listener) in bound {
        listeners.push((chain, listener.local_addr()?));
        let router = chains::router(chain, &config.chains);
        let (per_ip, token) = (Some(per_ip.clone()), shutdown.token.clone());
        match &tls {
            None => {
                shutdown.tasks.spawn(listener::serve(
                    listener, router, limits, per_ip, Plain, token,
                ));
            }
            Some(tls) => {
                let handshake = Tls(RustlsAcceptor::new(tls.config.clone()));
                shutdown.tasks.spawn(listener::serve(
                    listener, router, limits, per_ip, handshake, token,
                ));
            }
        }
    }
    Ok(Interceptors {
        app,
        listeners,
        tls_certificate: tls.map(|tls| tls.certificate),
    })
}

/// `main`'s entry: the same process as `start`, as an `Application`.
pub async fn build(config: Config) -> anyhow::Result<Application> {
    start(config).await.map(|server| server.app)
}

/// TLS on a call listener: rustls's handshake, bounded by `HEADER_READ_TIMEOUT_MS` in
/// `common::listener` like the headers that follow it.
struct Tls(RustlsAcceptor);

impl Handshake for Tls {
    type Io = <RustlsAcceptor as Accept<TcpStream, ()>>::Stream;

    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = std::io::Result<Self::Io>> + Send {
        let accept = self.0.accept(tcp, ());
        async move { accept.await.map(|(stream, _)| stream) }
    }
}
