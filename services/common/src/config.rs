//! Configuration from the environment, validated once at start.
//!
//! Every service reads its settings through a `Lookup` (the process environment in `main`, a map in
//! tests), so the same parsing runs in both. A missing or malformed value becomes one
//! `ConfigError` naming the variable; `main` prints it as a single line and exits non-zero. Never
//! fall back silently to a default when a value is present but malformed.

use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// One bad or missing variable: printed as `config error: NAME: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error: {}: {}", self.variable, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The explicit development flag: development secrets work only behind it.
pub const DEV_FLAG: &str = "STORM_DEV";
/// The development queue signing key the scripts and compose's dev setup share (scripts/lib.sh).
pub const DEV_QUEUE_SIGNING_KEY: &str = "dev-queue-signing-key-for-local-use-only";
/// Secrets published in this repository: refused outside development mode whatever their length.
const PUBLISHED_DEV_SECRETS: [&str; 2] = [crate::auth::DEV_SECRET, DEV_QUEUE_SIGNING_KEY];
/// The shortest signing secret accepted outside development mode (HS256 and HMAC-SHA256 keys).
pub const MIN_SECRET_BYTES: usize = 32;

type Source = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where settings come from: the process environment or, in tests, a map.
pub struct Lookup {
    source: Source,
}

impl Lookup {
    pub fn from_env() -> Self {
        Self {
            source: Box::new(|name| std::env::var(name).ok()),
        }
    }

    pub fn from_map(map: HashMap<String, String>) -> Self {
        Self {
            source: Box::new(move |name| map.get(name).cloned()),
        }
    }

    /// `pairs` like `[("JWT_SECRET", "x")]`: the common shape of test configuration.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self::from_map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    fn raw(&self, name: &str) -> Option<String> {
        (self.source)(name)
    }

    fn error(name: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            variable: name.to_string(),
            reason: reason.into(),
        }
    }

    /// A required, non-empty string.
    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        match self.raw(name) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            Some(_) => Err(Self::error(name, "is empty; a value is required")),
            None => Err(Self::error(name, "is not set; a value is required")),
        }
    }

    /// True when the explicit development flag `STORM_DEV` is `1` or `true` (scripts, compose's
    /// dev setup and tests set it; production never does).
    pub fn dev_mode(&self) -> Result<bool, ConfigError> {
        match self.raw(DEV_FLAG).as_deref().map(str::trim) {
            None | Some("") | Some("0") | Some("false") => Ok(false),
            Some("1") | Some("true") => Ok(true),
            Some(other) => Err(Self::error(
                DEV_FLAG,
                format!("{other:?} is not a flag (expected 1, true, 0 or false)"),
            )),
        }
    }

    /// A required secret (a signing key). Outside development mode (`STORM_DEV`), the published
    /// development secret and anything shorter than [`MIN_SECRET_BYTES`] are refused: a short HMAC
    /// key can be brute-forced offline from one token or one signed message.
    pub fn secret(&self, name: &str) -> Result<String, ConfigError> {
        let value = self.required(name)?;
        if self.dev_mode()? {
            return Ok(value);
        }
        if PUBLISHED_DEV_SECRETS.contains(&value.as_str()) {
            return Err(Self::error(
                name,
                format!(
                    "is the published development secret; set a random secret of at least {MIN_SECRET_BYTES} bytes, or {DEV_FLAG}=1 for development"
                ),
            ));
        }
        if value.len() < MIN_SECRET_BYTES {
            return Err(Self::error(
                name,
                format!(
                    "is {} bytes; at least {MIN_SECRET_BYTES} are required (or {DEV_FLAG}=1 for development)",
                    value.len()
                ),
            ));
        }
        Ok(value)
    }

    /// A string with a default when unset.
    pub fn string(&self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or_else(|| default.to_string())
    }

    /// A value parsed with `FromStr`, `default` when unset or empty.
    pub fn parse<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(name) {
            None => Ok(default),
            Some(v) if v.trim().is_empty() => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|e| Self::error(name, format!("cannot parse {v:?}: {e}"))),
        }
    }

    /// An integer that must lie in `range` (inclusive).
    pub fn bounded<T>(&self, name: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
        T::Err: fmt::Display,
    {
        let value = self.parse(name, default)?;
        if value < min || value > max {
            return Err(Self::error(
                name,
                format!("{value} is out of range {min}..={max}"),
            ));
        }
        Ok(value)
    }

    /// A listen address; accepts `host:port`, `[v6]:port` and Go's `:port` (all interfaces).
    pub fn addr(&self, name: &str, default: &str) -> Result<SocketAddr, ConfigError> {
        let raw = self.raw(name).unwrap_or_else(|| default.to_string());
        parse_listen_addr(&raw).map_err(|reason| Self::error(name, reason))
    }

    /// Like `addr`, but an empty value disables the listener (e.g. `PPROF_ADDR=`).
    pub fn optional_addr(
        &self,
        name: &str,
        default: &str,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        let raw = self.raw(name).unwrap_or_else(|| default.to_string());
        if raw.trim().is_empty() {
            return Ok(None);
        }
        parse_listen_addr(&raw)
            .map(Some)
            .map_err(|reason| Self::error(name, reason))
    }

    /// A URL whose scheme must be one of `schemes`.
    pub fn url(&self, name: &str, default: &str, schemes: &[&str]) -> Result<String, ConfigError> {
        let raw = self.string(name, default);
        let scheme = raw.split_once("://").map(|(s, _)| s);
        match scheme {
            Some(s) if schemes.contains(&s) => Ok(raw),
            _ => Err(Self::error(
                name,
                format!("{raw:?} is not a URL with scheme {}", schemes.join("|")),
            )),
        }
    }
}

