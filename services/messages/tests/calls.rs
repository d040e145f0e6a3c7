//! The call state machine over real HTTP and Postgres: every transition, idempotent repeats,
//! concurrent conflicting updates, a property test against the model, and the `call.*` events.

use std::time::Duration;

use messages::calls::{CallState, Decision, decide};
use proptest::prelude::*;
use serde_json::{Value, json};
use testkit::{TestMessages, WsClient, spawn_gateway, spawn_messages, tenant_token, unique};
use uuid::Uuid;

async fn event(
    app: &TestMessages,
    client: &reqwest::Client,
    token: &str,
    body: Value,
) -> (u16, Value) {
    app.send(
        client,
        reqwest::Method::POST,
        "/api/v1/demo/events/call",
        Some(token),
        Some(&body),
    )
    .await
}

fn initiated(call_id: &str) -> Value {
    json!({"call_id": call_id, "state": "INITIATED", "from": "+15550001", "to": "+15550002"})
}

fn moved(call_id: &str, state: &str) -> Value {
    json!({"call_id": call_id, "state": state})
}

/// Drives a new call through `path` (each step must succeed) and returns its id.
async fn call_in_state(
    app: &TestMessages,
    client: &reqwest::Client,
    token: &str,
    path: &[CallState],
) -> String {
    let id = unique("call");
    for state in path {
        let body = if *state == CallState::Initiated {
            initiated(&id)
        } else {
            moved(&id, state.as_str())
        };
        let (status, answer) = event(app, client, token, body).await;
        assert_eq!(status, 200, "setting up {path:?}: {answer}");
    }
    id
}

/// The shortest path of events that leaves a call in `state`.
fn path_to(state: CallState) -> Vec<CallState> {
    use CallState::*;
    match state {
        Initiated => vec![Initiated],
        Ringing => vec![Initiated, Ringing],
        Answered => vec![Initiated, Ringing, Answered],
        Completed => vec![Initiated, Ringing, Answered, Completed],
        Failed => vec![Initiated, Failed],
    }
}

#[tokio::test]
async fn every_transition_answers_as_the_state_machine_says() {
    let app = spawn_messages(&[]).await;
    let client = testkit::http();
    let token = tenant_token("agent", Uuid::new_v4());
    for from in CallState::ALL {
        for to in CallState::ALL {
            let id = call_in_state(&app, &client, &token, &path_to(from)).await;
            let body = if to == CallState::Initiated {
                initiated(&id)
            } else {
                moved(&id, to.as_str())
            };
            let (status, answer) = event(&app, &client, &token, body).await;
            match decide(Some(from), to) {
                Decision::Advance { from } => {
                    assert_eq!(status, 200, "{from:?} -> {to:?}: {answer}");
                    assert_eq!(answer["state"], to.as_str());
                    assert_eq!(answer["previous_state"], from.as_str());
                }
                Decision::Repeat => {
                    assert_eq!(status, 200, "{from:?} -> {to:?} repeat: {answer}");
                    assert_eq!(answer["state"], to.as_str());
                    assert_eq!(answer["previous_state"], from.as_str());
                }
                Decision::Conflict => {
                    assert_eq!(status, 409, "{from:?} -> {to:?}: {answer}");
                    assert_eq!(answer["error"]["code"], "conflict");
                }
                Decision::Create => unreachable!("a call exists"),
            }
        }
    }
    // First events.
    let (status, answer) = event(&app, &client, &token, initiated(&unique("call"))).await;
    assert_eq!(
        (status, answer["previous_state"].clone()),
        (200, Value::Null)
    );
    for state in ["RINGING", "ANSWERED", "COMPLETED", "FAILED"] {
        let (status, answer) = event(&app, &client, &token, moved(&unique("call"), state)).await;
        assert_eq!(status, 409, "first event {state}: {answer}");
    }
    app.stop().await.unwrap();
}

