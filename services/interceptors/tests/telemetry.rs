//! The tracing and logger interceptors, observed: the span each call leaves (through an in-memory
//! span exporter behind the same OpenTelemetry layer `main` installs) and the access-log line.
//! Own test binary: the subscriber is process-wide.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use interceptors::Chain;
use interceptors::interceptor::trace;
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use support::{SAY_HELLO, Server, call};
use tracing_subscriber::layer::SubscriberExt;

struct Telemetry {
    spans: InMemorySpanExporter,
    logs: Arc<Mutex<Vec<u8>>>,
    _provider: SdkTracerProvider,
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        let spans = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(logs.clone());
        let subscriber = tracing_subscriber::registry()
            .with(trace::layer(&provider))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(move || writer.clone()),
            );
        tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
        Telemetry {
            spans,
            logs,
            _provider: provider,
        }
    })
}

async fn spans_of(trace_id: TraceId) -> Vec<SpanData> {
    for _ in 0..100 {
        let spans = spans_of_now(trace_id);
        if !spans.is_empty() {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Vec::new()
}

fn access_lines() -> Vec<serde_json::Value> {
    let logs = telemetry().logs.lock().unwrap().clone();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "access")
        .collect()
}

#[tokio::test]
async fn the_tracing_listener_continues_an_incoming_traceparent() {
    telemetry();
    let server = Server::start(&[]).await;
    let client = reqwest::Client::new();
    let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let parent = SpanId::from_hex("00f067aa0ba902b7").unwrap();
    let response = call(
        &client,
        server.url(Chain::Tracing, SAY_HELLO),
        r#"{"name":"t"}"#,
    )
    .header(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let spans = spans_of(trace_id).await;
    assert_eq!(spans.len(), 1, "one span per call: {spans:?}");
    let span = &spans[0];
    assert_eq!(
        span.parent_span_id, parent,
        "the caller's span is the parent"
    );
    assert!(span.parent_span_is_remote);
    assert_ne!(span.span_context.span_id(), parent, "a span of its own");
    assert_eq!(span.span_kind, SpanKind::Server);
    assert_eq!(span.name, "greeter.v1.GreeterService/SayHello");
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attribute("rpc.method").as_deref(), Some("SayHello"));
    assert_eq!(attribute("listener").as_deref(), Some("tracing"));
    assert_eq!(
        attribute("http.response.status_code").as_deref(),
        Some("200")
    );
    server.stop().await;
}

#[tokio::test]
async fn the_full_chain_traces_too_and_untraced_listeners_do_not() {
    telemetry();
    let server = Server::start(&[]).await;
    let client = reqwest::Client::new();
    let traced = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
    call(
        &client,
        server.url(Chain::Full, SAY_HELLO),
        r#"{"name":"t"}"#,
    )
    .header(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(spans_of(traced).await.len(), 1);
    let untraced = TraceId::from_hex("11111111111111111111111111111111").unwrap();
    for chain in [Chain::Baseline, Chain::Validation, Chain::Logger] {
        call(&client, server.url(chain, SAY_HELLO), r#"{"name":"t"}"#)
            .header(
                "traceparent",
                "00-11111111111111111111111111111111-2222222222222222-01",
            )
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        spans_of_now(untraced).is_empty(),
        "no span on chains without tracing"
    );
    server.stop().await;
}

fn spans_of_now(trace_id: TraceId) -> Vec<SpanData> {
    telemetry()
        .spans
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace_id)
        .collect()
}

#[tokio::test]
async fn the_logger_writes_one_access_line_per_call() {
    telemetry();
    let server = Server::start(&[]).await;
    let client = reqwest::Client::new();
    for (chain, id) in [
        (Chain::Logger, "log-ok"),
        (Chain::Baseline, "base-1"),
        (Chain::Logger, "log-bad"),
    ] {
        let body = if id == "log-bad" {
            "{"
        } else {
            r#"{"name":"l"}"#
        };
        call(&client, server.url(chain, SAY_HELLO), body)
            .header("x-request-id", id)
            .send()
            .await
            .unwrap();
    }
    let lines = access_lines();
    let of = |id: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|l| l["request_id"] == id).collect()
    };
    let ok = of("log-ok");
    assert_eq!(ok.len(), 1, "one line per call: {lines:?}");
    assert_eq!(ok[0]["listener"], "logger");
    assert_eq!(ok[0]["procedure"], SAY_HELLO);
    assert_eq!(ok[0]["status"], 200);
    assert!(ok[0]["duration_us"].as_u64().is_some());
    assert_eq!(of("log-bad")[0]["status"], 400, "failures are logged too");
    assert!(of("base-1").is_empty(), "the baseline does not log");
    // The full chain logs with the id it generated when the caller sent none.
    call(
        &client,
        server.url(Chain::Full, SAY_HELLO),
        r#"{"name":"l"}"#,
    )
    .send()
    .await
    .unwrap();
    assert!(
        access_lines()
            .iter()
            .any(|l| l["listener"] == "full" && l["request_id"].as_str().unwrap().len() == 36),
        "full chain line carries the generated request id"
    );
    server.stop().await;
}
