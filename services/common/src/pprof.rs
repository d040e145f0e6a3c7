//! The pprof server on `PPROF_ADDR`: CPU profiles, jemalloc heap profiles and flamegraphs that
//! `go tool pprof` reads.
//!
//! - `/debug/pprof/profile?seconds=N` — CPU profile (gzipped profile.proto), sampled at 99 Hz.
//! - `/debug/pprof/flamegraph?seconds=N` — the same samples as an SVG flamegraph.
//! - `/debug/pprof/heap` — heap in use, from jemalloc's sampling profiler (gzipped profile.proto).
//! - `/debug/pprof/` — an index.
//!
//! Only one CPU profile runs at a time (a second gets 409): the profiler is a process-wide signal
//! handler. Unwinding skips libc/libgcc/pthread/vdso frames (pprof-rs#36, #203: unwinding through
//! them from a signal handler can crash or deadlock). Profiling blocks a blocking-pool thread for
//! the sampling window, never an async worker. The heap profile needs the binary to enable
//! jemalloc profiling with `common::jemalloc_heap_profiling!()`; without it the route answers 503.

use std::io::{Read, Write};
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use flate2::Compression;
use flate2::write::GzEncoder;
use pprof::protos::Message;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::error::{ApiError, Query};

/// Sampling frequency of the CPU profiler: 99 Hz, as Go's default 100 Hz without lockstep.
pub const CPU_FREQUENCY_HZ: i32 = 99;
/// Longest CPU profile one request may ask for.
pub const MAX_PROFILE_SECONDS: u64 = 300;

/// Enables jemalloc as the global allocator with heap profiling on (sampling every 512 KiB on
/// average), so `/debug/pprof/heap` works. Invoke once at the top of each binary (`main.rs`) and of
/// any test binary that reads heap profiles.
#[macro_export]
macro_rules! jemalloc_heap_profiling {
    () => {
        #[global_allocator]
        static GLOBAL_ALLOCATOR: $crate::pprof::Jemalloc = $crate::pprof::Jemalloc;

        #[allow(non_upper_case_globals)]
        #[unsafe(export_name = "malloc_conf")]
        pub static malloc_conf: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:19\0";
    };
}

pub use tikv_jemallocator::Jemalloc;

#[derive(Debug, Deserialize)]
struct ProfileParams {
    seconds: Option<u64>,
}

impl ProfileParams {
    fn window(&self) -> Result<Duration, ApiError> {
        match self.seconds.unwrap_or(30) {
            0 => Err(ApiError::bad_request("seconds must be at least 1")),
            s if s > MAX_PROFILE_SECONDS => Err(ApiError::bad_request(format!(
                "seconds must be at most {MAX_PROFILE_SECONDS}"
            ))),
            s => Ok(Duration::from_secs(s)),
        }
    }
}

/// Guards the process-wide CPU profiler.
fn cpu_profiler_lock() -> &'static Mutex<()> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| Mutex::new(()))
}

/// Samples the CPU for `window` on a blocking thread and returns the report.
async fn sample_cpu(window: Duration) -> Result<pprof::Report, ApiError> {
    let Ok(_exclusive) = cpu_profiler_lock().try_lock() else {
        return Err(ApiError::conflict(
            "a CPU profile is already running; one at a time",
        ));
    };
    tokio::task::spawn_blocking(move || {
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(CPU_FREQUENCY_HZ)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
            .map_err(|e| ApiError::conflict(format!("cannot start the CPU profiler: {e}")))?;
        std::thread::sleep(window);
        guard.report().build().map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 2), Compression::default());
    encoder.write_all(bytes).map_err(ApiError::internal)?;
    encoder.finish().map_err(ApiError::internal)
}

/// Flags every mapping as symbolized (functions, file names, line numbers, inline frames) when the
/// process has symbolized the profile (it carries function names). Both profilers symbolize inside
/// the process but leave the main binary's mapping unflagged, and `go tool pprof` then symbolizes
/// it again from the binary on disk — minutes per profile for a debug build's DWARF (measured:
/// 2 min for one heap profile of the debug gateway; instant with the flags). Addresses the process
/// could not resolve stay addresses.
fn mark_symbolized(profile: &mut pprof::protos::Profile) {
    if profile.function.is_empty() {
        return;
    }
    for mapping in &mut profile.mapping {
        mapping.has_functions = true;
        mapping.has_filenames = true;
        mapping.has_line_numbers = true;
        mapping.has_inline_frames = true;
    }
}

