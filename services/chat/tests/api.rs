//! The Chat API against the machine's real Postgres, Redis and RabbitMQ, with a writer in the
//! same process: each test has its own database, queue and Redis key prefix.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use testkit::chat_api::{Audit, stored_numbers};
use testkit::{RedisServer, http, redis_connection, spawn_chat, spawn_writer, wait_until};

#[tokio::test]
async fn sign_up_returns_a_working_token_and_a_duplicate_email_is_409() {
    let chat = spawn_chat(&[]).await;
    let client = http();
    let email = format!("{}@Example.com", testkit::unique("dup"));
    let (status, body) = chat
        .send(
            &client,
            Method::POST,
            "/api/v1/users",
            None,
            Some(&json!({"email": email, "name": "A"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["id"].as_i64().unwrap() > 0);
    assert_eq!(body["email"], email.as_str());
    let token = body["token"].as_str().unwrap().to_string();
    let (status, _) = chat
        .send(
            &client,
            Method::GET,
            "/api/v1/applications",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    // The same address in another case is the same user.
    let (status, body) = chat
        .send(
            &client,
            Method::POST,
            "/api/v1/users",
            None,
            Some(&json!({"email": email.to_lowercase(), "name": "B"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn applications_are_visible_to_their_owner_only() {
    let chat = spawn_chat(&[]).await;
    let client = http();
    let (alice, bob) = (chat.sign_up(&client).await, chat.sign_up(&client).await);
    let app = chat.create_application(&client, &alice).await;
    assert_eq!(app.len(), 22);
    assert!(
        app.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{app}"
    );
    let path = format!("/api/v1/applications/{app}");
    let (status, body) = chat.get_as(&client, &alice, &path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["name"].as_str(), body["chats_count"].as_i64()),
        (Some("test app"), Some(0))
    );
    // Bob sees nothing of it: not the application, not its chats, not its messages — 404 each.
    chat.create_chat(&client, &alice, &app).await;
    for p in [
        path.clone(),
        format!("{path}/chats"),
        format!("{path}/chats/1"),
        format!("{path}/chats/1/messages"),
    ] {
        let (status, body) = chat.get_as(&client, &bob, &p).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{p}: {body}"
        );
    }
    let (status, _) = chat.create_chat(&client, &bob, &app).await;
    assert_eq!(status, 404);
    let (status, _) = chat.post_message(&client, &bob, &app, 1, "hi").await;
    assert_eq!(status, 404);
    let (status, _) = chat
        .send(
            &client,
            Method::PATCH,
            &path,
            Some(&bob.token),
            Some(&json!({"name": "mine now"})),
        )
        .await;
    assert_eq!(status, 404);
    // Listing shows each user their own.
    let (_, list) = chat.get_as(&client, &bob, "/api/v1/applications").await;
    assert_eq!(list["applications"].as_array().unwrap().len(), 0);
    let (_, list) = chat.get_as(&client, &alice, "/api/v1/applications").await;
    assert_eq!(list["applications"][0]["token"], app.as_str());
    // The owner renames it.
    let (status, body) = chat
        .send(
            &client,
            Method::PATCH,
            &path,
            Some(&alice.token),
            Some(&json!({"name": "renamed"})),
        )
        .await;
    assert_eq!((status, body["name"].as_str()), (200, Some("renamed")));
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn fifty_concurrent_chats_are_numbered_1_to_50_also_while_redis_is_flushed() {
    // A private Redis, flushed over and over while the chats are being created.
    let redis_server = RedisServer::start().await;
    let chat = spawn_chat(&[("REDIS_URL", &redis_server.url())]).await;
    let client = http();
    let user = chat.sign_up(&client).await;
    let app = chat.create_application(&client, &user).await;
    let create = || async {
        let (status, body) = chat.create_chat(&client, &user, &app).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["messages_count"], 0);
        body["number"].as_i64().unwrap()
    };
    let first: Vec<i64> = futures_util::future::join_all((0..10).map(|_| create())).await;
    let done = tokio_util::sync::CancellationToken::new();
    let flusher = {
        let (url, done) = (redis_server.url(), done.clone());
        tokio::spawn(async move {
            let mut redis = redis_connection(&url).await;
            let mut flushes = 0;
            while !done.is_cancelled() {
                let _: () = redis::cmd("FLUSHALL")
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                flushes += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            flushes
        })
    };
    let rest: Vec<i64> = futures_util::future::join_all((0..40).map(|_| create())).await;
    done.cancel();
    let flushes = flusher.await.unwrap();
    let all: BTreeSet<i64> = first.iter().chain(&rest).copied().collect();
    println!("{flushes} flushes during 40 creations; numbers {rest:?}");
    assert_eq!(all.len(), 50, "no number twice: {first:?} {rest:?}");
    assert_eq!(all, (1..=50).collect(), "first {first:?} rest {rest:?}");
    let (_, body) = chat
        .get_as(&client, &user, &format!("/api/v1/applications/{app}"))
        .await;
    assert_eq!(body["chats_count"], 50);
    // Listing pages through them in order.
    let (status, page2) = chat
        .get_as(
            &client,
            &user,
            &format!("/api/v1/applications/{app}/chats?page=2&per_page=20"),
        )
        .await;
    assert_eq!(status, 200);
    let numbers: Vec<i64> = page2["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, (21..=40).collect::<Vec<_>>());
    assert_eq!(
        (page2["page"].as_i64(), page2["per_page"].as_i64()),
        (Some(2), Some(20))
    );
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn five_hundred_concurrent_messages_become_rows_1_to_500_exactly_once_in_shared_publishes() {
    // A private Redis: this test flushes it.
    let redis_server = RedisServer::start().await;
    let chat = spawn_chat(&[("REDIS_URL", &redis_server.url())]).await;
    let writer = spawn_writer(&chat.writer_vars()).await;
    let client = http();
    let user = chat.sign_up(&client).await;
    let app = chat.create_application(&client, &user).await;
    chat.create_chat(&client, &user, &app).await;
    let mut redis = redis_connection(&redis_server.url()).await;
    let post = |i: usize| {
        let (chat, client, user, app) = (&chat, &client, &user, &app);
        async move {
            let (status, body) = chat
                .post_message(client, user, app, 1, &format!("message {i}"))
                .await;
            assert_eq!(status, 202, "{body}");
            assert_eq!(
                (body["chat_number"].as_i64(), body["body"].as_str()),
                (Some(1), Some(format!("message {i}").as_str()))
            );
            body["number"].as_i64().unwrap() as i32
        }
    };
    let mut accepted: Vec<i32> = futures_util::future::join_all((0..250).map(post)).await;
    // Flushing Redis mid-way must not matter: message numbers are not kept there.
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut redis)
        .await
        .unwrap();
    accepted.extend(futures_util::future::join_all((250..500).map(post)).await);
    let mut sorted = accepted.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (1..=500).collect::<Vec<_>>(),
        "numbers 1..=500, no gap, no repeat"
    );
    let pool = chat.database().await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            stored_numbers(&pool, &app, 1).await.len() >= 500
        })
        .await,
        "the writer stored them"
    );
    let audit = Audit::of(&accepted, &stored_numbers(&pool, &app, 1).await);
    println!("audit: {audit:?}");
    assert_eq!(
        audit,
        Audit {
            accepted: 500,
            stored: 500,
            ..Audit::default()
        }
    );
    // messages_count catches up within about a second.
    assert!(
        wait_until(Duration::from_secs(2), || async {
            let (_, body) = chat
                .get_as(
                    &client,
                    &user,
                    &format!("/api/v1/applications/{app}/chats/1"),
                )
                .await;
            body["messages_count"] == 500
        })
        .await
    );
    // 500 at once on 8 channels: writes queued behind busy channels shared published messages.
    let metrics = chat.get_text(&client, "/metrics").await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let (writes, publishes) = (
        value("chat_publish_batch_size_sum"),
        value("chat_publish_batch_size_count"),
    );
    println!("{writes} writes in {publishes} published messages");
    assert_eq!(writes, 500.0, "every write published once");
    assert!(publishes < 500.0, "some writes shared a publish");
    for stage in ["number", "publish"] {
        let series =
            format!("chat_write_stage_seconds_count{{service=\"chat\",stage=\"{stage}\"}}");
        assert_eq!(
            value(&series),
            500.0,
            "every accepted write timed at stage {stage}"
        );
    }
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn messages_read_back_paged_by_number_and_found_by_stemmed_search() {
    let chat = spawn_chat(&[]).await;
    let writer = spawn_writer(&chat.writer_vars()).await;
    let client = http();
    let user = chat.sign_up(&client).await;
    let app = chat.create_application(&client, &user).await;
    chat.create_chat(&client, &user, &app).await;
    let bodies = [
        "I was running late",
        "the cats are asleep",
        "we run every morning",
        "nothing here",
    ];
    for body in bodies {
        let (status, _) = chat.post_message(&client, &user, &app, 1, body).await;
        assert_eq!(status, 202);
    }
    for i in 0..6 {
        chat.post_message(&client, &user, &app, 1, &format!("filler {i}"))
            .await;
    }
    let base = format!("/api/v1/applications/{app}/chats/1/messages");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            chat.get_as(&client, &user, &format!("{base}?per_page=100"))
                .await
                .1["messages"]
                .as_array()
                .map(Vec::len)
                == Some(10)
        })
        .await
    );
    let (status, page) = chat
        .get_as(&client, &user, &format!("{base}?page=2&per_page=3"))
        .await;
    assert_eq!(status, 200);
    let numbers: Vec<i64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, vec![4, 5, 6]);
    assert_eq!(page["messages"][0]["body"], "nothing here");
    assert!(page["messages"][0]["created_at"].is_string());
    let (status, one) = chat.get_as(&client, &user, &format!("{base}/3")).await;
    assert_eq!(
        (status, one["body"].as_str()),
        (200, Some("we run every morning"))
    );
    let (status, _) = chat.get_as(&client, &user, &format!("{base}/99")).await;
    assert_eq!(status, 404);
    // English stemming: "run" finds "running" and "run"; "cat" finds "cats".
    let (status, hits) = chat
        .get_as(&client, &user, &format!("{base}/search?q=run"))
        .await;
    assert_eq!(status, 200, "{hits}");
    let found: Vec<i64> = hits["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["number"].as_i64().unwrap())
        .collect();
    assert_eq!(found, vec![1, 3]);
    let (_, hits) = chat
        .get_as(&client, &user, &format!("{base}/search?q=running"))
        .await;
    assert_eq!(hits["messages"].as_array().unwrap().len(), 2);
    let (_, hits) = chat
        .get_as(&client, &user, &format!("{base}/search?q=cat"))
        .await;
    assert_eq!(hits["messages"][0]["number"], 2);
    let (_, hits) = chat
        .get_as(&client, &user, &format!("{base}/search?q=zebra"))
        .await;
    assert_eq!(hits["messages"].as_array().unwrap().len(), 0);
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}

#[tokio::test]
async fn sigterm_under_load_finishes_in_flight_writes_and_every_202_is_stored() {
    let chat = spawn_chat(&[]).await;
    let writer = spawn_writer(&chat.writer_vars()).await;
    let client = http();
    let user = chat.sign_up(&client).await;
    let app = chat.create_application(&client, &user).await;
    chat.create_chat(&client, &user, &app).await;
    let url = chat.url(&format!("/api/v1/applications/{app}/chats/1/messages"));
    let posters: Vec<_> = (0..16)
        .map(|_| {
            let (client, url, token) = (http(), url.clone(), user.token.clone());
            tokio::spawn(async move {
                let (mut accepted, mut unavailable) = (Vec::new(), 0);
                loop {
                    let response = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"body": "draining"}))
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == 202 => {
                            let body: serde_json::Value = r.json().await.unwrap();
                            accepted.push(body["number"].as_i64().unwrap() as i32);
                        }
                        Ok(r) if r.status() == 503 => unavailable += 1,
                        Ok(r) => panic!("unexpected {}", r.status()),
                        // The server has stopped accepting: nothing more was sent.
                        Err(_) => return (accepted, unavailable),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    chat.shutdown_handle().trigger();
    let (mut accepted, mut unavailable) = (Vec::new(), 0);
    for poster in posters {
        let (a, u) = poster.await.unwrap();
        accepted.extend(a);
        unavailable += u;
    }
    assert_eq!(
        unavailable, 0,
        "requests in flight at SIGTERM still get their confirm and 202"
    );
    let pool = chat.database().await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            stored_numbers(&pool, &app, 1).await.len() >= accepted.len()
        })
        .await
    );
    let audit = Audit::of(&accepted, &stored_numbers(&pool, &app, 1).await);
    println!("graceful shutdown: {audit:?}");
    assert!(audit.accepted > 50, "the load ran");
    assert!(
        audit.lost.is_empty() && audit.duplicated.is_empty(),
        "{audit:?}"
    );
    pool.close().await;
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}
