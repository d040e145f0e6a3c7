//! What every result carries, and how it leaves the process: a block a person reads on stdout and,
//! with `--json FILE`, the same figures plus the full percentile spectra for scripts
//! (`scripts/run-all.sh` builds BASELINES.md from them). The JSON schema is versioned by
//! [`SCHEMA`]; a field is only ever added, never renamed, within one version.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::machine::{self, Machine};

pub const SCHEMA: &str = "storm-loadgen/1";

/// The fields shared by every result kind (flattened into the top level of the JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    pub schema: &'static str,
    /// `http`, `ws`, `chat` or `calibrate`.
    pub kind: &'static str,
    /// The command line, shell-quoted.
    pub command: String,
    pub started_at: String,
    pub elapsed_s: f64,
    pub machine: Machine,
    pub generator: Generator,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generator {
    pub version: &'static str,
    /// Tokio worker threads.
    pub threads: usize,
    /// CPU time (user + system) the generator used during the run.
    pub cpu_seconds: f64,
    /// `cpu_seconds / elapsed_s × 100`: 100 = one core busy. On a shared box, what the stack had left.
    pub cpu_percent: f64,
}

/// Started when a run starts; `finish` turns it into the header.
#[derive(Debug)]
pub struct RunClock {
    kind: &'static str,
    command: String,
    started_at: SystemTime,
    started: Instant,
    cpu_before: Duration,
}

impl RunClock {
    pub fn start(kind: &'static str, command: String) -> Self {
        Self {
            kind,
            command,
            started_at: SystemTime::now(),
            started: Instant::now(),
            cpu_before: machine::process_cpu_time(),
        }
    }

    pub fn finish(&self, threads: usize) -> Header {
        let elapsed = self.started.elapsed().as_secs_f64();
        let cpu = machine::process_cpu_time()
            .saturating_sub(self.cpu_before)
            .as_secs_f64();
        Header {
            schema: SCHEMA,
            kind: self.kind,
            command: self.command.clone(),
            started_at: humantime::format_rfc3339_seconds(self.started_at).to_string(),
            elapsed_s: round3(elapsed),
            machine: Machine::detect(),
            generator: Generator {
                version: env!("CARGO_PKG_VERSION"),
                threads,
                cpu_seconds: round3(cpu),
                cpu_percent: if elapsed > 0.0 {
                    (cpu / elapsed * 1000.0).round() / 10.0
                } else {
                    0.0
                },
            },
        }
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The process's arguments, quoted so the line can be pasted back into a shell.
pub fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
            {
                arg
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes `report` as pretty JSON to `path` (through a temporary file, so a reader never sees half).
pub fn write_json(path: &Path, report: &impl Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(report)?;
    let tmp = path.with_extension("json.partial");
    std::fs::write(&tmp, &json)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// The header's lines of the human report.
pub fn header_lines(header: &Header) -> Vec<String> {
    vec![
        format!("machine     {}", header.machine.line()),
        format!(
            "generator   storm-loadgen {} on {} threads, {:.1} CPU-s ({:.0} % of one core; it shares the machine with the target)",
            header.generator.version,
            header.generator.threads,
            header.generator.cpu_seconds,
            header.generator.cpu_percent
        ),
        format!(
            "run         {} for {:.2}s",
            header.started_at, header.elapsed_s
        ),
    ]
}
