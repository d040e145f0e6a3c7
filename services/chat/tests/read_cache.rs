//! The read cache against the machine's real Postgres, RabbitMQ and Redis: reads never show what
//! is not committed, show it once it is, stay ordered while messages arrive, and stay correct when
//! the commit notifications are interrupted.

use std::time::Duration;

use serde_json::Value;

use testkit::chat_api::ChatUser;
use testkit::{TestApp, http, spawn_chat, spawn_writer, wait_until};

/// A user with one application and one chat (number 1).
async fn one_chat(chat: &TestApp, client: &reqwest::Client) -> (ChatUser, String) {
    let user = chat.sign_up(client).await;
    let app = chat.create_application(client, &user).await;
    let (status, body) = chat.create_chat(client, &user, &app).await;
    assert_eq!(status, 201, "{body}");
    (user, app)
}

fn numbers(page: &Value) -> Vec<i64> {
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["number"].as_i64().expect("number"))
        .collect()
}

async fn page(
    chat: &TestApp,
    client: &reqwest::Client,
    user: &ChatUser,
    app: &str,
    query: &str,
) -> Value {
    let path = format!("/api/v1/applications/{app}/chats/1/messages{query}");
    let (status, body) = chat.get_as(client, user, &path).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn listed_count(chat: &TestApp, client: &reqwest::Client, user: &ChatUser, app: &str) -> i64 {
    let path = format!("/api/v1/applications/{app}/chats");
    let (status, body) = chat.get_as(client, user, &path).await;
    assert_eq!(status, 200, "{body}");
    body["chats"][0]["messages_count"].as_i64().expect("count")
}

/// The numbers committed in chat 1 of `app`, ascending.
async fn committed(pool: &sqlx::PgPool, app: &str) -> Vec<i64> {
    testkit::chat_api::stored_numbers(pool, app, 1)
        .await
        .into_iter()
        .map(i64::from)
        .collect()
}

/// The value of the service's metric series `name` whose labels include `labels`.
async fn metric(chat: &TestApp, client: &reqwest::Client, name: &str, labels: &[&str]) -> f64 {
    let text = chat.get_text(client, "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `chat_read_cache_total{cache, outcome="hit"}` of the service.
async fn hits(chat: &TestApp, client: &reqwest::Client, cache: &str) -> f64 {
    let cache = format!("cache=\"{cache}\"");
    metric(
        chat,
        client,
        "chat_read_cache_total",
        &[&cache, "outcome=\"hit\""],
    )
    .await
}

/// Waits until the read cache hears the commit notifications.
async fn wait_live(chat: &TestApp, client: &reqwest::Client) {
    let live = wait_until(Duration::from_secs(15), || async {
        metric(chat, client, "chat_read_cache_live", &[]).await == 1.0
    })
    .await;
    assert!(live, "the read cache went live");
}

#[tokio::test]
async fn a_read_never_shows_a_message_before_its_row_is_committed_and_shows_it_after() {
    // No writer yet: accepted messages wait in the queue, uncommitted.
    let chat = spawn_chat(&[]).await;
    let client = http();
    let pool = chat.database().await;
    let (user, app) = one_chat(&chat, &client).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            page(&chat, &client, &user, &app, "").await;
            hits(&chat, &client, "messages").await > 0.0
        })
        .await,
        "the empty page is served from the cache once the cache is live"
    );
    for i in 0..3 {
        let (status, body) = chat
            .post_message(&client, &user, &app, 1, &format!("m{i}"))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    for _ in 0..20 {
        assert_eq!(
            numbers(&page(&chat, &client, &user, &app, "").await),
            Vec::<i64>::new()
        );
        assert_eq!(listed_count(&chat, &client, &user, &app).await, 0);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(committed(&pool, &app).await.is_empty());
    let before = hits(&chat, &client, "messages").await;
    assert!(before >= 20.0, "the reads were cache hits ({before})");

    let writer = spawn_writer(&chat.writer_vars()).await;
    let shown = wait_until(Duration::from_secs(15), || async {
        numbers(&page(&chat, &client, &user, &app, "").await) == vec![1, 2, 3]
    })
    .await;
    assert!(shown, "the committed messages show on the cached page");
    assert_eq!(committed(&pool, &app).await, vec![1, 2, 3]);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            listed_count(&chat, &client, &user, &app).await == 3
        })
        .await,
        "the chat list's count follows the commit"
    );
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn pages_stay_ordered_and_committed_while_messages_arrive() {
    let chat = spawn_chat(&[]).await;
    let writer = spawn_writer(&chat.writer_vars()).await;
    let client = http();
    let pool = chat.database().await;
    let (user, app) = one_chat(&chat, &client).await;
    wait_live(&chat, &client).await;
    const MESSAGES: usize = 150;
    let posting = {
        let (chat, client, user, app) = (&chat, &client, &user, &app);
        futures_util::future::join_all((0..6).map(|task| async move {
            for i in 0..MESSAGES / 6 {
                let (status, body) = chat
                    .post_message(client, user, app, 1, &format!("t{task} m{i}"))
                    .await;
                assert_eq!(status, 202, "{body}");
            }
        }))
    };
    let reading = async {
        let mut reads = 0;
        for _ in 0..100 {
            for query in ["?per_page=20", "?page=2&per_page=20", "?page=3&per_page=50"] {
                let shown = numbers(&page(&chat, &client, &user, &app, query).await);
                assert!(shown.windows(2).all(|w| w[0] < w[1]), "{query}: {shown:?}");
                // Everything shown is committed (it was when it was read, and rows stay).
                let rows = committed(&pool, &app).await;
                assert!(shown.iter().all(|n| rows.contains(n)), "{query}: {shown:?}");
                reads += 1;
            }
            // A count shown is never ahead of the committed rows.
            let count = listed_count(&chat, &client, &user, &app).await;
            assert!(count as usize <= committed(&pool, &app).await.len());
        }
        reads
    };
    let ((), reads) = tokio::join!(
        async {
            posting.await;
        },
        reading
    );
    assert!(reads > 0);
    // Once everything is committed, every page equals the database's.
    let converged = wait_until(Duration::from_secs(15), || async {
        let rows = committed(&pool, &app).await;
        if rows.len() != MESSAGES {
            return false;
        }
        let mut same = true;
        for (query, from, to) in [
            ("?per_page=20", 0, 20),
            ("?page=2&per_page=20", 20, 40),
            ("?page=3&per_page=50", 100, 150),
        ] {
            same &= numbers(&page(&chat, &client, &user, &app, query).await) == rows[from..to];
        }
        same && listed_count(&chat, &client, &user, &app).await == MESSAGES as i64
    })
    .await;
    assert!(converged, "the cached pages converge on the committed rows");
    assert!(hits(&chat, &client, "messages").await > 0.0);
    assert!(hits(&chat, &client, "chats").await > 0.0);
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn reads_stay_correct_when_the_commit_notifications_are_cut() {
    let chat = spawn_chat(&[]).await;
    let writer = spawn_writer(&chat.writer_vars()).await;
    let client = http();
    let pool = chat.database().await;
    let (user, app) = one_chat(&chat, &client).await;
    let (status, _) = chat.post_message(&client, &user, &app, 1, "first").await;
    assert_eq!(status, 202);
    assert!(
        wait_until(Duration::from_secs(15), || async {
            numbers(&page(&chat, &client, &user, &app, "").await) == vec![1]
        })
        .await
    );
    for round in 0..3 {
        wait_live(&chat, &client).await;
        // Cut the listener's connection (its last statement was its LISTEN), then commit more at
        // once: whatever was announced while it reconnects is lost, and must not matter.
        let cut: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(cut, vec![true], "round {round}: one listener connection");
        for i in 0..5 {
            let (status, body) = chat
                .post_message(&client, &user, &app, 1, &format!("r{round} m{i}"))
                .await;
            assert_eq!(status, 202, "{body}");
        }
        let expected: Vec<i64> = (1..=1 + 5 * (round + 1)).collect();
        let converged = wait_until(Duration::from_secs(15), || async {
            // The page first: everything it shows must be committed by the time it was read.
            let shown = numbers(&page(&chat, &client, &user, &app, "").await);
            let rows = committed(&pool, &app).await;
            assert!(shown.iter().all(|n| rows.contains(n)), "{shown:?} {rows:?}");
            shown == expected
                && listed_count(&chat, &client, &user, &app).await == expected.len() as i64
        })
        .await;
        assert!(
            converged,
            "round {round}: the page shows every committed message"
        );
    }
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn with_the_cache_off_every_read_is_a_query_with_the_same_answers() {
    let chat = spawn_chat(&[("READ_CACHE_MB", "0")]).await;
    let writer = spawn_writer(&chat.writer_vars()).await;
    let client = http();
    let pool = chat.database().await;
    let (user, app) = one_chat(&chat, &client).await;
    for i in 0..4 {
        let (status, _) = chat
            .post_message(&client, &user, &app, 1, &format!("m{i}"))
            .await;
        assert_eq!(status, 202);
    }
    assert!(
        wait_until(Duration::from_secs(15), || async {
            numbers(&page(&chat, &client, &user, &app, "?per_page=3").await) == vec![1, 2, 3]
                && committed(&pool, &app).await.len() == 4
        })
        .await
    );
    assert_eq!(listed_count(&chat, &client, &user, &app).await, 4);
    assert_eq!(hits(&chat, &client, "messages").await, 0.0);
    assert_eq!(hits(&chat, &client, "chats").await, 0.0);
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn two_chat_processes_and_two_writers_keep_every_guarantee() {
    let first = spawn_chat(&[]).await;
    let shared: Vec<(&str, &str)> = ["DATABASE_URL", "CHAT_QUEUE", "REDIS_KEY_PREFIX"]
        .into_iter()
        .map(|k| (k, first.settings[k].as_str()))
        .collect();
    let second = spawn_chat(&shared).await;
    let writers = [
        spawn_writer(&first.writer_vars()).await,
        spawn_writer(&first.writer_vars()).await,
    ];
    let client = http();
    let pool = first.database().await;
    let (user, app) = one_chat(&first, &client).await;
    wait_live(&first, &client).await;
    wait_live(&second, &client).await;
    // Both processes number the same chat, both read it through their own caches meanwhile.
    const PER_TASK: usize = 30;
    let tasks = (0..6).map(|task| {
        let (chat, client, user, app) = (
            if task % 2 == 0 { &first } else { &second },
            &client,
            &user,
            &app,
        );
        async move {
            let mut accepted = Vec::new();
            for i in 0..PER_TASK {
                let (status, body) = chat
                    .post_message(client, user, app, 1, &format!("t{task} m{i}"))
                    .await;
                assert_eq!(status, 202, "{body}");
                accepted.push(body["number"].as_i64().expect("number") as i32);
                let shown = numbers(&page(chat, client, user, app, "?per_page=100").await);
                assert!(shown.windows(2).all(|w| w[0] < w[1]), "{shown:?}");
            }
            accepted
        }
    });
    let accepted: Vec<i32> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .flatten()
        .collect();
    let total = 6 * PER_TASK;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            committed(&pool, &app).await.len() >= total
        })
        .await
    );
    let stored = testkit::chat_api::stored_numbers(&pool, &app, 1).await;
    let audit = testkit::chat_api::Audit::of(&accepted, &stored);
    assert_eq!(
        (audit.lost.len(), audit.duplicated.len(), audit.extra.len()),
        (0, 0, 0),
        "{audit:?}"
    );
    // Both caches converge on the committed rows and count.
    let rows = committed(&pool, &app).await;
    for chat in [&first, &second] {
        let converged = wait_until(Duration::from_secs(10), || async {
            numbers(&page(chat, &client, &user, &app, "?per_page=100").await) == rows[..100]
                && numbers(&page(chat, &client, &user, &app, "?page=2&per_page=100").await)
                    == rows[100..]
                && listed_count(chat, &client, &user, &app).await == total as i64
        })
        .await;
        assert!(converged, "{} converges", chat.addr);
    }
    for writer in writers {
        writer.stop().await.unwrap();
    }
    second.stop().await.unwrap();
    first.stop().await.unwrap();
}
