//! `storm-loadgen`: parse, validate (exit 2 on bad arguments), run on a multi-threaded runtime
//! (exit 1 if the run could not happen, or a `chat` run ended in FAIL), print the result block
//! and write `--json`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let (run, output) = match loadgen::cli::parse(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err((0, text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err((status, line)) => {
            eprintln!("{line}");
            return ExitCode::from(status as u8);
        }
    };
    let fd_limit = loadgen::machine::raise_fd_limit();
    if let loadgen::cli::Run::Ws(config) = &run
        && (config.subscribers + config.publish_connections + 64) as u64 > fd_limit
    {
        eprintln!(
            "storm-loadgen: --subscribers {} needs more open files than this process may have ({fd_limit}); raise it with `ulimit -n`",
            config.subscribers
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(output.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("storm-loadgen: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let command = loadgen::report::command_line();
    let result = runtime.block_on(async {
        let report = loadgen::execute(run, command).await?;
        loadgen::publish(&report, output.json.as_ref())?;
        anyhow::Ok(report.failed())
    });
    // Sockets and connection tasks may still be winding down: don't wait for them.
    runtime.shutdown_background();
    match result {
        Ok(false) => ExitCode::SUCCESS,
        // A `chat` run that completed with FAIL: the report says why.
        Ok(true) => ExitCode::from(1),
        Err(e) => {
            eprintln!("storm-loadgen: {e:#}");
            ExitCode::from(1)
        }
    }
}
