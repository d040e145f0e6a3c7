//! The generator against real servers on port 0: a real gateway (with real Redis) for counts, the
//! JSON schema and fan-out truth, and a deliberately slow in-process server for coordinated
//! omission. These are correctness tests — small rates, short runs, no performance assertion.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use loadgen::chat::ChatConfig;
use loadgen::cli::Run;
use loadgen::engine::HttpConfig;
use loadgen::target::Target;
use loadgen::ws::WsConfig;
use loadgen::{Report, execute};
use serde_json::Value;

fn http_config(url: &str, rate: Option<f64>, connections: usize, duration: Duration) -> HttpConfig {
    HttpConfig {
        target: Target::parse(url).unwrap(),
        method: Method::GET,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        rate,
        connections,
        duration,
        timeout: Duration::from_secs(5),
        progress: None,
    }
}

async fn run(run: Run) -> Report {
    execute(run, "storm-loadgen (test)".into()).await.unwrap()
}

fn ws_config(base: &str, subscribers: usize, subjects: usize, rate: f64, secs: u64) -> WsConfig {
    WsConfig {
        target: Target::parse(base).unwrap(),
        subscribers,
        subjects,
        rate,
        duration: Duration::from_secs(secs),
        publish_connections: 4,
        connect_concurrency: 64,
        drain: Duration::from_secs(3),
        timeout: Duration::from_secs(5),
        token: testkit::token("loadgen-test"),
        payload_bytes: 0,
        read_delay: Duration::ZERO,
        progress: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_sends_rate_times_duration_to_a_real_gateway_and_reports_them() {
    let gateway = testkit::spawn_gateway(&[]).await;
    let mut config = http_config(
        &gateway.url("/api/echo"),
        Some(400.0),
        8,
        Duration::from_secs(3),
    );
    config.method = Method::POST;
    config
        .headers
        .insert("content-type", HeaderValue::from_static("application/json"));
    config.body = Bytes::from_static(br#"{"hello":"loadgen"}"#);
    let Report::Http(report) = run(Run::Http(config)).await else {
        panic!("http report expected")
    };
    assert_eq!(report.requests.scheduled, Some(1200));
    let sent = report.requests.sent as f64;
    assert!(
        (sent - 1200.0).abs() <= 12.0,
        "sent {sent}, expected 1200 ±1 %"
    );
    assert_eq!(report.requests.not_sent, 0);
    assert_eq!(
        report.status.c2xx, report.requests.sent,
        "{:?}",
        report.status_codes
    );
    assert_eq!(report.errors.total(), 0);
    assert_eq!(report.latency_ms.count, report.requests.sent);
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.p50 <= report.latency_ms.p99);
    assert!(report.send_lag_ms.is_some());
    assert!(
        report.shed_latency_ms.is_none() && report.admitted_latency_ms.is_none(),
        "nothing was shed, so no split"
    );

    // The JSON schema scripts rely on (scripts/run-all.sh, BASELINES.md).
    let json: Value = serde_json::to_value(Report::Http(report)).unwrap();
    for key in [
        "schema",
        "kind",
        "command",
        "started_at",
        "elapsed_s",
        "machine",
        "generator",
        "config",
        "requests",
        "status",
        "status_codes",
        "errors",
        "error_rate",
        "throughput_rps",
        "latency_ms",
        "service_time_ms",
        "send_lag_ms",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json:#}");
    }
    assert_eq!(json["schema"], "storm-loadgen/1");
    assert_eq!(json["kind"], "http");
    assert_eq!(json["config"]["model"], "open");
    for key in [
        "cpu_model",
        "cores",
        "memory_bytes",
        "kernel",
        "hostname",
        "commit",
    ] {
        assert!(json["machine"].get(key).is_some(), "machine.{key} missing");
    }
    for key in ["2xx", "4xx", "5xx"] {
        assert!(json["status"][key].is_u64(), "status.{key}");
    }
    for key in ["connect", "timeout", "reset", "other"] {
        assert!(json["errors"][key].is_u64(), "errors.{key}");
    }
    for key in [
        "count", "min", "mean", "stdev", "max", "p50", "p75", "p90", "p95", "p99", "p99_9",
        "p99_99",
    ] {
        assert!(json["latency_ms"][key].is_number(), "latency_ms.{key}");
    }
    let spectrum = json["latency_ms"]["spectrum"].as_array().unwrap();
    assert!(spectrum.len() > 10);
    assert_eq!(spectrum.last().unwrap()["percentile"], 100.0);
    assert!(spectrum[0].get("ms").is_some() && spectrum[0].get("count").is_some());
    gateway.stop().await.unwrap();
}

/// Serves `app` on a free loopback port; returns its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/")
}

/// A server that answers every request after `delay`.
async fn slow_server(delay: Duration) -> String {
    serve(Router::new().route(
        "/",
        get(move || async move {
            tokio::time::sleep(delay).await;
            "slow"
        }),
    ))
    .await
}

/// A server that sheds every other request with an immediate 503 and answers the rest after
/// `delay` — admission control as the S3 gateway does it, with known latencies on each side.
async fn shedding_server(delay: Duration) -> String {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let calls = Arc::new(AtomicU64::new(0));
    let app = Router::new().route(
        "/",
        get(move || {
            let calls = calls.clone();
            async move {
                if calls.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
                    (http::StatusCode::SERVICE_UNAVAILABLE, "overloaded")
                } else {
                    tokio::time::sleep(delay).await;
                    (http::StatusCode::OK, "admitted")
                }
            }
        }),
    );
    serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shed_503s_get_their_own_latency_apart_from_the_admitted_answers() {
    let url = shedding_server(Duration::from_millis(30)).await;
    let Report::Http(report) = run(Run::Http(http_config(
        &url,
        Some(100.0),
        8,
        Duration::from_secs(2),
    )))
    .await
    else {
        panic!("http report expected")
    };
    let shed = report.shed_latency_ms.as_ref().expect("503s were answered");
    let admitted = report.admitted_latency_ms.as_ref().expect("split present");
    assert_eq!(shed.count, report.status_codes["503"]);
    assert_eq!(admitted.count, report.status_codes["200"]);
    assert_eq!(shed.count + admitted.count, report.latency_ms.count);
    assert!(
        shed.count >= 90 && admitted.count >= 90,
        "{shed:?} {admitted:?}"
    );
    assert!(
        admitted.p50 >= 30.0,
        "admitted answers wait 30 ms: {admitted:?}"
    );
    assert!(
        shed.p50 < admitted.p50,
        "the refusals are not held back: {shed:?} vs {admitted:?}"
    );
    let lines = report.lines().join("\n");
    assert!(
        lines.contains("shed (503)") && lines.contains("admitted"),
        "{lines}"
    );
    let json: Value = serde_json::to_value(Report::Http(report)).unwrap();
    assert!(json["shed_latency_ms"]["p95"].is_number());
    assert!(json["admitted_latency_ms"]["p95"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_charges_queueing_to_latency_and_closed_model_hides_it() {
    // One connection, 50 ms per response: it can do 20/s; the timetable asks for 100/s.
    let url = slow_server(Duration::from_millis(50)).await;
    let Report::Http(open) = run(Run::Http(http_config(
        &url,
        Some(100.0),
        1,
        Duration::from_secs(2),
    )))
    .await
    else {
        panic!("http report expected")
    };
    let Report::Http(closed) = run(Run::Http(http_config(
        &url,
        None,
        1,
        Duration::from_secs(2),
    )))
    .await
    else {
        panic!("http report expected")
    };
    // Service time is the server's 50 ms in both models.
    assert!(
        (45.0..120.0).contains(&open.service_time_ms.p50),
        "{:?}",
        open.service_time_ms.p50
    );
    assert!(
        (45.0..120.0).contains(&closed.latency_ms.p50),
        "{:?}",
        closed.latency_ms.p50
    );
    // The open model's latency includes the wait for the busy connection: request k starts at
    // ~k × 50 ms although intended at k × 10 ms, so the median is hundreds of ms.
    assert!(
        open.latency_ms.p50 > 4.0 * open.service_time_ms.p50,
        "latency p50 {} vs service p50 {}",
        open.latency_ms.p50,
        open.service_time_ms.p50
    );
    assert!(open.latency_ms.max > 1000.0, "max {}", open.latency_ms.max);
    // The requests the connection never got to are reported, not silently dropped.
    assert_eq!(open.requests.scheduled, Some(200));
    assert!(open.requests.not_sent > 100, "{:?}", open.requests);
    assert_eq!(open.requests.sent + open.requests.not_sent, 200);
    assert_eq!(closed.requests.scheduled, None);
    assert!(
        closed.latency_ms.p99 < 200.0,
        "closed p99 {}",
        closed.latency_ms.p99
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_ends_on_time_even_when_the_server_never_answers() {
    let url = slow_server(Duration::from_secs(3600)).await;
    let mut config = http_config(&url, Some(50.0), 4, Duration::from_secs(1));
    config.timeout = Duration::from_millis(500);
    let started = Instant::now();
    let Report::Http(report) = run(Run::Http(config)).await else {
        panic!("http report expected")
    };
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert!(report.errors.timeout > 0);
    assert_eq!(report.status.c2xx, 0);
    assert_eq!(report.error_rate, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_fan_out_through_a_real_gateway_loses_nothing_when_healthy() {
    let gateway = testkit::spawn_gateway(&[]).await;
    let config = ws_config(&gateway.url(""), 60, 3, 150.0, 2);
    let Report::Ws(report) = run(Run::Ws(config)).await else {
        panic!("ws report expected")
    };
    assert_eq!(report.connect.opened, 60);
    assert_eq!(report.publish.scheduled, 300);
    assert_eq!(report.publish.accepted, 300, "{:?}", report.publish);
    // 300 events over 3 subjects, 20 subscribers each: 100 × 20 × 3 frames.
    assert_eq!(report.frames.expected, 6000);
    assert_eq!(report.frames.delivered, 6000, "{:?}", report.frames);
    assert_eq!(report.frames.lost, 0);
    assert_eq!(report.frames.duplicated, 0);
    assert_eq!(report.frames.unparsed, 0);
    assert_eq!(report.delivery_latency_ms.count, 6000);
    assert_eq!(report.closed_by_server.count, 0);
    assert!(report.frames.frames_per_s > 0.0);
    let json = serde_json::to_value(Report::Ws(report)).unwrap();
    for key in [
        "config",
        "connect",
        "publish",
        "frames",
        "delivery_latency_ms",
        "closed_by_server",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert_eq!(json["kind"], "ws");
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_reports_the_loss_when_the_gateway_closes_slow_consumers() {
    // A 2-frame queue per socket, 60 kB frames at 100/s (6 MB/s) and subscribers that read 50
    // frames/s: once the socket buffers are full the gateway closes them (1013), and everything
    // published after that is lost for them.
    let gateway = testkit::spawn_gateway(&[("WS_SEND_QUEUE", "2")]).await;
    let mut config = ws_config(&gateway.url(""), 4, 1, 100.0, 3);
    config.payload_bytes = 60_000;
    config.read_delay = Duration::from_millis(20);
    config.drain = Duration::from_secs(1);
    let Report::Ws(report) = run(Run::Ws(config)).await else {
        panic!("ws report expected")
    };
    assert_eq!(report.publish.accepted, 300, "{:?}", report.publish);
    assert!(
        report
            .closed_by_server
            .codes
            .get("1013")
            .is_some_and(|n| *n > 0),
        "{:?}",
        report.closed_by_server
    );
    assert!(report.frames.lost > 0, "{:?}", report.frames);
    assert!(report.frames.subscribers_with_loss > 0);
    assert_eq!(
        report.frames.delivered + report.frames.lost,
        report.frames.expected
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibrate_measures_a_ceiling() {
    let config = loadgen::calibrate::CalibrateConfig {
        url: None,
        connections: 4,
        sockets: 4,
        duration: Duration::from_millis(500),
    };
    let Report::Calibrate(report) = run(Run::Calibrate(config)).await else {
        panic!("calibrate report expected")
    };
    assert!(report.http.throughput_rps > 100.0, "{:?}", report.http);
    assert!(report.ws.frames_per_s > 1000.0, "{:?}", report.ws);
}

#[test]
fn the_binary_refuses_bad_arguments_with_one_line_and_status_2() {
    let bin = env!("CARGO_BIN_EXE_storm-loadgen");
    for args in [
        &["http", "--url", "http://127.0.0.1:1/", "--rate", "0"][..],
        &[
            "http",
            "--url",
            "http://127.0.0.1:1/",
            "--rate",
            "10",
            "--duration",
            "-1s",
        ],
        &["http", "--url", "http://example.com/", "--rate", "10"],
        &[
            "http",
            "--url",
            "http://127.0.0.1:1/",
            "--rate",
            "10",
            "--body-file",
            "/no/such/file",
        ],
        &["ws", "--url", "http://8.8.8.8:80", "--subscribers", "1"],
    ] {
        let output = std::process::Command::new(bin).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(output.stdout.is_empty());
    }
    let output = std::process::Command::new(bin)
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("calibrate"));
    // A target that is not running: the run cannot happen → 1.
    let output = std::process::Command::new(bin)
        .args([
            "http",
            "--url",
            "http://127.0.0.1:1/",
            "--rate",
            "10",
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
}

/// A chat service and a writer on port 0 (their own database, queue and Redis keys).
async fn chat_stack() -> (testkit::TestChat, testkit::TestWriter) {
    let chat = testkit::spawn_chat(&[]).await;
    let writer = testkit::spawn_writer(&chat.writer_vars()).await;
    (chat, writer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_mode_accounts_for_every_write_to_a_real_chat_service() {
    let (chat, writer) = chat_stack().await;
    let accepted = std::env::temp_dir().join(format!("{}.accepted", testkit::unique("loadgen")));
    let config = ChatConfig {
        target: Target::parse(&chat.url("")).unwrap(),
        writes: 40.0,
        reads: 80.0,
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(500),
        warmup_percent: 50.0,
        workers: 6,
        chats_per_app: 2,
        per_page: 10,
        timeout: Duration::from_secs(5),
        progress: None,
        accepted: Some(accepted.clone()),
        fail_exit: true,
    };
    let Report::Chat(report) = run(Run::Chat(config)).await else {
        panic!("chat report expected")
    };
    // Phase 1: 6 users × 1 application × 2 chats; the 6 connections split by the warm-up's
    // measurements, at least one each.
    assert_eq!(
        (report.setup.users, report.setup.chats),
        (6, 12),
        "{:?}",
        report.setup
    );
    let (w, r) = (report.writes.connections, report.reads.connections);
    assert!(w >= 1 && r >= 1 && w + r == 6, "{w} + {r} connections");
    // Phase 3: the whole timetable, every answer a 2xx.
    for (op, scheduled) in [(&report.writes, 80), (&report.reads, 160)] {
        assert_eq!(
            (op.scheduled, op.total, op.not_sent),
            (scheduled, scheduled, 0),
            "{op:?}"
        );
        assert_eq!(op.succeeded, op.total, "{:?}", op.status_codes);
        assert!(op.failures.is_empty(), "{:?}", op.failures);
        assert_eq!(op.latency_ms.count, scheduled);
        assert!(op.pass && op.pass_source_bar);
    }
    assert!(report.pass);
    assert_eq!(report.writes.status_codes["202"], 80);
    for endpoint in ["list_chats", "list_messages"] {
        assert_eq!(report.read_endpoints[endpoint].count, 80, "{endpoint}");
    }
    // Every 202 of the warm-up (40/s × 50 % × 0.5 s = 10 writes) and the test is one line of the
    // accepted list …
    let warmup = report.warmup.as_ref().expect("a warm-up ran");
    assert_eq!(warmup.writes, 10);
    assert_eq!(report.accepted.count, 90);
    assert_eq!(report.accepted.refused, 0);
    let text = std::fs::read_to_string(&accepted).unwrap();
    let mut by_chat: std::collections::BTreeMap<(String, i64), Vec<i32>> = Default::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 3, "{line}");
        by_chat
            .entry((fields[0].to_string(), fields[1].parse().unwrap()))
            .or_default()
            .push(fields[2].parse().unwrap());
    }
    assert_eq!(by_chat.values().map(Vec::len).sum::<usize>(), 90);
    // … and, once the writer has caught up, exactly one row.
    let pool = chat.database().await;
    for ((app, number), mut numbers) in by_chat {
        numbers.sort_unstable();
        let stored = testkit::wait_until(Duration::from_secs(10), || {
            let (pool, app, numbers) = (pool.clone(), app.clone(), numbers.clone());
            async move { testkit::chat_api::stored_numbers(&pool, &app, number).await == numbers }
        })
        .await;
        assert!(
            stored,
            "chat {app}/{number}: rows differ from the 202s {numbers:?}"
        );
    }
    // The result block says what the machine's CPU per request was (or why it was not measured).
    assert!(
        report.lines().iter().any(|l| l.starts_with("CPU: ")),
        "{:#?}",
        report.lines()
    );
    let json: Value = serde_json::to_value(Report::Chat(report)).unwrap();
    assert_eq!(json["schema"], "storm-loadgen/1");
    assert_eq!(json["kind"], "chat");
    for path in [
        "/writes/throughput_rps",
        "/writes/success_rate",
        "/writes/latency_ms/p99",
        "/reads/throughput_rps",
        "/reads/latency_ms/p99",
        "/reads/not_sent",
        "/accepted/count",
        "/config/write_connections",
    ] {
        assert!(
            json.pointer(path).is_some_and(Value::is_number),
            "{path} in {json:#}"
        );
    }
    assert_eq!(json["pass"], true);
    // The measured window's CPU (Linux: from /proc): every answered request of Phase 3, the
    // machine's figure and each group's share, the generator's beside it.
    if std::path::Path::new("/proc/stat").exists() {
        let cpu = &json["cpu"];
        assert_eq!(cpu["requests"], 240, "{cpu:#}");
        for field in [
            "cores",
            "clock_ticks_per_s",
            "window_s",
            "machine_busy_s",
            "machine_cpu_percent",
            "idle_percent",
            "us_per_request",
            "generator_us_per_request",
            "generator_cpu_percent",
        ] {
            assert!(cpu[field].is_number(), "{field} in {cpu:#}");
        }
        for group in [
            "chat",
            "writer",
            "postgres",
            "rabbitmq",
            "redis",
            "generator",
        ] {
            let share = &cpu["processes"][group];
            assert!(
                share["cpu_percent"].is_number()
                    && share["us_per_request"].is_number()
                    && share["pids"].is_array(),
                "{group} in {cpu:#}"
            );
        }
        assert!(cpu["other"]["us_per_request"].is_number(), "{cpu:#}");
        assert!(cpu["window_s"].as_f64().unwrap() >= 2.0, "{cpu:#}");
    }
    let _ = std::fs::remove_file(&accepted);
    let _ = std::fs::remove_file(format!("{}.refused", accepted.display()));
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_exits_1_on_fail_unless_told_not_to() {
    let (chat, writer) = chat_stack().await;
    let bin = env!("CARGO_BIN_EXE_storm-loadgen");
    let url = chat.url("");
    // Two connections, one request in flight each, cannot keep 2,000 writes/s: FAIL.
    let args = [
        "chat",
        "--url",
        url.as_str(),
        "--writes",
        "2000",
        "--reads",
        "10",
        "--duration",
        "1s",
        "--warmup",
        "0",
        "--workers",
        "2",
        "--chats-per-app",
        "1",
    ];
    for (extra, expected) in [(None, 1), (Some("--no-fail-exit"), 0)] {
        let output = tokio::process::Command::new(bin)
            .args(args)
            .args(extra)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(expected), "{extra:?}: {stdout}");
        assert!(stdout.contains("  Overall: ✗ FAIL"), "{stdout}");
        assert!(stdout.contains("Phase 3: Performance Test..."), "{stdout}");
        assert!(stdout.contains("  Not sent:     "), "{stdout}");
    }
    writer.stop().await.unwrap();
    chat.stop().await.unwrap();
    // The service is gone: the test cannot run → 1, one line.
    let output = std::process::Command::new(bin)
        .args(["chat", "--url", "http://127.0.0.1:1", "--duration", "1s"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}
