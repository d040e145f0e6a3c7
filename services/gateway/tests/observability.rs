//! pprof and metrics through the real listeners: a CPU profile and a heap profile that parse as
//! gzipped profile.proto, one CPU profile at a time, and a Prometheus exposition with the families
//! SPEC names.

use std::io::Read;
use std::time::Duration;

use pprof::protos::Message;
use testkit::{WsClient, http, spawn_gateway, token};

common::jemalloc_heap_profiling!();

fn decode_profile(gzipped: &[u8]) -> pprof::protos::Profile {
    assert_eq!(&gzipped[..2], &[0x1f, 0x8b], "gzip magic");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gzipped)
        .read_to_end(&mut raw)
        .unwrap();
    pprof::protos::Profile::decode(raw.as_slice()).expect("a profile.proto message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_heap_profiles_parse_and_cpu_profiles_are_exclusive() {
    let gw = spawn_gateway(&[("PPROF_ADDR", "127.0.0.1:0")]).await;
    let pprof = format!("http://{}", gw.pprof_addr.expect("pprof listener"));
    let client = http();

    let index = client
        .get(format!("{pprof}/debug/pprof/"))
        .send()
        .await
        .unwrap();
    assert_eq!(index.status(), 200);
    assert!(index.text().await.unwrap().contains("profile"));

    let first = tokio::spawn({
        let (client, url) = (
            client.clone(),
            format!("{pprof}/debug/pprof/profile?seconds=2"),
        );
        async move { client.get(url).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = client
        .get(format!("{pprof}/debug/pprof/profile?seconds=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 409, "one CPU profile at a time");
    // Burn some CPU so the profile has samples.
    let burn = std::thread::spawn(|| {
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(1500) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        x
    });
    let response = first.await.unwrap();
    burn.join().unwrap();
    assert_eq!(response.status(), 200);
    let cpu = decode_profile(&response.bytes().await.unwrap());
    assert!(!cpu.sample_type.is_empty());
    assert!(!cpu.sample.is_empty(), "the CPU profile has samples");

    for bad in ["seconds=0", "seconds=99999", "seconds=abc"] {
        let r = client
            .get(format!("{pprof}/debug/pprof/profile?{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }

    let heap = client
        .get(format!("{pprof}/debug/pprof/heap"))
        .send()
        .await
        .unwrap();
    assert_eq!(heap.status(), 200, "heap profiling is on in this binary");
    let heap = decode_profile(&heap.bytes().await.unwrap());
    assert!(!heap.sample.is_empty(), "the heap profile has samples");
    // Symbolized in the process, and flagged so: `go tool pprof` must not symbolize the binary
    // again (minutes on a debug build).
    let main = &heap.mapping[0];
    assert!(
        main.has_functions && main.has_line_numbers,
        "the binary's mapping is flagged symbolized: {main:?}"
    );

    let svg = client
        .get(format!("{pprof}/debug/pprof/flamegraph?seconds=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(svg.status(), 200);
    assert!(svg.text().await.unwrap().contains("<svg"));
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_expose_the_spec_families() {
    let gw = spawn_gateway(&[("MAX_CCU", "1"), ("UTILIZATION", "100")]).await;
    let client = http();
    let tok = token("m");
    let mut ws = WsClient::connect(&gw.ws_url("/api/v1/ws?subscribe=metrics.test"), Some(&tok))
        .await
        .unwrap();
    let response = gw.publish(&client, &tok, "metrics.test", "{}").await;
    assert_eq!(response.status(), 202);
    ws.next_json(Duration::from_secs(5)).await;
    let text = gw.get_text(&client, "/metrics").await;
    for family in [
        "# TYPE http_requests_total counter",
        "# TYPE http_request_duration_seconds histogram",
        "# TYPE gateway_ws_connections gauge",
        "# TYPE gateway_ws_frames_sent_total counter",
        "# TYPE gateway_pubsub_messages_in_total counter",
        "# TYPE admission_inflight gauge",
        "# TYPE admission_queued gauge",
        "# TYPE admission_admitted_total counter",
        "# TYPE gateway_events_published_total counter",
    ] {
        assert!(text.contains(family), "missing {family:?}");
    }
    // Counters of things that have not happened yet are exported at 0, not missing.
    for zero in [
        r#"admission_shed_total{service="gateway"} 0"#,
        r#"gateway_ws_slow_consumer_closes_total{service="gateway"} 0"#,
        r#"gateway_ws_rejected_total{service="gateway"} 0"#,
        r#"gateway_pubsub_disconnects_total{service="gateway"} 0"#,
        r#"gateway_upstream_errors_total{service="gateway",kind="timeout"} 0"#,
    ] {
        assert!(
            text.lines().any(|line| line == zero),
            "missing {zero:?} in\n{text}"
        );
    }
    assert!(
        text.contains(r#"route="/api/v1/events/{subject}",status="202""#),
        "route label is the template"
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_fresh_gateway_exports_its_gauges_and_counters_at_zero() {
    let gw = spawn_gateway(&[]).await;
    let text = gw.get_text(&http(), "/metrics").await;
    for zero in [
        r#"gateway_ws_connections{service="gateway"} 0"#,
        r#"gateway_pubsub_subscriptions{service="gateway"} 0"#,
        r#"gateway_ws_frames_sent_total{service="gateway"} 0"#,
        r#"admission_shed_total{service="gateway"} 0"#,
    ] {
        assert!(
            text.lines().any(|line| line == zero),
            "missing {zero:?} in\n{text}"
        );
    }
    gw.stop().await.unwrap();
}
