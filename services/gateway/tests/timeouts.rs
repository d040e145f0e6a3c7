//! Listener limits against a real gateway on port 0 (`common::listener`): a client that is slow
//! with its headers or its body, or idle on a kept-alive connection, is closed within the
//! configured timeout; a trickled body never holds an admission slot; the pprof listener has the
//! same header timeout; the (MAX_CONNS_PER_IP+1)'th connection from one address is refused and
//! counted. Timeouts are a few hundred ms here so the tests stay quick.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use testkit::{http, spawn_gateway, wait_until};

/// Reads until the server closes the connection (EOF or reset); panics past `bound`. Returns
/// what was read and when the close came.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + bound),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => panic!(
                "still open after {bound:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return (received, started.elapsed()),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connects")
}

const ECHO_HEAD: &str = "POST /api/echo HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n";

#[tokio::test]
async fn a_slow_header_or_silence_is_closed_within_the_header_timeout() {
    let gw = spawn_gateway(&[
        ("HEADER_READ_TIMEOUT_MS", "300"),
        ("IDLE_TIMEOUT_MS", "10000"),
    ])
    .await;

    // Half a request line, then nothing.
    let mut slow = connect(gw.addr).await;
    slow.write_all(b"GET /health HT").await.unwrap();
    // Not a byte: the connection is still deciding between HTTP/1 and HTTP/2.
    let mut silent = connect(gw.addr).await;
    // A complete request line and one header, never the blank line.
    let mut partial = connect(gw.addr).await;
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: gw\r\n")
        .await
        .unwrap();

    // Served once, then kept alive with nothing more: on HTTP/1 hyper runs the header timer
    // while it waits for the next request, so this closes at the header timeout, before idle.
    let mut kept = connect(gw.addr).await;
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let (_, after) = read_until_closed(&mut kept, Duration::from_secs(3)).await;
    assert!(
        after < Duration::from_millis(1500),
        "closed after {after:?}"
    );

    for stream in [&mut slow, &mut silent, &mut partial] {
        let (received, after) = read_until_closed(stream, Duration::from_secs(3)).await;
        assert!(
            after < Duration::from_millis(1500),
            "closed after {after:?}"
        );
        assert!(
            !String::from_utf8_lossy(&received).contains("200 OK"),
            "never served"
        );
    }

    // A prompt client is unaffected.
    assert_eq!(gw.get_text(&http(), "/health").await, r#"{"status":"ok"}"#);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_never_holds_an_admission_slot() {
    // One worker, no queue: a slot held by a trickling client would shed everyone else.
    let gw = spawn_gateway(&[
        ("MAX_CCU", "1"),
        ("UTILIZATION", "100"),
        ("BODY_READ_TIMEOUT_MS", "500"),
        ("HEADER_READ_TIMEOUT_MS", "5000"),
    ])
    .await;
    let client = http();

    // Three clients send their headers and 4 of the 20 body bytes, then stall (the issue's case).
    let mut trickles = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(gw.addr).await;
        stream.write_all(ECHO_HEAD.as_bytes()).await.unwrap();
        stream.write_all(br#"{"a""#).await.unwrap();
        trickles.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // While they stall, a normal request is admitted at once: none of them took the one slot.
    let started = Instant::now();
    let response = client
        .post(gw.url("/api/echo"))
        .header("content-type", "application/json")
        .body(r#"{"ok":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "admitted while three bodies trickle"
    );
    assert!(started.elapsed() < Duration::from_millis(400));
    let metrics = gw.get_json(&client, "/api/metrics").await;
    assert_eq!(
        (metrics["inflight"].as_u64(), metrics["queued"].as_u64()),
        (Some(1), Some(0)),
        "{metrics}"
    );

    // Each stalled one gets 408 `request_timeout` within the body timeout, then the close.
    for stream in &mut trickles {
        let (received, after) = read_until_closed(stream, Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains(r#""code":"request_timeout""#), "{text}");
        assert!(text.contains("BODY_READ_TIMEOUT_MS"), "{text}");
        assert!(
            after < Duration::from_millis(1500),
            "answered after {after:?}"
        );
    }

    // Nothing is left in flight or queued, and the next request is admitted.
    let metrics = gw.get_json(&client, "/api/metrics").await;
    assert_eq!(metrics["queued"], 0, "{metrics}");
    assert_eq!(
        metrics["inflight"], 1,
        "only this /api/metrics request: {metrics}"
    );
    assert_eq!(metrics["shed_total"], 0, "{metrics}");
    let response = client
        .post(gw.url("/api/echo"))
        .header("content-type", "application/json")
        .body(r#"{"after":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), r#"{"after":1}"#);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_sent_in_pieces_within_the_timeout_is_served() {
    let gw = spawn_gateway(&[("BODY_READ_TIMEOUT_MS", "2000")]).await;
    let mut stream = connect(gw.addr).await;
    stream.write_all(ECHO_HEAD.as_bytes()).await.unwrap();
    for piece in [r#"{"piece":"#, r#""12345678"#, r#""}"#] {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(piece.as_bytes()).await.unwrap();
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with(r#"{"piece":"12345678"}"#), "{text}");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let gw = spawn_gateway(&[
        ("IDLE_TIMEOUT_MS", "400"),
        ("HEADER_READ_TIMEOUT_MS", "5000"),
    ])
    .await;
    let mut stream = connect(gw.addr).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Kept alive, then nothing: closed once idle for IDLE_TIMEOUT_MS, not before.
    let (received, after) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(received.is_empty());
    assert!(
        after >= Duration::from_millis(300) && after < Duration::from_millis(1500),
        "closed after {after:?}"
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn the_pprof_listener_closes_a_slow_header_too() {
    let gw = spawn_gateway(&[
        ("PPROF_ADDR", "127.0.0.1:0"),
        ("HEADER_READ_TIMEOUT_MS", "300"),
    ])
    .await;
    let pprof = gw.pprof_addr.expect("pprof listens");
    let mut slow = connect(pprof).await;
    slow.write_all(b"GET /debug/pprof/ HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let (received, after) = read_until_closed(&mut slow, Duration::from_secs(3)).await;
    assert!(
        received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    assert!(
        after < Duration::from_millis(1500),
        "closed after {after:?}"
    );
    // And it still serves a prompt client.
    let index = http()
        .get(format!("http://{pprof}/debug/pprof/"))
        .send()
        .await
        .unwrap();
    assert_eq!(index.status(), 200);
    gw.stop().await.unwrap();
}

/// `http_connections_refused_total{reason="per_ip_cap"}` as `/metrics` shows it.
/// `None` also when the request itself is refused (a connection still counted).
async fn refused_per_ip(gw: &testkit::TestGateway) -> Option<u64> {
    let response = http().get(gw.url("/metrics")).send().await.ok()?;
    let text = response.text().await.ok()?;
    text.lines()
        .find(|l| l.starts_with("http_connections_refused_total{") && l.contains("per_ip_cap"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn the_connection_past_max_conns_per_ip_is_refused_and_counted() {
    let gw = spawn_gateway(&[("MAX_CONNS_PER_IP", "2")]).await;
    assert_eq!(
        refused_per_ip(&gw).await,
        Some(0),
        "exported at 0 from the start"
    );
    // Wait until that /metrics connection is gone from the table.
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Two kept-alive connections, each served once (so both are accepted and counted).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(gw.addr).await;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    // The third is closed at once, unanswered.
    let mut third = connect(gw.addr).await;
    let _ = third
        .write_all(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await;
    let (received, after) = read_until_closed(&mut third, Duration::from_secs(2)).await;
    assert!(
        received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    assert!(after < Duration::from_millis(500), "closed after {after:?}");

    // One closes: there is room again, and the refusal was counted.
    drop(held.pop());
    let counted = wait_until(Duration::from_secs(3), || async {
        match tokio::time::timeout(Duration::from_millis(500), refused_per_ip(&gw)).await {
            Ok(count) => count == Some(1),
            Err(_) => false,
        }
    })
    .await;
    assert!(counted, "refusal counted: {:?}", refused_per_ip(&gw).await);
    drop(held);
    gw.stop().await.unwrap();
}
