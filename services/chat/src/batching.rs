//! Requests that queue up while a round trip is in flight are served together by the next one:
//! the message-number allocator (one statement for many numbers) and the broker publisher (one
//! persistent message and one confirm for many writes) both run this loop.
//!
//! No request waits for a batch to fill: a batch is whatever is queued when a round trip can
//! start, so at low load every request goes alone (as fast as unbatched), and under load batches
//! grow by themselves.

use std::future::Future;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

/// Takes up to `max_batch` queued requests whenever fewer than `in_flight` batches are being
/// served, and serves them with `serve`; returns when every sender is gone and every batch served.
pub async fn serve_in_batches<T, F, Fut>(
    mut requests: mpsc::Receiver<T>,
    max_batch: usize,
    in_flight: usize,
    serve: F,
) where
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut running = FuturesUnordered::new();
    loop {
        if running.len() >= in_flight.max(1) {
            running.next().await;
            continue;
        }
        let mut batch = Vec::with_capacity(max_batch.min(64));
        tokio::select! {
            // Cancel-safe: when the other branch wins, no request was taken.
            received = requests.recv_many(&mut batch, max_batch) => {
                if received == 0 {
                    break;
                }
                running.push(serve(batch));
            }
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
    while running.next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn queued_requests_share_a_round_trip_and_none_is_lost() {
        let (tx, rx) = mpsc::channel(100);
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        let server = tokio::spawn(serve_in_batches(rx, 10, 1, move |batch: Vec<u32>| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                seen.lock().unwrap().push(batch);
            }
        }));
        tx.send(0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        // While the first round trip runs, 25 more queue: they go in batches of at most 10.
        for n in 1..=25 {
            tx.send(n).await.unwrap();
        }
        drop(tx);
        server.await.unwrap();
        let batches = batches.lock().unwrap();
        assert_eq!(batches[0], vec![0], "a lone request is not held back");
        assert!(batches.iter().all(|b| b.len() <= 10));
        assert_eq!(batches.len(), 4, "{batches:?}");
        let all: Vec<u32> = batches.iter().flatten().copied().collect();
        assert_eq!(all, (0..=25).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn up_to_in_flight_batches_run_at_once() {
        let (tx, rx) = mpsc::channel(100);
        let running = Arc::new(Mutex::new((0usize, 0usize)));
        let seen = running.clone();
        let server = tokio::spawn(serve_in_batches(rx, 1, 3, move |_batch: Vec<u32>| {
            let seen = seen.clone();
            async move {
                {
                    let mut r = seen.lock().unwrap();
                    r.0 += 1;
                    r.1 = r.1.max(r.0);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                seen.lock().unwrap().0 -= 1;
            }
        }));
        for n in 0..12 {
            tx.send(n).await.unwrap();
        }
        drop(tx);
        server.await.unwrap();
        assert_eq!(running.lock().unwrap().1, 3);
    }
}
