//! Test support shared by the services' integration tests: spawn a service on port 0 exactly as
//! `main` builds it, mint tokens, open WebSocket clients, and run a private `redis-server` for
//! tests that break Redis on purpose (never the machine's shared one).
//!
//! Isolation: every spawned gateway gets its own `PUBSUB_PREFIX`, so tests share the machine's
//! Redis without seeing each other's messages.

pub mod chat_api;
pub mod pg_server;
pub mod rabbit_server;
pub mod redis_server;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::auth::{Claims, JwtKeys, now_secs};
use common::config::Lookup;
use common::server::{Application, Shutdown};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use pg_server::PgServer;
pub use rabbit_server::RabbitServer;
pub use redis_server::RedisServer;
pub use ws::WsClient;

/// The secret every test app is built with.
pub const SECRET: &str = "test-secret";

/// The `QUEUE_SIGNING_KEY` spawned chat services and writers share (long enough to be valid
/// without `STORM_DEV`, so a writer started as a bare process accepts it too).
pub const QUEUE_SIGNING_KEY: &str = "test-queue-signing-key-0123456789abcdef";

/// A fresh name for prefixes, queues and databases: `label-<8 hex>`.
pub fn unique(label: &str) -> String {
    format!("{label}-{}", &Uuid::new_v4().simple().to_string()[..8])
}

pub fn keys() -> JwtKeys {
    JwtKeys::new(SECRET.as_bytes())
}

/// A valid token for `sub`, good for an hour.
pub fn token(sub: &str) -> String {
    sign(Claims {
        sub: sub.into(),
        exp: now_secs() + 3600,
        iat: Some(now_secs()),
        ..Claims::default()
    })
}

pub fn sign(claims: Claims) -> String {
    keys().sign(&claims).expect("signing test claims")
}

/// A token for `sub` shaped like chat's sign-up tokens (`aud`/`iss` storm-chat), good for an
/// hour: valid on chat only.
pub fn chat_token(sub: &str) -> String {
    let now = now_secs();
    sign(Claims {
        sub: sub.into(),
        exp: now + 3600,
        iat: Some(now),
        aud: Some(common::auth::Audience::One(
            common::auth::CHAT_AUDIENCE.into(),
        )),
        iss: Some(common::auth::CHAT_AUDIENCE.into()),
        ..Claims::default()
    })
}

/// A valid token for `sub` in `tenant`, good for an hour.
pub fn tenant_token(sub: &str, tenant: Uuid) -> String {
    sign(Claims {
        sub: sub.into(),
        exp: now_secs() + 3600,
        iat: Some(now_secs()),
        tenant: Some(tenant),
        ..Claims::default()
    })
}

/// A service running in this process on 127.0.0.1:0.
pub struct TestApp {
    pub addr: SocketAddr,
    pub pprof_addr: Option<SocketAddr>,
    /// The `PUBSUB_PREFIX` this instance uses on Redis.
    pub prefix: String,
    /// The settings it was built with (`DATABASE_URL` and the like).
    pub settings: HashMap<String, String>,
    /// A database made for this instance, dropped by `stop`.
    owned_database: Option<String>,
    /// A queue (and its dead-letter queue) made for this instance, deleted by `stop`.
    owned_queue: Option<String>,
    shutdown: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
}

pub type TestGateway = TestApp;
pub type TestMessages = TestApp;
pub type TestChat = TestApp;
pub type TestWriter = TestApp;

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// `POST /api/v1/events/{subject}` with `body` as JSON, signed with `token`.
    pub async fn publish(
        &self,
        client: &reqwest::Client,
        token: &str,
        subject: &str,
        body: &str,
    ) -> reqwest::Response {
        client
            .post(self.url(&format!("/api/v1/events/{subject}")))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("publish request")
    }

    /// `GET path`, body as JSON (panics on a transport error or a non-JSON body).
    pub async fn get_json(&self, client: &reqwest::Client, path: &str) -> serde_json::Value {
        let response = client
            .get(self.url(path))
            .send()
            .await
            .expect("GET request");
        response.json().await.expect("JSON body")
    }

    /// `method path` with an optional bearer `token` and JSON `body`; the status and the answer
    /// as JSON (`Null` when it is not JSON).
    pub async fn send(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// `GET path`, body as text.
    pub async fn get_text(&self, client: &reqwest::Client, path: &str) -> String {
        let response = client
            .get(self.url(path))
            .send()
            .await
            .expect("GET request");
        response.text().await.expect("text body")
    }

    /// Triggers graceful shutdown and waits for the server to finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        let result = tokio::time::timeout(Duration::from_secs(15), self.task).await?;
        if let Some(name) = &self.owned_database {
            drop_database(name).await;
        }
        if let Some(queue) = &self.owned_queue {
            delete_queue(&self.settings["AMQP_URL"], queue).await;
        }
        result?
    }

    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }
}

