//! Hostile input on every Chat API route: each gets a 4xx in the error envelope, never a 5xx, and
//! the service keeps answering afterwards.

use serde_json::Value;
use testkit::{chat_token, http, spawn_chat};

#[derive(Clone, Copy, Debug)]
enum Auth {
    Anonymous,
    Owner,
    /// Another valid chat user.
    Stranger,
    /// A token of this stack, but not a chat user's (`sub` is not a user id).
    NotAUser,
    /// A well-formed token for a user id that does not exist.
    Ghost,
    Garbage,
}

/// (method, path, body, who asks, expected status, expected error code)
type Case<'a> = (&'a str, String, Option<&'a str>, Auth, u16, &'a str);

#[tokio::test]
async fn hostile_input_gets_a_clear_4xx() {
    use Auth::*;
    let chat = spawn_chat(&[]).await;
    let client = http();
    let owner = chat.sign_up(&client).await;
    let stranger = chat.sign_up(&client).await;
    let app = chat.create_application(&client, &owner).await;
    let (status, _) = chat.create_chat(&client, &owner, &app).await;
    assert_eq!(status, 201);
    let a = format!("/api/v1/applications/{app}");
    let msgs = format!("{a}/chats/1/messages");
    let long_body = format!(r#"{{"body":"{}"}}"#, "é".repeat(4097));
    let huge = format!(r#"{{"body":"{}"}}"#, "a".repeat(70 * 1024));
    let long_name = format!(r#"{{"name":"{}"}}"#, "n".repeat(101));
    let long_email = format!(r#"{{"email":"{}@x.io","name":"a"}}"#, "e".repeat(260));
    let long_q = "q".repeat(201);
    let long_token = "t".repeat(5000);
    let cases: Vec<Case> = vec![
        // Users.
        (
            "POST",
            "/api/v1/users".into(),
            Some(""),
            Anonymous,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            Some("{\"email\":"),
            Anonymous,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            Some(r#"{"email":"a@b"}"#),
            Anonymous,
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            Some(r#"{"email":"nope","name":"a"}"#),
            Anonymous,
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            Some(r#"{"email":"a@b","name":""}"#),
            Anonymous,
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            Some(r#"{"email":"a\u0000@b","name":"x"}"#),
            Anonymous,
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            Some(r#"{"email":"a@b","name":"x\u0000"}"#),
            Anonymous,
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            Some(&long_email),
            Anonymous,
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            Some(r#"{"email":7,"name":"a"}"#),
            Anonymous,
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/api/v1/users".into(),
            Some(&huge),
            Anonymous,
            413,
            "payload_too_large",
        ),
        (
            "DELETE",
            "/api/v1/users".into(),
            None,
            Anonymous,
            405,
            "method_not_allowed",
        ),
        // Applications.
        (
            "GET",
            "/api/v1/applications".into(),
            None,
            Anonymous,
            401,
            "unauthorized",
        ),
        (
            "GET",
            "/api/v1/applications".into(),
            None,
            Garbage,
            401,
            "unauthorized",
        ),
        (
            "GET",
            "/api/v1/applications".into(),
            None,
            NotAUser,
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/api/v1/applications".into(),
            Some(r#"{"name":"x"}"#),
            Ghost,
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/api/v1/applications".into(),
            Some(r#"{"name":""}"#),
            Owner,
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/api/v1/applications".into(),
            Some(&long_name),
            Owner,
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/api/v1/applications".into(),
            Some("[]"),
            Owner,
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/api/v1/applications".into(),
            Some("{"),
            Owner,
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/applications?page=0".into(),
            None,
            Owner,
            422,
            "unprocessable",
        ),
        (
            "GET",
            "/api/v1/applications?per_page=101".into(),
            None,
            Owner,
            422,
            "unprocessable",
        ),
        (
            "GET",
            "/api/v1/applications?page=abc".into(),
            None,
            Owner,
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/applications?page=99999999999999999999".into(),
            None,
            Owner,
            400,
            "bad_request",
        ),
        ("GET", a.clone(), None, Stranger, 404, "not_found"),
        ("GET", a.clone(), None, Ghost, 404, "not_found"),
        (
            "GET",
            "/api/v1/applications/short".into(),
            None,
            Owner,
            404,
            "not_found",
        ),
        (
            "GET",
            format!("/api/v1/applications/{long_token}"),
            None,
            Owner,
            404,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/applications/%00%00%00%00%00%00%00%00%00%00%00".into(),
            None,
            Owner,
            404,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/applications/..%2F..%2F..%2Fetc%2Fpasswd%2F%2F%2F%2F".into(),
            None,
            Owner,
            404,
            "not_found",
        ),
        (
            "PATCH",
            a.clone(),
            Some(r#"{"name":""}"#),
            Owner,
            422,
            "unprocessable",
        ),
        ("PATCH", a.clone(), Some("nope"), Owner, 400, "bad_request"),
        ("DELETE", a.clone(), None, Owner, 405, "method_not_allowed"),
        // Chats.
        (
            "POST",
            format!("{a}/chats"),
            None,
            Anonymous,
            401,
            "unauthorized",
        ),
        (
            "POST",
            format!("{a}/chats"),
            None,
            Stranger,
            404,
            "not_found",
        ),
        (
            "GET",
            format!("{a}/chats?per_page=0"),
            None,
            Owner,
            422,
            "unprocessable",
        ),
        (
            "GET",
            format!("{a}/chats?page=-1"),
            None,
            Owner,
            422,
            "unprocessable",
        ),
        (
            "GET",
            format!("{a}/chats/abc"),
            None,
            Owner,
            400,
            "bad_request",
        ),
        (
            "GET",
            format!("{a}/chats/99999999999"),
            None,
            Owner,
            400,
            "bad_request",
        ),
        ("GET", format!("{a}/chats/0"), None, Owner, 404, "not_found"),
        (
            "GET",
            format!("{a}/chats/-3"),
            None,
            Owner,
            404,
            "not_found",
        ),
        ("GET", format!("{a}/chats/2"), None, Owner, 404, "not_found"),
        // Messages.
        (
            "POST",
            msgs.clone(),
            Some(r#"{"body":"hi"}"#),
            Anonymous,
            401,
            "unauthorized",
        ),
        (
            "POST",
            msgs.clone(),
            Some(r#"{"body":"hi"}"#),
            Stranger,
            404,
            "not_found",
        ),
        (
            "POST",
            format!("{a}/chats/7/messages"),
            Some(r#"{"body":"hi"}"#),
            Owner,
            404,
            "not_found",
        ),
        (
            "POST",
            format!("{a}/chats/x/messages"),
            Some(r#"{"body":"hi"}"#),
            Owner,
            400,
            "bad_request",
        ),
        (
            "POST",
            msgs.clone(),
            Some(r#"{"body":""}"#),
            Owner,
            422,
            "unprocessable",
        ),
        (
            "POST",
            msgs.clone(),
            Some(&long_body),
            Owner,
            422,
            "unprocessable",
        ),
        (
            "POST",
            msgs.clone(),
            Some(r#"{"body":"a\u0000b"}"#),
            Owner,
            422,
            "unprocessable",
        ),
        (
            "POST",
            msgs.clone(),
            Some(r#"{"body":42}"#),
            Owner,
            422,
            "unprocessable",
        ),
        (
            "POST",
            msgs.clone(),
            Some(r#"{"text":"hi"}"#),
            Owner,
            422,
            "unprocessable",
        ),
        ("POST", msgs.clone(), Some(""), Owner, 400, "bad_request"),
        (
            "POST",
            msgs.clone(),
            Some(&huge),
            Owner,
            413,
            "payload_too_large",
        ),
        (
            "GET",
            format!("{msgs}?page=0"),
            None,
            Owner,
            422,
            "unprocessable",
        ),
        (
            "GET",
            format!("{msgs}?per_page=1000"),
            None,
            Owner,
            422,
            "unprocessable",
        ),
        (
            "GET",
            format!("{msgs}?per_page=x"),
            None,
            Owner,
            400,
            "bad_request",
        ),
        (
            "GET",
            format!("{msgs}/abc"),
            None,
            Owner,
            400,
            "bad_request",
        ),
        ("GET", format!("{msgs}/1"), None, Stranger, 404, "not_found"),
        (
            "GET",
            format!("{msgs}/search"),
            None,
            Owner,
            400,
            "bad_request",
        ),
        (
            "GET",
            format!("{msgs}/search?q="),
            None,
            Owner,
            422,
            "unprocessable",
        ),
        (
            "GET",
            format!("{msgs}/search?q={long_q}"),
            None,
            Owner,
            422,
            "unprocessable",
        ),
        (
            "GET",
            format!("{msgs}/search?q=a%00b"),
            None,
            Owner,
            422,
            "unprocessable",
        ),
        (
            "GET",
            format!("{msgs}/search?q=x"),
            None,
            Stranger,
            404,
            "not_found",
        ),
        (
            "DELETE",
            msgs.clone(),
            None,
            Owner,
            405,
            "method_not_allowed",
        ),
    ];
    let not_a_user = chat_token("user-1");
    let ghost = chat_token("987654321");
    for (method, path, body, auth, status, code) in &cases {
        let mut request = client.request(method.parse().unwrap(), chat.url(path));
        request = match auth {
            Anonymous => request,
            Owner => request.bearer_auth(&owner.token),
            Stranger => request.bearer_auth(&stranger.token),
            NotAUser => request.bearer_auth(&not_a_user),
            Ghost => request.bearer_auth(&ghost),
            Garbage => request.bearer_auth("not.a.jwt"),
        };
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("request");
        let got = response.status().as_u16();
        let text = response.text().await.unwrap();
        let envelope: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path} ({auth:?}): not JSON: {text}"));
        assert_eq!(
            (got, envelope["error"]["code"].as_str()),
            (*status, Some(*code)),
            "{method} {path} ({auth:?}): {text}"
        );
    }
    // Hostile search syntax is just text to websearch_to_tsquery: 200, never a SQL error.
    for q in [
        "%27%3B%20DROP%20TABLE%20chats%3B--",
        "!!%26%26%7C%7C()%3A*",
        "%22unterminated",
        "-",
        "or",
    ] {
        let (status, body) = chat
            .get_as(&client, &owner, &format!("{msgs}/search?q={q}"))
            .await;
        assert_eq!(status, 200, "q={q}: {body}");
    }
    // Wrong content type on a write.
    let response = client
        .post(chat.url(&msgs))
        .bearer_auth(&owner.token)
        .header("content-type", "text/plain")
        .body(r#"{"body":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    // Still serving.
    let (status, _) = chat
        .post_message(&client, &owner, &app, 1, "still here")
        .await;
    assert_eq!(status, 202);
    chat.stop().await.unwrap();
}
