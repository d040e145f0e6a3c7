//! `storm-gateway`: reads the environment, builds the application, serves until SIGTERM/SIGINT.

use std::process::ExitCode;

use common::config::Lookup;
use gateway::{Application, Config};

common::jemalloc_heap_profiling!();

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_lookup(&Lookup::from_env()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("storm-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    common::telemetry::init(config.common.log_format);
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("storm-gateway: {e:#}");
            return ExitCode::from(1);
        }
    };
    app.shutdown().cancel_on_signal();
    let pprof = app
        .pprof_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "off".into());
    tracing::info!(addr = %app.local_addr(), pprof = %pprof, "storm-gateway listening");
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storm-gateway: {e:#}");
            ExitCode::from(1)
        }
    }
}
