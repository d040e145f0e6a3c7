//! Per-user and per-client-IP caps on open WebSockets (`WS_MAX_SOCKETS_PER_USER`,
//! `WS_MAX_SOCKETS_PER_IP`): one token or one machine cannot take every socket slot of the process.
//!
//! A socket holds a [`SocketLease`] for its lifetime; dropping it gives the slots back. What must
//! not break: the tables hold only keys with open sockets (an entry is removed when its count
//! reaches 0, [`CappedCounts`]), so their size is bounded by the open sockets, never by every user
//! or IP ever seen.

use std::net::IpAddr;
use std::sync::Arc;

use common::limits::{CappedCounts, Lease};
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
    per_user: Arc<CappedCounts<UserKey>>,
    per_ip: Arc<CappedCounts<IpAddr>>,
}

impl SocketLimits {
    pub fn new(max_per_user: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            per_user: CappedCounts::new(max_per_user),
            per_ip: CappedCounts::new(max_per_ip),
        })
    }

    /// Takes one slot for `user` and one for `ip`, or says which cap is full (taking neither).
    pub fn acquire(&self, user: UserKey, ip: IpAddr) -> Result<SocketLease, CapRefusal> {
        let ip = self
            .per_ip
            .try_acquire(ip)
            .ok_or(CapRefusal::PerIp(self.per_ip.cap()))?;
        // A refused user drops `ip` here: it takes no IP slot.
        let user = self
            .per_user
            .try_acquire(user)
            .ok_or(CapRefusal::PerUser(self.per_user.cap()))?;
        Ok(SocketLease {
            _user: user,
            _ip: ip,
        })
    }

    /// Sockets counted for `ip` (tests).
    pub fn sockets_of_ip(&self, ip: IpAddr) -> usize {
        self.per_ip.count(&ip)
    }

    /// Distinct users and IPs with open sockets (tests: entries go at 0).
    pub fn tracked(&self) -> (usize, usize) {
        (self.per_user.keys(), self.per_ip.keys())
    }
}

/// One socket's slots; dropping it gives them back.
pub struct SocketLease {
    _user: Lease<UserKey>,
    _ip: Lease<IpAddr>,
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
