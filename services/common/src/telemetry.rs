//! Logging: one JSON object per line (or pretty text), filtered by `RUST_LOG`.
//!
//! Installing twice is harmless (tests build several apps in one process). The request id comes
//! from the `x-request-id` layer (see `server::http_layers`) and is attached to the request span,
//! so every line a handler logs carries it. A service may add one layer of its own (the
//! interceptor server's OpenTelemetry layer); `RUST_LOG` filters the log lines only, never that
//! layer, so raising the log level does not change what a benchmark of it measures.

use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    init_with(format, tracing_subscriber::layer::Identity::new());
}

/// `init` with `extra` beside the log layer.
pub fn init_with<L>(format: LogFormat, extra: L)
where
    L: Layer<Registry> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // A closed stderr (a log pipe that went away) must not turn logging into panics.
        .log_internal_errors(false);
    let log = match format {
        LogFormat::Json => log
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => log.with_filter(filter).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(extra)
        .with(log)
        .try_init();
}
