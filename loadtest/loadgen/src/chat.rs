//! The S4 chat test (`storm-loadgen chat`, behind `scripts/run-performance-test.sh`): the source's
//! Go perf test with its phases, progress lines, result block and PASS/FAIL — measured the way
//! the rest of this tool measures.
//!
//! - Phase 1, setup: `workers` users (`POST /api/v1/users`, run-unique e-mails), one application
//!   each, `chats_per_app` chats in each (5 by default: 500 chats at 100 workers, so writes spread
//!   over 500 message counters and reads over 100 applications).
//! - Phase 2, warm-up: `--warmup` (5 s) at `--warmup-rate` % (10 %) of both target rates on the
//!   same connections as the test: the service's connection pools and the broker channel are
//!   primed, not recorded. Its 202s are real messages and go into `--accepted` too.
//! - Phase 3, the test: two open-model timetables at once, writes at `--writes`/s (`POST …/messages`
//!   with a body of 20–200 characters to a random chat of a random user) and reads at `--reads`/s
//!   (even tickets list a page of chats, odd ones a page of messages of a random chat). Every
//!   request is recorded in HDR histograms from its *intended* send time (the source sampled 1 %
//!   and timed from the actual send).
//!   `/proc` is read just before and just after it: the whole machine's CPU per answered request,
//!   the generator included and its own share beside it (`cpu`).
//!
//! Connections: `workers` are pre-opened and split between writes and reads, first in proportion to
//! their rates (100 at 5,000 + 10,000/s → 33 + 67), then after the warm-up in proportion to what
//! each op keeps busy — rate × the warm-up's mean service time (a write waits for the broker's
//! confirm, a read does not) — at least a tenth each; a request waits for a free connection of its
//! kind, and one that cannot get one before the run ends is "not sent" (throughput below target).
//!
//! What must not break: a write's (user, chat, body) is a pure function of its ticket, so the
//! 202 answers can be matched to their chats after the run without storing anything per request
//! but its answer.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use crate::cpu::{self, CpuReport};
use crate::engine::{self, Engine, RequestSource, Sender, Totals};
use crate::report::{self, Header, RunClock};
use crate::schedule::{Dispatcher, Schedule, Ticket};
use crate::stats::{ErrorCounts, ErrorKind, Shards, StatusClasses, Summary, Tally, group};
use crate::target::Target;

/// The `chat` subcommand's settings, validated.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// The chat service's base URL.
    pub target: Target,
    /// Target writes per second.
    pub writes: f64,
    /// Target reads per second.
    pub reads: f64,
    pub duration: Duration,
    /// Phase 2's length (zero: no warm-up).
    pub warmup: Duration,
    /// Phase 2's rates, in percent of the target rates.
    pub warmup_percent: f64,
    /// Pre-opened connections, and users created in Phase 1.
    pub workers: usize,
    pub chats_per_app: usize,
    /// `per_page` of both reads (page 1).
    pub per_page: usize,
    pub timeout: Duration,
    pub progress: Option<Duration>,
    /// Where the 202s go, one `<app_token> <chat_number> <message_number>` line each.
    pub accepted: Option<PathBuf>,
    /// Exit 1 on FAIL (the source's behaviour); `--no-fail-exit` turns it off.
    pub fail_exit: bool,
}

/// Our bar: the full target rate, and at most 1 in 1,000 requests failed.
pub const BAR_THROUGHPUT: f64 = 1.0;
pub const BAR_SUCCESS: f64 = 0.999;
/// The source's bar: half the target rate, and more than 95 % succeeded.
pub const SOURCE_BAR_THROUGHPUT: f64 = 0.5;
pub const SOURCE_BAR_SUCCESS: f64 = 0.95;

/// Setup requests in flight at once, and how long each may take.
const SETUP_CONCURRENCY: usize = 16;
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Distinct message bodies, and their length range in characters.
const BODY_POOL: usize = 64;
pub const BODY_CHARS: (usize, usize) = (20, 200);
/// Seeds of the phases' request choices (the warm-up and the test pick different chats).
const WARMUP_SALT: u64 = 0x5741_524d;
const TEST_SALT: u64 = 0x5445_5354;

const RULE: &str = "===========================================";

// --- fixtures ------------------------------------------------------------------------------------

/// One user of Phase 1, with everything its requests need prebuilt.
#[derive(Debug)]
pub struct User {
    pub app: String,
    pub chats: Vec<u64>,
    /// Host + Authorization (+ Content-Type: application/json).
    headers: HeaderMap,
    json_headers: HeaderMap,
    chats_uri: Uri,
    message_uris: Vec<Uri>,
    write_uris: Vec<Uri>,
}

impl User {
    fn new(
        target: &Target,
        jwt: &str,
        app: String,
        chats: Vec<u64>,
        per_page: usize,
    ) -> anyhow::Result<Self> {
        let base = format!("{}/api/v1/applications/{app}", target.base_path());
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(&target.authority)?);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {jwt}"))?,
        );
        let mut json_headers = headers.clone();
        json_headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let page = format!("page=1&per_page={per_page}");
        Ok(Self {
            chats_uri: format!("{base}/chats?{page}").parse()?,
            message_uris: chats
                .iter()
                .map(|n| format!("{base}/chats/{n}/messages?{page}").parse())
                .collect::<Result<_, _>>()?,
            write_uris: chats
                .iter()
                .map(|n| format!("{base}/chats/{n}/messages").parse())
                .collect::<Result<_, _>>()?,
            app,
            chats,
            headers,
            json_headers,
        })
    }
}

/// Which user, chat and body ticket `index` of a phase uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub user: usize,
    pub chat: usize,
    pub body: usize,
}

/// splitmix64: a fast, well-spread hash of the ticket index (no RNG state to share between tasks).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn pick(index: u64, salt: u64, users: usize, chats: usize, bodies: usize) -> Pick {
    let h = mix(index ^ salt.rotate_left(32));
    Pick {
        user: (h % users.max(1) as u64) as usize,
        chat: ((h >> 21) % chats.max(1) as u64) as usize,
        body: ((h >> 42) % bodies.max(1) as u64) as usize,
    }
}