/// Counts a call's stored history per state.
async fn history(app: &TestMessages, call_id: &str) -> Vec<String> {
    let pool = sqlx::PgPool::connect(&app.settings["DATABASE_URL"])
        .await
        .unwrap();
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT state FROM call_events WHERE call_id = $1 ORDER BY id")
            .bind(call_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows.into_iter().map(|(s,)| s).collect()
}

#[tokio::test]
async fn concurrent_conflicting_updates_never_both_win() {
    let app = spawn_messages(&[]).await;
    let client = testkit::http();
    let token = tenant_token("agent", Uuid::new_v4());
    for _ in 0..20 {
        // From ANSWERED, COMPLETED and FAILED exclude each other: exactly one may win.
        let id = call_in_state(&app, &client, &token, &path_to(CallState::Answered)).await;
        let (a, b) = tokio::join!(
            event(&app, &client, &token, moved(&id, "COMPLETED")),
            event(&app, &client, &token, moved(&id, "FAILED")),
        );
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "COMPLETED {a:?} vs FAILED {b:?}");
        let events = history(&app, &id).await;
        assert_eq!(events.len(), 4, "{events:?}");
        assert!(events[3] == "COMPLETED" || events[3] == "FAILED");
    }
    // Ten INITIATED at once: one call, one INITIATED event, ten 200s.
    let id = unique("call");
    let all = futures_util::future::join_all(
        (0..10).map(|_| event(&app, &client, &token, initiated(&id))),
    )
    .await;
    assert!(all.iter().all(|(s, _)| *s == 200), "{all:?}");
    assert_eq!(history(&app, &id).await, vec!["INITIATED"]);
    // Ten RINGING at once: one transition, the rest idempotent repeats.
    let all = futures_util::future::join_all(
        (0..10).map(|_| event(&app, &client, &token, moved(&id, "RINGING"))),
    )
    .await;
    assert!(all.iter().all(|(s, _)| *s == 200), "{all:?}");
    let winners = all
        .iter()
        .filter(|(_, a)| a["previous_state"] == "INITIATED")
        .count();
    assert_eq!(winners, 1, "{all:?}");
    assert_eq!(history(&app, &id).await, vec!["INITIATED", "RINGING"]);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn calls_are_tenant_scoped_and_need_a_tenant() {
    let app = spawn_messages(&[]).await;
    let client = testkit::http();
    let (a, b) = (
        tenant_token("a", Uuid::new_v4()),
        tenant_token("b", Uuid::new_v4()),
    );
    let id = unique("call");
    assert_eq!(event(&app, &client, &a, initiated(&id)).await.0, 200);
    // The same call id in another tenant is another call.
    assert_eq!(event(&app, &client, &b, moved(&id, "RINGING")).await.0, 409);
    assert_eq!(event(&app, &client, &b, initiated(&id)).await.0, 200);
    let (status, answer) = event(&app, &client, &testkit::token("no-tenant"), initiated(&id)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn state_changes_are_published_on_call_subjects() {
    let prefix = format!("{}:", unique("calls"));
    let app = spawn_messages(&[("PUBSUB_PREFIX", &prefix)]).await;
    let gateway = spawn_gateway(&[("PUBSUB_PREFIX", &prefix)]).await;
    let client = testkit::http();
    let tenant = Uuid::new_v4();
    let token = tenant_token("agent", tenant);
    let mut ws = WsClient::connect(
        &gateway.ws_url(&format!("/api/v1/ws?subscribe=call.*&access_token={token}")),
        None,
    )
    .await
    .unwrap();
    // Another tenant's `call.*` socket hears none of it.
    let other = tenant_token("agent", Uuid::new_v4());
    let mut other_ws = WsClient::connect(
        &gateway.ws_url(&format!("/api/v1/ws?subscribe=call.*&access_token={other}")),
        None,
    )
    .await
    .unwrap();
    // On Redis the events travel on the tenant's subjects.
    let mut redis = redis::Client::open(testkit::REDIS_URL)
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    redis
        .psubscribe(format!("{prefix}call.{tenant}.*"))
        .await
        .unwrap();
    let id = call_in_state(&app, &client, &token, &path_to(CallState::Completed)).await;
    for (state, previous) in [
        ("INITIATED", Value::Null),
        ("RINGING", json!("INITIATED")),
        ("ANSWERED", json!("RINGING")),
        ("COMPLETED", json!("ANSWERED")),
    ] {
        let envelope = ws.next_json(Duration::from_secs(5)).await;
        assert_eq!(
            envelope["subject"],
            format!("call.{}", state.to_lowercase())
        );
        assert_eq!(envelope["data"]["call_id"], id.as_str());
        assert_eq!(envelope["data"]["state"], state);
        assert_eq!(envelope["data"]["previous_state"], previous);
        assert_eq!(envelope["data"]["tenant_id"], tenant.to_string());
        assert_eq!(envelope["data"]["from"], "+15550001");
        assert_eq!(envelope["tenant"], tenant.to_string());
        assert_eq!(envelope["origin"], "messages");
        assert!(envelope["ts"].as_u64().is_some());
    }
    {
        use futures_util::StreamExt;
        let mut messages = redis.on_message();
        for state in ["initiated", "ringing", "answered", "completed"] {
            let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .expect("the event reached Redis")
                .unwrap();
            assert_eq!(
                message.get_channel_name(),
                format!("{prefix}call.{tenant}.{state}")
            );
        }
    }
    other_ws.expect_silence(Duration::from_millis(300)).await;
    // A repeat changes nothing and publishes nothing.
    assert_eq!(
        event(&app, &client, &token, moved(&id, "COMPLETED"))
            .await
            .0,
        200
    );
    ws.expect_silence(Duration::from_millis(300)).await;
    gateway.stop().await.unwrap();
    app.stop().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random event sequences for one call answer exactly as the model says.
    #[test]
    fn random_sequences_follow_the_model(states in proptest::collection::vec(0usize..5, 1..12)) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let app = spawn_messages(&[]).await;
            let client = testkit::http();
            let token = tenant_token("agent", Uuid::new_v4());
            let id = unique("call");
            let mut model: Option<CallState> = None;
            for index in states {
                let next = CallState::ALL[index];
                let body = if next == CallState::Initiated { initiated(&id) } else { moved(&id, next.as_str()) };
                let (status, answer) = event(&app, &client, &token, body).await;
                let expected = match decide(model, next) {
                    Decision::Create | Decision::Advance { .. } => { model = Some(next); 200 }
                    Decision::Repeat => 200,
                    Decision::Conflict => 409,
                };
                assert_eq!(status, expected, "{model:?} -> {next:?}: {answer}");
            }
            app.stop().await.unwrap();
        });
    }
}

