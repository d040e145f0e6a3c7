//! The interceptor listeners have the listener limits of every stormstack listener
//! (`common::listener`): on each of the five call listeners, plain and TLS, a client that never
//! finishes its headers (or its TLS handshake) is closed within `HEADER_READ_TIMEOUT_MS`, and a
//! prompt one is still served. A client that trickles its body is answered `deadline_exceeded`
//! within `BODY_READ_TIMEOUT_MS` and closed, and meanwhile holds no slot of the full chain's
//! concurrency limit (`common::body::ReadBodyFirstLayer`).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use interceptors::Chain;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use support::Server;

/// Reads until the server closes (EOF or reset); panics past `bound` or if it answers.
async fn closed_after<S: AsyncRead + Unpin>(stream: &mut S, bound: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(bound, stream.read(&mut buf)).await {
        Err(_) => panic!("still open after {bound:?}"),
        Ok(Ok(0)) | Ok(Err(_)) => started.elapsed(),
        Ok(Ok(n)) => panic!(
            "answered a request that never finished: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}

fn addr(server: &Server, chain: Chain) -> std::net::SocketAddr {
    server
        .listeners
        .iter()
        .find(|(c, _)| *c == chain)
        .map(|(_, a)| *a)
        .unwrap()
}

#[tokio::test]
async fn plain_listeners_close_a_slow_header() {
    let server = Server::start(&[("HEADER_READ_TIMEOUT_MS", "300")]).await;
    for chain in Chain::ALL {
        let mut stream = TcpStream::connect(addr(&server, chain)).await.unwrap();
        stream
            .write_all(b"POST /greeter.v1.GreeterService/SayHello HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let after = closed_after(&mut stream, Duration::from_secs(3)).await;
        assert!(after < Duration::from_millis(1500), "{chain:?}: {after:?}");
    }
    // The admin listener too.
    let mut stream = TcpStream::connect(server.admin).await.unwrap();
    stream.write_all(b"GET /hea").await.unwrap();
    closed_after(&mut stream, Duration::from_secs(3)).await;
    let client = testkit::http();
    let response = support::call(
        &client,
        server.url(Chain::Baseline, support::SAY_HELLO),
        r#"{"name":"prompt"}"#,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn tls_listeners_close_a_stalled_handshake_and_a_slow_header() {
    let server = Server::start(&[
        ("HEADER_READ_TIMEOUT_MS", "300"),
        ("INTERCEPTORS_TLS", "self-signed"),
    ])
    .await;
    let connector = tls_connector(server.tls_certificate.clone().expect("TLS mode"));
    for chain in Chain::ALL {
        // Connected, but no ClientHello.
        let mut silent = TcpStream::connect(addr(&server, chain)).await.unwrap();
        let after = closed_after(&mut silent, Duration::from_secs(3)).await;
        assert!(
            after < Duration::from_millis(1500),
            "{chain:?} handshake: {after:?}"
        );

        // Handshake done, then half a request.
        let tcp = TcpStream::connect(addr(&server, chain)).await.unwrap();
        let mut tls = connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .expect("handshake");
        tls.write_all(b"POST /greeter.v1.GreeterService/SayHello HTTP/1.1\r\nHo")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        let after = closed_after(&mut tls, Duration::from_secs(3)).await;
        assert!(
            after < Duration::from_millis(1500),
            "{chain:?} header: {after:?}"
        );
    }
    server.stop().await;
}

/// A `SayHello` whose body (17 bytes announced) stops after its first 8.
const STALLED: &[u8] = b"POST /greeter.v1.GreeterService/SayHello HTTP/1.1\r\nHost: x\r\n\
content-type: application/json\r\nconnect-protocol-version: 1\r\ncontent-length: 17\r\n\r\n\
{\"name\":";

/// A whole `SayHello` on its own connection.
const PROMPT: &[u8] = b"POST /greeter.v1.GreeterService/SayHello HTTP/1.1\r\nHost: x\r\n\
content-type: application/json\r\nconnect-protocol-version: 1\r\ncontent-length: 17\r\n\
connection: close\r\n\r\n{\"name\":\"prompt\"}";

const BODY_READ_TIMEOUT: Duration = Duration::from_millis(400);

/// Everything the server sends until it closes (a TLS peer closing without close_notify ends it
/// too); panics past `bound`.
async fn answer<S: AsyncRead + Unpin>(stream: &mut S, bound: Duration) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(bound, read)
        .await
        .unwrap_or_else(|_| panic!("still open after {bound:?}"));
    String::from_utf8_lossy(&answer).into_owned()
}

/// On each listener a stalled body is answered `deadline_exceeded` (504, `Connection: close`)
/// within the body-read timeout and closed; on the full chain, with one concurrency slot, a prompt
/// call made while it stalls is served: the stalled call never entered the chain.
async fn stalled_bodies_hold_no_slot<S, F>(connect: impl Fn(Chain) -> F)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = S>,
{
    for chain in Chain::ALL {
        let mut stalled = connect(chain).await;
        stalled.write_all(STALLED).await.unwrap();
        stalled.flush().await.unwrap();
        let started = Instant::now();
        if chain == Chain::Full {
            // Long enough for the server to have the stalled call's headers; well inside its
            // body-read timeout.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut prompt = connect(chain).await;
            prompt.write_all(PROMPT).await.unwrap();
            prompt.flush().await.unwrap();
            let served = answer(&mut prompt, Duration::from_secs(3)).await;
            assert!(
                started.elapsed() < BODY_READ_TIMEOUT,
                "answered only after the stalled call ended: {:?}",
                started.elapsed()
            );
            assert!(served.starts_with("HTTP/1.1 200 "), "{served}");
            assert!(served.contains("Hello, prompt!"), "{served}");
        }
        let timed_out = answer(&mut stalled, Duration::from_secs(3)).await;
        let after = started.elapsed();
        assert!(
            after < BODY_READ_TIMEOUT + Duration::from_millis(1000),
            "{chain:?}: {after:?}"
        );
        assert!(
            timed_out.starts_with("HTTP/1.1 504 "),
            "{chain:?}: {timed_out}"
        );
        let lower = timed_out.to_ascii_lowercase();
        assert!(
            lower.contains("connection: close"),
            "{chain:?}: {timed_out}"
        );
        assert!(
            timed_out.contains(r#""code":"deadline_exceeded""#),
            "{chain:?}: {timed_out}"
        );
        assert!(
            timed_out.contains("BODY_READ_TIMEOUT_MS"),
            "{chain:?}: {timed_out}"
        );
    }
}

fn body_timeout_settings(tls: bool) -> Vec<(&'static str, &'static str)> {
    let mut vars = vec![
        ("BODY_READ_TIMEOUT_MS", "400"),
        ("INTERCEPTORS_MAX_CONCURRENCY", "1"),
    ];
    if tls {
        vars.push(("INTERCEPTORS_TLS", "self-signed"));
    }
    vars
}

#[tokio::test]
async fn plain_listeners_answer_a_stalled_body_without_holding_a_slot() {
    let server = Server::start(&body_timeout_settings(false)).await;
    stalled_bodies_hold_no_slot(|chain| {
        let addr = addr(&server, chain);
        async move { TcpStream::connect(addr).await.unwrap() }
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn tls_listeners_answer_a_stalled_body_without_holding_a_slot() {
    let server = Server::start(&body_timeout_settings(true)).await;
    let connector = tls_connector(server.tls_certificate.clone().expect("TLS mode"));
    stalled_bodies_hold_no_slot(|chain| {
        let (addr, connector) = (addr(&server, chain), connector.clone());
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            connector
                .connect("localhost".try_into().unwrap(), tcp)
                .await
                .expect("handshake")
        }
    })
    .await;
    server.stop().await;
}

/// A TLS client trusting the server's self-signed certificate for `localhost`.
fn tls_connector(
    certificate: rustls::pki_types::CertificateDer<'static>,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