/// `count` JSON bodies `{"body":"…"}` of plain English words, 20–200 characters of text each,
/// lengths spread evenly (the full-text index gets real words).
pub fn message_bodies(count: usize) -> Vec<Bytes> {
    const WORDS: &str = "hello team the deploy is running again after lunch please check queue \
        latency looks fine on my side we should ship this today thanks for quick review meeting \
        moved to three o'clock can someone restart writer database backup finished and dashboards \
        are green coffee anyone ticket closed merged branch tests passed staging";
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let (min, max) = BODY_CHARS;
    (0..count)
        .map(|i| {
            let want = min + (max - min) * i / count.saturating_sub(1).max(1);
            let mut text = String::with_capacity(want + 16);
            let mut k = mix(i as u64);
            while text.len() < want {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(words[(k % words.len() as u64) as usize]);
                k = mix(k);
            }
            text.truncate(want);
            let text = text.trim_end();
            // Words are plain ASCII without quotes or backslashes: no JSON escaping needed.
            Bytes::from(format!("{{\"body\":\"{text}\"}}"))
        })
        .collect()
}

/// `workers` connections split between writes and reads in proportion to their weights (the
/// rates, then rate × warm-up service time), at least a tenth and at least one each.
pub fn split_connections(workers: usize, writes: f64, reads: f64) -> (usize, usize) {
    // Neither side below a tenth of the connections: a warm-up estimate is only an estimate.
    let share = (writes / (writes + reads)).clamp(0.1, 0.9);
    let w = ((workers as f64 * share).round() as usize).clamp(1, workers.saturating_sub(1).max(1));
    (w, workers.saturating_sub(w).max(1))
}

// --- the measured requests -----------------------------------------------------------------------

/// What became of each write of a phase, by ticket: `number << 12 | code`, code the status (or
/// 1000 + a transport failure), 0 while it is not answered.
struct WriteLog {
    slots: Vec<AtomicU64>,
}

const TRANSPORT_BASE: u64 = 1000;

fn transport_code(kind: ErrorKind) -> u64 {
    TRANSPORT_BASE
        + match kind {
            ErrorKind::Connect => 1,
            ErrorKind::Timeout => 2,
            ErrorKind::Reset => 3,
            ErrorKind::Other => 4,
        }
}

/// `connect`, `timeout`, … for a transport code, the status for a status.
fn outcome_name(code: u64) -> String {
    match code {
        1001 => "connect".into(),
        1002 => "timeout".into(),
        1003 => "reset".into(),
        1004 => "transport".into(),
        code => code.to_string(),
    }
}

impl WriteLog {
    fn new(len: u64) -> Self {
        Self {
            slots: (0..len).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn set(&self, index: u64, number: u64, code: u64) {
        if let Some(slot) = self.slots.get(index as usize) {
            slot.store(number << 12 | code, Ordering::Relaxed);
        }
    }

    /// `(index, message number, code)` of every answered or failed write.
    fn entries(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, slot)| {
            let v = slot.load(Ordering::Relaxed);
            (v != 0).then_some((i as u64, v >> 12, v & 0xfff))
        })
    }
}

/// The number of a 202 body `{"number":N,"chat_number":C,"body":"…"}`.
pub fn accepted_number(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Accepted {
        number: u64,
    }
    serde_json::from_slice::<Accepted>(body)
        .ok()
        .map(|a| a.number)
        .filter(|n| *n > 0 && *n < 1 << 50)
}

struct Writes {
    users: Arc<Vec<User>>,
    bodies: Arc<Vec<Bytes>>,
    salt: u64,
    log: WriteLog,
    /// 2xx answers whose body had no message number.
    unparsed: AtomicU64,
}

impl Writes {
    fn pick(&self, index: u64) -> Pick {
        pick(
            index,
            self.salt,
            self.users.len(),
            self.users[0].chats.len(),
            self.bodies.len(),
        )
    }
}

impl RequestSource for Writes {
    const KEEP_BODY: bool = true;

