//! Prometheus metrics: the process-wide recorder, the HTTP RED layer and the `/metrics` handler.
//!
//! The recorder is global (one per process), installed once; every histogram gets explicit
//! buckets so it renders as a Prometheus histogram rather than a summary, and an upkeep task keeps
//! the recorder's memory flat. Metric names follow Prometheus conventions (`_total` counters,
//! `_seconds` durations) and every family is described, so `promtool check metrics` is clean.
//! Route labels are templates (`/api/v1/events/{subject}`), never raw paths: label cardinality
//! must not grow with traffic.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    histogram,
};
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

/// Exports each counter at 0 from the start, before its first event: a dashboard or alert then
/// reads 0 rather than "no data", and `increase()`/`rate()` count the first event too (a series
/// that first appears at 1 loses that increment). One entry per series: a name and its labels.
pub fn register_counters(series: &[(&'static str, &[(&'static str, &'static str)])]) {
    for (name, labels) in series {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|&(key, value)| metrics::Label::new(key, value))
            .collect();
        counter!(*name, labels).increment(0);
    }
}

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
///
/// Resolving a labelled series in the recorder hashes and allocates its key, which at tens of
/// thousands of requests per second shows in the profile; each worker thread therefore keeps the
/// handles it has resolved, keyed by method, route template and status (a bounded set: unknown
/// methods are labelled `OTHER`, routes are templates).
pub async fn track_http(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let elapsed = start.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    HTTP_SERIES.with_borrow_mut(|cache| {
        let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
        let (counter, histogram) = cache.series(method, route, status);
        counter.increment(1);
        histogram.record(elapsed);
    });
    response
}

/// The method label: the standard methods by name, anything else `OTHER` (a client must not be
/// able to mint new series).
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map(|known| known.as_str())
        .unwrap_or("OTHER")
}

thread_local! {
    static HTTP_SERIES: RefCell<SeriesCache> = RefCell::default();
}

/// One thread's resolved `(counter, histogram)` pairs. The lookup key is built in a reused buffer,
/// so a hit allocates nothing.
#[derive(Default)]
struct SeriesCache {
    key: String,
    series: HashMap<String, (Counter, Histogram)>,
}

impl SeriesCache {
    fn series(&mut self, method: &'static str, route: &str, status: u16) -> &(Counter, Histogram) {
        use std::fmt::Write;
        self.key.clear();
        let _ = write!(self.key, "{method} {status} {route}");
        if !self.series.contains_key(self.key.as_str()) {
            let labels = [
                ("method", method.to_owned()),
                ("route", route.to_owned()),
                ("status", status.to_string()),
            ];
            let pair = (
                counter!("http_requests_total", &labels),
                histogram!("http_request_duration_seconds", &labels),
            );
            self.series.insert(self.key.clone(), pair);
        }
        &self.series[self.key.as_str()]
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_label_is_bounded() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let invented = Method::from_bytes(b"BREW").expect("a valid extension method");
        assert_eq!(method_label(&invented), "OTHER");
    }

    #[test]
    fn series_cache_reuses_handles_per_label_set() {
        let mut cache = SeriesCache::default();
        cache.series("GET", "/a", 200);
        cache.series("GET", "/a", 200);
        cache.series("GET", "/a", 404);
        cache.series("POST", "/a", 200);
        cache.series("GET", "/b", 200);
        assert_eq!(cache.series.len(), 4);
    }
}
