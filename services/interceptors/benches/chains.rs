//! The five chains without the network: one `SayHello` call through each listener's router,
//! in-process (`tower::ServiceExt::oneshot`), body read to the end. The difference between a chain
//! and the baseline is that chain's cost per call, free of sockets, the kernel and the load
//! generator. As in the running server, the OpenTelemetry layer is installed without an exporter
//! (spans are built and ended) and access lines are formatted as JSON — written to a sink here, so
//! the logger's number leaves out the write to stderr.
//!
//! `cargo bench -p storm-interceptors --bench chains`

use axum::body::{Body, to_bytes};
use axum::http::Request;
use interceptors::chains::{self, Chain};
use interceptors::config::ChainSettings;
use interceptors::interceptor::trace;
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

const CHAINS: [&str; 5] = ["baseline", "validation", "logger", "tracing", "full"];
const BODY: &str = r#"{"name":"Benchmark-micro-1"}"#;

fn main() {
    let provider = trace::provider(false).expect("a provider without exporter");
    let subscriber = tracing_subscriber::registry()
        .with(trace::layer(&provider))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(std::io::sink),
        );
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
    common::metrics::install("interceptors-bench");
    divan::main();
}

#[divan::bench(args = CHAINS, sample_count = 1000)]
fn say_hello(bencher: divan::Bencher, name: &str) {
    let chain = Chain::ALL
        .into_iter()
        .find(|c| c.name() == name)
        .expect("a chain");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let settings = ChainSettings {
        timeout: std::time::Duration::from_secs(5),
        max_concurrency: 10_000,
        compress_min_bytes: 1024,
    };
    let router = chains::router(chain, &settings);
    bencher.bench_local(|| {
        runtime.block_on(async {
            let request = Request::post("/greeter.v1.GreeterService/SayHello")
                .header("content-type", "application/json")
                .header("connect-protocol-version", "1")
                .header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
                .body(Body::from(BODY))
                .expect("a request");
            let response = router.clone().oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), 200);
            divan::black_box(to_bytes(response.into_body(), usize::MAX).await)
        })
    });
}
