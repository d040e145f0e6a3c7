//! Latency recording without sampling: every value goes into an HDR histogram (µs, 3 significant
//! digits, 1 µs – 1 h). Tasks record into one of a few mutex-guarded shards (task `i` → shard
//! `i % shards`), so the hot path is an uncontended lock and an array increment; the reporter
//! harvests the shards every progress interval — the harvest is both the interval's histogram (for
//! the progress line) and an addition to the run's total (merged with `add`, as HdrHistogram
//! intends). Values above an hour are clamped, never dropped.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest trackable value: one hour in microseconds.
const MAX_MICROS: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("static histogram bounds are valid")
}

/// A histogram written by many tasks.
#[derive(Debug)]
pub struct Shards {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Shards {
    pub fn new(count: usize) -> Self {
        Self {
            shards: (0..count.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    /// Records `value` (clamped to 1 µs – 1 h) into shard `slot % shards`.
    pub fn record(&self, slot: usize, value: Duration) {
        let micros = (value.as_micros() as u64).clamp(1, MAX_MICROS);
        let shard = &self.shards[slot % self.shards.len()];
        // A poisoned shard only means a recording task panicked mid-increment; its counts are
        // still valid numbers, so keep recording.
        let mut histogram = shard.lock().unwrap_or_else(|e| e.into_inner());
        histogram.saturating_record(micros);
    }

    /// Takes everything recorded since the last harvest, leaving the shards empty.
    pub fn harvest(&self) -> Histogram<u64> {
        let mut merged = new_histogram();
        for shard in &self.shards {
            let mut histogram = shard.lock().unwrap_or_else(|e| e.into_inner());
            // Same bounds everywhere, so `add` cannot fail.
            let _ = merged.add(&*histogram);
            histogram.reset();
        }
        merged
    }
}

/// The run's total of one measure, kept by the reporter: each harvest of the shards is the
/// interval's histogram and is added to the total.
#[derive(Debug)]
pub struct Tally {
    pub total: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            total: new_histogram(),
        }
    }
}

impl Tally {
    /// Moves what `shards` recorded since the last call into the total and returns it.
    pub fn absorb(&mut self, shards: &Shards) -> Histogram<u64> {
        let interval = shards.harvest();
        let _ = self.total.add(&interval);
        interval
    }
}

/// Percentiles of a histogram, in milliseconds, as reports and `--json` show them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub stdev: f64,
    pub max: f64,
    pub p50: f64,
    pub p75: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    /// The full percentile spectrum (HdrHistogram's "percentile distribution", 5 ticks per half).
    pub spectrum: Vec<SpectrumPoint>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpectrumPoint {
    pub percentile: f64,
    pub ms: f64,
    /// Values recorded in this step.
    pub count: u64,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn ms_f(micros: f64) -> f64 {
    micros.round() / 1000.0
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::empty();
        }
        let at = |q: f64| ms(h.value_at_quantile(q));
        Self {
            count: h.len(),
            min: ms(h.min()),
            mean: ms_f(h.mean()),
            stdev: ms_f(h.stdev()),
            max: ms(h.max()),
            p50: at(0.50),
            p75: at(0.75),
            p90: at(0.90),
            p95: at(0.95),
            p99: at(0.99),
            p99_9: at(0.999),
            p99_99: at(0.9999),
            spectrum: h
                .iter_quantiles(5)
                .map(|v| SpectrumPoint {
                    percentile: (v.quantile_iterated_to() * 100.0 * 1e4).round() / 1e4,
                    ms: ms(v.value_iterated_to()),
                    count: v.count_since_last_iteration(),
                })
                .collect(),
        }
    }

    pub fn empty() -> Self {
        Self {
            count: 0,
            min: 0.0,
            mean: 0.0,
            stdev: 0.0,
            max: 0.0,
            p50: 0.0,
            p75: 0.0,
            p90: 0.0,
            p95: 0.0,
            p99: 0.0,
            p99_9: 0.0,
            p99_99: 0.0,
            spectrum: Vec::new(),
        }
    }

    /// `p50 1.20 ms  p95 …` — one line for the human report.
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".to_string();
        }
        format!(
            "p50 {}  p90 {}  p95 {}  p99 {}  p99.9 {}  max {}  (mean {}, n={})",
            fmt_ms(self.p50),
            fmt_ms(self.p90),
            fmt_ms(self.p95),
            fmt_ms(self.p99),
            fmt_ms(self.p99_9),
            fmt_ms(self.max),
            fmt_ms(self.mean),
            group(self.count)
        )
    }
}

/// `0.123ms`, `3.10ms`, `45.2ms`, `1234ms` — three significant-ish digits.
pub fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.3}ms")
    } else if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 100.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

/// `49993` → `49,993`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Requests counted by status class and by error kind, shared by every connection task.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub sent: AtomicU64,
    pub completed: AtomicU64,
    /// Index = status code (100–599); other codes land in slot 0.
    codes: Vec<AtomicU64>,
    pub connect_errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub resets: AtomicU64,
    pub other_errors: AtomicU64,
}

