//! `storm-writer`: reads the environment, builds the writer, consumes until SIGTERM/SIGINT.

use std::process::ExitCode;

use common::config::Lookup;
use writer::Config;

common::jemalloc_heap_profiling!();

#[tokio::main]
async fn main() -> ExitCode {
    common::server::main(
        "storm-writer",
        Config::from_lookup(&Lookup::from_env()),
        |config| config.common.log_format,
        writer::build,
    )
    .await
}