    fn build(&self, ticket: &Ticket) -> Request<Full<Bytes>> {
        let p = self.pick(ticket.index);
        let user = &self.users[p.user];
        let mut request = Request::new(Full::new(self.bodies[p.body].clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = user.write_uris[p.chat].clone();
        *request.headers_mut() = user.json_headers.clone();
        request
    }

    fn on_status(&self, ticket: &Ticket, status: StatusCode, body: &[u8]) {
        let number = if status.is_success() {
            let number = accepted_number(body);
            if number.is_none() {
                self.unparsed.fetch_add(1, Ordering::Relaxed);
            }
            number.unwrap_or(0)
        } else {
            0
        };
        self.log
            .set(ticket.index, number, u64::from(status.as_u16()) & 0xfff);
    }

    fn on_error(&self, ticket: &Ticket, kind: ErrorKind) {
        self.log.set(ticket.index, 0, transport_code(kind));
    }
}

/// The two reads: even tickets list chats, odd ones list messages.
pub const READ_ENDPOINTS: [&str; 2] = ["list_chats", "list_messages"];

struct Reads {
    users: Arc<Vec<User>>,
    salt: u64,
    /// Latency from the intended send time, per endpoint.
    by_endpoint: [Shards; 2],
}

impl RequestSource for Reads {
    fn build(&self, ticket: &Ticket) -> Request<Full<Bytes>> {
        let p = pick(
            ticket.index,
            self.salt,
            self.users.len(),
            self.users[0].chats.len(),
            1,
        );
        let user = &self.users[p.user];
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = if ticket.index.is_multiple_of(2) {
            user.chats_uri.clone()
        } else {
            user.message_uris[p.chat].clone()
        };
        *request.headers_mut() = user.headers.clone();
        request
    }

    fn on_status(&self, ticket: &Ticket, _status: StatusCode, _body: &[u8]) {
        self.by_endpoint[(ticket.index % 2) as usize].record(
            ticket.index as usize,
            Instant::now().saturating_duration_since(ticket.intended),
        );
    }
}

// --- phases -------------------------------------------------------------------------------------

struct Phase {
    writes: Arc<Engine<Writes>>,
    reads: Arc<Engine<Reads>>,
    write_totals: Totals,
    read_totals: Totals,
    write_senders: Vec<Option<Sender>>,
    read_senders: Vec<Option<Sender>>,
    elapsed: Duration,
}

struct PhasePlan<'a> {
    config: &'a ChatConfig,
    users: &'a Arc<Vec<User>>,
    bodies: &'a Arc<Vec<Bytes>>,
    write_rate: f64,
    read_rate: f64,
    duration: Duration,
    salt: u64,
    progress: Option<Duration>,
}

/// `[5s] Writes: 12453 (2490/s) | Reads: 24987 (4997/s)` — the source's progress line: the
/// requests done so far (answered or failed) and the rate of the last interval.
pub fn progress_line(
    at_s: u64,
    writes: u64,
    write_rate: f64,
    reads: u64,
    read_rate: f64,
) -> String {
    format!(
        "[{at_s}s] Writes: {writes} ({}/s) | Reads: {reads} ({}/s)",
        write_rate.round().max(0.0) as u64,
        read_rate.round().max(0.0) as u64
    )
}

fn done<S: RequestSource>(engine: &Engine<S>) -> u64 {
    let counts = engine.outcomes.snapshot();
    counts.completed + counts.errors.total()
}

async fn run_phase(
    plan: PhasePlan<'_>,
    write_senders: Vec<Option<Sender>>,
    read_senders: Vec<Option<Sender>>,
) -> Phase {
    let config = plan.config;
    let write_schedule = Schedule::new(plan.write_rate, plan.duration);
    let writes = Writes {
        users: plan.users.clone(),
        bodies: plan.bodies.clone(),
        salt: plan.salt,
        log: WriteLog::new(write_schedule.total()),
        unparsed: AtomicU64::new(0),
    };
    let reads = Reads {
        users: plan.users.clone(),
        salt: plan.salt,
        by_endpoint: [Shards::new(16), Shards::new(16)],
    };
    let start = Instant::now();
    let writes = Arc::new(Engine::new(
        config.target.addr,
        writes,
        Dispatcher::open(write_schedule, start),
        config.timeout,
    ));
    let reads = Arc::new(Engine::new(
        config.target.addr,
        reads,
        Dispatcher::open(Schedule::new(plan.read_rate, plan.duration), start),
        config.timeout,
    ));
    let (mut no_suffix, mut no_suffix_either) = (String::new, String::new);
    let write_run = engine::run_engine(
        writes.clone(),
        write_senders,
        plan.duration,
        None,
        "writes",
        &mut no_suffix,
    );
    let read_run = engine::run_engine(
        reads.clone(),
        read_senders,
        plan.duration,
        None,
        "reads",
        &mut no_suffix_either,
    );
    let both = async { tokio::join!(write_run, read_run) };
    tokio::pin!(both);
    let every = plan.progress.unwrap_or(Duration::from_secs(3600));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::from_std(start) + every, every);
    let (mut last_w, mut last_r, mut last_at) = (0u64, 0u64, start);
    let ((write_totals, write_senders), (read_totals, read_senders)) = loop {
        tokio::select! {
            finished = &mut both => break finished,
            _ = ticker.tick() => {
                let now = Instant::now();
                let at = now.duration_since(start).as_secs_f64().round() as u64;
                if plan.progress.is_none() || at as f64 > plan.duration.as_secs_f64() + 0.5 {
                    continue;
                }
                let (w, r) = (done(&writes), done(&reads));
                let seconds = now.duration_since(last_at).as_secs_f64().max(1e-9);
                println!(
                    "{}",
                    progress_line(
                        at,
                        w,
                        (w - last_w) as f64 / seconds,
                        r,
                        (r - last_r) as f64 / seconds
                    )
                );
                (last_w, last_r, last_at) = (w, r, now);
            }
        }
    };
    Phase {
        writes,
        reads,
        write_totals,
        read_totals,
        write_senders,
        read_senders,
        elapsed: start.elapsed(),
    }
}

// --- setup ---------------------------------------------------------------------------------------

/// One HTTP/1.1 connection for the setup requests.
struct Client {
    target: Target,
    sender: Option<Sender>,
}

impl Client {
    fn new(target: &Target) -> Self {
        Self {
            target: target.clone(),
            sender: None,
        }
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        jwt: Option<&str>,
        body: Option<String>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let what = format!("{method} {path}");
        let exchange = async {
            if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
                self.sender = Some(engine::connect(self.target.addr).await.map_err(|_| {
                    anyhow::anyhow!(
                        "cannot connect to {}: is the chat service running?",
                        self.target.addr
                    )
                })?);
            }
            let Some(sender) = self.sender.as_mut() else {
                anyhow::bail!("no connection");
            };
            let mut request = Request::new(Full::new(Bytes::from(body.unwrap_or_default())));
            *request.method_mut() = method;
            *request.uri_mut() = format!("{}{path}", self.target.base_path()).parse()?;
            let headers = request.headers_mut();
            headers.insert(header::HOST, HeaderValue::from_str(&self.target.authority)?);
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Some(jwt) = jwt {
                headers.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(&format!("Bearer {jwt}"))?,
                );
            }
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        match tokio::time::timeout(SETUP_TIMEOUT, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e.context(what))
            }
            Err(_) => {
                self.sender = None;
                anyhow::bail!("{what}: no answer within {}s", SETUP_TIMEOUT.as_secs())
            }
        }
    }

    /// The call, its answer required to be `want` with a JSON body.
    async fn expect(
        &mut self,
        want: StatusCode,
        method: Method,
        path: &str,
        jwt: Option<&str>,
        body: Option<String>,
    ) -> anyhow::Result<serde_json::Value> {
        let what = format!("{method} {path}");
        let (status, bytes) = self.call(method, path, jwt, body).await?;
        if status != want {
            anyhow::bail!(
                "{what}: expected {}, got {} ({})",
                want.as_u16(),
                status.as_u16(),
                error_text(&bytes)
            );
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{what}: the {} answer is not JSON: {}",
                want.as_u16(),
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )
        })
    }
}

/// `code: message` from the error envelope, else the start of the body.
pub fn error_text(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    match parsed.as_ref().and_then(|v| v.get("error")) {
        Some(e) => format!(
            "{}: {}",
            e.get("code").and_then(|c| c.as_str()).unwrap_or("?"),
            e.get("message").and_then(|m| m.as_str()).unwrap_or("")
        ),
        None => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

fn field<'a>(
    value: &'a serde_json::Value,
    key: &str,
    what: &str,
) -> anyhow::Result<&'a serde_json::Value> {
    value
        .get(key)
        .filter(|v| !v.is_null())
        .ok_or_else(|| anyhow::anyhow!("{what}: the answer has no '{key}': {value}"))
}