/// The kinds of failure a request can end in without a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The TCP connection (or HTTP handshake) could not be made.
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// The server closed or reset the connection mid-request.
    Reset,
    Other,
}

impl Outcomes {
    pub fn new() -> Self {
        Self {
            codes: (0..600).map(|_| AtomicU64::new(0)).collect(),
            ..Self::default()
        }
    }

    pub fn status(&self, code: u16) {
        let slot = if (100..600).contains(&code) {
            code as usize
        } else {
            0
        };
        self.codes[slot].fetch_add(1, Ordering::Relaxed);
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&self, kind: ErrorKind) {
        let counter = match kind {
            ErrorKind::Connect => &self.connect_errors,
            ErrorKind::Timeout => &self.timeouts,
            ErrorKind::Reset => &self.resets,
            ErrorKind::Other => &self.other_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> OutcomeCounts {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut classes = StatusClasses::default();
        let mut codes = std::collections::BTreeMap::new();
        for (code, count) in self.codes.iter().enumerate() {
            let count = load(count);
            if count == 0 {
                continue;
            }
            codes.insert(code.to_string(), count);
            match code / 100 {
                1 => classes.c1xx += count,
                2 => classes.c2xx += count,
                3 => classes.c3xx += count,
                4 => classes.c4xx += count,
                _ => classes.c5xx += count,
            }
        }
        OutcomeCounts {
            sent: load(&self.sent),
            completed: load(&self.completed),
            status: classes,
            status_codes: codes,
            errors: ErrorCounts {
                connect: load(&self.connect_errors),
                timeout: load(&self.timeouts),
                reset: load(&self.resets),
                other: load(&self.other_errors),
            },
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StatusClasses {
    #[serde(rename = "1xx")]
    pub c1xx: u64,
    #[serde(rename = "2xx")]
    pub c2xx: u64,
    #[serde(rename = "3xx")]
    pub c3xx: u64,
    #[serde(rename = "4xx")]
    pub c4xx: u64,
    /// 5xx and anything outside 100–599.
    #[serde(rename = "5xx")]
    pub c5xx: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ErrorCounts {
    pub connect: u64,
    pub timeout: u64,
    pub reset: u64,
    pub other: u64,
}

impl ErrorCounts {
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.reset + self.other
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    pub sent: u64,
    pub completed: u64,
    pub status: StatusClasses,
    pub status_codes: std::collections::BTreeMap<String, u64>,
    pub errors: ErrorCounts,
}

impl OutcomeCounts {
    /// Share of sent requests that did not end in a 2xx (errors included), 0 when none were sent.
    pub fn error_rate(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        let failed = self.sent.saturating_sub(self.status.c2xx);
        failed as f64 / self.sent as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_every_value_and_harvest_resets() {
        let shards = Shards::new(4);
        let mut tally = Tally::default();
        for i in 0..1000u64 {
            shards.record(i as usize, Duration::from_micros(1000 + i));
        }
        let interval = tally.absorb(&shards);
        assert_eq!(interval.len(), 1000);
        assert_eq!(tally.absorb(&shards).len(), 0);
        shards.record(0, Duration::from_secs(7200)); // clamped, not dropped
        tally.absorb(&shards);
        assert_eq!(tally.total.len(), 1001);
        let s = Summary::of(&tally.total);
        assert_eq!(s.count, 1001);
        assert!((s.p50 - 1.5).abs() < 0.01, "{}", s.p50);
        assert!((s.max - 3_600_000.0).abs() / 3_600_000.0 < 0.001);
        assert!(s.spectrum.len() > 10);
        assert_eq!(s.spectrum.iter().map(|p| p.count).sum::<u64>(), 1001);
        assert_eq!(s.spectrum.last().unwrap().percentile, 100.0);
    }

    #[test]
    fn outcomes_count_by_class_code_and_error_kind() {
        let outcomes = Outcomes::new();
        for code in [200, 200, 202, 404, 503, 999] {
            outcomes.sent.fetch_add(1, Ordering::Relaxed);
            outcomes.status(code);
        }
        outcomes.sent.fetch_add(2, Ordering::Relaxed);
        outcomes.error(ErrorKind::Timeout);
        outcomes.error(ErrorKind::Reset);
        let counts = outcomes.snapshot();
        assert_eq!(counts.status.c2xx, 3);
        assert_eq!(counts.status.c4xx, 1);
        assert_eq!(counts.status.c5xx, 2);
        assert_eq!(counts.status_codes["200"], 2);
        assert_eq!(counts.status_codes["0"], 1);
        assert_eq!(counts.errors.total(), 2);
        assert_eq!(counts.completed, 6);
        assert!((counts.error_rate() - 5.0 / 8.0).abs() < 1e-9);
    }

    #[test]
    fn numbers_are_grouped_and_milliseconds_readable() {
        assert_eq!(group(49_993), "49,993");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000_000), "1,000,000");
        assert_eq!(fmt_ms(3.1), "3.10ms");
        assert_eq!(fmt_ms(0.25), "0.250ms");
        assert_eq!(fmt_ms(250.4), "250ms");
    }
}
