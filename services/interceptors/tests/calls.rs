//! The call on each listener over real HTTP: greetings, Connect errors, what validates and what
//! does not, hostile bodies (never a 500), the health check, TLS, and a clean shutdown.

mod support;

use interceptors::Chain;
use serde_json::Value;
use support::{SAY_HELLO, Server, call};

async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

/// A Connect call to `url`: its status and JSON body.
async fn say(client: &reqwest::Client, url: String, body: &str) -> (u16, Value) {
    json(call(client, url, body).send().await.unwrap()).await
}

#[tokio::test]
async fn every_listener_greets_a_valid_call() {
    let server = Server::start(&[]).await;
    let client = reqwest::Client::new();
    for chain in Chain::ALL {
        let response = call(
            &client,
            server.url(chain, SAY_HELLO),
            r#"{"name":"Benchmark-x-1"}"#,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{chain:?}"
        );
        let (status, body) = json(response).await;
        assert_eq!(status, 200, "{chain:?}: {body}");
        assert_eq!(body["greeting"], "Hello, Benchmark-x-1!", "{chain:?}");
        assert_eq!(body["message"], body["greeting"], "{chain:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn validating_listeners_reject_each_invalid_name_naming_the_field() {
    let server = Server::start(&[]).await;
    let client = reqwest::Client::new();
    let long = format!(r#"{{"name":"{}"}}"#, "x".repeat(101));
    let invalid = [
        r#"{}"#,
        r#"{"name":""}"#,
        r#"{"name":null}"#,
        r#"{"name":5}"#,
        r#"{"name":["a"]}"#,
        long.as_str(),
    ];
    for chain in [Chain::Validation, Chain::Full] {
        for body in invalid {
            let (status, error) = say(&client, server.url(chain, SAY_HELLO), body).await;
            assert_eq!(status, 400, "{chain:?} {body}: {error}");
            assert_eq!(error["code"], "invalid_argument", "{chain:?} {body}");
            let message = error["message"].as_str().unwrap();
            assert!(message.contains("name"), "{chain:?} {body}: {message}");
        }
        // 100 characters (not bytes) is the limit.
        let hundred = format!(r#"{{"name":"{}"}}"#, "é".repeat(100));
        let (status, _) = say(&client, server.url(chain, SAY_HELLO), &hundred).await;
        assert_eq!(status, 200, "{chain:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_baseline_does_not_validate() {
    let server = Server::start(&[]).await;
    let client = reqwest::Client::new();
    let long = format!(r#"{{"name":"{}"}}"#, "x".repeat(101));
    for body in [r#"{}"#, r#"{"name":""}"#, long.as_str()] {
        for chain in [Chain::Baseline, Chain::Logger, Chain::Tracing] {
            let (status, reply) = say(&client, server.url(chain, SAY_HELLO), body).await;
            assert_eq!(status, 200, "{chain:?} {body}: {reply}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn hostile_bodies_are_invalid_argument_never_500() {
    let server = Server::start(&[]).await;
    let client = reqwest::Client::new();
    let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(70 * 1024));
    let cases: [(&str, &[u8], u16, &str); 9] = [
        ("malformed JSON", b"{\"name\":", 400, "invalid_argument"),
        ("not an object", b"[1,2,3]", 400, "invalid_argument"),
        ("wrong type", b"{\"name\":5}", 400, "invalid_argument"),
        ("empty body", b"", 400, "invalid_argument"),
        (
            "invalid UTF-8",
            b"{\"name\":\"\xff\xfe\"}",
            400,
            "invalid_argument",
        ),
        (
            "trailing garbage",
            b"{\"name\":\"a\"} x",
            400,
            "invalid_argument",
        ),
        ("deep nesting", &[b'['; 4096], 400, "invalid_argument"),
        ("NUL bytes", b"\0\0\0", 400, "invalid_argument"),
        ("over 64 KiB", huge.as_bytes(), 429, "resource_exhausted"),
    ];
    for chain in Chain::ALL {
        for (what, body, expected, code) in cases {
            let response = client
                .post(server.url(chain, SAY_HELLO))
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            let (status, error) = json(response).await;
            assert_eq!(status, expected, "{chain:?} {what}: {error}");
            assert_eq!(error["code"], code, "{chain:?} {what}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn protocol_errors_are_connect_errors() {
    let server = Server::start(&[]).await;
    let client = reqwest::Client::new();
    for chain in Chain::ALL {
        // A codec this server does not speak: 415.
        let response = client
            .post(server.url(chain, SAY_HELLO))
            .header("content-type", "application/proto")
            .body("\n\u{1}a")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 415, "{chain:?}");
        // Another protocol version.
        let (status, error) = json(
            client
                .post(server.url(chain, SAY_HELLO))
                .header("content-type", "application/json")
                .header("connect-protocol-version", "2")
                .body(r#"{"name":"a"}"#)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, error["code"].as_str()),
            (400, Some("invalid_argument"))
        );
        // An unknown procedure, and GET on the unary call.
        let (status, error) = say(
            &client,
            server.url(chain, "/greeter.v1.GreeterService/SayGoodbye"),
            "{}",
        )
        .await;
        assert_eq!(
            (status, error["code"].as_str()),
            (404, Some("unimplemented"))
        );
        let (status, error) = json(
            client
                .get(server.url(chain, SAY_HELLO))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, error["code"].as_str()),
            (405, Some("unimplemented"))
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn health_check_serves_on_every_listener_and_admin_routes_answer() {
    let server = Server::start(&[]).await;
    let client = reqwest::Client::new();
    for chain in Chain::ALL {
        let url = server.url(chain, "/grpc.health.v1.Health/Check");
        let (status, body) = json(client.get(&url).send().await.unwrap()).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("SERVING")));
        let (status, _) = say(&client, url, "{}").await;
        assert_eq!(status, 200);
    }
    for path in ["/health", "/ready"] {
        let response = client.get(server.admin_url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_full_chain_sets_a_request_id_and_counts_calls() {
    let server = Server::start(&[]).await;
    let client = reqwest::Client::new();
    let response = call(
        &client,
        server.url(Chain::Full, SAY_HELLO),
        r#"{"name":"id"}"#,
    )
    .header("x-request-id", "req-42")
    .send()
    .await
    .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-42", "echoed");
    let response = call(
        &client,
        server.url(Chain::Full, SAY_HELLO),
        r#"{"name":"id"}"#,
    )
    .send()
    .await
    .unwrap();
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let baseline = call(
        &client,
        server.url(Chain::Baseline, SAY_HELLO),
        r#"{"name":"id"}"#,
    )
    .send()
    .await
    .unwrap();
    assert!(
        baseline.headers().get("x-request-id").is_none(),
        "the baseline adds nothing"
    );
    let metrics = client
        .get(server.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("http_requests_total")
            && l.contains(r#"route="/greeter.v1.GreeterService/SayHello""#)
            && l.contains(r#"status="200""#)),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_full_chain_compresses_large_replies_only() {
    let server = Server::start(&[("INTERCEPTORS_COMPRESS_MIN_BYTES", "64")]).await;
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let name = "n".repeat(100);
    let response = call(
        &client,
        server.url(Chain::Full, SAY_HELLO),
        &format!(r#"{{"name":"{name}"}}"#),
    )
    .header("accept-encoding", "gzip")
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let small = call(
        &client,
        server.url(Chain::Full, SAY_HELLO),
        r#"{"name":"a"}"#,
    )
    .header("accept-encoding", "gzip")
    .send()
    .await
    .unwrap();
    assert!(small.headers().get("content-encoding").is_none());
    // A client that decompresses reads the greeting.
    let gzip_client = reqwest::Client::new();
    let (status, body) = say(
        &gzip_client,
        server.url(Chain::Full, SAY_HELLO),
        &format!(r#"{{"name":"{name}"}}"#),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["greeting"], format!("Hello, {name}!"));
    server.stop().await;
}

/// The concurrency limit counts calls whose body is whole (`common::body` reads it before the
/// chain; the limit's own shedding is tested in `interceptor::limit`): with one slot, a call whose
/// streamed body is still arriving does not stop another from being served, and completes once
/// its body does.
#[tokio::test]
async fn the_full_chain_admits_a_call_only_once_its_body_is_whole() {
    let server = Server::start(&[("INTERCEPTORS_MAX_CONCURRENCY", "1")]).await;
    let client = reqwest::Client::new();
    let (sender, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let stream = tokio_stream_from(body);
    let held = tokio::spawn(
        client
            .post(server.url(Chain::Full, SAY_HELLO))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .send(),
    );
    sender.send(Ok(b"{\"name\":".to_vec())).await.unwrap();
    for name in ["b", "c", "d"] {
        let (status, reply) = say(
            &client,
            server.url(Chain::Full, SAY_HELLO),
            &format!(r#"{{"name":"{name}"}}"#),
        )
        .await;
        assert_eq!(status, 200, "{reply}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sender.send(Ok(b"\"a\"}".to_vec())).await.unwrap();
    drop(sender);
    let (status, reply) = json(held.await.unwrap().unwrap()).await;
    assert_eq!(status, 200, "the streamed call completes: {reply}");
    assert_eq!(reply["greeting"], "Hello, a!");
    server.stop().await;
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// One HTTP/1.1 call over TLS to `addr`, verifying the server's certificate against `trusted`
/// for the name `localhost`.
async fn call_over_tls(
    addr: std::net::SocketAddr,
    trusted: &rustls::pki_types::CertificateDer<'static>,
    body: &'static str,
) -> (u16, Value) {
    use http_body_util::{BodyExt, Full};
    use std::sync::Arc;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("the handshake verifies the self-signed certificate");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(SAY_HELLO)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("connect-protocol-version", "1")
        .body(Full::new(bytes::Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn tls_mode_answers_over_https() {
    let server = Server::start(&[("INTERCEPTORS_TLS", "self-signed")]).await;
    let certificate = server.tls_certificate.clone().expect("TLS mode");
    for (chain, addr) in server.listeners.clone() {
        assert!(server.url(chain, SAY_HELLO).starts_with("https://"));
        let (status, body) = call_over_tls(addr, &certificate, r#"{"name":"tls"}"#).await;
        assert_eq!(status, 200, "{chain:?}: {body}");
        assert_eq!(body["greeting"], "Hello, tls!");
    }
    // Plain HTTP to a TLS listener fails at the transport, never with a greeting.
    let plain = server
        .url(Chain::Baseline, SAY_HELLO)
        .replace("https://", "http://");
    let answer = call(&reqwest::Client::new(), plain, r#"{"name":"x"}"#)
        .send()
        .await;
    assert!(answer.is_err() || answer.unwrap().status() != 200);
    server.stop().await;
}
