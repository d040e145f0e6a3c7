//! The private servers behave as the fault tests need: data survives a restart, connections do
//! not, and nothing is left running once a server is dropped. Each test boots its own server.

use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnection, PgPoolOptions};
use testkit::{PgServer, RabbitServer, unique, wait_until};

/// Pids of live processes whose command line or environment mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()) && *pid != me)
        .filter(|pid| {
            ["cmdline", "environ"].iter().any(|file| {
                std::fs::read(format!("/proc/{pid}/{file}"))
                    .is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(needle))
            })
        })
        .collect()
}

async fn channel(url: &str) -> (Connection, Channel) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("AMQP connection");
    let channel = connection.create_channel().await.expect("channel");
    (connection, channel)
}

/// Declares `queue` durable and publishes `payload` persistently, waiting for the broker's ack.
async fn publish_persistent(url: &str, queue: &str, payload: &[u8]) -> Connection {
    let (connection, channel) = channel(url).await;
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .expect("queue.declare");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let confirmation = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            payload,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("basic.publish")
        .await
        .expect("publisher confirm");
    assert!(confirmation.is_ack(), "the broker acks the message");
    connection
}

/// Takes one message off `queue` on a new connection.
async fn get_one(url: &str, queue: &str) -> Option<Vec<u8>> {
    let (connection, channel) = channel(url).await;
    let message = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get");
    let _ = connection.close(200, "bye".into()).await;
    message.map(|m| m.delivery.data)
}

#[tokio::test]
async fn rabbit_persistent_message_survives_stop_and_start_again() {
    let started = Instant::now();
    let mut rabbit = RabbitServer::start().await;
    eprintln!("RabbitServer::start: {:?}", started.elapsed());
    assert_ne!(rabbit.port(), 5672);
    let queue = unique("durable");

    let old = publish_persistent(&rabbit.url(), &queue, b"kept").await;

    let stopping = Instant::now();
    rabbit.stop().await;
    eprintln!("RabbitServer::stop: {:?}", stopping.elapsed());
    assert!(
        wait_until(Duration::from_secs(10), || async {
            !old.status().connected()
        })
        .await,
        "the old connection drops"
    );
    assert!(
        Connection::connect(&rabbit.url(), ConnectionProperties::default())
            .await
            .is_err(),
        "nothing listens while stopped"
    );

    let restarting = Instant::now();
    rabbit.start_again().await;
    eprintln!("RabbitServer::start_again: {:?}", restarting.elapsed());

    assert_eq!(
        get_one(&rabbit.url(), &queue).await.as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(get_one(&rabbit.url(), &queue).await, None);
}

#[tokio::test]
async fn rabbit_kill_then_start_again_and_nothing_left_after_drop() {
    let mut rabbit = RabbitServer::start().await;
    let node = rabbit.node().to_string();
    let dir = rabbit.dir().to_path_buf();
    let old = publish_persistent(&rabbit.url(), &unique("before-kill"), b"x").await;

    rabbit.kill();
    assert!(
        processes_mentioning(&node).is_empty(),
        "kill leaves no process of {node}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            !old.status().connected()
        })
        .await,
        "the old connection drops"
    );
    let restarting = Instant::now();
    rabbit.start_again().await;
    eprintln!(
        "RabbitServer::start_again after kill: {:?}",
        restarting.elapsed()
    );

    // (What the node wrote just before the kill may be lost, as in a real crash: see `kill`.)
    let queue = unique("after-kill");
    let _publisher = publish_persistent(&rabbit.url(), &queue, b"back").await;
    let queues = rabbit.ctl(&["list_queues", "name", "messages"]).await;
    assert!(
        queues
            .lines()
            .any(|line| line.split_whitespace().eq([queue.as_str(), "1"])),
        "rabbitmqctl sees the queue and its message: {queues}"
    );
    assert_eq!(
        get_one(&rabbit.url(), &queue).await.as_deref(),
        Some(&b"back"[..])
    );

    drop(rabbit);
    assert!(
        processes_mentioning(&node).is_empty(),
        "drop leaves no process of {node}"
    );
    assert!(!dir.exists(), "drop removes {}", dir.display());
}

#[tokio::test]
async fn pg_restart_keeps_rows_and_drops_connections() {
    let started = Instant::now();
    let mut pg = PgServer::start().await;
    eprintln!("PgServer::start: {:?}", started.elapsed());
    assert_ne!(pg.port(), 5432);
    let url = pg.url("postgres");
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .expect("pool");
    sqlx::query("CREATE TABLE kept (id int PRIMARY KEY)")
        .execute(&pool)
        .await
        .expect("create table");
    sqlx::query("INSERT INTO kept VALUES (1)")
        .execute(&pool)
        .await
        .expect("insert");
    let mut old = pool.acquire().await.expect("pooled connection");
    sqlx::query("SELECT 1")
        .execute(&mut *old)
        .await
        .expect("works before the restart");

    let restarting = Instant::now();
    pg.restart().await;
    eprintln!("PgServer::restart: {:?}", restarting.elapsed());

    assert!(
        sqlx::query("SELECT 1").execute(&mut *old).await.is_err(),
        "the old pooled connection was terminated"
    );
    drop(old);
    let mut fresh = PgConnection::connect(&url).await.expect("fresh connection");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM kept")
        .fetch_one(&mut fresh)
        .await
        .expect("count");
    assert_eq!(rows, 1);
    let _ = fresh.close().await;

    pg.stop().await;
    assert!(
        PgConnection::connect(&url).await.is_err(),
        "nothing listens while stopped"
    );
    let restarting = Instant::now();
    pg.start_again().await;
    eprintln!("PgServer::start_again: {:?}", restarting.elapsed());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM kept")
        .fetch_one(&pool)
        .await
        .expect("the pool reconnects");
    assert_eq!(rows, 1);
    pool.close().await;

    let data = pg.data();
    drop(pg);
    let data = data.to_string_lossy().into_owned();
    assert!(
        processes_mentioning(&data).is_empty(),
        "drop leaves no postgres of {data}"
    );
    assert!(!std::path::Path::new(&data).exists(), "drop removes {data}");
}
