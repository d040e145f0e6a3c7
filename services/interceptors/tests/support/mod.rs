//! Starting the interceptor server in-process on port 0, as `main` does.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use common::config::Lookup;
use common::server::Shutdown;
use interceptors::{Chain, Config};
use tokio::task::JoinHandle;

pub const SAY_HELLO: &str = "/greeter.v1.GreeterService/SayHello";

pub struct Server {
    pub admin: SocketAddr,
    pub listeners: Vec<(Chain, SocketAddr)>,
    pub tls_certificate: Option<rustls::pki_types::CertificateDer<'static>>,
    shutdown: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub async fn start(vars: &[(&str, &str)]) -> Self {
        let mut settings: Vec<(String, String)> = vec![
            ("HTTP_ADDR".into(), "127.0.0.1:0".into()),
            ("PPROF_ADDR".into(), String::new()),
        ];
        for chain in Chain::ALL {
            settings.push((chain.variable().into(), "127.0.0.1:0".into()));
        }
        for (k, v) in vars {
            settings.push((k.to_string(), v.to_string()));
        }
        let config = Config::from_lookup(&Lookup::from_pairs(settings)).expect("valid config");
        let server = interceptors::start(config).await.expect("starts");
        let admin = server.app.local_addr();
        let shutdown = server.app.shutdown();
        let task = tokio::spawn(server.app.run_until_stopped());
        Self {
            admin,
            listeners: server.listeners,
            tls_certificate: server.tls_certificate,
            shutdown,
            task,
        }
    }

    pub fn url(&self, chain: Chain, path: &str) -> String {
        let addr = self
            .listeners
            .iter()
            .find(|(c, _)| *c == chain)
            .map(|(_, a)| *a)
            .unwrap();
        let scheme = if self.tls_certificate.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}{path}")
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("stops within the grace period")
            .expect("joins")
            .expect("runs cleanly");
    }
}

/// A Connect unary call: JSON body, the protocol header, as the source's k6 scripts send it.
pub fn call(client: &reqwest::Client, url: String, body: &str) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("connect-protocol-version", "1")
        .body(body.to_string())
}
