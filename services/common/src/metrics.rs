//! Prometheus metrics: the process-wide recorder, the HTTP RED layer and the `/metrics` handler.
//!
//! The recorder is global (one per process), installed once; every histogram gets explicit
//! buckets so it renders as a Prometheus histogram rather than a summary, and an upkeep task keeps
//! the recorder's memory flat. Metric names follow Prometheus conventions (`_total` counters,
//! `_seconds` durations) and every family is described, so `promtool check metrics` is clean.
//! Route labels are templates (`/api/v1/events/{subject}`), never raw paths: label cardinality
//! must not grow with traffic.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: dense below 50 ms, where this stack's SLOs live.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Size buckets (batch sizes, frame counts).
pub const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder once per process (later calls return the same handle) with a
/// `service` label on every series, and starts the upkeep task on the current runtime.
pub fn install(service: &str) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .add_global_label("service", service)
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZE_BUCKETS)
                })
                .map(|b| b.build_recorder())
                .expect("static bucket lists are non-empty");
            let handle = recorder.handle();
            // A second recorder in the same process (tests building two services) keeps the first.
            let _ = metrics::set_global_recorder(recorder);
            describe_http();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawning the metrics upkeep thread");
            handle
        })
        .clone()
}

fn describe_http() {
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by method, route template and status."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency from first byte in to response headers out, by method, route template and status."
    );
    describe_gauge!(
        "process_start_time_seconds",
        Unit::Seconds,
        "Start time of the process since the Unix epoch."
    );
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    metrics::gauge!("process_start_time_seconds").set(start);
}

/// The RED middleware: one counter and one histogram sample per request.
pub async fn track_http(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    counter!("http_requests_total", &labels).increment(1);
    histogram!("http_request_duration_seconds", &labels).record(start.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`: the Prometheus text exposition format.
pub async fn render() -> Response {
    let body = HANDLE.get().map(|h| h.render()).unwrap_or_default();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}
