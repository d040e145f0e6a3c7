//! The command line: clap's parser, then one validation pass that turns the arguments into the
//! run configurations. Anything wrong — a zero rate, a negative duration, a host that is not
//! loopback, a body file that cannot be read — is one line on stderr and exit status 2, before any
//! load is sent.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::calibrate::CalibrateConfig;
use crate::chat::ChatConfig;
use crate::engine::HttpConfig;
use crate::target::Target;
use crate::ws::WsConfig;

const ABOUT: &str = "stormstack's native load generator.\n\n\
`http` sends an open-model constant arrival rate (--rate) and measures latency from each request's \
intended send time, so a stalling server cannot hide its queue (coordinated omission corrected, as \
wrk2 does); --concurrency runs a closed model for comparison. `ws` measures WebSocket fan-out \
through the gateway: frames/s delivered, lost and duplicated frames per subscriber, and delivery \
latency from publish to frame. `chat` is the S4 Chat API test (writes and reads at two target \
rates, the source's phases, progress lines and PASS/FAIL). `calibrate` measures the generator's \
own ceiling on this machine.\n\n\
Every latency goes into an HDR histogram (no sampling). Targets must be localhost or loopback. \
Exit status: 0 the run completed (read the report for errors), 1 it could not run, 2 bad arguments; \
`chat` also exits 1 on FAIL unless --no-fail-exit.";

const EXAMPLES: &str = "Examples:\n  \
storm-loadgen http --url http://127.0.0.1:8080/api/echo --method POST -H 'Content-Type: application/json' --body '{\"hello\":1}' --rate 20000 --duration 30s\n  \
storm-loadgen http --url http://127.0.0.1:8080/api/users --concurrency 64 --duration 20s --json users.json\n  \
storm-loadgen ws --url http://127.0.0.1:8080 --subscribers 5000 --rate 100 --duration 30s\n  \
storm-loadgen chat --url http://127.0.0.1:8082 --writes 5000 --reads 10000 --duration 30s --workers 100 --json chat.json --accepted chat.accepted\n  \
storm-loadgen calibrate";

#[derive(Debug, Parser)]
#[command(name = "storm-loadgen", version, about = ABOUT, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTP load at a constant arrival rate (open model) or with N busy connections (closed model)
    Http(HttpArgs),
    /// WebSocket fan-out through the gateway: N subscribers, events published at a set rate
    Ws(WsArgs),
    /// The S4 Chat API test: message writes and chat/message reads at two target rates, PASS/FAIL
    Chat(ChatArgs),
    /// Measure the generator's own ceiling on this machine (HTTP req/s and WebSocket frames/s)
    Calibrate(CalibrateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// How long to send load (e.g. 30s, 2m, 500ms; a bare number is seconds)
    #[arg(long, default_value = "30s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub duration: Duration,
    /// Also write every figure, the percentile spectra, the command and the machine to FILE
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Print a progress line every INTERVAL (0 = never)
    #[arg(long, default_value = "5s", value_name = "INTERVAL", value_parser = parse_duration_or_zero)]
    pub progress: Duration,
    /// Generator threads (default: the number of cores)
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// The URL to load (http://, localhost or loopback only)
    #[arg(long)]
    pub url: String,
    /// Open model: requests per second, on a fixed timetable (e.g. 5000 or 5000/s)
    #[arg(long, value_parser = parse_rate, conflicts_with = "concurrency", allow_hyphen_values = true)]
    pub rate: Option<f64>,
    /// Closed model: N connections, each sending its next request when the last one is answered
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Connections for the open model (each carries one request at a time)
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// A request header, 'Name: value' (repeatable)
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The request body
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Read the request body from FILE
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// Send `Authorization: Bearer TOKEN`
    #[arg(long)]
    pub token: Option<String>,
    /// A request without a complete response after this long counts as a timeout
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Args)]
pub struct WsArgs {
    /// The gateway's base URL
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// WebSocket subscribers to open
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Subjects to spread the subscribers over (subscriber i listens on subject i % N)
    #[arg(long, default_value_t = 1)]
    pub subjects: usize,
    /// Events published per second (all subjects together); frames/s = rate × subscribers / subjects
    #[arg(long, default_value = "100", value_parser = parse_rate, allow_hyphen_values = true)]
    pub rate: f64,
    /// HTTP connections publishing the events
    #[arg(long, default_value_t = 16)]
    pub publish_connections: usize,
    /// WebSocket handshakes in flight at once while connecting
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// After the last publish, wait up to this long for frames still on their way
    #[arg(long, default_value = "5s", value_parser = parse_duration_or_zero)]
    pub drain: Duration,
    /// A publish without a response after this long counts as a timeout
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// JWT for publishing and subscribing (default: minted from --jwt-secret)
    #[arg(long)]
    pub token: Option<String>,
    /// HS256 secret to mint a token with when --token is absent
    #[arg(
        long,
        env = "JWT_SECRET",
        default_value = "dev-secret",
        hide_env_values = true
    )]
    pub jwt_secret: String,
    /// Filler bytes added to every event's data
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Each subscriber pauses this long after every frame (simulates slow consumers)
    #[arg(long, default_value = "0s", value_parser = parse_duration_or_zero)]
    pub read_delay: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

