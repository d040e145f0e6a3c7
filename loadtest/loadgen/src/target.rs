//! Where load may go: loopback only. A load generator pointed at someone else's host is an
//! attack, so every URL is parsed here once, its host must be `localhost` or a loopback address,
//! and the socket address we connect to is resolved here — never again by a client library that
//! might resolve `localhost` differently.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::Uri;

/// A parsed, loopback-only target URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// What the user typed, for reports.
    pub url: String,
    /// `http` or `ws` family, as given (`https`/`wss` are refused: loopback load has no TLS).
    pub scheme: String,
    /// The `Host` header value (`127.0.0.1:8080`, `localhost:8080`).
    pub authority: String,
    /// Where the TCP connections go.
    pub addr: SocketAddr,
    /// Path and query (`/api/echo`), `/` when empty.
    pub path_and_query: String,
}

impl Target {
    /// Parses `url` and refuses anything that is not plain HTTP/WS to a loopback host.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| {
            format!("'{url}' is not a URL ({e}); expected e.g. http://127.0.0.1:8080/api/echo")
        })?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| format!("'{url}' has no scheme; expected http://HOST:PORT/PATH"))?
            .to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" | "ws" => 80,
            "https" | "wss" => {
                return Err(format!(
                    "'{url}': TLS is not supported; load runs over loopback, use http:// or ws://"
                ));
            }
            other => {
                return Err(format!(
                    "'{url}': unsupported scheme '{other}' (use http:// or ws://)"
                ));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("'{url}' has no host"))?;
        let host = authority.host();
        let ip = loopback_ip(host).ok_or_else(|| {
            format!(
                "'{url}': refusing to load '{host}': targets must be localhost or a loopback address (127.0.0.0/8, ::1)"
            )
        })?;
        let port = authority.port_u16().unwrap_or(default_port);
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_string());
        Ok(Self {
            url: url.to_string(),
            scheme,
            authority: authority.as_str().to_string(),
            addr: SocketAddr::new(ip, port),
            path_and_query,
        })
    }

    /// The same host with another path (`/api/v1/events/x` on the gateway given as a base URL).
    pub fn with_path(&self, path_and_query: &str) -> Self {
        Self {
            path_and_query: path_and_query.to_string(),
            ..self.clone()
        }
    }

    /// The base URL without path, in the given scheme (`ws://127.0.0.1:8080`).
    pub fn origin(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.authority)
    }

    /// The path of a base URL without its trailing slash (`""` for `http://host/`).
    pub fn base_path(&self) -> &str {
        let path = self.path_and_query.split('?').next().unwrap_or_default();
        path.trim_end_matches('/')
    }
}

/// `localhost`, `127.x.y.z`, `::1` (bracketed or not) → the address to connect to; else `None`.
fn loopback_ip(host: &str) -> Option<IpAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    match host.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) if v4.is_loopback() => Some(IpAddr::V4(v4)),
        IpAddr::V6(v6) if v6 == Ipv6Addr::LOCALHOST => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_accepted() {
        let t = Target::parse("http://127.0.0.1:8080/api/echo?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path_and_query, "/api/echo?x=1");
        assert_eq!(t.authority, "127.0.0.1:8080");
        let t = Target::parse("http://localhost:9000").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(t.path_and_query, "/");
        assert_eq!(t.base_path(), "");
        let t = Target::parse("ws://[::1]:81/ws").unwrap();
        assert_eq!(t.addr, "[::1]:81".parse().unwrap());
        let t = Target::parse("http://127.3.2.1/").unwrap();
        assert_eq!(t.addr.port(), 80);
    }

    #[test]
    fn other_hosts_and_schemes_are_refused() {
        for url in [
            "http://example.com/",
            "http://10.0.0.1:8080/",
            "http://0.0.0.0:8080/",
            "http://[::2]:80/",
            "https://127.0.0.1/",
            "ftp://127.0.0.1/",
            "127.0.0.1:8080",
            "not a url",
        ] {
            assert!(Target::parse(url).is_err(), "{url} must be refused");
        }
        let err = Target::parse("http://example.com/").unwrap_err();
        assert!(err.contains("loopback"), "{err}");
    }
}
