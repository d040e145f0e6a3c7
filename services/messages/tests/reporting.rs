//! Reporting against hand-computed expectations: UTC buckets, `[from, to)`, empty buckets
//! present, tenant isolation, and keyset pages that neither skip nor repeat under inserts.

use serde_json::{Value, json};
use testkit::{TestMessages, spawn_messages, tenant_token, unique};
use uuid::Uuid;

async fn send(app: &TestMessages, client: &reqwest::Client, token: &str, body: Value) {
    let (status, answer) = app
        .send(
            client,
            reqwest::Method::POST,
            "/api/v1/demo/events/call",
            Some(token),
            Some(&body),
        )
        .await;
    assert_eq!(status, 200, "{body}: {answer}");
}

/// A call with its events at the given times: (state, RFC 3339).
async fn call(
    app: &TestMessages,
    client: &reqwest::Client,
    token: &str,
    id: &str,
    events: &[(&str, &str)],
) {
    for (state, at) in events {
        send(
            app,
            client,
            token,
            json!({"call_id": id, "state": state, "from": "+1555", "to": "+1666", "timestamp": at}),
        )
        .await;
    }
}

async fn get(
    app: &TestMessages,
    client: &reqwest::Client,
    token: &str,
    path: &str,
) -> (u16, Value) {
    app.send(client, reqwest::Method::GET, path, Some(token), None)
        .await
}

fn bucket(start: &str, counts: [i64; 4], answer_rate: f64, avg_talk_seconds: f64) -> Value {
    json!({
        "bucket_start": start,
        "initiated": counts[0], "answered": counts[1], "completed": counts[2], "failed": counts[3],
        "answer_rate": answer_rate, "avg_talk_seconds": avg_talk_seconds,
    })
}

async fn seed(app: &TestMessages, client: &reqwest::Client, token: &str) {
    call(
        app,
        client,
        token,
        "A",
        &[
            ("INITIATED", "2026-01-05T10:15:00Z"),
            ("RINGING", "2026-01-05T10:15:05Z"),
            ("ANSWERED", "2026-01-05T10:15:10Z"),
            ("COMPLETED", "2026-01-05T10:17:10Z"),
        ],
    )
    .await;
    // Initiated a millisecond before 11:00, failed after: counts in the 10:00 bucket.
    call(
        app,
        client,
        token,
        "B",
        &[
            ("INITIATED", "2026-01-05T10:59:59.999Z"),
            ("FAILED", "2026-01-05T11:00:30Z"),
        ],
    )
    .await;
    // Initiated exactly at 11:00: the 11:00 bucket.
    call(
        app,
        client,
        token,
        "C",
        &[
            ("INITIATED", "2026-01-05T11:00:00Z"),
            ("RINGING", "2026-01-05T11:00:05Z"),
            ("ANSWERED", "2026-01-05T11:00:10Z"),
            ("COMPLETED", "2026-01-05T11:01:10Z"),
        ],
    )
    .await;
    // Next day, in another time zone's notation: 2026-01-06T00:00:00Z.
    call(
        app,
        client,
        token,
        "D",
        &[
            ("INITIATED", "2026-01-06T01:00:00+01:00"),
            ("RINGING", "2026-01-06T00:00:02Z"),
            ("FAILED", "2026-01-06T00:00:20Z"),
        ],
    )
    .await;
}

