//! Tracing: one OpenTelemetry server span per call, continuing the caller's W3C `traceparent`.
//!
//! The span is a `tracing` span turned into an OpenTelemetry span by `tracing-opentelemetry`; the
//! provider exports over OTLP/HTTP only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and otherwise
//! still builds and ends every span, so the cost measured on the tracing listener is the span's,
//! not an exporter's. The OpenTelemetry layer sees only this module's spans (target `rpc`), and
//! `RUST_LOG` does not filter it. The OTLP exporter is the blocking-reqwest one on the batch
//! processor's own thread: the async exporters panic there with "no reactor running"
//! (opentelemetry-rust#2673).

use std::sync::LazyLock;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;

use common::config::LogFormat;

/// The `tracing` target of the call spans, the only one the OpenTelemetry layer receives.
pub const SPAN_TARGET: &str = "rpc";

static PROPAGATOR: LazyLock<TraceContextPropagator> = LazyLock::new(TraceContextPropagator::new);

/// The tracer provider: with the OTLP/HTTP batch exporter when `otlp` (the endpoint is read from
/// `OTEL_EXPORTER_OTLP_ENDPOINT` by the exporter, with its standard `/v1/traces` suffix).
pub fn provider(otlp: bool) -> anyhow::Result<SdkTracerProvider> {
    let mut builder = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name("storm-interceptors")
            .build(),
    );
    if otlp {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// Installs the process's subscriber: the log lines (as every service) plus the OpenTelemetry
/// layer fed by `provider`. Call before anything logs; later installs are no-ops.
pub fn install(format: LogFormat, provider: &SdkTracerProvider) {
    common::telemetry::init_with(format, layer(provider));
}

/// The OpenTelemetry layer: this module's call spans, and nothing else, become spans of `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber
        + for<'span> tracing_subscriber::registry::LookupSpan<'span>
        + Send
        + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("storm-interceptors"))
        .with_filter(Targets::new().with_target(SPAN_TARGET, tracing::Level::INFO))
}

/// Middleware: `from_fn_with_state(listener_name, trace_call)`.
pub async fn trace_call(
    State(listener): State<&'static str>,
    request: Request,
    next: Next,
) -> Response {
    let parent = PROPAGATOR.extract(&HeaderExtractor(request.headers()));
    let path = request.uri().path();
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "rpc",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "connect_rpc",
        rpc.service = %service,
        rpc.method = %method,
        listener,
        http.response.status_code = Empty,
    );
    // Without the OpenTelemetry layer (a benchmark of the bare chain) there is nothing to parent.
    let _ = span.set_parent(parent);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}