const CHAT_AFTER_HELP: &str = "\
Phases (the source's): 1 setup — --workers users, one application each, --chats-per-app chats in \
each; 2 warm-up — --warmup at --warmup-rate % of both rates, not recorded; 3 the test — writes \
(POST a message of 20–200 characters to a random chat) and reads (even requests list a page of \
chats, odd ones a page of messages of a random chat) on two open-model timetables at once, every \
request recorded from its intended send time. The --workers connections are pre-opened and split \
between writes and reads in proportion to their rates.\n\n\
PASS: throughput ≥ 100 % of each target and success ≥ 99.9 % (the source's bar, ≥ 50 % and > 95 %, \
is printed beside it). Exit 0 on PASS, 1 on FAIL or when the test could not run (--no-fail-exit: \
0 whenever it ran), 2 on bad arguments.";

#[derive(Debug, Clone, Args)]
#[command(after_help = CHAT_AFTER_HELP)]
pub struct ChatArgs {
    /// The chat service's base URL
    #[arg(long, env = "CHAT_URL", default_value = "http://127.0.0.1:8082")]
    pub url: String,
    /// Target writes per second (POST a message)
    #[arg(long, default_value = "5000", value_parser = parse_rate, allow_hyphen_values = true)]
    pub writes: f64,
    /// Target reads per second (half list chats, half list messages)
    #[arg(long, default_value = "10000", value_parser = parse_rate, allow_hyphen_values = true)]
    pub reads: f64,
    /// Pre-opened connections (split between writes and reads by rate) and users created
    #[arg(long, default_value_t = 100)]
    pub workers: usize,
    /// Phase 2's length (0 skips it)
    #[arg(long, default_value = "5s", value_parser = parse_duration_or_zero, allow_hyphen_values = true)]
    pub warmup: Duration,
    /// Phase 2's rates, in percent of the target rates
    #[arg(
        long,
        value_name = "PERCENT",
        default_value_t = 10.0,
        allow_hyphen_values = true
    )]
    pub warmup_rate: f64,
    /// Chats created in each user's application
    #[arg(long, default_value_t = 5)]
    pub chats_per_app: usize,
    /// per_page of the reads (page 1 of each list)
    #[arg(long, default_value_t = 50)]
    pub per_page: usize,
    /// Write one `<app_token> <chat_number> <message_number>` line per 202 to FILE (warm-up
    /// included), and the refused writes to FILE.refused (for scripts/audit-chat.sh)
    #[arg(long, value_name = "FILE")]
    pub accepted: Option<PathBuf>,
    /// A request without a complete response after this long counts as a timeout
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Exit 0 whenever the test ran, FAIL included (PASS/FAIL stays in the report and the JSON)
    #[arg(long)]
    pub no_fail_exit: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CalibrateArgs {
    /// Calibrate HTTP against this URL (e.g. the gateway's /health) instead of an in-process server
    #[arg(long)]
    pub url: Option<String>,
    /// Connections for the HTTP ceiling
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// WebSocket subscribers for the frame ceiling
    #[arg(long, default_value_t = 100)]
    pub sockets: usize,
    /// How long each of the two measurements runs
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Also write the result to FILE
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Generator threads (default: the number of cores)
    #[arg(long)]
    pub threads: Option<usize>,
}

