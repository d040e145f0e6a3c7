//! Tokens are per service: one anonymous chat sign-up must not open the gateway or messages, a
//! gateway token must not open chat, and `?access_token=` works on WebSocket upgrades only.

use reqwest::Method;
use serde_json::{Value, json};
use testkit::{http, spawn_chat, spawn_gateway, spawn_messages, token};
use tokio_tungstenite::tungstenite;

/// The status and error code of an answer.
fn refusal(status: u16, body: &Value) -> (u16, Option<&str>) {
    (status, body["error"]["code"].as_str())
}

#[tokio::test]
async fn a_chat_sign_up_token_opens_chat_only_and_a_gateway_token_never_opens_chat() {
    let chat = spawn_chat(&[]).await;
    let messages = spawn_messages(&[]).await;
    let gateway = spawn_gateway(&[("MESSAGES_URL", messages.url("").as_str())]).await;
    let client = http();
    let user = chat.sign_up(&client).await;
    let event = json!({"x": 1});
    let call = json!({"call_id": "c1", "state": "INITIATED", "from": "1", "to": "2"});

    // Chat takes its own token.
    let (status, body) = chat
        .send(
            &client,
            Method::GET,
            "/api/v1/applications",
            Some(&user.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The gateway and messages refuse it, on every kind of route, saying why; and chat refuses a
    // gateway token (no audience, the S0 source's shape).
    let gateway_token = token("1");
    let refused = [
        (
            &gateway,
            Method::POST,
            "/api/v1/events/storm.events",
            &user.token,
            Some(&event),
        ),
        (
            &gateway,
            Method::POST,
            "/publish",
            &user.token,
            Some(&event),
        ),
        (
            &gateway,
            Method::GET,
            "/api/v1/channels/general/messages",
            &user.token,
            None,
        ),
        (
            &messages,
            Method::GET,
            "/api/v1/channels/general/messages",
            &user.token,
            None,
        ),
        (
            &messages,
            Method::POST,
            "/api/v1/demo/events/call",
            &user.token,
            Some(&call),
        ),
        (
            &chat,
            Method::GET,
            "/api/v1/applications",
            &gateway_token,
            None,
        ),
    ];
    for (app, method, path, bearer, payload) in refused {
        let (status, body) = app
            .send(&client, method.clone(), path, Some(bearer), payload)
            .await;
        assert_eq!(
            refusal(status, &body),
            (401, Some("unauthorized")),
            "{method} {path}: {body}"
        );
        let why = body["error"]["message"].as_str().unwrap_or_default();
        let expected = if *bearer == user.token {
            "another service"
        } else {
            "aud and iss"
        };
        assert!(why.contains(expected), "{method} {path}: {body}");
    }
    let upgrade = tokio_tungstenite::connect_async(gateway.ws_url(&format!(
        "/api/v1/ws?subscribe=storm.events&access_token={}",
        user.token
    )))
    .await;
    match upgrade {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("a chat token upgraded a gateway socket: {other:?}"),
    }
}

#[tokio::test]
async fn query_tokens_are_taken_on_websocket_upgrades_only() {
    let messages = spawn_messages(&[]).await;
    let gateway = spawn_gateway(&[("MESSAGES_URL", messages.url("").as_str())]).await;
    let client = http();
    let tok = token("user-1");

    // The WebSocket routes take it.
    for path in [
        format!("/api/v1/ws?subscribe=storm.events&access_token={tok}"),
        format!("/api/v1/channels/general/ws?access_token={tok}"),
        format!("/ws?subject=storm.events&access_token={tok}"),
    ] {
        let (socket, response) = tokio_tungstenite::connect_async(gateway.ws_url(&path))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(response.status(), 101, "{path}");
        drop(socket);
    }

    // Every other route wants the header, and says so.
    let event = json!({"x": 1});
    let routes = [
        (&gateway, Method::POST, "/api/v1/events/storm.events"),
        (&gateway, Method::POST, "/publish"),
        (&gateway, Method::GET, "/api/v1/channels/general/messages"),
        (&messages, Method::GET, "/api/v1/channels/general/messages"),
        (&messages, Method::POST, "/api/v1/channels/general/messages"),
        (&messages, Method::GET, "/api/v1/reporting/calls"),
    ];
    for (app, method, path) in routes {
        let url = app.url(&format!("{path}?access_token={tok}"));
        let response = client
            .request(method.clone(), url)
            .header("content-type", "application/json")
            .body(event.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            refusal(status, &body),
            (401, Some("unauthorized")),
            "{method} {path}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("WebSocket routes only"),
            "{method} {path}: {body}"
        );
    }
}