/// Parses a listen address, Go style included: `:8080` means every interface.
pub fn parse_listen_addr(raw: &str) -> Result<SocketAddr, String> {
    let raw = raw.trim();
    let candidate = if let Some(port) = raw.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else {
        raw.to_string()
    };
    if let Ok(addr) = candidate.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // `localhost:8080` and other names resolve once, at start.
    let has_port = candidate
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if has_port && let Some(addr) = candidate.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        return Ok(addr);
    }
    Err(format!(
        "{raw:?} is not a listen address (expected host:port, [v6]:port or :port)"
    ))
}

/// How logs are written: one JSON object per line (default) or human-readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!(
                "unknown log format {other:?} (expected json or pretty)"
            )),
        }
    }
}

/// Settings every process has (SPEC "Processes, ports, dependencies"), its listeners' limits
/// included (see `listener`).
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub http_addr: SocketAddr,
    pub pprof_addr: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub shutdown_grace: std::time::Duration,
    /// `HEADER_READ_TIMEOUT_MS` (default 10000): TLS handshake and request headers, every listener.
    pub header_read_timeout: std::time::Duration,
    /// `BODY_READ_TIMEOUT_MS` (default 10000): the whole request body, from its headers.
    pub body_read_timeout: std::time::Duration,
    /// `IDLE_TIMEOUT_MS` (default 60000): a connection with no request in flight is closed after it.
    pub idle_timeout: std::time::Duration,
    /// `MAX_CONNS_PER_IP` (default 2048): concurrent connections from one client address on the
    /// API listeners.
    pub max_conns_per_ip: usize,
    /// The most request-body bytes read before admission control takes a slot (not a variable:
    /// 64 KiB, the routes' own limit; a service whose routes accept more sets its largest limit).
    pub max_buffered_body: usize,
}

/// Default of [`CommonConfig::max_buffered_body`]: chat's, messages' and the gateway's default
/// route limit.
pub const MAX_BUFFERED_BODY: usize = 64 * 1024;