/// A validated run.
#[derive(Debug, Clone)]
pub enum Run {
    Http(HttpConfig),
    Ws(WsConfig),
    Chat(ChatConfig),
    Calibrate(CalibrateConfig),
}

/// Where the result goes and how many threads generate.
#[derive(Debug, Clone)]
pub struct Output {
    pub json: Option<PathBuf>,
    pub threads: usize,
}

/// Upper bounds that keep a typo from exhausting the machine.
const MAX_CONNECTIONS: usize = 100_000;
const MAX_SUBSCRIBERS: usize = 200_000;
const MAX_RATE: f64 = 10_000_000.0;

fn parse_duration(raw: &str) -> Result<Duration, String> {
    let d = parse_duration_or_zero(raw)?;
    if d.is_zero() {
        return Err("must be longer than 0".into());
    }
    Ok(d)
}

fn parse_duration_or_zero(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if raw.starts_with('-') {
        return Err("must not be negative".into());
    }
    if let Ok(seconds) = raw.parse::<f64>() {
        return if seconds.is_finite() && seconds >= 0.0 {
            Ok(Duration::from_secs_f64(seconds))
        } else {
            Err("must be a duration like 30s, 2m or 500ms".into())
        };
    }
    humantime::parse_duration(raw)
        .map_err(|e| format!("must be a duration like 30s, 2m or 500ms ({e})"))
}

fn parse_rate(raw: &str) -> Result<f64, String> {
    let number = raw.trim().trim_end_matches("/s");
    let rate: f64 = number
        .parse()
        .map_err(|_| "must be a number of requests per second, e.g. 5000 or 5000/s".to_string())?;
    if !(rate.is_finite() && rate > 0.0) {
        return Err("must be greater than 0".into());
    }
    if rate > MAX_RATE {
        return Err(format!("must be at most {MAX_RATE}"));
    }
    Ok(rate)
}

fn check_count(name: &str, value: usize, max: usize) -> Result<usize, String> {
    if value == 0 || value > max {
        return Err(format!("--{name} must be between 1 and {max}, got {value}"));
    }
    Ok(value)
}

fn check_json_path(path: &Option<PathBuf>) -> Result<(), String> {
    check_output_path("json", path)
}

fn check_output_path(flag: &str, path: &Option<PathBuf>) -> Result<(), String> {
    if let Some(path) = path {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            return Err(format!(
                "--{flag} {}: directory {} does not exist",
                path.display(),
                dir.display()
            ));
        }
    }
    Ok(())
}

fn threads(requested: Option<usize>) -> Result<usize, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match requested {
        None => Ok(cores),
        Some(n) => check_count("threads", n, 1024),
    }
}

fn parse_headers(lines: &[String]) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("-H '{line}': expected 'Name: value'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("-H '{line}': '{}' is not a header name", name.trim()))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("-H '{line}': the value is not a valid header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Mints an HS256 token (sub `loadgen`, valid 24 h) the gateway accepts with the same secret.
pub fn mint_token(secret: &str) -> Result<String, String> {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        iat: u64,
        exp: u64,
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &Claims {
            sub: "loadgen",
            iat: now,
            exp: now + 24 * 3600,
        },
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("cannot mint a token: {e}"))
}

fn progress(every: Duration) -> Option<Duration> {
    (!every.is_zero()).then_some(every)
}

