//! Channel messages: stored, paged newest first, published on `channel.{id}`, and the gateway's
//! proxy in front of them (502 when the service is down, 504 when it is slow).

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{TestMessages, WsClient, spawn_gateway, spawn_messages, token, unique};

async fn post(
    app: &TestMessages,
    client: &reqwest::Client,
    channel: &str,
    body: &str,
) -> (u16, Value) {
    let response = client
        .post(app.url(&format!("/api/v1/channels/{channel}/messages")))
        .bearer_auth(token("writer"))
        .json(&json!({ "body": body }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn page(app: &TestMessages, client: &reqwest::Client, channel: &str, query: &str) -> Value {
    let path = format!("/api/v1/channels/{channel}/messages{query}");
    let (status, page) = app
        .send(
            client,
            reqwest::Method::GET,
            &path,
            Some(&token("reader")),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page
}

#[tokio::test]
async fn messages_are_stored_and_paged_newest_first() {
    let app = spawn_messages(&[]).await;
    let client = testkit::http();
    let channel = unique("room");
    let mut ids = Vec::new();
    for n in 0..7 {
        let (status, message) = post(&app, &client, &channel, &format!("hello {n} ✓")).await;
        assert_eq!(status, 201, "{message}");
        assert_eq!(message["channel_id"], channel.as_str());
        assert_eq!(message["author"], "writer");
        assert_eq!(message["body"], format!("hello {n} ✓"));
        assert!(message["created_at"].as_str().unwrap().contains('T'));
        ids.push(message["id"].as_i64().unwrap());
    }
    // Another channel's messages never show.
    post(&app, &client, &unique("other"), "elsewhere").await;
    let mut seen = Vec::new();
    let mut query = "?limit=3".to_string();
    loop {
        let answer = page(&app, &client, &channel, &query).await;
        let messages = answer["messages"].as_array().unwrap();
        assert!(messages.len() <= 3);
        seen.extend(messages.iter().map(|m| m["id"].as_i64().unwrap()));
        match answer["next_before"].as_i64() {
            Some(before) => query = format!("?limit=3&before={before}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");
    // Exactly a full last page still says there is nothing more.
    let answer = page(&app, &client, &channel, "?limit=7").await;
    assert_eq!(answer["messages"].as_array().unwrap().len(), 7);
    assert_eq!(answer["next_before"], Value::Null);
    let empty = page(&app, &client, &unique("never-used"), "").await;
    assert_eq!(empty, json!({"messages": [], "next_before": null}));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_message_posted_through_the_gateway_arrives_on_the_channel_socket() {
    let prefix = format!("{}:", unique("chan"));
    let app = spawn_messages(&[("PUBSUB_PREFIX", &prefix)]).await;
    let upstream = format!("http://{}", app.addr);
    let gateway = spawn_gateway(&[("PUBSUB_PREFIX", &prefix), ("MESSAGES_URL", &upstream)]).await;
    let client = testkit::http();
    let channel = unique("room");
    let token = token("alice");
    let mut ws = WsClient::connect(
        &gateway.ws_url(&format!(
            "/api/v1/channels/{channel}/ws?access_token={token}"
        )),
        None,
    )
    .await
    .unwrap();
    let response = client
        .post(gateway.url(&format!("/api/v1/channels/{channel}/messages")))
        .bearer_auth(&token)
        .header("x-request-id", "proxy-test-1")
        .json(&json!({"body": "through the gateway"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-request-id"], "proxy-test-1");
    let stored: Value = response.json().await.unwrap();
    let envelope = ws.next_json(Duration::from_secs(5)).await;
    assert_eq!(envelope["subject"], format!("channel.{channel}"));
    assert_eq!(envelope["sub"], "alice");
    assert_eq!(envelope["data"], stored);
    // Reads go through too, query string included.
    let answer = gateway_get(
        &gateway,
        &client,
        &format!("/api/v1/channels/{channel}/messages?limit=1"),
        &token,
    )
    .await;
    assert_eq!(answer.0, 200);
    assert_eq!(answer.1["messages"][0], stored);
    // Without a token the gateway still forwards; the messages service answers 401.
    let response = client
        .get(gateway.url(&format!("/api/v1/channels/{channel}/messages")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    gateway.stop().await.unwrap();
    app.stop().await.unwrap();
}

async fn gateway_get(
    gateway: &testkit::TestGateway,
    client: &reqwest::Client,
    path: &str,
    token: &str,
) -> (u16, Value) {
    gateway
        .send(client, reqwest::Method::GET, path, Some(token), None)
        .await
}

#[tokio::test]
async fn the_proxy_answers_502_when_messages_is_down_and_504_when_it_is_slow() {
    // Down: a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let gateway = spawn_gateway(&[("MESSAGES_URL", &down)]).await;
    let client = testkit::http();
    let token = token("bob");
    let (status, body) =
        gateway_get(&gateway, &client, "/api/v1/channels/room/messages", &token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("bad_gateway")),
        "{body}"
    );
    // A bad channel id is refused before anything is forwarded.
    let (status, _) = gateway_get(
        &gateway,
        &client,
        "/api/v1/channels/bad%20id/messages",
        &token,
    )
    .await;
    assert_eq!(status, 400);
    gateway.stop().await.unwrap();

    // Slow: an upstream that answers after two seconds.
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_url = format!("http://{}", slow.local_addr().unwrap());
    let sleeper = axum::Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        "late"
    });
    let server = tokio::spawn(async move { axum::serve(slow, sleeper).await });
    let gateway =
        spawn_gateway(&[("MESSAGES_URL", &slow_url), ("UPSTREAM_TIMEOUT_MS", "200")]).await;
    let started = std::time::Instant::now();
    let (status, body) =
        gateway_get(&gateway, &client, "/api/v1/channels/room/messages", &token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (504, Some("gateway_timeout")),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "answered in {:?}",
        started.elapsed()
    );
    gateway.stop().await.unwrap();
    server.abort();
}
