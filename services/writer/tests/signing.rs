//! The writer stores only the chat service's messages: straight onto a test's queue (as anyone
//! who reaches the broker could), an unsigned message, a mis-signed one and a validly signed one
//! whose `(chat_id, number)` already holds another message each land in `<queue>.dead` with their
//! reason counted, the stored row is unchanged, and a signed redelivery of the stored message is
//! acknowledged and stays one row — through the batch path and the row-by-row path alike. Every
//! 202 of the chat API is still exactly one row.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use queue::{QueuedMessage, SigningKey};
use sqlx::PgPool;
use uuid::Uuid;

use testkit::chat_api::{Audit, ChatUser, stored_numbers};
use testkit::{QUEUE_SIGNING_KEY, TestApp, http, spawn_chat, spawn_writer, wait_until};

fn key() -> SigningKey {
    SigningKey::new(QUEUE_SIGNING_KEY.as_bytes())
}

/// A channel on the machine's broker, for publishing as an outsider would.
async fn outsider() -> (Connection, Channel) {
    let connection = Connection::connect(testkit::AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

async fn publish(channel: &Channel, queue: &str, body: &[u8], properties: BasicProperties) {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Messages ready in `queue` (0 if it cannot be read).
async fn ready(channel: &Channel, queue: &str) -> u32 {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .map(|q| q.message_count())
        .unwrap_or(0)
}

/// Takes every message out of `queue`: their bodies.
async fn drain(channel: &Channel, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        bodies.push(String::from_utf8_lossy(&message.delivery.data).into_owned());
    }
    bodies
}

/// `writer_<name>` on the writer's /metrics, summed over the series whose labels contain `labels`.
async fn metric(writer: &TestApp, name: &str, labels: &str) -> Option<f64> {
    let text = writer.get_text(&http(), "/metrics").await;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.split(['{', ' ']).next() == Some(name) && (labels.is_empty() || l.contains(labels))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

async fn dead_letters(writer: &TestApp) -> [(&'static str, Option<f64>); 5] {
    let mut out = [
        ("unsigned", None),
        ("bad_signature", None),
        ("malformed", None),
        ("conflict", None),
        ("rejected", None),
    ];
    for (reason, value) in out.iter_mut() {
        *value = metric(
            writer,
            "writer_dead_letters_total",
            &format!("reason=\"{reason}\""),
        )
        .await;
    }
    out
}

/// The id of chat `number` of application `app`.
async fn chat_id(pool: &PgPool, app: &str, number: i32) -> i64 {
    sqlx::query_scalar(
        "SELECT c.id FROM chats c JOIN applications a ON a.id = c.application_id
         WHERE a.token = $1 AND c.number = $2",
    )
    .bind(app)
    .bind(number)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A stored row: (body, message id, created_at), or None.
type Stored = Option<(String, Option<Uuid>, DateTime<Utc>)>;

async fn row(pool: &PgPool, chat_id: i64, number: i32) -> Stored {
    sqlx::query_as(
        "SELECT body, message_id, created_at FROM chat_messages WHERE chat_id = $1 AND number = $2",
    )
    .bind(chat_id)
    .bind(number)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// Stores `message` the way a writer does (its id on the row), bypassing the queue.
async fn store_as_a_writer_would(pool: &PgPool, message: &QueuedMessage) {
    sqlx::query(
        "INSERT INTO chat_messages (chat_id, number, body, created_at, message_id)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(message.chat_id)
    .bind(message.number)
    .bind(&message.body)
    .bind(message.created_at)
    .bind(message.id)
    .execute(pool)
    .await
    .unwrap();
}

async fn rows_of(pool: &PgPool, chat_id: i64) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM chat_messages WHERE chat_id = $1")
        .bind(chat_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A user, an application and one chat on `chat`.
async fn setup(chat: &TestApp) -> (ChatUser, String) {
    let client = http();
    let user = chat.sign_up(&client).await;
    let app = chat.create_application(&client, &user).await;
    let (status, body) = chat.create_chat(&client, &user, &app).await;
    assert_eq!(status, 201, "{body}");
    (user, app)
}

/// A chat service with a user, an application and its chat 1, and what the tests reach past the
/// API with: its database, its queue and dead-letter queue, the chat's id.
async fn queued() -> (TestApp, ChatUser, String, PgPool, String, String, i64) {
    let chat = spawn_chat(&[]).await;
    let (user, app) = setup(&chat).await;
    let pool = chat.database().await;
    let queue = chat.settings["CHAT_QUEUE"].clone();
    let dead = queue::dead_letter_queue(&queue);
    let chat_id = chat_id(&pool, &app, 1).await;
    (chat, user, app, pool, queue, dead, chat_id)
}

/// Posts `n` messages to chat 1 through the API and asserts every 202 becomes exactly one row.
async fn assert_api_writes_are_exactly_once(
    chat: &TestApp,
    user: &ChatUser,
    app: &str,
    pool: &PgPool,
    n: usize,
) {
    let client = http();
    let before: BTreeSet<i32> = stored_numbers(pool, app, 1).await.into_iter().collect();
    let mut accepted = Vec::new();
    for i in 0..n {
        let (status, body) = chat
            .post_message(&client, user, app, 1, &format!("legit {i}"))
            .await;
        assert_eq!(status, 202, "{body}");
        accepted.push(body["number"].as_i64().unwrap() as i32);
    }
    let stored_new = || async {
        stored_numbers(pool, app, 1)
            .await
            .into_iter()
            .filter(|n| !before.contains(n))
            .collect::<Vec<_>>()
    };
    wait_until(Duration::from_secs(20), || async {
        stored_new().await.len() >= n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let audit = Audit::of(&accepted, &stored_new().await);
    assert!(
        audit.lost.is_empty() && audit.duplicated.is_empty() && audit.extra.is_empty(),
        "every 202 is exactly one row: {audit:?}"
    );
}

#[tokio::test]
async fn forged_and_conflicting_messages_are_dead_lettered_with_their_reason() {
    let (chat, user, app, pool, queue, dead, chat_id) = queued().await;
    let writer = spawn_writer(&chat.writer_vars()).await;

    // Every reason is exported at 0 before the first dead letter.
    for (reason, value) in dead_letters(&writer).await {
        assert_eq!(
            value,
            Some(0.0),
            "writer_dead_letters_total{{reason={reason:?}}}"
        );
    }

    // A real message, through the API.
    let client = http();
    let (status, body) = chat
        .post_message(&client, &user, &app, 1, "the real one")
        .await;
    assert_eq!(status, 202, "{body}");
    let number = body["number"].as_i64().unwrap() as i32;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            row(&pool, chat_id, number).await.is_some()
        })
        .await
    );
    let original = row(&pool, chat_id, number).await.unwrap();
    let original_id = original
        .1
        .expect("the row stores the chat service's message id");

    // A row stored without a message id (written before version 2, or by hand).
    sqlx::query(
        "INSERT INTO chat_messages (chat_id, number, body, created_at) VALUES ($1, 500, 'old', now())",
    )
    .bind(chat_id)
    .execute(&pool)
    .await
    .unwrap();
    let old = row(&pool, chat_id, 500).await;

    let (connection, channel) = outsider().await;
    let forged = |number: i32, body: &str| {
        serde_json::to_vec(&QueuedMessage::new(chat_id, number, body.into())).unwrap()
    };
    // Unsigned, for a free number: would have become a row.
    let unsigned = forged(1000, "unsigned");
    publish(&channel, &queue, &unsigned, queue::unsigned_properties()).await;
    // Signed with another key, for a free number.
    let mis_signed = forged(1001, "mis-signed");
    let other = SigningKey::new(b"not the writer's key, 32 bytes..");
    publish(&channel, &queue, &mis_signed, other.properties(&mis_signed)).await;
    // A signature over other bytes (the body changed after signing).
    let tampered = forged(1002, "tampered");
    let original_signature = key().properties(&forged(1002, "signed"));
    publish(&channel, &queue, &tampered, original_signature).await;
    // Validly signed, but the number holds another message.
    let conflict = forged(number, "impostor");
    publish(&channel, &queue, &conflict, key().properties(&conflict)).await;
    // Validly signed, for the row stored without an id.
    let conflict_old = forged(500, "impostor of an old row");
    publish(
        &channel,
        &queue,
        &conflict_old,
        key().properties(&conflict_old),
    )
    .await;
    // Validly signed redelivery of the stored message (same id): acknowledged, no second row.
    let redelivery = serde_json::to_vec(&QueuedMessage {
        v: queue::MESSAGE_VERSION,
        id: original_id,
        chat_id,
        number,
        body: original.0.clone(),
        created_at: original.2,
    })
    .unwrap();
    let skipped_before = metric(&writer, "writer_rows_skipped_total", "")
        .await
        .unwrap();
    publish(&channel, &queue, &redelivery, key().properties(&redelivery)).await;

    assert!(
        wait_until(Duration::from_secs(20), || async {
            ready(&channel, &dead).await == 5
                && metric(&writer, "writer_rows_skipped_total", "").await
                    == Some(skipped_before + 1.0)
        })
        .await,
        "5 dead letters and one redelivery skipped; dead {}, skipped {:?}",
        ready(&channel, &dead).await,
        metric(&writer, "writer_rows_skipped_total", "").await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = dead_letters(&writer).await;
    println!("dead letters: {counts:?}");
    assert_eq!(
        counts,
        [
            ("unsigned", Some(1.0)),
            ("bad_signature", Some(2.0)),
            ("malformed", Some(0.0)),
            ("conflict", Some(2.0)),
            ("rejected", Some(0.0)),
        ]
    );
    let dead_bodies: BTreeSet<String> = drain(&channel, &dead).await.into_iter().collect();
    let expected: BTreeSet<String> = [&unsigned, &mis_signed, &tampered, &conflict, &conflict_old]
        .into_iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(
        dead_bodies, expected,
        "exactly the refused messages are in {dead}"
    );
    assert_eq!(ready(&channel, &queue).await, 0, "nothing left in {queue}");

    // The stored rows are untouched, nothing forged became a row, the redelivery is one row.
    assert_eq!(row(&pool, chat_id, number).await, Some(original));
    assert_eq!(row(&pool, chat_id, 500).await, old);
    for free in [1000, 1001, 1002] {
        assert_eq!(row(&pool, chat_id, free).await, None, "number {free}");
    }
    assert_eq!(rows_of(&pool, chat_id).await, 2);

    // And the chat API still gets every 202 stored exactly once.
    assert_api_writes_are_exactly_once(&chat, &user, &app, &pool, 20).await;

    let _ = connection.close(200, "done".into()).await;
    pool.close().await;
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn conflicts_are_dead_lettered_on_the_row_by_row_path_too() {
    let (chat, user, app, pool, queue, dead, chat_id) = queued().await;
    // A stored message, as a writer stored it (its id on the row).
    let stored = QueuedMessage::new(chat_id, 900, "stored".into());
    store_as_a_writer_would(&pool, &stored).await;
    let before = row(&pool, chat_id, 900).await;

    // All queued before the writer starts, so they arrive in one batch: the ghost (a chat that does
    // not exist) makes Postgres refuse the batch, and the rows are written one by one.
    let (connection, channel) = outsider().await;
    queue::declare(&channel, &queue).await.unwrap();
    let ghost = serde_json::to_vec(&QueuedMessage::new(999_999_999, 1, "ghost".into())).unwrap();
    let conflict =
        serde_json::to_vec(&QueuedMessage::new(chat_id, 900, "impostor".into())).unwrap();
    let redelivery = serde_json::to_vec(&stored).unwrap();
    let fresh = QueuedMessage::new(chat_id, 901, "fresh".into());
    let fresh_body = serde_json::to_vec(&fresh).unwrap();
    for body in [&ghost, &conflict, &redelivery, &fresh_body] {
        publish(&channel, &queue, body, key().properties(body)).await;
    }
    let mut vars = chat.writer_vars();
    vars.push(("WRITER_BATCH_MAX_WAIT_MS", "500"));
    let writer = spawn_writer(&vars).await;

    assert!(
        wait_until(Duration::from_secs(20), || async {
            ready(&channel, &dead).await == 2 && row(&pool, chat_id, 901).await.is_some()
        })
        .await,
        "the ghost and the conflict dead-lettered, the fresh message stored"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = dead_letters(&writer).await;
    println!("dead letters: {counts:?}");
    assert_eq!(counts[3], ("conflict", Some(1.0)));
    assert_eq!(counts[4], ("rejected", Some(1.0)));
    assert_eq!(
        metric(&writer, "writer_batch_size_count", "").await,
        Some(1.0),
        "the four arrived in one batch"
    );
    let dead_bodies: BTreeSet<String> = drain(&channel, &dead).await.into_iter().collect();
    let expected: BTreeSet<String> = [&ghost, &conflict]
        .into_iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(dead_bodies, expected);
    assert_eq!(ready(&channel, &queue).await, 0, "nothing left in {queue}");
    assert_eq!(
        row(&pool, chat_id, 900).await,
        before,
        "the stored row is unchanged"
    );
    assert_eq!(
        row(&pool, chat_id, 901).await.and_then(|r| r.1),
        Some(fresh.id),
        "the fresh row carries its message id"
    );
    assert_eq!(rows_of(&pool, chat_id).await, 2);
    assert_api_writes_are_exactly_once(&chat, &user, &app, &pool, 10).await;

    let _ = connection.close(200, "done".into()).await;
    pool.close().await;
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn a_writer_with_another_key_stores_nothing_from_chat() {
    // Chat and writer configured with different keys: every message is refused as mis-signed,
    // loudly (dead-lettered and counted), never stored.
    let chat = spawn_chat(&[]).await;
    let mut vars = chat.writer_vars();
    vars.retain(|(k, _)| *k != "QUEUE_SIGNING_KEY");
    vars.push(("QUEUE_SIGNING_KEY", "a different key of at least 32 bytes"));
    let writer = spawn_writer(&vars).await;
    let (user, app) = setup(&chat).await;
    let client = http();
    for i in 0..3 {
        let (status, _) = chat
            .post_message(&client, &user, &app, 1, &format!("m{i}"))
            .await;
        assert_eq!(status, 202);
    }
    assert!(
        wait_until(Duration::from_secs(20), || async {
            metric(
                &writer,
                "writer_dead_letters_total",
                "reason=\"bad_signature\"",
            )
            .await
                == Some(3.0)
        })
        .await
    );
    let pool = chat.database().await;
    assert!(stored_numbers(&pool, &app, 1).await.is_empty());
    pool.close().await;
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}

/// What ends the batch in [`a_batch_ending_in_a_dead_letter`].
#[derive(Clone, Copy, Debug)]
enum Last {
    /// An unsigned message (anyone who reaches the broker can publish one).
    Unsigned,
    /// A validly signed message whose `(chat_id, number)` holds another message id.
    Conflict,
}

/// One batch whose last delivery is dead-lettered (with, for a conflict, an unsigned one in the
/// middle too): the valid rows are committed and acknowledged without closing the channel — no
/// redelivery, no reconnect — and the next batch is written at once. The batch used to be
/// acknowledged up to its last tag, already rejected: RabbitMQ closed the channel with 406
/// PRECONDITION_FAILED "unknown delivery tag" and redelivered every committed row.
async fn a_batch_ending_in_a_dead_letter(last: Last) {
    const BATCH: usize = 6;
    let (chat, _user, _app, pool, queue, dead, chat_id) = queued().await;
    // For the conflict: a stored message, as a writer stored it (its id on the row).
    let stored = QueuedMessage::new(chat_id, 900, "stored".into());
    store_as_a_writer_would(&pool, &stored).await;

    // Queued before the writer starts, exactly WRITER_BATCH_SIZE of them: one batch, flushed
    // because it is full, the dead letter its last delivery.
    let (connection, channel) = outsider().await;
    queue::declare(&channel, &queue).await.unwrap();
    let body = |number: i32, text: &str| {
        serde_json::to_vec(&QueuedMessage::new(chat_id, number, text.into())).unwrap()
    };
    let unsigned = body(2000, "unsigned");
    let conflict = body(900, "impostor");
    let (valid, dead_bodies): (Vec<i32>, Vec<&Vec<u8>>) = match last {
        Last::Unsigned => ((1001..=1005).collect(), vec![&unsigned]),
        Last::Conflict => ((1001..=1004).collect(), vec![&unsigned, &conflict]),
    };
    for (i, &number) in valid.iter().enumerate() {
        if matches!(last, Last::Conflict) && i == 2 {
            publish(&channel, &queue, &unsigned, queue::unsigned_properties()).await;
        }
        let signed = body(number, "valid");
        publish(&channel, &queue, &signed, key().properties(&signed)).await;
    }
    match last {
        Last::Unsigned => publish(&channel, &queue, &unsigned, queue::unsigned_properties()).await,
        Last::Conflict => publish(&channel, &queue, &conflict, key().properties(&conflict)).await,
    }
    assert!(
        wait_until(Duration::from_secs(10), || async {
            ready(&channel, &queue).await as usize == BATCH
        })
        .await,
        "{last:?}: the {BATCH} messages queued"
    );

    let mut vars = chat.writer_vars();
    let batch = BATCH.to_string();
    vars.push(("WRITER_BATCH_SIZE", batch.as_str()));
    // Batches are flushed by size only: a batch topped up with redeliveries would leave part of
    // the following one waiting this long.
    vars.push(("WRITER_BATCH_MAX_WAIT_MS", "15000"));
    let writer = spawn_writer(&vars).await;
    let stored_valid = || async {
        let mut n = 0;
        for &number in &valid {
            n += usize::from(row(&pool, chat_id, number).await.is_some());
        }
        n
    };
    assert!(
        wait_until(Duration::from_secs(20), || async {
            ready(&channel, &dead).await as usize == dead_bodies.len()
                && stored_valid().await == valid.len()
        })
        .await,
        "{last:?}: the valid rows stored and the dead letters in {dead}"
    );
    assert_eq!(
        metric(&writer, "writer_batch_size_count", "").await,
        Some(1.0),
        "{last:?}: the {BATCH} arrived in one batch"
    );
    // Time for a 406 to close the channel and for the broker to redeliver the batch.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The following batch (again exactly WRITER_BATCH_SIZE) is written at once, by size.
    let following: Vec<i32> = (3001..3001 + BATCH as i32).collect();
    for &number in &following {
        let signed = body(number, "following");
        publish(&channel, &queue, &signed, key().properties(&signed)).await;
    }
    let stored_following = || async {
        let mut n = 0;
        for &number in &following {
            n += usize::from(row(&pool, chat_id, number).await.is_some());
        }
        n
    };
    assert!(
        wait_until(Duration::from_secs(8), || async {
            stored_following().await == following.len()
        })
        .await,
        "{last:?}: the following batch is written promptly ({} of {} stored)",
        stored_following().await,
        following.len()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The channel never closed: nothing came back redelivered, nothing was written twice.
    assert_eq!(
        metric(&writer, "writer_redeliveries_total", "").await,
        Some(0.0),
        "{last:?}: no delivery came back (the channel was not closed)"
    );
    assert_eq!(
        metric(&writer, "writer_rows_skipped_total", "").await,
        Some(0.0),
        "{last:?}: no committed row was delivered again"
    );
    assert_eq!(
        metric(&writer, "writer_rows_written_total", "").await,
        Some((valid.len() + following.len()) as f64)
    );
    assert_eq!(
        metric(&writer, "writer_batch_size_count", "").await,
        Some(2.0),
        "{last:?}: two batches, no third of redeliveries"
    );
    assert_eq!(
        metric(&writer, "writer_broker_connected", "").await,
        Some(1.0)
    );
    let counts = dead_letters(&writer).await;
    println!("{last:?}: dead letters: {counts:?}");
    assert_eq!(counts[0], ("unsigned", Some(1.0)));
    let conflicts = if matches!(last, Last::Conflict) {
        1.0
    } else {
        0.0
    };
    assert_eq!(counts[3], ("conflict", Some(conflicts)));
    assert_eq!(ready(&channel, &queue).await, 0, "nothing left in {queue}");
    let dead_got: BTreeSet<String> = drain(&channel, &dead).await.into_iter().collect();
    let dead_expected: BTreeSet<String> = dead_bodies
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(dead_got, dead_expected, "exactly the refused messages");
    // Every valid message is one row; the stored row is unchanged; nothing forged is a row.
    assert_eq!(
        rows_of(&pool, chat_id).await as usize,
        1 + valid.len() + following.len()
    );
    assert_eq!(
        row(&pool, chat_id, 900).await.and_then(|r| r.1),
        Some(stored.id)
    );
    assert_eq!(row(&pool, chat_id, 2000).await, None);

    let _ = connection.close(200, "done".into()).await;
    pool.close().await;
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn a_batch_ending_in_an_unsigned_message_is_acknowledged_without_closing_the_channel() {
    a_batch_ending_in_a_dead_letter(Last::Unsigned).await;
}

#[tokio::test]
async fn a_batch_ending_in_a_conflict_is_acknowledged_without_closing_the_channel() {
    a_batch_ending_in_a_dead_letter(Last::Conflict).await;
}

/// The chat service's batches (several messages in one delivery): a batch is stored row by row; a
/// batch holding two conflicting messages is dead-lettered once, as it was published, with its
/// other rows stored; the channel stays open and nothing comes back.
#[tokio::test]
async fn a_batch_delivery_is_stored_or_dead_lettered_as_one() {
    let (chat, _user, _app, pool, queue, dead, chat_id) = queued().await;
    let stored: Vec<QueuedMessage> = [900, 901]
        .map(|n| QueuedMessage::new(chat_id, n, "stored".into()))
        .to_vec();
    for message in &stored {
        store_as_a_writer_would(&pool, message).await;
    }
    let (connection, channel) = outsider().await;
    queue::declare(&channel, &queue).await.unwrap();
    let encoded = |number: i32| {
        serde_json::to_vec(&QueuedMessage::new(chat_id, number, format!("m{number}"))).unwrap()
    };
    let batch = |numbers: &[i32]| {
        let messages: Vec<Vec<u8>> = numbers.iter().map(|&n| encoded(n)).collect();
        queue::batch_body(messages.iter().map(Vec::as_slice))
    };
    let conflicting = batch(&[1001, 900, 1002, 901]);
    let valid = batch(&[1003, 1004]);
    let single = encoded(1005);
    for body in [&conflicting, &valid, &single] {
        publish(&channel, &queue, body, key().properties(body)).await;
    }
    let writer = spawn_writer(&chat.writer_vars()).await;
    let numbers = [1001, 1002, 1003, 1004, 1005];
    let all_stored = || async {
        let mut n = 0;
        for number in numbers {
            n += usize::from(row(&pool, chat_id, number).await.is_some());
        }
        n == numbers.len()
    };
    assert!(
        wait_until(Duration::from_secs(20), || async {
            all_stored().await && ready(&channel, &dead).await == 1
        })
        .await,
        "every non-conflicting row stored, the conflicting batch dead-lettered"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        dead_letters(&writer).await[3],
        ("conflict", Some(1.0)),
        "one delivery dead-lettered once, for both of its conflicts"
    );
    assert_eq!(
        metric(&writer, "writer_redeliveries_total", "").await,
        Some(0.0)
    );
    assert_eq!(
        metric(&writer, "writer_broker_connected", "").await,
        Some(1.0)
    );
    assert_eq!(ready(&channel, &queue).await, 0);
    assert_eq!(
        drain(&channel, &dead).await,
        vec![String::from_utf8_lossy(&conflicting).into_owned()],
        "the batch as it was published"
    );
    for message in &stored {
        assert_eq!(
            row(&pool, chat_id, message.number).await.and_then(|r| r.1),
            Some(message.id),
            "the stored rows are unchanged"
        );
    }
    assert_eq!(rows_of(&pool, chat_id).await, 2 + numbers.len() as i64);
    let _ = connection.close(200, "done".into()).await;
    pool.close().await;
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}
