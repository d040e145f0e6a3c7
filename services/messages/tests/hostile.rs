//! Hostile input on every route: each gets a 4xx in the error envelope, never a 5xx, and the
//! service keeps answering afterwards. Plus the operational routes (health, ready, metrics).

use serde_json::Value;
use testkit::{spawn_messages, tenant_token, token};
use uuid::Uuid;

struct Case {
    method: &'static str,
    path: String,
    body: Option<String>,
    content_type: &'static str,
    auth: Auth,
    status: u16,
    code: &'static str,
}

#[derive(Clone, Copy)]
enum Auth {
    Anonymous,
    NoTenant,
    Tenant,
    Garbage,
}

fn case(
    method: &'static str,
    path: &str,
    body: Option<&str>,
    auth: Auth,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        method,
        path: path.to_string(),
        body: body.map(str::to_string),
        content_type: "application/json",
        auth,
        status,
        code,
    }
}

#[tokio::test]
async fn hostile_input_gets_a_clear_4xx() {
    use Auth::*;
    let none: Option<&str> = Option::None;
    let app = spawn_messages(&[]).await;
    let client = testkit::http();
    let long_id = "x".repeat(65);
    let long_body = format!(r#"{{"body":"{}"}}"#, "é".repeat(4097));
    let huge = format!(r#"{{"body":"{}"}}"#, "a".repeat(70 * 1024));
    let msgs = "/api/v1/channels/room/messages";
    let call = "/api/v1/demo/events/call";
    let metrics = "/api/v1/reporting/metrics";
    let calls = "/api/v1/reporting/calls";
    let mut cases = vec![
        // Channel messages.
        case(
            "POST",
            msgs,
            Some(r#"{"body":"hi"}"#),
            Anonymous,
            401,
            "unauthorized",
        ),
        case(
            "POST",
            msgs,
            Some(r#"{"body":"hi"}"#),
            Garbage,
            401,
            "unauthorized",
        ),
        case(
            "POST",
            "/api/v1/channels/bad%20id/messages",
            Some(r#"{"body":"hi"}"#),
            NoTenant,
            400,
            "bad_request",
        ),
        case(
            "POST",
            "/api/v1/channels/room.1/messages",
            Some(r#"{"body":"hi"}"#),
            NoTenant,
            400,
            "bad_request",
        ),
        case(
            "POST",
            &format!("/api/v1/channels/{long_id}/messages"),
            Some(r#"{"body":"hi"}"#),
            NoTenant,
            400,
            "bad_request",
        ),
        case(
            "POST",
            msgs,
            Some(r#"{"body":""}"#),
            NoTenant,
            422,
            "unprocessable",
        ),
        case(
            "POST",
            msgs,
            Some(&long_body),
            NoTenant,
            422,
            "unprocessable",
        ),
        case(
            "POST",
            msgs,
            Some(&huge),
            NoTenant,
            413,
            "payload_too_large",
        ),
        case("POST", msgs, Some(""), NoTenant, 400, "bad_request"),
        case(
            "POST",
            msgs,
            Some("{\"body\":"),
            NoTenant,
            400,
            "bad_request",
        ),
        case(
            "POST",
            msgs,
            Some(r#"{"text":"hi"}"#),
            NoTenant,
            422,
            "unprocessable",
        ),
        case(
            "POST",
            msgs,
            Some(r#"{"body":42}"#),
            NoTenant,
            422,
            "unprocessable",
        ),
        case("POST", msgs, Some("[1,2]"), NoTenant, 422, "unprocessable"),
        case(
            "GET",
            &format!("{msgs}?limit=0"),
            none,
            NoTenant,
            422,
            "unprocessable",
        ),
        case(
            "GET",
            &format!("{msgs}?limit=1000"),
            none,
            NoTenant,
            422,
            "unprocessable",
        ),
        case(
            "GET",
            &format!("{msgs}?limit=abc"),
            none,
            NoTenant,
            400,
            "bad_request",
        ),
        case(
            "GET",
            &format!("{msgs}?before=-5"),
            none,
            NoTenant,
            422,
            "unprocessable",
        ),
        case(
            "GET",
            &format!("{msgs}?before=99999999999999999999999"),
            none,
            NoTenant,
            400,
            "bad_request",
        ),
        case("DELETE", msgs, none, NoTenant, 405, "method_not_allowed"),
        // Calls.
        case(
            "POST",
            call,
            Some(r#"{"call_id":"c1","state":"INITIATED","from":"a","to":"b"}"#),
            NoTenant,
            403,
            "forbidden",
        ),
        case(
            "POST",
            call,
            Some(r#"{"call_id":"c1","state":"INITIATED","from":"a","to":"b"}"#),
            Anonymous,
            401,
            "unauthorized",
        ),
        case(
            "POST",
            call,
            Some(r#"{"call_id":"c1","state":"ONHOLD"}"#),
            Tenant,
            422,
            "unprocessable",
        ),
        case(
            "POST",
            call,
            Some(r#"{"call_id":"c1","state":"initiated","from":"a","to":"b"}"#),
            Tenant,
            422,
            "unprocessable",
        ),
        case(
            "POST",
            call,
            Some(r#"{"state":"INITIATED"}"#),
            Tenant,
            422,
            "unprocessable",
        ),
        case(
            "POST",
            call,
            Some(r#"{"call_id":"c1"}"#),
            Tenant,
            422,
            "unprocessable",
        ),
        case(
            "POST",
            call,
            Some(r#"{"call_id":"c1","state":"INITIATED"}"#),
            Tenant,
            422,
            "unprocessable",
        ),
        case(
            "POST",
            call,
            Some(r#"{"call_id":"","state":"INITIATED","from":"a","to":"b"}"#),
            Tenant,
            422,
            "unprocessable",
        ),
        case(
            "POST",
            call,
            Some(r#"{"call_id":"has space","state":"INITIATED","from":"a","to":"b"}"#),
            Tenant,
            422,
            "unprocessable",
        ),
        case(
            "POST",
            call,
            Some(r#"{"call_id":"c2","state":"INITIATED","from":"","to":"b"}"#),
            Tenant,
            422,
            "unprocessable",
        ),
        case(
            "POST",
            call,
            Some(
                r#"{"call_id":"c3","state":"INITIATED","from":"a","to":"b","timestamp":"yesterday"}"#,
            ),
            Tenant,
            400,
            "bad_request",
        ),
        case(
            "POST",
            call,
            Some(
                r#"{"call_id":"c4","state":"INITIATED","from":"a","to":"b","timestamp":"2999-01-01T00:00:00Z"}"#,
            ),
            Tenant,
            422,
            "unprocessable",
        ),
        case("POST", call, Some("not json"), Tenant, 400, "bad_request"),
        // Reporting.
        case("GET", metrics, none, NoTenant, 403, "forbidden"),
        case(
            "GET",
            &format!("{metrics}?granularity=weekly"),
            none,
            Tenant,
            422,
            "unprocessable",
        ),
        case(
            "GET",
            &format!("{metrics}?from=2026-13-01T00:00:00Z"),
            none,
            Tenant,
            400,
            "bad_request",
        ),
        case(
            "GET",
            &format!("{metrics}?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"),
            none,
            Tenant,
            422,
            "unprocessable",
        ),
        case(
            "GET",
            &format!("{metrics}?from=2026-01-01T00:00:00Z&to=2026-06-01T00:00:00Z"),
            none,
            Tenant,
            422,
            "unprocessable",
        ),
        case("GET", calls, none, NoTenant, 403, "forbidden"),
        case(
            "GET",
            &format!("{calls}?limit=0"),
            none,
            Tenant,
            422,
            "unprocessable",
        ),
        case(
            "GET",
            &format!("{calls}?limit=201"),
            none,
            Tenant,
            422,
            "unprocessable",
        ),
        case(
            "GET",
            &format!("{calls}?cursor=garbage!!"),
            none,
            Tenant,
            400,
            "bad_request",
        ),
        case(
            "GET",
            &format!("{calls}?cursor=bm90LWEtY3Vyc29y"),
            none,
            Tenant,
            400,
            "bad_request",
        ),
        case(
            "GET",
            &format!("{calls}?state=RUNNING"),
            none,
            Tenant,
            422,
            "unprocessable",
        ),
        case("GET", "/api/v1/nowhere", none, Tenant, 404, "not_found"),
    ];
    let mut text = case(
        "POST",
        msgs,
        Some(r#"{"body":"hi"}"#),
        NoTenant,
        415,
        "unsupported_media_type",
    );
    text.content_type = "text/plain";
    cases.push(text);

    let tenant = tenant_token("mallory", Uuid::new_v4());
    let plain = token("mallory");
    for case in &cases {
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
        let mut request = client.request(method, app.url(&case.path));
        request = match case.auth {
            Auth::Anonymous => request,
            Auth::NoTenant => request.bearer_auth(&plain),
            Auth::Tenant => request.bearer_auth(&tenant),
            Auth::Garbage => request.bearer_auth("not.a.jwt"),
        };
        if let Some(body) = &case.body {
            request = request
                .header("content-type", case.content_type)
                .body(body.clone());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, case.status, "{} {}: {body}", case.method, case.path);
        assert_eq!(
            body["error"]["code"], case.code,
            "{} {}: {body}",
            case.method, case.path
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // Still healthy and serving.
    let response = client
        .get(app.url("/api/v1/channels/room/messages"))
        .bearer_auth(&plain)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let app = spawn_messages(&[]).await;
    let client = testkit::http();
    assert_eq!(
        client
            .get(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    // Some traffic, then the families SPEC names.
    let plain = token("m");
    client
        .get(app.url("/api/v1/channels/room/messages"))
        .bearer_auth(&plain)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let text = client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "db_pool_connections",
    ] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }
    assert!(
        text.contains(r#"route="/api/v1/channels/{channel_id}/messages""#),
        "{text}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn start_up_gives_up_on_an_unreachable_postgres() {
    // A database URL whose server does not exist: start-up retries for DB_START_TIMEOUT_SECS, then
    // fails with a sentence (the binary exits 1 and its supervisor restarts it).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://postgres@{}/nothing",
        closed.local_addr().unwrap()
    );
    drop(closed);
    let config = messages::Config::from_lookup(&common::config::Lookup::from_pairs([
        ("HTTP_ADDR", "127.0.0.1:0"),
        ("PPROF_ADDR", ""),
        ("JWT_SECRET", testkit::SECRET),
        ("STORM_DEV", "1"),
        ("DATABASE_URL", url.as_str()),
        ("MIGRATE", "false"),
        ("DB_ACQUIRE_TIMEOUT_MS", "300"),
        ("DB_START_TIMEOUT_SECS", "1"),
    ]))
    .unwrap();
    let built =
        tokio::time::timeout(std::time::Duration::from_secs(20), messages::build(config)).await;
    let error = built
        .expect("start-up gives up in time")
        .err()
        .expect("no database, no start");
    assert!(format!("{error:#}").contains("database"), "{error:#}");
}