/// `bytes` (a profile.proto, gzipped or not) with its symbolized mappings flagged, gzipped.
fn flag_symbolized(bytes: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut raw = Vec::new();
    let encoded = if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .map_err(ApiError::internal)?;
        raw.as_slice()
    } else {
        bytes
    };
    let mut profile = pprof::protos::Profile::decode(encoded).map_err(ApiError::internal)?;
    mark_symbolized(&mut profile);
    gzip(&profile.encode_to_vec())
}

fn protobuf_response(body: Vec<u8>, filename: &str) -> Response {
    (
        [
            (CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

async fn cpu_profile(Query(params): Query<ProfileParams>) -> Result<Response, ApiError> {
    let report = sample_cpu(params.window()?).await?;
    let mut profile = report.pprof().map_err(ApiError::internal)?;
    mark_symbolized(&mut profile);
    let body = gzip(&profile.encode_to_vec())?;
    Ok(protobuf_response(body, "profile.pb.gz"))
}

async fn cpu_flamegraph(Query(params): Query<ProfileParams>) -> Result<Response, ApiError> {
    let report = sample_cpu(params.window()?).await?;
    let mut svg = Vec::new();
    report.flamegraph(&mut svg).map_err(ApiError::internal)?;
    if svg.is_empty() {
        // inferno draws nothing without samples; an idle process still gets a valid image.
        svg = NO_SAMPLES_SVG.as_bytes().to_vec();
    }
    Ok(([(CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

const NO_SAMPLES_SVG: &str = r#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="600" height="60" xmlns="http://www.w3.org/2000/svg"><text x="10" y="35" font-family="monospace">No CPU samples in this window: the process was idle.</text></svg>"#;

async fn heap_profile() -> Result<Response, ApiError> {
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
        return Err(ApiError::unavailable(
            "heap profiling is off: this binary does not enable jemalloc profiling",
        ));
    };
    let mut ctl = ctl.clone().lock_owned().await;
    if !ctl.activated() {
        return Err(ApiError::unavailable(
            "jemalloc heap profiling is not active",
        ));
    }
    let body = tokio::task::spawn_blocking(move || {
        ctl.dump_pprof()
            .map_err(|e| {
                ApiError::unavailable(format!(
                    "heap profile dump failed (is $TMPDIR writable?): {e}"
                ))
            })
            .and_then(|dump| flag_symbolized(&dump))
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(protobuf_response(body, "heap.pb.gz"))
}

async fn index() -> Html<&'static str> {
    Html(
        r#"<!doctype html><html><head><title>/debug/pprof/</title></head><body>
<h1>/debug/pprof/</h1>
<ul>
<li><a href="profile?seconds=30">profile</a> — CPU profile (gzipped profile.proto); <code>?seconds=N</code>, default 30, at most 300. One at a time.</li>
<li><a href="heap">heap</a> — heap in use, sampled by jemalloc (gzipped profile.proto).</li>
<li><a href="flamegraph?seconds=10">flamegraph</a> — CPU flamegraph (SVG); <code>?seconds=N</code>.</li>
</ul>
<pre>go tool pprof http://HOST:PORT/debug/pprof/profile?seconds=30
go tool pprof http://HOST:PORT/debug/pprof/heap</pre>
</body></html>"#,
    )
}

/// The pprof router, served on its own listener (`PPROF_ADDR`).
pub fn router() -> Router {
    Router::new()
        .route("/debug/pprof/", get(index))
        .route("/debug/pprof", get(index))
        .route("/debug/pprof/profile", get(cpu_profile))
        .route("/debug/pprof/flamegraph", get(cpu_flamegraph))
        .route("/debug/pprof/heap", get(heap_profile))
        .fallback(crate::error::not_found_fallback)
}
