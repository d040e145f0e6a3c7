//! The open model's timetable and the dispatcher that hands requests to connections.
//!
//! Request `i` of a run at `R`/s is *intended* to start at `start + i/R`, whatever the server does.
//! A pacer thread releases one ticket per request when its time comes; a connection that is free
//! takes the next ticket, and its latency is measured from the ticket's intended time — so a
//! server that stalls is charged for every request that should have been sent during the stall
//! (coordinated omission corrected, as wrk2 does). The pacer is a plain thread sleeping with
//! `nanosleep` precision because tokio's timer wheel has 1 ms granularity, which would add up to a
//! millisecond of the generator's own lateness to every latency.
//!
//! What must not break: tickets are released exactly `total` times, and a ticket never starts
//! before its intended time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Constant-arrival-rate timetable: `total` requests, request `i` at `i / rate` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate: f64,
    total: u64,
}

impl Schedule {
    /// `rate` requests per second for `duration`: `round(rate × duration)` requests.
    pub fn new(rate: f64, duration: Duration) -> Self {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        Self {
            rate,
            total: (rate * duration.as_secs_f64()).round() as u64,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// When request `index` is intended to start, counted from the run's start.
    pub fn offset(&self, index: u64) -> Duration {
        Duration::from_nanos((index as f64 * 1e9 / self.rate).round() as u64)
    }

    /// How many requests are due `elapsed` after the start: the `i` with `offset(i) <= elapsed`.
    pub fn due_at(&self, elapsed: Duration) -> u64 {
        let estimate = (elapsed.as_secs_f64() * self.rate).floor() as u64 + 1;
        let mut due = estimate.min(self.total);
        // Float rounding may put the estimate one off near a boundary: settle it on `offset`,
        // the one definition of "intended", so the pacer never spins on a ticket it thinks is due.
        while due < self.total && self.offset(due) <= elapsed {
            due += 1;
        }
        while due > 0 && self.offset(due - 1) > elapsed {
            due -= 1;
        }
        due
    }
}

/// A unit of work handed to a connection: which request, and when it should have started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub index: u64,
    pub intended: Instant,
}

/// Hands tickets to connection tasks, in the open model (paced) or the closed model (as fast as
/// each connection completes, until a deadline).
#[derive(Debug)]
pub struct Dispatcher {
    mode: Mode,
    start: Instant,
    next_index: AtomicU64,
}

#[derive(Debug)]
enum Mode {
    Open {
        schedule: Schedule,
        tickets: Arc<Semaphore>,
    },
    Closed {
        deadline: Instant,
    },
}

impl Dispatcher {
    /// An open-model dispatcher; call [`Dispatcher::spawn_pacer`] to start releasing tickets.
    pub fn open(schedule: Schedule, start: Instant) -> Self {
        Self {
            mode: Mode::Open {
                schedule,
                tickets: Arc::new(Semaphore::new(0)),
            },
            start,
            next_index: AtomicU64::new(0),
        }
    }