/// Creates user `i` (e-mail `perftest{i}-{run}@example.com`), its application and its chats.
async fn create_user(
    client: &mut Client,
    config: &ChatConfig,
    run: &str,
    i: usize,
) -> anyhow::Result<User> {
    let email = format!("perftest{i}-{run}@example.com");
    let user = client
        .expect(
            StatusCode::CREATED,
            Method::POST,
            "/api/v1/users",
            None,
            Some(serde_json::json!({"email": email, "name": format!("perftest {i}")}).to_string()),
        )
        .await?;
    let jwt = field(&user, "token", "POST /api/v1/users")?
        .as_str()
        .unwrap_or_default()
        .to_string();
    let app = client
        .expect(
            StatusCode::CREATED,
            Method::POST,
            "/api/v1/applications",
            Some(&jwt),
            Some(serde_json::json!({"name": format!("perftest-{run}-{i}")}).to_string()),
        )
        .await?;
    let app = field(&app, "token", "POST /api/v1/applications")?
        .as_str()
        .unwrap_or_default()
        .to_string();
    if app.is_empty()
        || !app
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    {
        anyhow::bail!("POST /api/v1/applications: unexpected token {app:?}");
    }
    let path = format!("/api/v1/applications/{app}/chats");
    let mut chats = Vec::with_capacity(config.chats_per_app);
    for _ in 0..config.chats_per_app {
        let chat = client
            .expect(StatusCode::CREATED, Method::POST, &path, Some(&jwt), None)
            .await?;
        let number = field(&chat, "number", "POST /api/v1/applications/{token}/chats")?
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow::anyhow!("POST {path}: bad chat number in {chat}"))?;
        chats.push(number);
    }
    User::new(&config.target, &jwt, app, chats, config.per_page)
}

/// Phase 1: `workers` users with one application and `chats_per_app` chats each.
async fn setup(config: &ChatConfig, run: &str) -> anyhow::Result<Vec<User>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..SETUP_CONCURRENCY.min(config.workers) {
        let (config, run, next) = (config.clone(), run.to_string(), next.clone());
        tasks.spawn(async move {
            let mut client = Client::new(&config.target);
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= config.workers {
                    return anyhow::Ok(made);
                }
                made.push((i, create_user(&mut client, &config, &run, i).await?));
            }
        });
    }
    let mut users = Vec::with_capacity(config.workers);
    while let Some(joined) = tasks.join_next().await {
        users.extend(joined??);
    }
    users.sort_by_key(|(i, _)| *i);
    Ok(users.into_iter().map(|(_, user)| user).collect())
}