/// Test defaults every service gets (port 0, no pprof, a unique prefix, the test secret, the
/// machine's Redis), overridden by `vars`.
fn settings(vars: &[(&str, &str)]) -> HashMap<String, String> {
    let prefix = format!("{}:", unique("test"));
    let mut settings: HashMap<String, String> = [
        ("HTTP_ADDR", "127.0.0.1:0"),
        ("PPROF_ADDR", ""),
        ("JWT_SECRET", SECRET),
        // The test secret is short: development mode, as the scripts run the stack.
        ("STORM_DEV", "1"),
        ("PUBSUB_PREFIX", prefix.as_str()),
        ("REDIS_TIMEOUT_MS", "1000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in vars {
        settings.insert(k.to_string(), v.to_string());
    }
    settings
}

fn start(app: Application, settings: HashMap<String, String>) -> TestApp {
    let (addr, pprof_addr, shutdown) = (app.local_addr(), app.pprof_addr(), app.shutdown());
    let task = tokio::spawn(app.run_until_stopped());
    TestApp {
        addr,
        pprof_addr,
        prefix: settings["PUBSUB_PREFIX"].clone(),
        settings,
        owned_database: None,
        owned_queue: None,
        shutdown,
        task,
    }
}

/// Spawns a gateway with the test defaults, overridden by `vars`.
pub async fn spawn_gateway(vars: &[(&str, &str)]) -> TestGateway {
    // Tests open hundreds of sockets as one user from one IP: the per-user and per-IP caps are
    // raised unless a test sets them (as the benchmark scripts raise them).
    let mut vars = vars.to_vec();
    for (name, value) in [
        ("WS_MAX_SOCKETS_PER_USER", "100000"),
        ("WS_MAX_SOCKETS_PER_IP", "100000"),
    ] {
        if !vars.iter().any(|(k, _)| *k == name) {
            vars.push((name, value));
        }
    }
    let settings = settings(&vars);
    let config = gateway::Config::from_lookup(&Lookup::from_map(settings.clone()))
        .expect("test config is valid");
    let app = gateway::build(config).await.expect("gateway builds");
    start(app, settings)
}

/// The machine's Postgres, as the tests reach it.
pub const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";

/// A fresh database name for one test: `storm_test_<hex>`.
fn test_database_name() -> String {
    unique("storm_test").replace('-', "_")
}

/// Adds `DATABASE_URL` for a new database unless `vars` has one; returns the name to drop.
fn with_own_database<'a>(
    vars: &mut Vec<(&'a str, &'a str)>,
    url: &'a mut String,
) -> Option<String> {
    if vars.iter().any(|(k, _)| *k == "DATABASE_URL") {
        return None;
    }
    let name = test_database_name();
    *url = format!("{POSTGRES}/{name}");
    vars.push(("DATABASE_URL", url.as_str()));
    Some(name)
}

/// Spawns a messages service with the test defaults and a database of its own (created by the
/// service, as in production), overridden by `vars`.
pub async fn spawn_messages(vars: &[(&str, &str)]) -> TestMessages {
    let mut vars = vars.to_vec();
    let mut url = String::new();
    let owned = with_own_database(&mut vars, &mut url);
    let settings = settings(&vars);
    let config = messages::Config::from_lookup(&Lookup::from_map(settings.clone()))
        .expect("test config is valid");
    let app = messages::build(config).await.expect("messages builds");
    let mut app = start(app, settings);
    app.owned_database = owned;
    app
}