impl Cli {
    /// Turns the parsed arguments into a run, or the one line saying what is wrong.
    pub fn validate(self) -> Result<(Run, Output), String> {
        match self.command {
            Command::Http(args) => {
                let target = Target::parse(&args.url)?;
                let method = Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("--method '{}' is not an HTTP method", args.method))?;
                let mut headers = parse_headers(&args.headers)?;
                if let Some(token) = &args.token {
                    let value =
                        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                            "--token contains characters not allowed in a header".to_string()
                        })?;
                    headers.insert(http::header::AUTHORIZATION, value);
                }
                let body = match (&args.body, &args.body_file) {
                    (Some(body), _) => Bytes::from(body.clone()),
                    (None, Some(path)) => Bytes::from(std::fs::read(path).map_err(|e| {
                        format!("--body-file {}: cannot read it ({e})", path.display())
                    })?),
                    (None, None) => Bytes::new(),
                };
                let connections = match (args.rate, args.concurrency) {
                    (Some(_), None) => {
                        check_count("connections", args.connections, MAX_CONNECTIONS)?
                    }
                    (None, Some(n)) => check_count("concurrency", n, MAX_CONNECTIONS)?,
                    _ => {
                        return Err(
                            "give --rate R (open model, requests per second) or --concurrency N (closed model)"
                                .into(),
                        );
                    }
                };
                check_json_path(&args.common.json)?;
                Ok((
                    Run::Http(HttpConfig {
                        target,
                        method,
                        headers,
                        body,
                        rate: args.rate,
                        connections,
                        duration: args.common.duration,
                        timeout: args.timeout,
                        progress: progress(args.common.progress),
                    }),
                    Output {
                        json: args.common.json,
                        threads: threads(args.common.threads)?,
                    },
                ))
            }
            Command::Ws(args) => {
                let target = Target::parse(&args.url)?;
                if !args
                    .token
                    .as_deref()
                    .unwrap_or("x")
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err("--token must be a JWT (base64url parts separated by dots)".into());
                }
                let token = match args.token {
                    Some(token) => token,
                    None => mint_token(&args.jwt_secret)?,
                };
                let subscribers = check_count("subscribers", args.subscribers, MAX_SUBSCRIBERS)?;
                let subjects = check_count("subjects", args.subjects, subscribers)?;
                check_json_path(&args.common.json)?;
                Ok((
                    Run::Ws(WsConfig {
                        target,
                        subscribers,
                        subjects,
                        rate: args.rate,
                        duration: args.common.duration,
                        publish_connections: check_count(
                            "publish-connections",
                            args.publish_connections,
                            MAX_CONNECTIONS,
                        )?,
                        connect_concurrency: check_count(
                            "connect-concurrency",
                            args.connect_concurrency,
                            MAX_CONNECTIONS,
                        )?,
                        drain: args.drain,
                        timeout: args.timeout,
                        token,
                        payload_bytes: args.payload_bytes.min(1 << 20),
                        read_delay: args.read_delay,
                        progress: progress(args.common.progress),
                    }),
                    Output {
                        json: args.common.json,
                        threads: threads(args.common.threads)?,
                    },
                ))
            }
            Command::Chat(args) => {
                let target = Target::parse(&args.url)?;
                let workers = check_count("workers", args.workers, MAX_CONNECTIONS)?;
                if workers < 2 {
                    return Err(
                        "--workers must be at least 2 (one connection for writes, one for reads)"
                            .into(),
                    );
                }
                if !(args.warmup_rate > 0.0 && args.warmup_rate <= 100.0) {
                    return Err(format!(
                        "--warmup-rate must be a percentage above 0 and at most 100, got {}",
                        args.warmup_rate
                    ));
                }
                if !(1..=100).contains(&args.per_page) {
                    return Err(format!(
                        "--per-page must be between 1 and 100 (the service's range), got {}",
                        args.per_page
                    ));
                }
                check_json_path(&args.common.json)?;
                check_output_path("accepted", &args.accepted)?;
                Ok((
                    Run::Chat(ChatConfig {
                        target,
                        writes: args.writes,
                        reads: args.reads,
                        duration: args.common.duration,
                        warmup: args.warmup,
                        warmup_percent: args.warmup_rate,
                        workers,
                        chats_per_app: check_count("chats-per-app", args.chats_per_app, 10_000)?,
                        per_page: args.per_page,
                        timeout: args.timeout,
                        progress: progress(args.common.progress),
                        accepted: args.accepted,
                        fail_exit: !args.no_fail_exit,
                    }),
                    Output {
                        json: args.common.json,
                        threads: threads(args.common.threads)?,
                    },
                ))
            }
            Command::Calibrate(args) => {
                let url = args.url.as_deref().map(Target::parse).transpose()?;
                check_json_path(&args.json)?;
                Ok((
                    Run::Calibrate(CalibrateConfig {
                        url,
                        connections: check_count("connections", args.connections, MAX_CONNECTIONS)?,
                        sockets: check_count("sockets", args.sockets, MAX_SUBSCRIBERS)?,
                        duration: args.duration,
                    }),
                    Output {
                        json: args.json,
                        threads: threads(args.threads)?,
                    },
                ))
            }
        }
    }
}