// --- the report ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    #[serde(flatten)]
    pub header: Header,
    pub config: ChatReportConfig,
    pub setup: SetupReport,
    pub warmup: Option<WarmupReport>,
    pub writes: OpReport,
    pub reads: OpReport,
    /// Read latency (from the intended send time) per endpoint.
    pub read_endpoints: BTreeMap<String, Summary>,
    pub accepted: AcceptedReport,
    /// The whole machine's CPU over Phase 3 per answered request, and each process's share;
    /// null where `/proc` cannot be read or no request was answered.
    pub cpu: Option<CpuReport>,
    /// Both ops met our bar: throughput ≥ 100 % of target, success ≥ 99.9 %.
    pub pass: bool,
    /// Both ops met the source's bar: throughput ≥ 50 % of target, success > 95 %.
    pub pass_source_bar: bool,
    #[serde(skip)]
    pub fail_exit: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatReportConfig {
    pub url: String,
    pub writes_rps: f64,
    pub reads_rps: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub warmup_percent: f64,
    pub workers: usize,
    pub write_connections: usize,
    pub read_connections: usize,
    pub chats_per_app: usize,
    pub per_page: usize,
    pub body_chars: [usize; 2],
    pub timeout_s: f64,
    pub bar: Bar,
    pub source_bar: Bar,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    /// Throughput as a fraction of the target, at least.
    pub throughput: f64,
    /// Success rate, at least (ours) or more than (the source's).
    pub success_rate: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetupReport {
    pub users: usize,
    pub applications: usize,
    pub chats: usize,
    pub elapsed_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WarmupReport {
    pub duration_s: f64,
    pub writes: u64,
    pub reads: u64,
    pub failed: u64,
}

/// One op's figures (writes or reads).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpReport {
    pub target_rps: f64,
    pub connections: usize,
    /// Requests on the timetable.
    pub scheduled: u64,
    /// Requests sent (the source's "Total").
    pub total: u64,
    /// Requests answered with a status.
    pub completed: u64,
    /// Scheduled but never sent: every connection of the op was busy until the end.
    pub not_sent: u64,
    pub succeeded: u64,
    /// `total - succeeded`: non-2xx answers and transport failures.
    pub failed: u64,
    pub success_rate: f64,
    pub error_rate: f64,
    /// `total / duration`, as the source computes it.
    pub throughput_rps: f64,
    /// `total / scheduled`: 1 when the whole timetable was sent.
    pub throughput_ratio: f64,
    pub status: StatusClasses,
    pub status_codes: BTreeMap<String, u64>,
    pub errors: ErrorCounts,
    /// Failures by status (`"503": 12`) and `"transport"` (no status at all).
    pub failures: BTreeMap<String, u64>,
    /// From the intended send time (coordinated omission corrected).
    pub latency_ms: Summary,
    pub service_time_ms: Summary,
    pub send_lag_ms: Summary,
    pub pass: bool,
    pub pass_source_bar: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AcceptedReport {
    /// 2xx answers with a message number, warm-up included (the lines of `--accepted`).
    pub count: u64,
    /// 2xx answers without a readable message number (not in the file).
    pub unparsed: u64,
    /// Writes refused or failed, warm-up included (the lines of `<file>.refused`).
    pub refused: u64,
    pub file: Option<String>,
    pub refused_file: Option<String>,
}

impl OpReport {
    fn of<S: RequestSource>(
        engine: &Engine<S>,
        totals: &Totals,
        target_rps: f64,
        connections: usize,
        duration: Duration,
    ) -> Self {
        let counts = engine.outcomes.snapshot();
        let scheduled = engine.dispatcher.scheduled().unwrap_or(0);
        let total = counts.sent;
        let succeeded = counts.status.c2xx;
        let mut failures: BTreeMap<String, u64> = counts
            .status_codes
            .iter()
            .filter(|(code, _)| !code.starts_with('2'))
            .map(|(code, n)| (code.clone(), *n))
            .collect();
        // Sent and never answered nor failed cannot happen once the run is over; count it anyway.
        let transport =
            counts.errors.total() + total.saturating_sub(counts.completed + counts.errors.total());
        if transport > 0 {
            failures.insert("transport".into(), transport);
        }
        let success_rate = if total == 0 {
            0.0
        } else {
            succeeded as f64 / total as f64
        };
        let throughput_ratio = if scheduled == 0 {
            0.0
        } else {
            total as f64 / scheduled as f64
        };
        let (pass, pass_source_bar) = verdicts(throughput_ratio, success_rate);
        Self {
            target_rps,
            connections,
            scheduled,
            total,
            completed: counts.completed,
            not_sent: scheduled.saturating_sub(total),
            succeeded,
            failed: total - succeeded.min(total),
            success_rate: round6(success_rate),
            error_rate: round6(1.0 - success_rate.min(1.0)),
            throughput_rps: (total as f64 / duration.as_secs_f64().max(1e-3) * 100.0).round()
                / 100.0,
            throughput_ratio: round6(throughput_ratio),
            status: counts.status.clone(),
            status_codes: counts.status_codes.clone(),
            errors: counts.errors.clone(),
            failures,
            latency_ms: Summary::of(&totals.latency.total),
            service_time_ms: Summary::of(&totals.service.total),
            send_lag_ms: Summary::of(&totals.lag.total),
            pass,
            pass_source_bar,
        }
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// (our bar, the source's bar) for a throughput ratio and a success rate.
pub fn verdicts(throughput_ratio: f64, success_rate: f64) -> (bool, bool) {
    (
        throughput_ratio >= BAR_THROUGHPUT && success_rate >= BAR_SUCCESS,
        throughput_ratio >= SOURCE_BAR_THROUGHPUT && success_rate > SOURCE_BAR_SUCCESS,
    )
}

fn mark(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "✓ PASS" } else { "✗ FAIL" }
}

/// `5000`, `2.5` — a rate or a number of seconds as a person writes it.
pub fn plain(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// The source's latency format: `12.5ms`; below a millisecond two decimals (`0.85ms`).
pub fn source_ms(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.2}ms")
    }
}

/// `503: 12, transport: 3 (timeout 3)`, or `none`.
pub fn failures_text(op: &OpReport) -> String {
    if op.failures.is_empty() {
        return "none".to_string();
    }
    let mut parts: Vec<String> = op
        .failures
        .iter()
        .filter(|(k, _)| k.as_str() != "transport")
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    if let Some(n) = op.failures.get("transport") {
        let e = &op.errors;
        let kinds: Vec<String> = [
            ("connect", e.connect),
            ("timeout", e.timeout),
            ("reset", e.reset),
            ("other", e.other),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
        parts.push(if kinds.is_empty() {
            format!("transport: {n}")
        } else {
            format!("transport: {n} ({})", kinds.join(", "))
        });
    }
    parts.join(", ")
}

/// The source's block for one op (`Writes:` … `Max:`), plus the failures by status.
pub fn op_lines(title: &str, unit: &str, op: &OpReport) -> Vec<String> {
    let mut lines = vec![
        format!("{title}:"),
        format!("  Total:        {}", op.total),
        if op.failed > 0 {
            format!("  Failed:       {} ({})", op.failed, failures_text(op))
        } else {
            format!("  Failed:       {}", op.failed)
        },
        format!("  Success Rate: {:.2}%", op.success_rate * 100.0),
        format!("  Throughput:   {:.2} {unit}/sec", op.throughput_rps),
        format!(
            "  Target:       {} {unit}/sec {} (source bar ≥50%/>95%: {})",
            plain(op.target_rps),
            verdict(op.pass),
            mark(op.pass_source_bar)
        ),
    ];
    if op.not_sent > 0 {
        lines.push(format!(
            "  Not sent:     {} (all {} connections busy until the end: the service fell behind, or raise --workers)",
            op.not_sent, op.connections
        ));
    }
    let l = &op.latency_ms;
    lines.push("  Latency:".to_string());
    if l.count == 0 {
        lines.push("    no samples".to_string());
    } else {
        for (name, value) in [
            ("Avg", l.mean),
            ("P50", l.p50),
            ("P95", l.p95),
            ("P99", l.p99),
            ("Max", l.max),
        ] {
            lines.push(format!("    {name}: {}", source_ms(value)));
        }
    }
    lines
}

impl ChatReport {
    /// The source's result block, then what we add: the bars, how latency was measured, the
    /// reads per endpoint, the accepted list, the CPU per request and the machine.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            String::new(),
            RULE.to_string(),
            "  Test Results".to_string(),
            RULE.to_string(),
            format!("Duration:       {:.2} seconds", self.config.duration_s),
            String::new(),
        ];
        lines.extend(op_lines("Writes", "writes", &self.writes));
        lines.push(String::new());
        lines.extend(op_lines("Reads", "reads", &self.reads));
        lines.extend([
            String::new(),
            RULE.to_string(),
            format!("  Overall: {}", verdict(self.pass)),
            RULE.to_string(),
            format!(
                "Bar: throughput ≥ {:.0}% of target and success ≥ {}% for writes and reads (source bar ≥{:.0}% and >{:.0}%: {})",
                BAR_THROUGHPUT * 100.0,
                plain(BAR_SUCCESS * 100.0),
                SOURCE_BAR_THROUGHPUT * 100.0,
                SOURCE_BAR_SUCCESS * 100.0,
                verdict(self.pass_source_bar)
            ),
            format!(
                "Latency: every request recorded (no sampling), from its intended send time (coordinated omission corrected); {} + {} connections",
                self.writes.connections, self.reads.connections
            ),
        ]);
        for (name, op) in [("writes", &self.writes), ("reads", &self.reads)] {
            lines.push(format!(
                "  {name:<7} p99.9 {}  service time p99 {}  send lag p99 {}",
                source_ms(op.latency_ms.p99_9),
                source_ms(op.service_time_ms.p99),
                source_ms(op.send_lag_ms.p99)
            ));
        }
        for name in READ_ENDPOINTS {
            if let Some(s) = self.read_endpoints.get(name) {
                lines.push(format!("  {name:<13} {}", s.line()));
            }
        }
        let a = &self.accepted;
        lines.push(format!(
            "Accepted: {} writes answered 2xx with a number (warm-up included){}{}",
            group(a.count),
            a.file
                .as_ref()
                .map(|f| format!(" → {f}"))
                .unwrap_or_default(),
            if a.unparsed > 0 {
                format!("; {} 2xx without a readable number", group(a.unparsed))
            } else {
                String::new()
            }
        ));
        if let Some(f) = &a.refused_file {
            lines.push(format!("Refused:  {} writes → {f}", group(a.refused)));
        }
        match &self.cpu {
            Some(cpu) => lines.extend(cpu.lines()),
            None => lines.push(
                "CPU: not measured (/proc/stat unreadable, or no request answered)".to_string(),
            ),
        }
        lines.extend(report::header_lines(&self.header));
        lines
    }

    /// Whether the process should exit 1: FAIL, unless `--no-fail-exit`.
    pub fn failed(&self) -> bool {
        self.fail_exit && !self.pass
    }
}

// --- the run -------------------------------------------------------------------------------------

/// How long a service that answers but is not ready yet (its broker connection still coming up,
/// say) is given before the run gives up.
const READY_WAIT: Duration = Duration::from_secs(15);

/// Waits for `GET /ready` to answer 200; a service that does not answer at all fails at once.
async fn wait_ready(target: &Target) -> anyhow::Result<()> {
    let mut client = Client::new(target);
    let deadline = Instant::now() + READY_WAIT;
    loop {
        let (status, body) = client.call(Method::GET, "/ready", None, None).await?;
        if status == StatusCode::OK {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the chat service at {} is not ready after {}s: /ready answered {} ({})",
                target.url,
                READY_WAIT.as_secs(),
                status.as_u16(),
                error_text(&body)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The banner of the source's script.
pub fn banner(config: &ChatConfig) -> Vec<String> {
    vec![
        RULE.to_string(),
        "  Chat API Performance Test".to_string(),
        RULE.to_string(),
        format!(
            "Target: {} writes/sec, {} reads/sec",
            plain(config.writes),
            plain(config.reads)
        ),
        format!("Duration: {} seconds", plain(config.duration.as_secs_f64())),
        format!("Workers: {}", config.workers),
        RULE.to_string(),
    ]
}

/// Writes the accepted and refused lists of the phases' writes.
fn write_lists(path: &Path, logs: &[&Writes]) -> anyhow::Result<(u64, u64, PathBuf)> {
    let refused_path = PathBuf::from(format!("{}.refused", path.display()));
    let open = |p: &Path| {
        std::fs::File::create(p)
            .map(std::io::BufWriter::new)
            .with_context(|| format!("cannot write {}", p.display()))
    };
    let (mut accepted, mut refused) = (open(path)?, open(&refused_path)?);
    let (mut n_accepted, mut n_refused) = (0u64, 0u64);
    for writes in logs {
        for (index, number, code) in writes.log.entries() {
            let p = writes.pick(index);
            let user = &writes.users[p.user];
            let chat = user.chats[p.chat];
            if (200..300).contains(&code) {
                if number > 0 {
                    writeln!(accepted, "{} {chat} {number}", user.app)?;
                    n_accepted += 1;
                }
            } else {
                writeln!(refused, "{} {chat} {}", user.app, outcome_name(code))?;
                n_refused += 1;
            }
        }
    }
    accepted.flush()?;
    refused.flush()?;
    Ok((n_accepted, n_refused, refused_path))
}

/// The `chat` subcommand.
pub async fn run_chat(config: ChatConfig, clock: RunClock) -> anyhow::Result<ChatReport> {
    for line in banner(&config) {
        println!("{line}");
    }
    wait_ready(&config.target).await?;

    println!();
    println!("Phase 1: Setup test users and applications...");
    let started = Instant::now();
    let users = Arc::new(
        setup(&config, &crate::ws::run_id())
            .await
            .context("Phase 1 (setup) failed")?,
    );
    let setup_report = SetupReport {
        users: users.len(),
        applications: users.len(),
        chats: users.iter().map(|u| u.chats.len()).sum(),
        elapsed_s: report::round3(started.elapsed().as_secs_f64()),
    };
    println!(
        "✓ Created {} test users ({} applications, {} chats) in {:.1}s",
        setup_report.users, setup_report.applications, setup_report.chats, setup_report.elapsed_s
    );

    let bodies = Arc::new(message_bodies(BODY_POOL));
    let (mut write_connections, mut read_connections) =
        split_connections(config.workers, config.writes, config.reads);
    let mut write_senders =
        engine::preconnect(config.target.addr, write_connections + read_connections).await?;
    let mut read_senders = write_senders.split_off(write_connections);
    let plan = |rate: f64, duration, salt, progress| PhasePlan {
        config: &config,
        users: &users,
        bodies: &bodies,
        write_rate: config.writes * rate,
        read_rate: config.reads * rate,
        duration,
        salt,
        progress,
    };

    println!();
    let mut warm = None;
    let mut warmup_report = None;
    if config.warmup.is_zero() {
        println!("Phase 2: Warmup skipped (--warmup 0)");
    } else {
        println!(
            "Phase 2: Warmup ({} seconds)...",
            plain(config.warmup.as_secs_f64())
        );
        let Phase {
            writes,
            reads,
            write_senders: kept_writes,
            read_senders: kept_reads,
            write_totals,
            read_totals,
            elapsed,
        } = run_phase(
            plan(
                config.warmup_percent / 100.0,
                config.warmup,
                WARMUP_SALT,
                None,
            ),
            write_senders,
            read_senders,
        )
        .await;
        let (w, r) = (writes.outcomes.snapshot(), reads.outcomes.snapshot());
        let report = WarmupReport {
            duration_s: report::round3(elapsed.as_secs_f64()),
            writes: w.sent,
            reads: r.sent,
            failed: (w.sent - w.status.c2xx.min(w.sent)) + (r.sent - r.status.c2xx.min(r.sent)),
        };
        println!(
            "✓ Warmup complete ({} writes, {} reads at {}% of the target rates{}; not recorded)",
            report.writes,
            report.reads,
            plain(config.warmup_percent),
            if report.failed > 0 {
                format!(", {} failed", report.failed)
            } else {
                String::new()
            }
        );
        warmup_report = Some(report);
        // Re-split the connections by what each op will keep busy (Little's law: rate × time a
        // request holds its connection, from the warm-up): a write waits for the broker's confirm
        // and holds its connection many times longer than a read, so a split by rate alone would
        // starve the writes of connections long before the service is the limit.
        let held_ms = |totals: &Totals| Summary::of(&totals.service.total).mean;
        let (w_ms, r_ms) = (held_ms(&write_totals), held_ms(&read_totals));
        (write_senders, read_senders) = (kept_writes, kept_reads);
        if w_ms > 0.0 && r_ms > 0.0 {
            (write_connections, read_connections) =
                split_connections(config.workers, config.writes * w_ms, config.reads * r_ms);
            write_senders.append(&mut read_senders);
            read_senders = write_senders.split_off(write_connections);
            println!(
                "  connections: {write_connections} for writes, {read_connections} for reads \
                 (rate × warm-up service time: {w_ms:.2} ms per write, {r_ms:.2} ms per read)"
            );
        }
        warm = Some(writes);
    }

    println!();
    println!("Phase 3: Performance Test...");
    println!(
        "Testing for {} seconds...",
        plain(config.duration.as_secs_f64())
    );
    println!();
    // The measured window's CPU: read before the timetables start and after the last answer.
    let cpu_start = cpu::sample();
    let test = run_phase(
        plan(1.0, config.duration, TEST_SALT, config.progress),
        write_senders,
        read_senders,
    )
    .await;
    let cpu_end = cpu::sample();

    let writes = OpReport::of(
        &test.writes,
        &test.write_totals,
        config.writes,
        write_connections,
        config.duration,
    );
    let reads = OpReport::of(
        &test.reads,
        &test.read_totals,
        config.reads,
        read_connections,
        config.duration,
    );
    let cpu = match (&cpu_start, &cpu_end) {
        (Some(start), Some(end)) => cpu::window(
            start,
            end,
            writes.completed + reads.completed,
            cpu::ticks_per_second(),
        ),
        _ => None,
    };
    let mut read_endpoints = BTreeMap::new();
    for (i, name) in READ_ENDPOINTS.iter().enumerate() {
        let mut tally = Tally::default();
        tally.absorb(&test.reads.source.by_endpoint[i]);
        read_endpoints.insert(name.to_string(), Summary::of(&tally.total));
    }
    let mut logs: Vec<&Writes> = warm.iter().map(|w| &w.source).collect();
    logs.push(&test.writes.source);
    let unparsed = logs
        .iter()
        .map(|w| w.unparsed.load(Ordering::Relaxed))
        .sum();
    let accepted = match &config.accepted {
        Some(path) => {
            let (count, refused, refused_path) = write_lists(path, &logs)?;
            AcceptedReport {
                count,
                unparsed,
                refused,
                file: Some(path.display().to_string()),
                refused_file: Some(refused_path.display().to_string()),
            }
        }
        None => {
            let (mut count, mut refused) = (0, 0);
            for w in &logs {
                for (_, number, code) in w.log.entries() {
                    match code {
                        200..=299 if number > 0 => count += 1,
                        200..=299 => {}
                        _ => refused += 1,
                    }
                }
            }
            AcceptedReport {
                count,
                unparsed,
                refused,
                file: None,
                refused_file: None,
            }
        }
    };
    let header = clock.finish(engine::tokio_threads());
    Ok(ChatReport {
        header,
        config: ChatReportConfig {
            url: config.target.url.clone(),
            writes_rps: config.writes,
            reads_rps: config.reads,
            duration_s: config.duration.as_secs_f64(),
            warmup_s: config.warmup.as_secs_f64(),
            warmup_percent: config.warmup_percent,
            workers: config.workers,
            write_connections,
            read_connections,
            chats_per_app: config.chats_per_app,
            per_page: config.per_page,
            body_chars: [BODY_CHARS.0, BODY_CHARS.1],
            timeout_s: config.timeout.as_secs_f64(),
            bar: Bar {
                throughput: BAR_THROUGHPUT,
                success_rate: BAR_SUCCESS,
            },
            source_bar: Bar {
                throughput: SOURCE_BAR_THROUGHPUT,
                success_rate: SOURCE_BAR_SUCCESS,
            },
        },
        setup: setup_report,
        warmup: warmup_report,
        pass: writes.pass && reads.pass,
        pass_source_bar: writes.pass_source_bar && reads.pass_source_bar,
        writes,
        reads,
        read_endpoints,
        accepted,
        cpu,
        fail_exit: config.fail_exit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(total: u64, failed: u64, target: f64) -> OpReport {
        let mut status_codes = BTreeMap::new();
        status_codes.insert("202".to_string(), total - failed);
        let mut failures = BTreeMap::new();
        if failed > 0 {
            status_codes.insert("503".to_string(), failed - 1);
            failures.insert("503".to_string(), failed - 1);
            failures.insert("transport".to_string(), 1);
        }
        let success_rate = (total - failed) as f64 / total as f64;
        let (pass, pass_source_bar) = verdicts(total as f64 / (target * 30.0), success_rate);
        let mut latency = Summary::empty();
        (
            latency.count,
            latency.mean,
            latency.p50,
            latency.p95,
            latency.p99,
            latency.max,
        ) = (total, 12.46, 10.2, 25.3, 45.7, 120.4);
        OpReport {
            target_rps: target,
            connections: 33,
            scheduled: (target * 30.0) as u64,
            total,
            completed: total - 1,
            not_sent: 0,
            succeeded: total - failed,
            failed,
            success_rate,
            error_rate: 1.0 - success_rate,
            throughput_rps: total as f64 / 30.0,
            throughput_ratio: total as f64 / (target * 30.0),
            status: StatusClasses::default(),
            status_codes,
            errors: ErrorCounts {
                timeout: u64::from(failed > 0),
                ..ErrorCounts::default()
            },
            failures,
            latency_ms: latency,
            service_time_ms: Summary::empty(),
            send_lag_ms: Summary::empty(),
            pass,
            pass_source_bar,
        }
    }

    #[test]
    fn progress_line_is_the_sources() {
        assert_eq!(
            progress_line(5, 12453, 2490.4, 24987, 4997.0),
            "[5s] Writes: 12453 (2490/s) | Reads: 24987 (4997/s)"
        );
        assert_eq!(
            progress_line(30, 0, -0.0, 7, 1.6),
            "[30s] Writes: 0 (0/s) | Reads: 7 (2/s)"
        );
    }

    #[test]
    fn op_block_is_the_sources_with_our_bar_beside_theirs() {
        // The source's own figures: half the target passes its bar, not ours.
        let writes = op(75456, 23, 5000.0);
        let lines = op_lines("Writes", "writes", &writes);
        assert_eq!(
            lines,
            vec![
                "Writes:",
                "  Total:        75456",
                "  Failed:       23 (503: 22, transport: 1 (timeout 1))",
                "  Success Rate: 99.97%",
                "  Throughput:   2515.20 writes/sec",
                "  Target:       5000 writes/sec ✗ FAIL (source bar ≥50%/>95%: ✓)",
                "  Latency:",
                "    Avg: 12.5ms",
                "    P50: 10.2ms",
                "    P95: 25.3ms",
                "    P99: 45.7ms",
                "    Max: 120.4ms",
            ]
        );
        let full = op(150_000, 0, 5000.0);
        let lines = op_lines("Writes", "writes", &full);
        assert_eq!(lines[2], "  Failed:       0");
        assert_eq!(
            lines[5],
            "  Target:       5000 writes/sec ✓ PASS (source bar ≥50%/>95%: ✓)"
        );
        let mut behind = full.clone();
        behind.not_sent = 12;
        assert!(
            op_lines("Writes", "writes", &behind)[6]
                .starts_with("  Not sent:     12 (all 33 connections")
        );
    }

    #[test]
    fn bars() {
        assert_eq!(verdicts(1.0, 0.999), (true, true));
        assert_eq!(verdicts(0.9999, 1.0), (false, true));
        assert_eq!(verdicts(1.0, 0.9989), (false, true));
        assert_eq!(verdicts(0.5, 0.951), (false, true));
        assert_eq!(verdicts(0.49, 1.0), (false, false));
        assert_eq!(verdicts(1.0, 0.95), (false, false));
    }

    #[test]
    fn formats() {
        let texts = [
            (plain(5000.0), "5000"),
            (plain(2.5), "2.5"),
            (source_ms(12.46), "12.5ms"),
            (source_ms(0.853), "0.85ms"),
            (source_ms(1234.0), "1234.0ms"),
            (outcome_name(503), "503"),
            (outcome_name(transport_code(ErrorKind::Timeout)), "timeout"),
            (
                error_text(br#"{"error":{"code":"conflict","message":"email taken"}}"#),
                "conflict: email taken",
            ),
            (error_text(b"plain"), "plain"),
        ];
        for (got, want) in texts {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn accepted_numbers_are_read_from_the_202_body() {
        assert_eq!(
            accepted_number(br#"{"number":17,"chat_number":3,"body":"x \"number\":9"}"#),
            Some(17)
        );
        assert_eq!(
            accepted_number(br#"{"chat_number":3,"body":"a","number":4}"#),
            Some(4)
        );
        assert_eq!(accepted_number(br#"{"chat_number":3}"#), None);
        assert_eq!(accepted_number(br#"{"number":0}"#), None);
        assert_eq!(accepted_number(b"not json"), None);
    }

    #[test]
    fn picks_cover_every_user_and_chat_and_are_stable() {
        let mut seen = vec![[0u32; 5]; 100];
        for i in 0..100_000 {
            let p = pick(i, TEST_SALT, 100, 5, 64);
            assert_eq!(p, pick(i, TEST_SALT, 100, 5, 64));
            assert!(p.body < 64);
            seen[p.user][p.chat] += 1;
        }
        // 200 expected per (user, chat): every one is hit, none more than twice its share.
        assert!(
            seen.iter().flatten().all(|&n| n > 100 && n < 400),
            "{seen:?}"
        );
        assert_ne!(
            pick(7, TEST_SALT, 100, 5, 64),
            pick(7, WARMUP_SALT, 100, 5, 64)
        );
    }

    #[test]
    fn bodies_are_json_of_realistic_length() {
        let bodies = message_bodies(BODY_POOL);
        assert_eq!(bodies.len(), BODY_POOL);
        for b in &bodies {
            let v: serde_json::Value = serde_json::from_slice(b).unwrap();
            let text = v["body"].as_str().unwrap();
            assert!(
                (BODY_CHARS.0 - 1..=BODY_CHARS.1).contains(&text.len()),
                "{}: {text}",
                text.len()
            );
        }
        let lengths: Vec<usize> = bodies.iter().map(|b| b.len()).collect();
        assert!(lengths.iter().max().unwrap() - lengths.iter().min().unwrap() > 150);
    }

    #[test]
    fn connections_follow_the_rates() {
        assert_eq!(split_connections(100, 5000.0, 10000.0), (33, 67));
        assert_eq!(split_connections(2, 1.0, 1000.0), (1, 1));
        assert_eq!(split_connections(10, 1000.0, 1.0), (9, 1));
        assert_eq!(split_connections(100, 1.0, 1000.0), (10, 90));
        // 5,000 writes holding 8 ms, 10,000 reads holding 1 ms: writes need 4 of 5 connections.
        assert_eq!(
            split_connections(100, 5000.0 * 8.0, 10000.0 * 1.0),
            (80, 20)
        );
    }

    #[test]
    fn write_log_keeps_number_and_code() {
        let log = WriteLog::new(4);
        log.set(0, 17, 202);
        log.set(2, 0, 503);
        log.set(3, 0, transport_code(ErrorKind::Reset));
        log.set(9, 1, 202); // out of range: ignored
        let entries: Vec<_> = log.entries().collect();
        assert_eq!(entries, vec![(0, 17, 202), (2, 0, 503), (3, 0, 1003)]);
    }
}
