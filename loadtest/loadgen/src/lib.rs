//! storm-loadgen: stormstack's measuring instrument. Open-model HTTP load whose latency is taken
//! from each request's intended send time (coordinated omission corrected), a closed model for
//! comparison, WebSocket fan-out measured frame by frame (loss, duplicates, delivery latency), and
//! a calibration of the generator's own ceiling. Every latency is recorded in an HDR histogram.
//!
//! Layout: `cli` (arguments → validated configs), `target` (loopback-only URLs), `schedule` (the
//! timetable and its pacer), `stats` (histograms, counters), `engine` (HTTP connections: the `http` subcommand and the fan-out's publisher),
//! `ws` (fan-out), `chat` (the S4 Chat API test), `cpu` (whole-machine CPU per request, from /proc),
//! `calibrate`, `machine` (fingerprint), `report` (JSON and the human block).

pub mod calibrate;
pub mod chat;
pub mod cli;
pub mod cpu;
pub mod engine;
pub mod machine;
pub mod report;
pub mod schedule;
pub mod stats;
pub mod target;
pub mod ws;

use std::path::PathBuf;

use serde::Serialize;

use crate::cli::Run;
use crate::report::RunClock;

/// A finished run, whichever kind.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Report {
    Http(engine::HttpReport),
    Ws(ws::WsReport),
    Chat(Box<chat::ChatReport>),
    Calibrate(calibrate::CalibrateReport),
}

impl Report {
    pub fn lines(&self) -> Vec<String> {
        match self {
            Report::Http(r) => r.lines(),
            Report::Ws(r) => r.lines(),
            Report::Chat(r) => r.lines(),
            Report::Calibrate(r) => r.lines(),
        }
    }

    /// Whether the process should exit 1 although the run completed (a `chat` FAIL).
    pub fn failed(&self) -> bool {
        match self {
            Report::Chat(r) => r.failed(),
            _ => false,
        }
    }
}

/// Runs a validated configuration on the current tokio runtime; `command` is recorded in the
/// report as the command line.
pub async fn execute(run: Run, command: String) -> anyhow::Result<Report> {
    Ok(match run {
        Run::Http(config) => {
            Report::Http(engine::run_http(config, RunClock::start("http", command)).await?)
        }
        Run::Ws(config) => Report::Ws(ws::run_ws(config, RunClock::start("ws", command)).await?),
        Run::Chat(config) => Report::Chat(Box::new(
            chat::run_chat(config, RunClock::start("chat", command)).await?,
        )),
        Run::Calibrate(config) => Report::Calibrate(
            calibrate::run_calibrate(config, RunClock::start("calibrate", command)).await?,
        ),
    })
}

/// Prints the human block on stdout and writes the JSON if asked.
pub fn publish(report: &Report, json: Option<&PathBuf>) -> anyhow::Result<()> {
    for line in report.lines() {
        println!("{line}");
    }
    if let Some(path) = json {
        report::write_json(path, report)?;
        println!("json        {}", path.display());
    }
    Ok(())
}
