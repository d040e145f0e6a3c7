//! The interceptor listeners have the listener limits of every stormstack listener
//! (`common::listener`): on each of the five call listeners, plain and TLS, a client that never
//! finishes its headers (or its TLS handshake) is closed within `HEADER_READ_TIMEOUT_MS`, and a
//! prompt one is still served.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use interceptors::Chain;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
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
    let certificate = server.tls_certificate.clone().expect("TLS mode");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
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
