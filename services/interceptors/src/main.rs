//! `storm-interceptors`: reads the environment, installs tracing (the OpenTelemetry layer the
//! tracing chain feeds), serves the five chains until SIGTERM/SIGINT, then flushes the spans.

use std::process::ExitCode;

use common::config::Lookup;
use interceptors::Config;
use interceptors::interceptor::trace;

common::jemalloc_heap_profiling!();

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::from_lookup(&Lookup::from_env());
    // Installed before common::server::main's own (which is then a no-op): the subscriber must
    // carry the OpenTelemetry layer from the first span on.
    let provider = match &config {
        Ok(config) => match trace::provider(config.otlp_endpoint.is_some()) {
            Ok(provider) => {
                trace::install(config.common.log_format, &provider);
                Some(provider)
            }
            Err(e) => {
                eprintln!("storm-interceptors: {e:#}");
                return ExitCode::from(2);
            }
        },
        Err(_) => None,
    };
    let code = common::server::main(
        "storm-interceptors",
        config,
        |config| config.common.log_format,
        interceptors::build,
    )
    .await;
    if let Some(provider) = provider {
        // The batch exporter's flush blocks on its own thread: keep it off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
    code
}
