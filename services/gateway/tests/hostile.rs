//! Hostile input on every route: each gets the SPEC's 4xx in the JSON envelope — never a 5xx,
//! never a panic — and the gateway keeps serving afterwards.

use std::time::Duration;

use base64::Engine;
use common::auth::{Claims, now_secs};
use reqwest::Method;
use serde_json::Value;
use testkit::{WsClient, http, sign, spawn_gateway, token};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    auth: Option<String>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(name: &'static str, method: Method, path: &str, status: u16, code: &'static str) -> Case {
    Case {
        name,
        method,
        path: path.to_string(),
        content_type: Some("application/json"),
        auth: Some(token("hostile")),
        body: b"{}".to_vec(),
        status,
        code,
    }
}

#[tokio::test]
async fn hostile_http_inputs_get_4xx_envelopes() {
    let gw = spawn_gateway(&[("MAX_EVENT_BYTES", "65536")]).await;
    let now = now_secs();
    let expired = sign(Claims {
        sub: "x".into(),
        exp: now - 120,
        iat: None,
        ..Claims::default()
    });
    let wrong_secret = common::auth::JwtKeys::new(b"not-the-secret")
        .sign(&Claims {
            sub: "x".into(),
            exp: now + 60,
            iat: None,
            ..Claims::default()
        })
        .unwrap();
    let payload = b64(&format!(r#"{{"sub":"x","exp":{}}}"#, now + 60));
    let alg_none = format!("{}.{payload}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
    let rs256 = format!(
        "{}.{payload}.c2lnbmF0dXJl",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#)
    );
    let events = "/api/v1/events/storm.events";

    let mut cases = vec![
        Case {
            body: b"{\"a\":".to_vec(),
            ..case("truncated JSON", Method::POST, events, 400, "bad_request")
        },
        Case {
            body: b"{a:1}".to_vec(),
            ..case("unquoted key", Method::POST, events, 400, "bad_request")
        },
        Case {
            body: b"".to_vec(),
            ..case("empty body", Method::POST, events, 400, "bad_request")
        },
        Case {
            body: b"[1,2] 3".to_vec(),
            ..case("trailing data", Method::POST, events, 400, "bad_request")
        },
        Case {
            body: vec![b'"', 0xff, 0xfe, b'"'],
            ..case("invalid UTF-8", Method::POST, events, 400, "bad_request")
        },
        Case {
            content_type: Some("text/plain"),
            ..case(
                "text content type",
                Method::POST,
                events,
                415,
                "unsupported_media_type",
            )
        },
        Case {
            content_type: None,
            ..case(
                "no content type",
                Method::POST,
                events,
                415,
                "unsupported_media_type",
            )
        },
        Case {
            body: format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000)).into_bytes(),
            ..case(
                "body over 64 KiB",
                Method::POST,
                events,
                413,
                "payload_too_large",
            )
        },
        case(
            "wildcard subject",
            Method::POST,
            "/api/v1/events/call.*",
            400,
            "bad_request",
        ),
        case(
            "pattern subject",
            Method::POST,
            "/api/v1/events/call.%5Ba%5D",
            400,
            "bad_request",
        ),
        case(
            "space in subject",
            Method::POST,
            "/api/v1/events/a%20b",
            400,
            "bad_request",
        ),
        case(
            "slash-encoded subject",
            Method::POST,
            "/api/v1/events/a%2Fb",
            400,
            "bad_request",
        ),
        case(
            "too long subject",
            Method::POST,
            &format!("/api/v1/events/{}", "a".repeat(129)),
            400,
            "bad_request",
        ),
        case(
            "non-ASCII subject",
            Method::POST,
            "/api/v1/events/%C3%A9t%C3%A9",
            400,
            "bad_request",
        ),
        case(
            "S0 wildcard subject",
            Method::POST,
            "/publish?subject=storm.*",
            400,
            "bad_request",
        ),
        Case {
            body: b"{\"payload\":".to_vec(),
            ..case(
                "S0 malformed JSON",
                Method::POST,
                "/publish",
                400,
                "bad_request",
            )
        },
        Case {
            auth: None,
            ..case("missing token", Method::POST, events, 401, "unauthorized")
        },
        Case {
            auth: Some(expired),
            ..case("expired token", Method::POST, events, 401, "unauthorized")
        },
        Case {
            auth: Some(wrong_secret),
            ..case("wrong secret", Method::POST, events, 401, "unauthorized")
        },
        Case {
            auth: Some(alg_none),
            ..case("alg none", Method::POST, events, 401, "unauthorized")
        },
        Case {
            auth: Some(rs256),
            ..case("RS256 header", Method::POST, events, 401, "unauthorized")
        },
        Case {
            auth: Some("garbage".into()),
            ..case(
                "garbage token",
                Method::POST,
                "/publish",
                401,
                "unauthorized",
            )
        },
        Case {
            auth: None,
            ..case(
                "S0 publish without token",
                Method::POST,
                "/publish",
                401,
                "unauthorized",
            )
        },
        Case {
            auth: None,
            ..case(
                "ws without token",
                Method::GET,
                "/api/v1/ws?subscribe=a",
                401,
                "unauthorized",
            )
        },
        case(
            "ws without upgrade",
            Method::GET,
            "/api/v1/ws?subscribe=a",
            400,
            "bad_request",
        ),
        case(
            "ws bad subject",
            Method::GET,
            "/api/v1/ws?subscribe=a%20b",
            400,
            "bad_request",
        ),
        case(
            "channel ws bad id",
            Method::GET,
            "/api/v1/channels/a.b/ws",
            400,
            "bad_request",
        ),
        case(
            "S0 ws bad channel",
            Method::GET,
            "/ws?channel_id=%2A",
            400,
            "bad_request",
        ),
        Case {
            body: b"nope".to_vec(),
            ..case(
                "echo malformed",
                Method::POST,
                "/api/echo",
                400,
                "bad_request",
            )
        },
        Case {
            content_type: Some("text/plain"),
            ..case(
                "echo text",
                Method::POST,
                "/api/echo",
                415,
                "unsupported_media_type",
            )
        },
        case(
            "unknown route",
            Method::GET,
            "/api/v2/nothing",
            404,
            "not_found",
        ),
        case(
            "wrong method",
            Method::DELETE,
            events,
            405,
            "method_not_allowed",
        ),
        case(
            "bad query",
            Method::GET,
            "/api/v1/ws?subscribe=%ZZ",
            400,
            "bad_request",
        ),
    ];
    cases.push(Case {
        auth: Some("Basic dXNlcjpwYXNz".into()),
        ..case(
            "basic auth scheme",
            Method::POST,
            events,
            401,
            "unauthorized",
        )
    });

    let client = http();
    for c in cases {
        let mut request = client
            .request(c.method.clone(), gw.url(&c.path))
            .body(c.body.clone());
        if let Some(ct) = c.content_type {
            request = request.header("content-type", ct);
        }
        if let Some(auth) = &c.auth {
            let value = if auth.starts_with("Basic ") {
                auth.clone()
            } else {
                format!("Bearer {auth}")
            };
            request = request.header("authorization", value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let status = response.status().as_u16();
        assert!(
            response.headers().contains_key("x-request-id"),
            "{}: x-request-id",
            c.name
        );
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: body is not the JSON envelope: {e}", c.name));
        assert_eq!(status, c.status, "{}: {body}", c.name);
        assert_eq!(body["error"]["code"], c.code, "{}: {body}", c.name);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            c.name
        );
    }

    // Still healthy afterwards.
    let ok = client.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let gw = spawn_gateway(&[]).await;
    let client = http();
    let echoed = client
        .get(gw.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
    let generated = client.get(gw.url("/nope")).send().await.unwrap();
    assert_eq!(generated.headers()["x-request-id"].len(), 36);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn hostile_websocket_frames_never_close_the_socket() {
    let gw = spawn_gateway(&[]).await;
    let mut ws = WsClient::connect(&gw.ws_url("/api/v1/ws?subscribe=h.1"), Some(&token("u")))
        .await
        .unwrap();
    for frame in [
        "",
        "{",
        "[]",
        "null",
        r#"{"op":null}"#,
        r#"{"op":"subscribe","subject":""}"#,
        r#"{"op":"subscribe","subject":"a\\b"}"#,
        &format!(r#"{{"op":"subscribe","subject":"{}"}}"#, "x".repeat(500)),
    ] {
        ws.send_text(frame).await;
        assert_eq!(
            ws.next_json(Duration::from_secs(5)).await["op"],
            "error",
            "{frame:?}"
        );
    }
    // A frame larger than the client limit closes only this socket (1009), not the server.
    let mut big = WsClient::connect(&gw.ws_url("/api/v1/ws"), Some(&token("u")))
        .await
        .unwrap();
    big.send_text(&"x".repeat(64 * 1024)).await;
    assert!(matches!(
        big.next_event(Duration::from_secs(5)).await,
        testkit::ws::Event::Closed(_)
    ));
    assert_eq!(ws.op("subscribe", "h.2").await["op"], "ack");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn websocket_subscription_limit_is_enforced() {
    let gw = spawn_gateway(&[("WS_MAX_SUBSCRIPTIONS", "2")]).await;
    let tok = token("u");
    match WsClient::connect(&gw.ws_url("/api/v1/ws?subscribe=a,b,c"), Some(&tok)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("expected 400, got {:?}", other.map(|_| "connected")),
    }
    let mut ws = WsClient::connect(&gw.ws_url("/api/v1/ws?subscribe=a,b"), Some(&tok))
        .await
        .unwrap();
    assert_eq!(ws.op("subscribe", "c").await["op"], "error");
    assert_eq!(
        ws.op("subscribe", "a").await["op"],
        "ack",
        "re-subscribing is idempotent"
    );
    gw.stop().await.unwrap();
}
