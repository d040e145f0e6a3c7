//! Admission control: the one backpressure layer (SPEC "Admission control").
//!
//! `workers = ceil(MAX_CCU × UTILIZATION / 100)` requests run at once, at most `MAX_CCU − workers`
//! wait for a worker, and the next one is answered `503 overloaded` with `Retry-After: 1` at once
//! — it never waits. Two semaphores do it: a non-blocking `try_acquire` on the whole capacity
//! (MAX_CCU), then a waiting `acquire` on the workers. The `Admission` is built once per process and
//! shared by every route it guards: building it inside a per-route layer would give each route
//! its own limit (axum's `Router::layer` wraps routes one by one).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Gauge, counter, describe_counter, describe_gauge, gauge};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::config::{ConfigError, Lookup};
use crate::error::ApiError;

/// `MAX_CCU` and `UTILIZATION` as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    pub max_ccu: usize,
    pub utilization_percent: usize,
}

impl AdmissionConfig {
    pub fn from_lookup(env: &Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            max_ccu: env.bounded("MAX_CCU", 5000usize, 1, 10_000_000)?,
            utilization_percent: env.bounded("UTILIZATION", 67usize, 1, 100)?,
        })
    }

    /// Requests that may run at once: `ceil(MAX_CCU × UTILIZATION / 100)`, at least one.
    pub fn workers(&self) -> usize {
        (self.max_ccu * self.utilization_percent)
            .div_ceil(100)
            .max(1)
    }

    /// Requests that may wait for a worker.
    pub fn queue_capacity(&self) -> usize {
        self.max_ccu.saturating_sub(self.workers())
    }
}

/// Live counts, as `GET /api/metrics` shows them.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct AdmissionSnapshot {
    pub workers: usize,
    pub queue_capacity: usize,
    pub inflight: u64,
    pub queued: u64,
    pub admitted_total: u64,
    pub shed_total: u64,
}

/// The shared limiter. Clone the `Arc`, never the limits.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    capacity: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    inflight: AtomicU64,
    queued: AtomicU64,
    admitted: AtomicU64,
    shed: AtomicU64,
    inflight_gauge: Gauge,
    queued_gauge: Gauge,
}

impl Admission {
    pub fn new(config: AdmissionConfig) -> Arc<Self> {
        describe_gauge!(
            "admission_inflight",
            "Requests running under admission control."
        );
        describe_gauge!("admission_queued", "Requests waiting for a worker.");
        describe_gauge!(
            "admission_workers",
            "Configured worker slots (MAX_CCU × UTILIZATION / 100)."
        );
        describe_gauge!(
            "admission_queue_capacity",
            "Configured queue slots (MAX_CCU − workers)."
        );
        describe_counter!(
            "admission_admitted_total",
            "Requests admitted by admission control."
        );
        describe_counter!("admission_shed_total", "Requests shed with 503 overloaded.");
        crate::metrics::register_counters(&[
            ("admission_admitted_total", &[]),
            ("admission_shed_total", &[]),
        ]);
        gauge!("admission_workers").set(config.workers() as f64);
        gauge!("admission_queue_capacity").set(config.queue_capacity() as f64);
        Arc::new(Self {
            capacity: Arc::new(Semaphore::new(config.max_ccu.max(config.workers()))),
            workers: Arc::new(Semaphore::new(config.workers())),
            config,
            inflight: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            inflight_gauge: gauge!("admission_inflight"),
            queued_gauge: gauge!("admission_queued"),
        })
    }

    pub fn config(&self) -> AdmissionConfig {
        self.config
    }

    pub fn snapshot(&self) -> AdmissionSnapshot {
        AdmissionSnapshot {
            workers: self.config.workers(),
            queue_capacity: self.config.queue_capacity(),
            inflight: self.inflight.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            admitted_total: self.admitted.load(Ordering::Relaxed),
            shed_total: self.shed.load(Ordering::Relaxed),
        }
    }

    /// Runs `work` if there is room, else returns 503 `overloaded` without waiting.
    pub async fn run<F, T>(&self, work: F) -> Result<T, ApiError>
    where
        F: Future<Output = T>,
    {
        let Ok(_slot) = self.capacity.clone().try_acquire_owned() else {
            self.shed.fetch_add(1, Ordering::Relaxed);
            counter!("admission_shed_total").increment(1);
            return Err(ApiError::overloaded(
                "the server is at capacity (MAX_CCU); retry after a second",
            ));
        };
        let worker = {
            let _queued = Tracked::enter(&self.queued, &self.queued_gauge);
            self.workers.clone().acquire_owned().await
        };
        let Ok(_worker) = worker else {
            // The semaphore is never closed; treat it as shedding rather than panicking.
            return Err(ApiError::overloaded("admission control is shutting down"));
        };
        self.admitted.fetch_add(1, Ordering::Relaxed);
        counter!("admission_admitted_total").increment(1);
        let _inflight = Tracked::enter(&self.inflight, &self.inflight_gauge);
        Ok(work.await)
    }
}

/// Counts a request in a gauge for as long as it lives (also when its future is dropped).
struct Tracked<'a> {
    count: &'a AtomicU64,
    gauge: &'a Gauge,
}

impl<'a> Tracked<'a> {
    fn enter(count: &'a AtomicU64, gauge: &'a Gauge) -> Self {
        let now = count.fetch_add(1, Ordering::Relaxed) + 1;
        gauge.set(now as f64);
        Self { count, gauge }
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        let now = self.count.fetch_sub(1, Ordering::Relaxed) - 1;
        self.gauge.set(now as f64);
    }
}

/// axum middleware: `middleware::from_fn_with_state(admission.clone(), admission::admit)`.
pub async fn admit(
    State(admission): State<Arc<Admission>>,
    request: Request,
    next: Next,
) -> Response {
    match admission.run(next.run(request)).await {
        Ok(response) => response,
        Err(shed) => shed.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn workers_and_queue_follow_the_spec() {
        let c = AdmissionConfig {
            max_ccu: 5000,
            utilization_percent: 67,
        };
        assert_eq!((c.workers(), c.queue_capacity()), (3350, 1650));
        let c = AdmissionConfig {
            max_ccu: 3,
            utilization_percent: 50,
        };
        assert_eq!((c.workers(), c.queue_capacity()), (2, 1));
        let c = AdmissionConfig {
            max_ccu: 1,
            utilization_percent: 1,
        };
        assert_eq!((c.workers(), c.queue_capacity()), (1, 0));
    }

    #[tokio::test]
    async fn beyond_workers_plus_queue_is_shed_at_once() {
        let admission = Admission::new(AdmissionConfig {
            max_ccu: 4,
            utilization_percent: 50,
        });
        let gate = Arc::new(Semaphore::new(0));
        let mut running = Vec::new();
        for _ in 0..4 {
            let (a, g) = (admission.clone(), gate.clone());
            running.push(tokio::spawn(async move {
                a.run(async move { drop(g.acquire().await) }).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let snap = admission.snapshot();
        assert_eq!((snap.inflight, snap.queued), (2, 2));
        let started = std::time::Instant::now();
        let shed = admission.run(async {}).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(20));
        assert_eq!(shed.code, "overloaded");
        gate.add_permits(4);
        for r in running {
            r.await.unwrap().unwrap();
        }
        let snap = admission.snapshot();
        assert_eq!(
            (
                snap.admitted_total,
                snap.shed_total,
                snap.inflight,
                snap.queued
            ),
            (4, 1, 0, 0)
        );
    }
}
