//! Admission control through the real router: beyond workers + queue, 503 `overloaded` with
//! `Retry-After: 1` at once; the admitted requests complete; health bypasses it.

use std::time::{Duration, Instant};

use testkit::{RedisServer, http, spawn_gateway, token};

#[tokio::test]
async fn a_burst_beyond_workers_and_queue_is_shed_at_once_and_admitted_ones_succeed() {
    // 2 workers + 2 queue slots. The slow work is real: a private Redis frozen with SIGSTOP, so
    // admitted publishes wait on it (yielding) while the burst arrives.
    let redis = RedisServer::start().await;
    let gw = spawn_gateway(&[
        ("REDIS_URL", redis.url().as_str()),
        ("MAX_CCU", "4"),
        ("UTILIZATION", "50"),
        ("REDIS_TIMEOUT_MS", "10000"),
    ])
    .await;
    let client = http();
    let publish = |client: reqwest::Client, url: String| async move {
        let started = Instant::now();
        let response = client
            .post(url)
            .bearer_auth(token("burst"))
            .header("content-type", "application/json")
            .body(r#"{"n":1}"#)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let body: serde_json::Value = response.json().await.unwrap();
        (status, retry_after, started.elapsed(), body)
    };
    let url = gw.url("/api/v1/events/burst.test");
    assert_eq!(
        publish(client.clone(), url.clone()).await.0,
        202,
        "connects to Redis first"
    );

    // A burst of 40 at once while Redis is frozen: exactly workers + queue (4) are admitted and
    // wait; every other one is shed with 503 `overloaded` + `Retry-After: 1`, each in < 50 ms.
    redis.pause();
    let burst: Vec<_> = (0..40)
        .map(|_| tokio::spawn(publish(client.clone(), url.clone())))
        .collect();
    // Shed answers arrive while Redis is still frozen; the admitted ones cannot.
    let deadline = Instant::now() + Duration::from_secs(5);
    while burst.iter().filter(|r| r.is_finished()).count() < 36 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (answered, held): (Vec<_>, Vec<_>) = burst.into_iter().partition(|r| r.is_finished());
    let mut shed = 0u64;
    for request in answered {
        let (status, retry_after, elapsed, body) = request.await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["error"]["code"], "overloaded");
        assert!(
            elapsed < Duration::from_millis(50),
            "shed answers come at once: {elapsed:?}"
        );
        shed += 1;
    }
    assert_eq!(
        held.len(),
        4,
        "workers (2) + queue (2) admitted, {shed} shed"
    );
    assert_eq!(shed, 36);
    // Health bypasses admission even now.
    assert_eq!(
        client.get(gw.url("/health")).send().await.unwrap().status(),
        200
    );

    redis.resume();
    for request in held {
        let (status, _, _, body) = request.await.unwrap();
        assert_eq!(status, 202, "admitted requests complete: {body}");
    }
    let snapshot = gw.get_json(&client, "/api/metrics").await;
    assert_eq!(snapshot["workers"], 2);
    assert_eq!(snapshot["queue_capacity"], 2);
    assert!(snapshot["shed_total"].as_u64().unwrap() >= shed);
    // After the burst, the next requests are admitted at once.
    for _ in 0..10 {
        let (status, _, elapsed, body) = publish(client.clone(), url.clone()).await;
        assert_eq!(status, 202, "{body}");
        assert!(
            elapsed < Duration::from_millis(500),
            "admitted at once: {elapsed:?}"
        );
    }
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn s3_endpoints_answer() {
    let gw = spawn_gateway(&[("USERS_COUNT", "3")]).await;
    let client = http();
    let users = gw.get_json(&client, "/api/users").await;
    assert_eq!(users.as_array().unwrap().len(), 3);
    assert_eq!(users[0]["email"], "user1@example.com");
    let echo = client
        .post(gw.url("/api/echo"))
        .header("content-type", "application/json")
        .body(r#"{"hello":["world",1,null]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(echo.status(), 200);
    assert_eq!(echo.text().await.unwrap(), r#"{"hello":["world",1,null]}"#);
    let metrics = gw.get_json(&client, "/api/metrics").await;
    for key in [
        "workers",
        "queue_capacity",
        "inflight",
        "queued",
        "admitted_total",
        "shed_total",
        "ws_connections",
    ] {
        assert!(metrics.get(key).is_some(), "missing {key} in {metrics}");
    }
    gw.stop().await.unwrap();
}
