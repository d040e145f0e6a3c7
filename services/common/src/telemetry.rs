//! Logging: one JSON object per line (or pretty text), filtered by `RUST_LOG`.
//!
//! Installing twice is harmless (tests build several apps in one process). The request id comes
//! from the `x-request-id` layer (see `server::http_layers`) and is attached to the request span,
//! so every line a handler logs carries it.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A closed stderr (a log pipe that went away) must not turn logging into panics.
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
