//! Exactly once under faults: a steady stream of writes through the chat service while the broker
//! restarts, the writer is SIGKILLed mid-batch, Postgres restarts, or a second writer joins — and
//! afterwards every 202 is exactly one row (lost and duplicated counts are printed and must be 0).
//! Broker and Postgres faults use private servers; these tests run one at a time (nextest group
//! `faults`).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use testkit::chat_api::{Audit, ChatUser, stored_numbers};
use testkit::{PgServer, RabbitServer, TestApp, http, spawn_chat, spawn_writer, wait_until};

/// Chats the load spreads over.
const CHATS: i64 = 2;

/// An application with `CHATS` chats, owned by a fresh user.
async fn setup(chat: &TestApp) -> (ChatUser, String) {
    let client = http();
    let user = chat.sign_up(&client).await;
    let app = chat.create_application(&client, &user).await;
    for _ in 0..CHATS {
        let (status, body) = chat.create_chat(&client, &user, &app).await;
        assert_eq!(status, 201, "{body}");
    }
    (user, app)
}

/// Writes from `workers` loops, each pausing `pause` between requests, until stopped.
struct Load {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Outcomes>>,
}

#[derive(Default, Debug)]
struct Outcomes {
    /// chat → numbers answered 202.
    accepted: BTreeMap<i64, Vec<i32>>,
    /// status (0 = transport error) → count, for everything but 202.
    refused: BTreeMap<u16, usize>,
}