/// The machine's RabbitMQ, as the tests reach it.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Spawns a chat service with the test defaults, a database, a queue and a Redis key prefix of its
/// own, overridden by `vars`. Pair it with [`spawn_writer`]`(&chat.writer_vars())`.
pub async fn spawn_chat(vars: &[(&str, &str)]) -> TestChat {
    let mut vars = vars.to_vec();
    let mut url = String::new();
    let owned_database = with_own_database(&mut vars, &mut url);
    let queue = format!("test.{}", unique("chat"));
    let owned_queue = !vars.iter().any(|(k, _)| *k == "CHAT_QUEUE");
    if owned_queue {
        vars.push(("CHAT_QUEUE", queue.as_str()));
    }
    let key_prefix = format!("{}:", unique("test-chat"));
    let mut defaults = vec![
        ("AMQP_URL", AMQP_URL),
        ("REDIS_KEY_PREFIX", key_prefix.as_str()),
        ("PUBLISH_TIMEOUT_MS", "2000"),
        ("QUEUE_SIGNING_KEY", QUEUE_SIGNING_KEY),
    ];
    defaults.retain(|(k, _)| !vars.iter().any(|(v, _)| v == k));
    vars.extend(defaults);
    let settings = settings(&vars);
    let config = chat::Config::from_lookup(&Lookup::from_map(settings.clone()))
        .expect("test config is valid");
    let app = chat::build(config).await.expect("chat builds");
    let mut app = start(app, settings);
    app.owned_database = owned_database;
    app.owned_queue = owned_queue.then(|| app.settings["CHAT_QUEUE"].clone());
    // The broker connects in the background: a test starts once the service is ready to accept.
    app.wait_ready(Duration::from_secs(30)).await;
    app
}

impl TestApp {
    /// Waits until `GET /ready` answers 200; panics after `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) {
        let client = http();
        let ready = wait_until(timeout, || async {
            client
                .get(self.url("/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(ready, "{} not ready within {timeout:?}", self.addr);
    }
}

/// Spawns a writer with the test defaults, overridden by `vars` (which name its `DATABASE_URL`
/// and `CHAT_QUEUE`: see [`TestApp::writer_vars`]).
pub async fn spawn_writer(vars: &[(&str, &str)]) -> TestWriter {
    let mut vars = vars.to_vec();
    if !vars.iter().any(|(k, _)| *k == "AMQP_URL") {
        vars.push(("AMQP_URL", AMQP_URL));
    }
    if !vars.iter().any(|(k, _)| *k == "QUEUE_SIGNING_KEY") {
        vars.push(("QUEUE_SIGNING_KEY", QUEUE_SIGNING_KEY));
    }
    let settings = settings(&vars);
    let config = writer::Config::from_lookup(&Lookup::from_map(settings.clone()))
        .expect("test config is valid");
    let app = writer::build(config).await.expect("writer builds");
    start(app, settings)
}

impl TestApp {
    /// The settings a writer needs to serve this chat service: its database, queue, broker and
    /// queue signing key.
    pub fn writer_vars(&self) -> Vec<(&str, &str)> {
        [
            "DATABASE_URL",
            "CHAT_QUEUE",
            "AMQP_URL",
            "QUEUE_SIGNING_KEY",
        ]
        .into_iter()
        .filter_map(|k| self.settings.get(k).map(|v| (k, v.as_str())))
        .collect()
    }
}

/// Deletes `queue` and its dead-letter queue from the broker at `url` (best effort).
pub async fn delete_queue(url: &str, queue: &str) {
    use lapin::options::QueueDeleteOptions;
    let Ok(connection) =
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        for name in [queue.to_string(), format!("{queue}.dead")] {
            let _ = channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "test done".into()).await;
}

/// Drops a test database (connections included).
pub async fn drop_database(name: &str) {
    use sqlx::{AssertSqlSafe, Connection};
    let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{POSTGRES}/postgres")).await else {
        return;
    };
    // Test database names are `storm_test_<hex>`: safe to quote as an identifier.
    let _ = sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
    let _ = admin.close().await;
}

/// An HTTP client for tests (no pooling surprises: a fresh pool per client).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// Polls `check` every 20 ms until it is true or `timeout` passes; returns the last result.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain Redis connection to `url` for assertions (PUBSUB NUMSUB and the like).
pub async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis reachable")
}

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
