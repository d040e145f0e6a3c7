//! Per-user and per-client-IP caps on open WebSockets (`WS_MAX_SOCKETS_PER_USER`,
//! `WS_MAX_SOCKETS_PER_IP`): one token or one machine cannot take every socket slot of the process.
//!
//! A socket holds a [`SocketLease`] for its lifetime; dropping it gives the slots back. What must
//! not break: the tables hold only keys with open sockets (an entry is removed when its count
//! reaches 0), so their size is bounded by the open sockets, never by every user or IP ever seen.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

/// Who a per-user count is for: the token's tenant (if any) and `sub`.
pub type UserKey = (Option<Uuid>, String);

/// Which cap refused a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapRefusal {
    PerUser(usize),
    PerIp(usize),
}

/// Counts of open sockets per user and per IP.
pub struct SocketLimits {
    per_user: Mutex<HashMap<UserKey, usize>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_user: usize,
    max_per_ip: usize,
}

impl SocketLimits {
    pub fn new(max_per_user: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            per_user: Mutex::default(),
            per_ip: Mutex::default(),
            max_per_user,
            max_per_ip,
        })
    }

    /// Takes one slot for `user` and one for `ip`, or says which cap is full (taking neither).
    pub fn acquire(self: &Arc<Self>, user: UserKey, ip: IpAddr) -> Result<SocketLease, CapRefusal> {
        if !take(&self.per_ip, ip, self.max_per_ip) {
            return Err(CapRefusal::PerIp(self.max_per_ip));
        }
        if !take(&self.per_user, user.clone(), self.max_per_user) {
            give_back(&self.per_ip, &ip);
            return Err(CapRefusal::PerUser(self.max_per_user));
        }
        Ok(SocketLease {
            limits: self.clone(),
            user,
            ip,
        })
    }

    /// Sockets counted for `ip` (tests).
    pub fn sockets_of_ip(&self, ip: IpAddr) -> usize {
        count(&self.per_ip, &ip)
    }

    /// Distinct users and IPs with open sockets (tests: entries go at 0).
    pub fn tracked(&self) -> (usize, usize) {
        let users = self.per_user.lock().map(|m| m.len()).unwrap_or(0);
        let ips = self.per_ip.lock().map(|m| m.len()).unwrap_or(0);
        (users, ips)
    }
}

fn take<K: Hash + Eq>(table: &Mutex<HashMap<K, usize>>, key: K, max: usize) -> bool {
    let Ok(mut table) = table.lock() else {
        return false;
    };
    let count = table.entry(key).or_insert(0);
    if *count >= max {
        return false;
    }
    *count += 1;
    true
}

fn give_back<K: Hash + Eq>(table: &Mutex<HashMap<K, usize>>, key: &K) {
    if let Ok(mut table) = table.lock()
        && let Some(count) = table.get_mut(key)
    {
        *count = count.saturating_sub(1);
        if *count == 0 {
            table.remove(key);
        }
    }
}

fn count<K: Hash + Eq>(table: &Mutex<HashMap<K, usize>>, key: &K) -> usize {
    table
        .lock()
        .map(|t| t.get(key).copied().unwrap_or(0))
        .unwrap_or(0)
}

/// One socket's slots; dropping it gives them back.
pub struct SocketLease {
    limits: Arc<SocketLimits>,
    user: UserKey,
    ip: IpAddr,
}

impl Drop for SocketLease {
    fn drop(&mut self) {
        give_back(&self.limits.per_user, &self.user);
        give_back(&self.limits.per_ip, &self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_refuse_the_next_socket_and_entries_go_at_zero() {
        let limits = SocketLimits::new(2, 3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let alice = (None, "alice".to_string());
        let a1 = limits.acquire(alice.clone(), ip).unwrap();
        let _a2 = limits.acquire(alice.clone(), ip).unwrap();
        assert_eq!(
            limits.acquire(alice.clone(), ip).err(),
            Some(CapRefusal::PerUser(2))
        );
        // The refused user took no IP slot.
        assert_eq!(limits.sockets_of_ip(ip), 2);
        let b = limits.acquire((None, "bob".into()), ip).unwrap();
        assert_eq!(
            limits.acquire((None, "carol".into()), ip).err(),
            Some(CapRefusal::PerIp(3))
        );
        // Same sub in another tenant is another user.
        let other_ip: IpAddr = "10.0.0.2".parse().unwrap();
        let _t = limits
            .acquire((Some(Uuid::from_u128(1)), "alice".into()), other_ip)
            .unwrap();
        drop(a1);
        assert!(limits.acquire(alice.clone(), ip).is_ok());
        drop(b);
        drop(_a2);
        drop(_t);
        assert_eq!(
            limits.tracked(),
            (0, 0),
            "no entry left for users and IPs without sockets"
        );
    }
}
