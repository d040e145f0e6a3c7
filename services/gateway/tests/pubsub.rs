//! Publish → Redis → fan-out, end to end over real HTTP, WebSocket and Redis.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::ws::Event;
use testkit::{REDIS_URL, WsClient, http, spawn_gateway, token, unique, wait_until};

const WAIT: Duration = Duration::from_secs(5);

async fn publish(gw: &testkit::TestGateway, subject: &str, data: Value) -> reqwest::Response {
    gw.publish(&http(), &token("publisher-1"), subject, &data.to_string())
        .await
}

/// What a service does for its reserved namespaces (`channel.…`): PUBLISH straight to Redis.
async fn publish_as_service(gw: &testkit::TestGateway, subject: &str, envelope: Value) {
    let mut redis = testkit::redis_connection(REDIS_URL).await;
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("{}{subject}", gw.prefix))
        .arg(envelope.to_string())
        .query_async(&mut redis)
        .await
        .unwrap();
}

#[tokio::test]
async fn published_event_reaches_exact_and_pattern_subscribers() {
    let gw = spawn_gateway(&[]).await;
    let tok = token("sub-1");
    let mut exact = WsClient::connect(&gw.ws_url("/api/v1/ws?subscribe=room.answered"), Some(&tok))
        .await
        .unwrap();
    let mut pattern = WsClient::connect(
        &gw.ws_url(&format!("/api/v1/ws?subscribe=room.*&access_token={tok}")),
        None,
    )
    .await
    .unwrap();

    let response = publish(&gw, "room.answered", json!({"call_id": "c-1", "n": [1, 2]})).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["subject"], "room.answered");

    for client in [&mut exact, &mut pattern] {
        let envelope = client.next_json(WAIT).await;
        assert_eq!(envelope["id"], accepted["id"]);
        assert_eq!(envelope["subject"], "room.answered");
        assert_eq!(envelope["sub"], "publisher-1");
        assert_eq!(envelope["origin"], "client");
        assert!(envelope.get("tenant").is_none());
        assert_eq!(envelope["data"], json!({"call_id": "c-1", "n": [1, 2]}));
        assert!(envelope["ts"].as_u64().unwrap() > 1_700_000_000_000);
    }
    // A subject the exact socket does not hold reaches only the pattern.
    assert_eq!(publish(&gw, "room.ringing", json!(1)).await.status(), 202);
    assert_eq!(pattern.next_json(WAIT).await["subject"], "room.ringing");
    exact.expect_silence(Duration::from_millis(300)).await;
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn subscribe_and_unsubscribe_ops_start_and_stop_delivery() {
    let gw = spawn_gateway(&[]).await;
    let mut client = WsClient::connect(&gw.ws_url("/api/v1/ws"), Some(&token("u")))
        .await
        .unwrap();
    assert_eq!(
        client.op("subscribe", "room.1").await,
        json!({"op": "ack", "subject": "room.1"})
    );
    publish(&gw, "room.1", json!("first")).await;
    assert_eq!(client.next_json(WAIT).await["data"], "first");

    assert_eq!(
        client.op("unsubscribe", "room.1").await,
        json!({"op": "ack", "subject": "room.1"})
    );
    publish(&gw, "room.1", json!("second")).await;
    client.expect_silence(Duration::from_millis(400)).await;

    // Bad ops get an error frame and the socket stays usable.
    for bad in [
        r#"{"op":"subscribe","subject":"bad subject"}"#,
        r#"{"op":"dance","subject":"x"}"#,
        r#"{"op":"subscribe"}"#,
        r#"{"hello":"world"}"#,
        "not json",
        r#"{"op":"unsubscribe","subject":"never.subscribed"}"#,
    ] {
        client.send_text(bad).await;
        let reply = client.next_json(WAIT).await;
        assert_eq!(reply["op"], "error", "{bad} → {reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(client.op("subscribe", "room.2").await["op"], "ack");
    publish(&gw, "room.2", json!("still works")).await;
    assert_eq!(client.next_json(WAIT).await["data"], "still works");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn five_hundred_sockets_share_one_redis_subscription() {
    let gw = spawn_gateway(&[]).await;
    let tok = token("many");
    let subject = "storm.events";
    let url = gw.ws_url(&format!("/api/v1/ws?subscribe={subject},fan.*"));
    let mut clients = Vec::new();
    for _ in 0..500 {
        clients.push(WsClient::connect(&url, Some(&tok)).await.unwrap());
    }
    let mut redis = testkit::redis_connection(REDIS_URL).await;
    let channel = format!("{}{subject}", gw.prefix);
    let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&channel)
        .query_async::<(String, i64)>(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        subscribers, 1,
        "500 sockets must share one Redis subscription"
    );
    let patterns: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(format!("{}*", gw.prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(patterns, vec![channel.clone()]);

    publish(&gw, subject, json!({"seq": 1})).await;
    for client in clients.iter_mut() {
        assert_eq!(client.next_json(WAIT).await["data"]["seq"], 1);
    }
    // Every socket leaves: the subscription goes too.
    for client in clients {
        client.close().await;
    }
    let gone = wait_until(WAIT, || {
        let mut redis = redis.clone();
        let channel = channel.clone();
        async move {
            let (_, n): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut redis)
                .await
                .unwrap();
            n == 0
        }
    })
    .await;
    assert!(
        gone,
        "the Redis subscription is dropped when the last socket leaves"
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn channel_stream_delivers_channel_subject() {
    let gw = spawn_gateway(&[]).await;
    let mut client = WsClient::connect(
        &gw.ws_url("/api/v1/channels/general-1/ws"),
        Some(&token("u")),
    )
    .await
    .unwrap();
    // Clients cannot publish on channel.… (reserved); the messages service does, on Redis.
    assert_eq!(
        publish(&gw, "channel.general-1", json!({"body": "hi"}))
            .await
            .status(),
        403
    );
    publish_as_service(
        &gw,
        "channel.general-1",
        json!({"subject": "channel.general-1", "origin": "messages", "data": {"body": "hi"}}),
    )
    .await;
    let envelope = client.next_json(WAIT).await;
    assert_eq!(envelope["subject"], "channel.general-1");
    assert_eq!(envelope["data"]["body"], "hi");
    gw.stop().await.unwrap();
}

/// Replays what the S0 source's k6 script does, unchanged: publish through `/publish` with
/// `{"payload": "<json string>"}`, subscribe through `/ws?subject=` with the token in the
/// Authorization header, send a `{"user","message":"hello"}` frame right after open.
#[tokio::test]
async fn s0_script_behaviour_receives_every_event() {
    let gw = spawn_gateway(&[]).await;
    let tok = token("user-1");
    let subject = "storm.events";
    let mut subscribers = Vec::new();
    for vu in 0..5 {
        let mut ws = WsClient::connect(&gw.ws_url(&format!("/ws?subject={subject}")), Some(&tok))
            .await
            .unwrap();
        ws.send_text(&json!({"user": format!("vu-{vu}"), "message": "hello"}).to_string())
            .await;
        subscribers.push(ws);
    }
    let mut channel_ws = WsClient::connect(&gw.ws_url("/ws?channel_id=lobby"), Some(&tok))
        .await
        .unwrap();
    channel_ws.send_text("hello as plain text").await;

    let client = http();
    let total = 50;
    for seq in 0..total {
        let payload = json!({"seq": seq, "ts": 1}).to_string();
        let response = client
            .post(gw.url(&format!("/publish?subject={subject}")))
            .bearer_auth(&tok)
            .header("content-type", "application/json")
            .body(json!({"payload": payload}).to_string())
            .send()
            .await
            .unwrap();
        assert!(matches!(response.status().as_u16(), 200 | 202));
    }
    for ws in subscribers.iter_mut() {
        for seq in 0..total {
            let envelope = ws.next_json(WAIT).await;
            let payload: Value =
                serde_json::from_str(envelope["data"]["payload"].as_str().unwrap()).unwrap();
            assert_eq!(payload["seq"], seq, "every event, in order");
        }
    }
    // The hello frames were ignored: no error frames, sockets still open. Channel subjects are
    // the messages service's: refused on /publish, delivered when it publishes them.
    let response = client
        .post(gw.url("/publish?channel=unused&subject=channel.lobby"))
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .body(r#"{"payload":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    publish_as_service(
        &gw,
        "channel.lobby",
        json!({"subject": "channel.lobby", "data": {"payload": "x"}}),
    )
    .await;
    assert_eq!(channel_ws.next_json(WAIT).await["data"]["payload"], "x");
    // Text bodies are published as JSON strings; the default subject is storm.events.
    let response = client
        .post(gw.url("/publish"))
        .bearer_auth(&tok)
        .header("content-type", "text/plain")
        .body("plain words")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(subscribers[0].next_json(WAIT).await["data"], "plain words");
    assert_eq!(gw.get_text(&client, "/healthz").await, "ok");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let gw = spawn_gateway(&[]).await;
    let mut client = WsClient::connect(
        &gw.ws_url(&format!("/api/v1/ws?subscribe={}", unique("s"))),
        Some(&token("u")),
    )
    .await
    .unwrap();
    let stopping = tokio::spawn(gw.stop());
    match client.next_event(WAIT).await {
        Event::Closed(code) => assert_eq!(code, Some(1001)),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn connection_cap_answers_503_overloaded() {
    let gw = spawn_gateway(&[("MAX_WS_CONNS", "2")]).await;
    let tok = token("u");
    let url = gw.ws_url("/api/v1/ws?subscribe=cap.test");
    let first = WsClient::connect(&url, Some(&tok)).await.unwrap();
    let _second = WsClient::connect(&url, Some(&tok)).await.unwrap();
    match WsClient::connect(&url, Some(&tok)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()["retry-after"], "1");
        }
        other => panic!("expected 503, got {:?}", other.map(|_| "connected")),
    }
    first.close().await;
    let reconnected = wait_until(WAIT, || async {
        WsClient::connect(&url, Some(&tok)).await.is_ok()
    })
    .await;
    assert!(reconnected, "a freed slot admits the next socket");
    gw.stop().await.unwrap();
}