/// Parses `args` (program name first) into a run, or `Err((exit status, message))`: status 0 with
/// the help or version text, 2 with one line for anything wrong.
pub fn parse<I, T>(args: I) -> Result<(Run, Output), (i32, String)>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(|e| {
        use clap::error::ErrorKind;
        match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => (0, e.render().to_string()),
            _ => {
                let rendered = e.render().to_string();
                let first = rendered
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: ")
                    .to_string();
                (
                    2,
                    format!("storm-loadgen: {first} (see storm-loadgen --help)"),
                )
            }
        }
    })?;
    cli.validate()
        .map_err(|message| (2, format!("storm-loadgen: {message}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(args: &[&str]) -> (i32, String) {
        let mut argv = vec!["storm-loadgen"];
        argv.extend_from_slice(args);
        match parse(argv) {
            Ok(_) => panic!("{args:?} should be refused"),
            Err(e) => e,
        }
    }

    #[test]
    fn bad_arguments_are_one_line_and_status_2() {
        let url = "--url=http://127.0.0.1:8080/";
        let cases: &[(&[&str], &str)] = &[
            (&["http", url, "--rate", "0"], "greater than 0"),
            (&["http", url, "--rate", "-5"], "rate"),
            (&["http", url, "--rate", "abc"], "rate"),
            (
                &["http", url, "--rate", "10", "--duration", "-5s"],
                "negative",
            ),
            (
                &["http", url, "--rate", "10", "--duration", "0s"],
                "longer than 0",
            ),
            (
                &["http", url, "--rate", "10", "--duration", "soon"],
                "duration",
            ),
            (
                &["http", "--url=http://example.com/", "--rate", "10"],
                "loopback",
            ),
            (
                &["http", "--url=http://10.1.2.3:80/", "--rate", "10"],
                "loopback",
            ),
            (
                &[
                    "http",
                    url,
                    "--rate",
                    "10",
                    "--body-file",
                    "/nonexistent/body.json",
                ],
                "cannot read",
            ),
            (&["http", url], "--rate R"),
            (
                &["http", url, "--rate", "10", "--concurrency", "5"],
                "cannot be used with",
            ),
            (
                &["http", url, "--rate", "10", "--connections", "0"],
                "--connections",
            ),
            (
                &["http", url, "--rate", "10", "-H", "no colon"],
                "Name: value",
            ),
            (&["http", url, "--rate", "10", "--method", "GE T"], "method"),
            (
                &[
                    "http",
                    url,
                    "--rate",
                    "10",
                    "--json",
                    "/nonexistent/dir/x.json",
                ],
                "does not exist",
            ),
            (
                &["ws", "--url=http://192.168.1.1:8080", "--subscribers", "10"],
                "loopback",
            ),
            (&["ws", "--subscribers", "0"], "--subscribers"),
            (
                &["ws", "--subscribers", "5", "--subjects", "6"],
                "--subjects",
            ),
            (&["ws", "--rate", "0"], "greater than 0"),
            (
                &["calibrate", "--url", "http://example.org/health"],
                "loopback",
            ),
            (&["bogus"], "unrecognized subcommand"),
            (&["chat", "--writes", "0"], "greater than 0"),
            (&["chat", "--reads", "-1"], "greater than 0"),
            (&["chat", "--workers", "1"], "at least 2"),
            (&["chat", "--workers", "0"], "--workers"),
            (&["chat", "--duration", "0"], "longer than 0"),
            (&["chat", "--warmup", "-1s"], "negative"),
            (&["chat", "--warmup-rate", "0"], "--warmup-rate"),
            (&["chat", "--warmup-rate", "150"], "--warmup-rate"),
            (&["chat", "--per-page", "101"], "--per-page"),
            (&["chat", "--chats-per-app", "0"], "--chats-per-app"),
            (&["chat", "--url", "http://example.com:8082"], "loopback"),
            (
                &["chat", "--accepted", "/nonexistent/dir/accepted.txt"],
                "--accepted /nonexistent/dir/accepted.txt: directory",
            ),
        ];
        for (args, expected) in cases {
            let (status, message) = error_of(args);
            assert_eq!(status, 2, "{args:?}: {message}");
            assert_eq!(
                message.lines().count(),
                1,
                "{args:?} gives one line: {message}"
            );
            assert!(message.starts_with("storm-loadgen: "), "{message}");
            assert!(
                message.contains(expected),
                "{args:?}: '{message}' should mention '{expected}'"
            );
        }
    }

    #[test]
    fn help_is_status_0() {
        let (status, text) = error_of(&["--help"]);
        assert_eq!(status, 0);
        assert!(text.contains("coordinated omission"));
        let (status, text) = error_of(&["http", "--help"]);
        assert_eq!(status, 0);
        assert!(text.contains("--rate"));
    }

    #[test]
    fn good_arguments_become_a_run() {
        let (run, output) = parse([
            "storm-loadgen",
            "http",
            "--url",
            "http://localhost:8080/api/echo",
            "--rate",
            "5000/s",
            "--duration",
            "2m",
            "-H",
            "Content-Type: application/json",
            "--body",
            "{}",
            "--method",
            "post",
            "--json",
            "out.json",
        ])
        .unwrap();
        let Run::Http(config) = run else {
            panic!("http run expected")
        };
        assert_eq!(config.rate, Some(5000.0));
        assert_eq!(config.duration, Duration::from_secs(120));
        assert_eq!(config.method, Method::POST);
        assert_eq!(config.headers["content-type"], "application/json");
        assert_eq!(config.connections, 64);
        assert_eq!(output.json, Some(PathBuf::from("out.json")));
        let (run, _) = parse([
            "storm-loadgen",
            "ws",
            "--subscribers",
            "10",
            "--duration",
            "3",
        ])
        .unwrap();
        let Run::Ws(config) = run else {
            panic!("ws run expected")
        };
        assert_eq!(config.duration, Duration::from_secs(3));
        assert_eq!(config.token.split('.').count(), 3);
    }

    #[test]
    fn chat_takes_the_sources_flags_with_its_defaults() {
        let (run, output) =
            parse(["storm-loadgen", "chat", "--url", "http://127.0.0.1:8082"]).unwrap();
        let Run::Chat(config) = run else {
            panic!("chat run expected")
        };
        assert_eq!((config.writes, config.reads), (5000.0, 10000.0));
        assert_eq!(config.duration, Duration::from_secs(30));
        assert_eq!(config.warmup, Duration::from_secs(5));
        assert_eq!(
            (config.workers, config.chats_per_app, config.per_page),
            (100, 5, 50)
        );
        assert_eq!(config.progress, Some(Duration::from_secs(5)));
        assert!(config.fail_exit);
        assert_eq!(output.json, None);
        // The source's form: bare seconds.
        let (run, output) = parse([
            "storm-loadgen",
            "chat",
            "--writes",
            "3000",
            "--reads",
            "6000",
            "--duration",
            "60",
            "--workers",
            "50",
            "--warmup",
            "0",
            "--accepted",
            "a.txt",
            "--json",
            "c.json",
            "--no-fail-exit",
        ])
        .unwrap();
        let Run::Chat(config) = run else {
            panic!("chat run expected")
        };
        assert_eq!((config.writes, config.reads), (3000.0, 6000.0));
        assert_eq!(config.duration, Duration::from_secs(60));
        assert_eq!(config.workers, 50);
        assert!(config.warmup.is_zero());
        assert_eq!(config.accepted, Some(PathBuf::from("a.txt")));
        assert_eq!(output.json, Some(PathBuf::from("c.json")));
        assert!(!config.fail_exit);
        let (status, text) = error_of(&["chat", "--help"]);
        assert_eq!(status, 0);
        assert!(
            text.contains("Phases") && text.contains("--writes"),
            "{text}"
        );
    }
}
