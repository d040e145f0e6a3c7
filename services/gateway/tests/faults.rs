//! Faults on purpose, against a private `redis-server` (never the machine's shared one): Redis
//! killed and restarted under open sockets, and a slow consumer that never reads.

use std::time::Duration;

use serde_json::json;
use testkit::ws::Event;
use testkit::{RedisServer, TestGateway, WsClient, http, spawn_gateway, token, wait_until};

const WAIT: Duration = Duration::from_secs(10);

async fn publish(gw: &TestGateway, client: &reqwest::Client, subject: &str, seq: u64) -> u16 {
    let body = json!({"seq": seq}).to_string();
    gw.publish(client, &token("p"), subject, &body)
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn sockets_survive_a_redis_restart_and_receive_again() {
    let mut redis = RedisServer::start().await;
    let gw = spawn_gateway(&[
        ("REDIS_URL", redis.url().as_str()),
        ("REDIS_TIMEOUT_MS", "500"),
    ])
    .await;
    let tok = token("u");
    let mut exact = WsClient::connect(&gw.ws_url("/api/v1/ws?subscribe=fault.exact"), Some(&tok))
        .await
        .unwrap();
    let mut pattern = WsClient::connect(&gw.ws_url("/api/v1/ws?subscribe=fault.*"), Some(&tok))
        .await
        .unwrap();
    let client = http();
    let subject = "fault.exact";
    assert_eq!(publish(&gw, &client, subject, 1).await, 202);
    assert_eq!(exact.next_json(WAIT).await["data"]["seq"], 1);
    assert_eq!(pattern.next_json(WAIT).await["data"]["seq"], 1);

    redis.kill();
    // Publishing while Redis is down is 503 unavailable with Retry-After — never a 500.
    let response = gw.publish(&client, &token("p"), subject, "{}").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(
        client.get(gw.url("/ready")).send().await.unwrap().status(),
        503
    );
    assert_eq!(
        client.get(gw.url("/health")).send().await.unwrap().status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    redis.restart().await;
    // Once the gateway has resubscribed, publishes flow again to the same, still-open sockets.
    let mut seq = 100;
    let delivered = wait_until(Duration::from_secs(20), || {
        seq += 1;
        let (gw, client) = (&gw, client.clone());
        let this = seq;
        async move { publish(gw, &client, subject, this).await == 202 }
    })
    .await;
    assert!(delivered, "publishing works again after the restart");
    let mut got_exact = false;
    let mut got_pattern = false;
    for _ in 0..50 {
        if !got_exact && let Event::Text(_) = exact.next_event(Duration::from_millis(200)).await {
            got_exact = true;
        }
        if !got_pattern && let Event::Text(_) = pattern.next_event(Duration::from_millis(200)).await
        {
            got_pattern = true;
        }
        if got_exact && got_pattern {
            break;
        }
        seq += 1;
        publish(&gw, &client, subject, seq).await;
    }
    assert!(
        got_exact && got_pattern,
        "both sockets receive again (exact {got_exact}, pattern {got_pattern})"
    );
    assert_eq!(
        client.get(gw.url("/ready")).send().await.unwrap().status(),
        200
    );
    gw.stop().await.unwrap();
}

/// Resident set size of this process, from /proc.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[tokio::test]
async fn slow_consumer_is_closed_with_1013_and_memory_stays_bounded() {
    let gw = spawn_gateway(&[("WS_SEND_QUEUE", "64")]).await;
    let tok = token("u");
    let subject = "slow.test";
    // The slow client subscribes and then never reads.
    let mut slow = WsClient::connect(
        &gw.ws_url(&format!("/api/v1/ws?subscribe={subject}")),
        Some(&tok),
    )
    .await
    .unwrap();
    let mut healthy = WsClient::connect(
        &gw.ws_url(&format!("/api/v1/ws?subscribe={subject}")),
        Some(&tok),
    )
    .await
    .unwrap();
    let client = http();
    let pad = "x".repeat(16 * 1024);
    let before = rss_bytes();
    // 4,000 × 16 KiB = 64 MiB offered: far beyond socket buffers plus a 64-frame queue.
    let mut received = 0u64;
    for seq in 0..4000u64 {
        let body = json!({"seq": seq, "pad": pad}).to_string();
        let status = gw.publish(&client, &tok, subject, &body).await.status();
        assert_eq!(status, 202);
        // The healthy client keeps up.
        while let Event::Text(_) = healthy.next_event(Duration::from_millis(0)).await {
            received += 1;
        }
    }
    let growth = rss_bytes().saturating_sub(before);
    assert!(
        growth < 48 * 1024 * 1024,
        "memory must stay bounded; RSS grew {growth} bytes"
    );

    // Now the slow client reads: what was buffered, then the 1013 close.
    let mut close_code = None;
    for _ in 0..10_000 {
        match slow.next_event(WAIT).await {
            Event::Text(_) => continue,
            Event::Closed(code) => {
                close_code = code;
                break;
            }
            Event::Timeout => break,
        }
    }
    assert_eq!(
        close_code,
        Some(1013),
        "slow consumer closed with 1013 (try again later)"
    );
    // The healthy socket got every event.
    while received < 4000 {
        match healthy.next_event(WAIT).await {
            Event::Text(_) => received += 1,
            other => panic!("healthy socket lost events at {received}: {other:?}"),
        }
    }
    let metrics = gw.get_text(&client, "/metrics").await;
    let closes = metrics
        .lines()
        .find(|l| l.starts_with("gateway_ws_slow_consumer_closes_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(closes >= 1.0, "slow-consumer close counted: {closes}");
    gw.stop().await.unwrap();
}
