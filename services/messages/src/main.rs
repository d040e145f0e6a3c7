//! `storm-messages`: reads the environment, builds the application, serves until SIGTERM/SIGINT.

use std::process::ExitCode;

use common::config::Lookup;
use messages::Config;

common::jemalloc_heap_profiling!();

#[tokio::main]
async fn main() -> ExitCode {
    common::server::main(
        "storm-messages",
        Config::from_lookup(&Lookup::from_env()),
        |config| config.common.log_format,
        messages::build,
    )
    .await
}
