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
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use common::health::{self, Probes};
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
/// metrics) serves once the returned application runs. Shutdown drains all six.
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
    let mut listeners = Vec::with_capacity(bound.len());
    for (chain, listener) in bound {
        listeners.push((chain, listener.local_addr()?));
        let router = chains::router(chain, &config.chains);
        let token = shutdown.token.clone();
        match &tls {
            None => {
                shutdown.tasks.spawn(serve_plain(listener, router, token));
            }
            Some(tls) => {
                let listener = listener.into_std()?;
                shutdown.tasks.spawn(serve_tls(
                    listener,
                    router,
                    tls.config.clone(),
                    token,
                    config.common.shutdown_grace,
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

async fn serve_plain(listener: TcpListener, router: Router, token: CancellationToken) {
    // TCP_NODELAY, as on every stormstack listener (see common::server::serve).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(token.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "listener failed");
    }
}

async fn serve_tls(
    listener: std::net::TcpListener,
    router: Router,
    tls: RustlsConfig,
    token: CancellationToken,
    grace: Duration,
) {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        token.cancelled().await;
        stopper.graceful_shutdown(Some(grace));
    });
    let served = match axum_server::from_tcp(listener) {
        Ok(server) => {
            server
                .acceptor(RustlsAcceptor::new(tls).acceptor(NoDelayAcceptor::new()))
                .handle(handle)
                .serve(router.into_make_service())
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "TLS listener failed");
    }
}
