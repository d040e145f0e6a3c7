//! A capped count per key, held by RAII leases: the one shape behind the listener's per-IP
//! connection cap (`MAX_CONNS_PER_IP`) and the gateway's per-user and per-IP socket caps
//! (`WS_MAX_SOCKETS_PER_USER`, `WS_MAX_SOCKETS_PER_IP`).
//!
//! What must not break: the table holds only keys with a live [`Lease`] (an entry is removed when
//! its count reaches 0, and a refused key adds none), so its size is bounded by the open leases,
//! never by every key ever seen.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

/// Live leases per key, at most `cap` each.
#[derive(Debug)]
pub struct CappedCounts<K: Hash + Eq> {
    cap: usize,
    counts: Mutex<HashMap<K, usize>>,
}

impl<K: Hash + Eq + Clone> CappedCounts<K> {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            counts: Mutex::new(HashMap::new()),
        })
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// One more lease for `key`, or `None` when it already holds `cap` (nothing taken).
    pub fn try_acquire(self: &Arc<Self>, key: K) -> Option<Lease<K>> {
        match self.table().entry(key.clone()) {
            Entry::Occupied(mut entry) => {
                if *entry.get() >= self.cap {
                    return None;
                }
                *entry.get_mut() += 1;
            }
            Entry::Vacant(entry) => {
                if self.cap == 0 {
                    return None;
                }
                entry.insert(1);
            }
        }
        Some(Lease {
            counts: self.clone(),
            key,
        })
    }

    /// Live leases of `key` now.
    pub fn count(&self, key: &K) -> usize {
        self.table().get(key).copied().unwrap_or(0)
    }

    /// Keys with at least one live lease.
    pub fn keys(&self) -> usize {
        self.table().len()
    }

    fn table(&self) -> MutexGuard<'_, HashMap<K, usize>> {
        // Nothing panics while holding this lock (single inserts and removes), so a poisoned
        // table is still consistent.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, key: &K) {
        let mut table = self.table();
        if let Some(count) = table.get_mut(key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                table.remove(key);
            }
        }
    }
}

/// One count of one key; given back on drop.
#[derive(Debug)]
pub struct Lease<K: Hash + Eq + Clone> {
    counts: Arc<CappedCounts<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Lease<K> {
    fn drop(&mut self) {
        self.counts.release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_refuses_the_next_lease_and_entries_go_at_zero() {
        let counts = CappedCounts::new(2);
        let a = counts.try_acquire("a").unwrap();
        let b = counts.try_acquire("a").unwrap();
        assert!(counts.try_acquire("a").is_none(), "the third is refused");
        let other = counts.try_acquire("b").unwrap();
        assert_eq!((counts.count(&"a"), counts.keys()), (2, 2));
        drop(a);
        assert_eq!(counts.count(&"a"), 1);
        let c = counts
            .try_acquire("a")
            .expect("room again after one gave back");
        drop((b, c, other));
        assert_eq!(counts.keys(), 0, "no entry outlives its leases");
    }

    #[test]
    fn a_zero_cap_refuses_without_adding_an_entry() {
        let counts = CappedCounts::<u8>::new(0);
        assert!(counts.try_acquire(1).is_none());
        assert_eq!(counts.keys(), 0);
    }
}