#[tokio::test]
async fn metrics_buckets_match_hand_computed_figures() {
    let app = spawn_messages(&[]).await;
    let client = testkit::http();
    let token = tenant_token("analyst", Uuid::new_v4());
    seed(&app, &client, &token).await;

    let (status, hourly) = get(&app, &client, &token, "/api/v1/reporting/metrics?granularity=hourly&from=2026-01-05T09:30:00Z&to=2026-01-05T12:00:00Z").await;
    assert_eq!(status, 200, "{hourly}");
    assert_eq!(hourly["granularity"], "hourly");
    assert_eq!(
        hourly["buckets"],
        json!([
            bucket("2026-01-05T09:00:00Z", [0, 0, 0, 0], 0.0, 0.0),
            bucket("2026-01-05T10:00:00Z", [2, 1, 1, 1], 0.5, 120.0),
            bucket("2026-01-05T11:00:00Z", [1, 1, 1, 0], 1.0, 60.0),
        ])
    );
    // `to` is exclusive: ending at 11:00 leaves the 11:00 bucket out.
    let (_, cut) = get(&app, &client, &token, "/api/v1/reporting/metrics?granularity=hourly&from=2026-01-05T10:00:00Z&to=2026-01-05T11:00:00Z").await;
    assert_eq!(cut["buckets"].as_array().unwrap().len(), 1);

    let (status, daily) = get(&app, &client, &token, "/api/v1/reporting/metrics?granularity=daily&from=2026-01-04T12:00:00Z&to=2026-01-07T00:00:00Z").await;
    assert_eq!(status, 200, "{daily}");
    assert_eq!(
        daily["buckets"],
        json!([
            bucket("2026-01-04T00:00:00Z", [0, 0, 0, 0], 0.0, 0.0),
            bucket("2026-01-05T00:00:00Z", [3, 2, 2, 1], 2.0 / 3.0, 90.0),
            bucket("2026-01-06T00:00:00Z", [1, 0, 0, 1], 0.0, 0.0),
        ])
    );

    // Another tenant sees nothing of it.
    let other = tenant_token("analyst", Uuid::new_v4());
    let (_, theirs) = get(&app, &client, &other, "/api/v1/reporting/metrics?granularity=daily&from=2026-01-04T12:00:00Z&to=2026-01-07T00:00:00Z").await;
    assert!(
        theirs["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["initiated"] == 0),
        "{theirs}"
    );
    let (_, theirs) = get(&app, &client, &other, "/api/v1/reporting/calls").await;
    assert_eq!(theirs, json!({"calls": [], "next_cursor": null}));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_call_list_is_newest_first_filtered_and_paged() {
    let app = spawn_messages(&[]).await;
    let client = testkit::http();
    let token = tenant_token("analyst", Uuid::new_v4());
    seed(&app, &client, &token).await;
    let (status, all) = get(&app, &client, &token, "/api/v1/reporting/calls").await;
    assert_eq!(status, 200, "{all}");
    let ids: Vec<&str> = all["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["D", "C", "B", "A"]);
    assert_eq!(all["calls"][0]["state"], "FAILED");
    assert_eq!(all["calls"][0]["initiated_at"], "2026-01-06T00:00:00Z");
    assert_eq!(all["calls"][0]["updated_at"], "2026-01-06T00:00:20Z");
    assert_eq!(all["calls"][0]["from"], "+1555");
    assert_eq!(all["next_cursor"], Value::Null);
    let (_, completed) = get(
        &app,
        &client,
        &token,
        "/api/v1/reporting/calls?state=COMPLETED",
    )
    .await;
    let ids: Vec<&str> = completed["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["C", "A"]);
    let (_, first) = get(
        &app,
        &client,
        &token,
        "/api/v1/reporting/calls?state=COMPLETED&limit=1",
    )
    .await;
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let (_, second) = get(
        &app,
        &client,
        &token,
        &format!("/api/v1/reporting/calls?state=COMPLETED&limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(second["calls"][0]["call_id"], "A");
    assert_eq!(second["next_cursor"], Value::Null);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn pages_never_skip_or_repeat_while_calls_are_added() {
    let app = spawn_messages(&[]).await;
    let client = testkit::http();
    let token = tenant_token("analyst", Uuid::new_v4());
    let base = chrono::Utc::now() - chrono::Duration::hours(2);
    let mut original = Vec::new();
    for n in 0..30 {
        let id = format!("old-{n:02}");
        // Two calls share each timestamp: the call id breaks the tie.
        let at = (base + chrono::Duration::seconds(n / 2)).to_rfc3339();
        send(
            &app,
            &client,
            &token,
            json!({"call_id": id, "state": "INITIATED", "from": "a", "to": "b", "timestamp": at}),
        )
        .await;
        original.push(id);
    }
    let writer = {
        let (app_url, token) = (app.url("/api/v1/demo/events/call"), token.clone());
        tokio::spawn(async move {
            let client = testkit::http();
            for n in 0..40 {
                let body =
                    json!({"call_id": unique("new"), "state": "INITIATED", "from": "a", "to": "b"});
                let response = client
                    .post(&app_url)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "insert {n}");
            }
        })
    };
    let mut seen: Vec<String> = Vec::new();
    let mut path = "/api/v1/reporting/calls?limit=7".to_string();
    loop {
        let (status, page) = get(&app, &client, &token, &path).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["call_id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/reporting/calls?limit=7&cursor={cursor}"),
            None => break,
        }
    }
    writer.await.unwrap();
    let mut unique_seen = seen.clone();
    unique_seen.sort();
    unique_seen.dedup();
    assert_eq!(
        unique_seen.len(),
        seen.len(),
        "a call was repeated: {seen:?}"
    );
    let old_seen: Vec<&String> = seen.iter().filter(|id| id.starts_with("old-")).collect();
    let mut expected: Vec<&String> = original.iter().collect();
    expected.reverse();
    assert_eq!(old_seen, expected, "every older call once, newest first");
    app.stop().await.unwrap();
}
