//! The interceptor server's settings (SPEC "Interceptor-overhead server (S1)"), read once at start.

use std::net::SocketAddr;
use std::time::Duration;

use common::config::{CommonConfig, ConfigError, Lookup};

use crate::chains::Chain;

/// `INTERCEPTORS_TLS`: plain HTTP (`off`, the default) or HTTPS with a certificate generated at
/// start (`self-signed`; the source's scripts default to `https` with certificate checks off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Off,
    SelfSigned,
}

/// What the full chain's layers need.
#[derive(Debug, Clone)]
pub struct ChainSettings {
    /// Deadline of one call on the full chain (`INTERCEPTORS_TIMEOUT_MS`, default 5000).
    pub timeout: Duration,
    /// Calls in flight on the full chain before `resource_exhausted` (`INTERCEPTORS_MAX_CONCURRENCY`,
    /// default 10000 — above any scenario's VU count, so it bounds without shaping the benchmark).
    pub max_concurrency: usize,
    /// Replies smaller than this are not compressed (`INTERCEPTORS_COMPRESS_MIN_BYTES`, default
    /// 1024): gzip makes a 60-byte greeting larger, and costs more than it saves below about 1 KiB.
    pub compress_min_bytes: u16,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// The five call listeners, in `Chain::ALL` order.
    pub listeners: Vec<(Chain, SocketAddr)>,
    pub tls: TlsMode,
    pub chains: ChainSettings,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: spans are exported over OTLP/HTTP only when it is set.
    pub otlp_endpoint: Option<String>,
}

impl Config {
    pub fn from_lookup(env: &Lookup) -> Result<Self, ConfigError> {
        let listeners = Chain::ALL
            .iter()
            .map(|&chain| {
                env.addr(chain.variable(), chain.default_addr())
                    .map(|addr| (chain, addr))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match env.string("INTERCEPTORS_TLS", "off").as_str() {
            "off" | "" => TlsMode::Off,
            "self-signed" => TlsMode::SelfSigned,
            other => {
                return Err(ConfigError {
                    variable: "INTERCEPTORS_TLS".into(),
                    reason: format!("expected off or self-signed, got {other:?}"),
                });
            }
        };
        let otlp_endpoint = match env.string("OTEL_EXPORTER_OTLP_ENDPOINT", "") {
            empty if empty.is_empty() => None,
            _ => Some(env.url("OTEL_EXPORTER_OTLP_ENDPOINT", "", &["http", "https"])?),
        };
        Ok(Self {
            common: CommonConfig::from_lookup(env, ":8185", ":6064")?,
            listeners,
            tls,
            chains: ChainSettings {
                timeout: Duration::from_millis(env.bounded(
                    "INTERCEPTORS_TIMEOUT_MS",
                    5000u64,
                    1,
                    600_000,
                )?),
                max_concurrency: env.bounded(
                    "INTERCEPTORS_MAX_CONCURRENCY",
                    10_000usize,
                    1,
                    1_000_000,
                )?,
                compress_min_bytes: env.bounded(
                    "INTERCEPTORS_COMPRESS_MIN_BYTES",
                    1024u16,
                    0,
                    u16::MAX,
                )?,
            },
            otlp_endpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ports() {
        let config = Config::from_lookup(&Lookup::from_pairs::<&str, &str>([])).unwrap();
        let ports: Vec<_> = config
            .listeners
            .iter()
            .map(|(chain, addr)| (chain.name(), addr.port()))
            .collect();
        assert_eq!(
            ports,
            [
                ("full", 8180),
                ("baseline", 8181),
                ("validation", 8182),
                ("logger", 8183),
                ("tracing", 8184)
            ]
        );
        assert_eq!(config.common.http_addr.port(), 8185);
        assert_eq!(
            config.common.pprof_addr,
            Some("127.0.0.1:6064".parse().unwrap()),
            "pprof is private by default"
        );
        assert_eq!(config.tls, TlsMode::Off);
        assert_eq!(config.otlp_endpoint, None);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (variable, value) in [
            ("INTERCEPTORS_TLS", "yes"),
            ("INTERCEPTORS_LOGGER_ADDR", "8183"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("INTERCEPTORS_TIMEOUT_MS", "0"),
        ] {
            let err = Config::from_lookup(&Lookup::from_pairs([(variable, value)])).unwrap_err();
            assert_eq!(err.variable, variable, "{err}");
        }
    }
}