/// `messages_call_events_total{state, outcome}` as scraped from /metrics.
async fn call_events(app: &TestMessages, client: &reqwest::Client) -> Vec<(String, String, u64)> {
    let text = app.get_text(client, "/metrics").await;
    text.lines()
        .filter(|line| line.starts_with("messages_call_events_total{"))
        .map(|line| {
            let label = |name: &str| {
                let start = line.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                line[start..start + line[start..].find('"').unwrap()].to_string()
            };
            let value = line.rsplit(' ').next().unwrap().parse().unwrap();
            (label("state"), label("outcome"), value)
        })
        .collect()
}

#[tokio::test]
async fn call_events_are_counted_by_state_and_outcome_from_zero() {
    let app = spawn_messages(&[]).await;
    let client = testkit::http();
    // Every state × transition/repeat/conflict is exported at 0 before the first event.
    let before = call_events(&app, &client).await;
    assert_eq!(before.len(), 15, "{before:?}");
    assert!(before.iter().all(|(_, _, value)| *value == 0), "{before:?}");

    let token = tenant_token("agent", Uuid::new_v4());
    let id = call_in_state(&app, &client, &token, &path_to(CallState::Answered)).await;
    assert_eq!(
        event(&app, &client, &token, moved(&id, "ANSWERED")).await.0,
        200
    );
    assert_eq!(
        event(&app, &client, &token, moved(&id, "RINGING")).await.0,
        409
    );
    let (status, _) = event(&app, &client, &token, moved(&unique("call"), "COMPLETED")).await;
    assert_eq!(status, 409, "no such call");

    let after = call_events(&app, &client).await;
    let count = |state: &str, outcome: &str| {
        after
            .iter()
            .find(|(s, o, _)| s == state && o == outcome)
            .map_or(0, |(_, _, value)| *value)
    };
    assert_eq!(count("INITIATED", "transition"), 1);
    assert_eq!(count("RINGING", "transition"), 1);
    assert_eq!(count("ANSWERED", "transition"), 1);
    assert_eq!(count("ANSWERED", "repeat"), 1);
    assert_eq!(count("RINGING", "conflict"), 1);
    assert_eq!(count("COMPLETED", "conflict"), 1);
    let total: u64 = after.iter().map(|(_, _, value)| value).sum();
    assert_eq!(total, 6, "{after:?}");
    app.stop().await.unwrap();
}