impl Load {
    fn start(chat: &TestApp, user: &ChatUser, app: &str, workers: usize, pause: Duration) -> Self {
        let stop = CancellationToken::new();
        let tasks = (0..workers)
            .map(|w| {
                let stop = stop.clone();
                let client = http();
                let token = user.token.clone();
                let base = chat.url(&format!("/api/v1/applications/{app}/chats"));
                tokio::spawn(async move {
                    let mut outcomes = Outcomes::default();
                    let mut i = w;
                    while !stop.is_cancelled() {
                        let chat_number = (i as i64 % CHATS) + 1;
                        i += 1;
                        let response = client
                            .post(format!("{base}/{chat_number}/messages"))
                            .bearer_auth(&token)
                            .json(&serde_json::json!({"body": format!("load {w}/{i}")}))
                            .timeout(Duration::from_secs(10))
                            .send()
                            .await;
                        match response {
                            Ok(r) if r.status().as_u16() == 202 => {
                                let body: serde_json::Value = r.json().await.unwrap();
                                let number = body["number"].as_i64().unwrap() as i32;
                                outcomes
                                    .accepted
                                    .entry(chat_number)
                                    .or_default()
                                    .push(number);
                            }
                            Ok(r) => {
                                let status = r.status().as_u16();
                                assert!(
                                    status == 503,
                                    "only 503 may refuse a write: {status} {}",
                                    r.text().await.unwrap_or_default()
                                );
                                *outcomes.refused.entry(status).or_default() += 1;
                            }
                            Err(_) => *outcomes.refused.entry(0).or_default() += 1,
                        }
                        tokio::time::sleep(pause).await;
                    }
                    outcomes
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn finish(self) -> Outcomes {
        self.stop.cancel();
        let mut all = Outcomes::default();
        for task in self.tasks {
            let outcomes = task.await.unwrap();
            for (chat, numbers) in outcomes.accepted {
                all.accepted.entry(chat).or_default().extend(numbers);
            }
            for (status, n) in outcomes.refused {
                *all.refused.entry(status).or_default() += n;
            }
        }
        all
    }
}

/// Waits until every accepted message is stored (or 60 s), then audits each chat, prints the
/// counts and asserts none lost and none duplicated.
async fn assert_exactly_once(fault: &str, chat: &TestApp, app: &str, outcomes: &Outcomes) {
    let pool = chat.database().await;
    let accepted: usize = outcomes.accepted.values().map(Vec::len).sum();
    assert!(accepted > 50, "{fault}: the load ran ({accepted} accepted)");
    let stored_all = || async {
        let mut n = 0;
        for chat in 1..=CHATS {
            n += stored_numbers(&pool, app, chat).await.len();
        }
        n
    };
    wait_until(Duration::from_secs(60), || async {
        stored_all().await >= accepted
    })
    .await;
    // A moment more, so a late duplicate would show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut lost, mut duplicated, mut extra) = (0, 0, 0);
    for chat in 1..=CHATS {
        let numbers = outcomes.accepted.get(&chat).cloned().unwrap_or_default();
        let audit = Audit::of(&numbers, &stored_numbers(&pool, app, chat).await);
        if !audit.lost.is_empty() || !audit.duplicated.is_empty() {
            println!("{fault}: chat {chat}: {audit:?}");
        }
        lost += audit.lost.len();
        duplicated += audit.duplicated.len();
        extra += audit.extra.len();
    }
    println!(
        "{fault}: accepted {accepted}, refused {:?}, lost {lost}, duplicated {duplicated}, \
         stored without a 202 (in-doubt publishes) {extra}",
        outcomes.refused
    );
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "{fault}: every 202 is exactly one row"
    );
    pool.close().await;
}

/// A `storm-writer` process (so it can be SIGKILLed), for `chat`'s database and queue.
fn writer_process(chat: &TestApp, extra: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_storm-writer"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("PPROF_ADDR", "")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in chat.writer_vars() {
        command.env(k, v);
    }
    for (k, v) in extra {
        command.env(k, v);
    }
    command.spawn().expect("storm-writer starts")
}

#[tokio::test]
async fn rabbitmq_restart_under_load_loses_and_duplicates_nothing() {
    let mut rabbit = RabbitServer::start().await;
    let url = rabbit.url();
    let chat = spawn_chat(&[("AMQP_URL", &url), ("PUBLISH_TIMEOUT_MS", "1000")]).await;
    let writer = spawn_writer(&chat.writer_vars()).await;
    let (user, app) = setup(&chat).await;
    let load = Load::start(&chat, &user, &app, 6, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbit.restart().await;
    // Writes resume once the chat service has reconnected.
    chat.wait_ready(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outcomes = load.finish().await;
    assert_exactly_once("rabbitmq restart", &chat, &app, &outcomes).await;
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn writer_sigkilled_mid_batch_and_restarted_loses_and_duplicates_nothing() {
    let chat = spawn_chat(&[]).await;
    // Large, slow batches: the kill lands while deliveries are held unacknowledged.
    let batch = [
        ("WRITER_BATCH_SIZE", "300"),
        ("WRITER_BATCH_MAX_WAIT_MS", "400"),
    ];
    let mut first = writer_process(&chat, &batch);
    let (user, app) = setup(&chat).await;
    let load = Load::start(&chat, &user, &app, 6, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    first.kill().unwrap();
    first.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut second = writer_process(&chat, &batch);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let outcomes = load.finish().await;
    assert_exactly_once("writer SIGKILL", &chat, &app, &outcomes).await;
    second.kill().unwrap();
    second.wait().unwrap();
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn postgres_restart_under_load_loses_and_duplicates_nothing() {
    let mut postgres = PgServer::start().await;
    let database = postgres.url("chat");
    let chat = spawn_chat(&[
        ("DATABASE_URL", &database),
        ("DB_ACQUIRE_TIMEOUT_MS", "1000"),
    ])
    .await;
    let writer = spawn_writer(&chat.writer_vars()).await;
    let (user, app) = setup(&chat).await;
    let load = Load::start(&chat, &user, &app, 6, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(2)).await;
    postgres.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let outcomes = load.finish().await;
    assert_exactly_once("postgres restart", &chat, &app, &outcomes).await;
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn a_second_writer_joining_mid_run_loses_and_duplicates_nothing() {
    let chat = spawn_chat(&[]).await;
    let first = spawn_writer(&chat.writer_vars()).await;
    let (user, app) = setup(&chat).await;
    let load = Load::start(&chat, &user, &app, 6, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = spawn_writer(&chat.writer_vars()).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // And the first one leaves gracefully, finishing its batch.
    first.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let outcomes = load.finish().await;
    assert_exactly_once("second writer", &chat, &app, &outcomes).await;
    second.stop().await.unwrap();
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn broker_down_at_publish_is_503_and_never_becomes_a_row() {
    let mut rabbit = RabbitServer::start().await;
    let url = rabbit.url();
    let chat = spawn_chat(&[("AMQP_URL", &url)]).await;
    let writer = spawn_writer(&chat.writer_vars()).await;
    let (user, app) = setup(&chat).await;
    let client = http();
    let (status, body) = chat.post_message(&client, &user, &app, 1, "before").await;
    assert_eq!(status, 202, "{body}");
    rabbit.stop().await;
    let response = client
        .post(chat.url(&format!("/api/v1/applications/{app}/chats/1/messages")))
        .bearer_auth(&user.token)
        .json(&serde_json::json!({"body": "while the broker is down"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    let (status, _) =
        testkit::TestApp::send(&chat, &client, reqwest::Method::GET, "/ready", None, None).await;
    assert_eq!(status, 503, "/ready names the broker as down");
    rabbit.start_again().await;
    let mut after = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while after.is_none() && tokio::time::Instant::now() < deadline {
        let (status, body) = chat.post_message(&client, &user, &app, 1, "after").await;
        if status == 202 {
            after = body["number"].as_i64().map(|n| n as i32);
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let after = after.expect("writes are accepted again after the broker is back");
    let pool = chat.database().await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            stored_numbers(&pool, &app, 1).await.contains(&after)
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = stored_numbers(&pool, &app, 1).await;
    // Number 1 was accepted before; the refused request's number (2) was burned, never stored.
    assert_eq!(
        stored,
        vec![1, after],
        "only the accepted messages are rows"
    );
    assert!(after > 2);
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_counted_and_the_writer_keeps_going() {
    let chat = spawn_chat(&[]).await;
    let writer = spawn_writer(&chat.writer_vars()).await;
    let (user, app) = setup(&chat).await;
    let client = http();
    let queue = chat.settings["CHAT_QUEUE"].clone();
    // Straight onto the queue, signed with the shared key: garbage, and a well-formed message for
    // a chat that does not exist.
    let connection =
        lapin::Connection::connect(testkit::AMQP_URL, lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let key = queue::SigningKey::new(testkit::QUEUE_SIGNING_KEY.as_bytes());
    let ghost = queue::QueuedMessage::new(999_999_999, 1, "ghost".into());
    for payload in [b"{not json".to_vec(), serde_json::to_vec(&ghost).unwrap()] {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                key.properties(&payload),
            )
            .await
            .unwrap();
    }
    for i in 0..20 {
        let (status, _) = chat
            .post_message(&client, &user, &app, 1, &format!("good {i}"))
            .await;
        assert_eq!(status, 202);
    }
    let pool = chat.database().await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            stored_numbers(&pool, &app, 1).await.len() == 20
        })
        .await,
        "the good messages are stored around the poison"
    );
    let dead = queue::dead_letter_queue(&queue);
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let dead_count = || async {
        channel
            .queue_declare(dead.as_str().into(), passive, FieldTable::default())
            .await
            .map(|q| q.message_count())
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(10), || async {
        dead_count().await == 2
    })
    .await;
    let dead_count = dead_count().await;
    assert_eq!(dead_count, 2, "both poison messages are in {dead}");
    let metrics = writer.get_text(&client, "/metrics").await;
    let dead_letters = |reason: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("writer_dead_letters_total")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    println!(
        "dead letters: malformed {:?}, rejected {:?}",
        dead_letters("malformed"),
        dead_letters("rejected")
    );
    assert_eq!(
        (dead_letters("malformed"), dead_letters("rejected")),
        (Some(1.0), Some(1.0))
    );
    let _ = connection.close(200, "done".into()).await;
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}