impl CommonConfig {
    /// `http_default`/`pprof_default` are the service's own ports, e.g. ":8080" and ":6060". A
    /// Go-style `:port` pprof default binds loopback only (`127.0.0.1:port`): profiles and heap
    /// dumps are not for the network unless `PPROF_ADDR` says so.
    pub fn from_lookup(
        env: &Lookup,
        http_default: &str,
        pprof_default: &str,
    ) -> Result<Self, ConfigError> {
        let pprof_default = match pprof_default.strip_prefix(':') {
            Some(port) => format!("127.0.0.1:{port}"),
            None => pprof_default.to_string(),
        };
        let millis = |name: &str, default: u64, max: u64| {
            env.bounded(name, default, 1, max)
                .map(std::time::Duration::from_millis)
        };
        Ok(Self {
            http_addr: env.addr("HTTP_ADDR", http_default)?,
            pprof_addr: env.optional_addr("PPROF_ADDR", &pprof_default)?,
            log_format: env.parse("LOG_FORMAT", LogFormat::Json)?,
            shutdown_grace: std::time::Duration::from_secs(env.bounded(
                "SHUTDOWN_GRACE_SECS",
                10u64,
                0,
                3600,
            )?),
            header_read_timeout: millis("HEADER_READ_TIMEOUT_MS", 10_000, 600_000)?,
            body_read_timeout: millis("BODY_READ_TIMEOUT_MS", 10_000, 600_000)?,
            idle_timeout: millis("IDLE_TIMEOUT_MS", 60_000, 86_400_000)?,
            max_conns_per_ip: env.bounded("MAX_CONNS_PER_IP", 2048usize, 1, 10_000_000)?,
            max_buffered_body: MAX_BUFFERED_BODY,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_port_means_every_interface() {
        assert_eq!(
            parse_listen_addr(":6060").unwrap(),
            "0.0.0.0:6060".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("[::1]:80").unwrap(),
            "[::1]:80".parse().unwrap()
        );
        assert!(parse_listen_addr("localhost:8080").is_ok());
    }

    #[test]
    fn malformed_addresses_are_rejected() {
        for bad in ["", "8080", ":", ":99999", "host", "a:b", "1.2.3.4:-1"] {
            assert!(
                parse_listen_addr(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn errors_name_the_variable() {
        let env = Lookup::from_pairs([("MAX_CCU", "many"), ("PPROF_ADDR", "")]);
        let err = env.parse::<u32>("MAX_CCU", 5).unwrap_err();
        assert_eq!(err.variable, "MAX_CCU");
        assert!(
            err.to_string().starts_with("config error: MAX_CCU:"),
            "{err}"
        );
        assert_eq!(env.optional_addr("PPROF_ADDR", ":6060").unwrap(), None);
        assert!(
            env.required("JWT_SECRET")
                .unwrap_err()
                .to_string()
                .contains("JWT_SECRET")
        );
        let out_of_range = Lookup::from_pairs([("UTILIZATION", "101")]);
        assert!(out_of_range.bounded("UTILIZATION", 67u32, 1, 100).is_err());
    }

    #[test]
    fn development_secrets_need_the_development_flag() {
        let long = "x".repeat(MIN_SECRET_BYTES);
        for weak in ["dev-secret", "short", DEV_QUEUE_SIGNING_KEY] {
            let err = Lookup::from_pairs([("JWT_SECRET", weak)])
                .secret("JWT_SECRET")
                .unwrap_err();
            assert_eq!(err.variable, "JWT_SECRET");
            assert!(err.to_string().contains("STORM_DEV=1"), "{err}");
            let dev = Lookup::from_pairs([("JWT_SECRET", weak), ("STORM_DEV", "1")]);
            assert_eq!(dev.secret("JWT_SECRET").unwrap(), weak);
        }
        let prod = Lookup::from_pairs([("JWT_SECRET", long.as_str())]);
        assert_eq!(prod.secret("JWT_SECRET").unwrap(), long);
        let bad_flag = Lookup::from_pairs([("JWT_SECRET", "dev-secret"), ("STORM_DEV", "yes")]);
        assert_eq!(
            bad_flag.secret("JWT_SECRET").unwrap_err().variable,
            "STORM_DEV"
        );
        assert!(
            Lookup::from_pairs([("STORM_DEV", "0")])
                .secret("JWT_SECRET")
                .is_err()
        );
    }

    #[test]
    fn listener_limits_default_and_are_validated() {
        let common =
            CommonConfig::from_lookup(&Lookup::from_pairs::<&str, &str>([]), ":8080", ":6060")
                .unwrap();
        assert_eq!(common.pprof_addr, Some("127.0.0.1:6060".parse().unwrap()));
        assert_eq!(common.http_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(common.header_read_timeout.as_millis(), 10_000);
        assert_eq!(common.body_read_timeout.as_millis(), 10_000);
        assert_eq!(common.idle_timeout.as_millis(), 60_000);
        assert_eq!(common.max_conns_per_ip, 2048);
        for (name, bad) in [
            ("HEADER_READ_TIMEOUT_MS", "0"),
            ("BODY_READ_TIMEOUT_MS", "soon"),
            ("IDLE_TIMEOUT_MS", "-1"),
            ("MAX_CONNS_PER_IP", "0"),
        ] {
            let err = CommonConfig::from_lookup(&Lookup::from_pairs([(name, bad)]), ":1", ":2")
                .unwrap_err();
            assert_eq!(err.variable, name, "{err}");
        }
        let everywhere = Lookup::from_pairs([("PPROF_ADDR", ":6060")]);
        let common = CommonConfig::from_lookup(&everywhere, ":8080", ":6060").unwrap();
        assert_eq!(common.pprof_addr, Some("0.0.0.0:6060".parse().unwrap()));
    }

    proptest::proptest! {
        #[test]
        fn addr_parser_never_panics(s in "\\PC{0,40}") {
            let _ = parse_listen_addr(&s);
        }
    }
}
