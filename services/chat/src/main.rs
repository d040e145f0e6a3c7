//! `storm-chat`: reads the environment, builds the application, serves until SIGTERM/SIGINT.

use std::process::ExitCode;

use chat::Config;
use common::config::Lookup;

common::jemalloc_heap_profiling!();

#[tokio::main]
async fn main() -> ExitCode {
    common::server::main(
        "storm-chat",
        Config::from_lookup(&Lookup::from_env()),
        |config| config.common.log_format,
        chat::build,
    )
    .await
}