    /// A closed-model dispatcher: a ticket whenever a connection asks, until `start + duration`.
    pub fn closed(start: Instant, duration: Duration) -> Self {
        Self {
            mode: Mode::Closed {
                deadline: start + duration,
            },
            start,
            next_index: AtomicU64::new(0),
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn is_open_model(&self) -> bool {
        matches!(self.mode, Mode::Open { .. })
    }

    /// Requests the schedule holds (open model), `None` in the closed model.
    pub fn scheduled(&self) -> Option<u64> {
        match &self.mode {
            Mode::Open { schedule, .. } => Some(schedule.total()),
            Mode::Closed { .. } => None,
        }
    }

    /// Tickets handed out so far.
    pub fn dispatched(&self) -> u64 {
        let taken = self.next_index.load(Ordering::Relaxed);
        match &self.mode {
            Mode::Open { schedule, .. } => taken.min(schedule.total()),
            Mode::Closed { .. } => taken,
        }
    }

    /// The next ticket, waiting for its time in the open model; `None` when the run is over.
    pub async fn next(&self) -> Option<Ticket> {
        match &self.mode {
            Mode::Open { schedule, tickets } => {
                tickets.acquire().await.ok()?.forget();
                let index = self.next_index.fetch_add(1, Ordering::Relaxed);
                (index < schedule.total()).then(|| Ticket {
                    index,
                    intended: self.start + schedule.offset(index),
                })
            }
            Mode::Closed { deadline } => {
                let now = Instant::now();
                (now < *deadline).then(|| Ticket {
                    index: self.next_index.fetch_add(1, Ordering::Relaxed),
                    intended: now,
                })
            }
        }
    }

    /// Starts the pacer thread (open model; a no-op handle in the closed model). Tickets are
    /// released on the timetable; at `start + dispatch_window` the dispatcher closes, and tickets
    /// not yet taken by then are never sent (counted as not sent: the connections could not keep
    /// up). `stop` ends the pacer early.
    pub fn spawn_pacer(
        self: &Arc<Self>,
        dispatch_window: Duration,
        stop: Arc<AtomicBool>,
    ) -> Option<JoinHandle<()>> {
        let Mode::Open { schedule, tickets } = &self.mode else {
            return None;
        };
        let (schedule, tickets, start) = (*schedule, tickets.clone(), self.start);
        let spawned = std::thread::Builder::new()
            .name("loadgen-pacer".into())
            .spawn(move || pace(schedule, start, &tickets, dispatch_window, &stop));
        // Spawning a thread fails only when the OS is out of threads; without a pacer nothing
        // would be sent, so closing the dispatcher ends the run at once with everything "not sent".
        match spawned {
            Ok(handle) => Some(handle),
            Err(_) => {
                self.close();
                None
            }
        }
    }

    /// Stops handing out tickets (waiting connections get `None`).
    pub fn close(&self) {
        if let Mode::Open { tickets, .. } = &self.mode {
            tickets.close();
        }
    }
}

/// Longest single sleep of the pacer, so it notices `stop` promptly.
const PACER_MAX_SLEEP: Duration = Duration::from_millis(20);

fn pace(
    schedule: Schedule,
    start: Instant,
    tickets: &Semaphore,
    dispatch_window: Duration,
    stop: &AtomicBool,
) {
    let mut released = 0u64;
    while released < schedule.total() && !stop.load(Ordering::Relaxed) {
        let due = schedule.due_at(start.elapsed());
        if due > released {
            tickets.add_permits((due - released) as usize);
            released = due;
            continue;
        }
        let wait = schedule.offset(released).saturating_sub(start.elapsed());
        std::thread::sleep(wait.min(PACER_MAX_SLEEP));
    }
    while !stop.load(Ordering::Relaxed) {
        let left = dispatch_window.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(PACER_MAX_SLEEP));
    }
    tickets.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timetable_has_rate_times_duration_requests_evenly_spaced() {
        let s = Schedule::new(4.0, Duration::from_secs(2));
        assert_eq!(s.total(), 8);
        let offsets: Vec<u128> = (0..8).map(|i| s.offset(i).as_millis()).collect();
        assert_eq!(offsets, vec![0, 250, 500, 750, 1000, 1250, 1500, 1750]);
        assert_eq!(Schedule::new(3.0, Duration::from_millis(1500)).total(), 5); // 4.5 rounds up
        assert_eq!(
            Schedule::new(50_000.0, Duration::from_secs(30)).total(),
            1_500_000
        );
    }

    #[test]
    fn due_at_counts_requests_whose_time_has_come() {
        let s = Schedule::new(4.0, Duration::from_secs(2));
        assert_eq!(s.due_at(Duration::ZERO), 1); // request 0 is due at once
        assert_eq!(s.due_at(Duration::from_millis(249)), 1);
        assert_eq!(s.due_at(Duration::from_millis(250)), 2);
        assert_eq!(s.due_at(Duration::from_millis(1999)), 8);
        assert_eq!(s.due_at(Duration::from_secs(60)), 8); // never more than the total
    }

    #[test]
    fn due_at_agrees_with_offset_at_every_boundary_for_awkward_rates() {
        for rate in [3.0, 7.0, 33.3, 999.9, 48_271.0, 123_457.0] {
            let s = Schedule::new(rate, Duration::from_secs(2));
            for i in (0..s.total()).step_by(97) {
                let at = s.offset(i);
                assert_eq!(s.due_at(at), i + 1, "rate {rate} index {i}");
                if !at.is_zero() {
                    assert_eq!(
                        s.due_at(at - Duration::from_nanos(1)),
                        i,
                        "rate {rate} index {i}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn pacer_releases_every_ticket_on_time_and_never_early() {
        let start = Instant::now();
        let dispatcher = Arc::new(Dispatcher::open(
            Schedule::new(200.0, Duration::from_millis(500)),
            start,
        ));
        let pacer = dispatcher.spawn_pacer(Duration::from_millis(600), Arc::default());
        let mut tickets = Vec::new();
        while let Some(ticket) = dispatcher.next().await {
            assert!(
                Instant::now() >= ticket.intended,
                "ticket {} early",
                ticket.index
            );
            tickets.push(ticket);
        }
        pacer.unwrap().join().unwrap();
        assert_eq!(tickets.len(), 100);
        assert_eq!(dispatcher.dispatched(), 100);
        let indices: Vec<u64> = tickets.iter().map(|t| t.index).collect();
        assert_eq!(indices, (0..100).collect::<Vec<_>>());
        assert_eq!(tickets[99].intended - start, Duration::from_millis(495));
        assert!(
            start.elapsed() >= Duration::from_millis(600),
            "closes after the window"
        );
    }

    #[tokio::test]
    async fn tickets_not_taken_within_the_window_are_never_handed_out() {
        let start = Instant::now();
        let dispatcher = Arc::new(Dispatcher::open(
            Schedule::new(1000.0, Duration::from_millis(100)),
            start,
        ));
        let pacer = dispatcher.spawn_pacer(Duration::from_millis(150), Arc::default());
        // Nobody takes a ticket until the window has closed.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(dispatcher.next().await.is_none());
        pacer.unwrap().join().unwrap();
        assert_eq!(dispatcher.dispatched(), 0);
    }

    #[tokio::test]
    async fn closed_model_hands_out_tickets_until_the_deadline() {
        let dispatcher = Dispatcher::closed(Instant::now(), Duration::from_millis(50));
        let first = dispatcher.next().await.unwrap();
        assert_eq!(first.index, 0);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(dispatcher.next().await.is_none());
        assert_eq!(dispatcher.scheduled(), None);
    }
}
