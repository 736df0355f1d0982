//! Leases: which exist, their TTLs, the keys attached to them, and (on the leader) when they
//! expire.
//!
//! Grants, revokes and attachments change only through applied log entries, so every replica
//! holds the same leases. Expiry is the leader's business alone: only the primary lessor
//! (on the leader) tracks deadlines; keep-alives renew them there, and expired leases are
//! revoked through the log like a client's revoke. A member that becomes leader restarts every
//! deadline at a full TTL, so a leader change never expires a lease early.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The largest TTL accepted, in seconds (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;

/// One lease.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Granted TTL.
    pub ttl_secs: i64,
    /// Keys attached.
    pub keys: BTreeSet<Vec<u8>>,
    /// Deadline, on the primary only.
    deadline: Option<Instant>,
}

/// The lease table of one member.
#[derive(Debug, Default)]
pub struct Lessor {
    leases: BTreeMap<i64, Lease>,
    primary: bool,
    min_ttl_secs: i64,
}

impl Lessor {
    /// An empty table; granted TTLs are raised to at least `min_ttl_secs`.
    pub fn new(min_ttl_secs: i64) -> Lessor {
        Lessor {
            leases: BTreeMap::new(),
            primary: false,
            min_ttl_secs: min_ttl_secs.max(1),
        }
    }

    /// Forgets every lease (the key space was replaced by a snapshot).
    pub fn clear(&mut self) {
        self.leases.clear();
    }

    /// The TTL a grant of `ttl_secs` gets.
    pub fn effective_ttl(&self, ttl_secs: i64) -> i64 {
        ttl_secs.max(self.min_ttl_secs)
    }

    /// Whether `id` exists.
    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Adds a lease (an applied grant, or one loaded at start).
    pub fn grant(&mut self, id: i64, ttl_secs: i64) {
        let deadline = self
            .primary
            .then(|| Instant::now() + Duration::from_secs(ttl_secs as u64));
        self.leases.insert(
            id,
            Lease {
                ttl_secs,
                keys: BTreeSet::new(),
                deadline,
            },
        );
    }

    /// Removes a lease; returns its keys.
    pub fn revoke(&mut self, id: i64) -> Option<BTreeSet<Vec<u8>>> {
        self.leases.remove(&id).map(|l| l.keys)
    }

    /// Attaches `key` to lease `id` (no-op for 0 or an unknown lease).
    pub fn attach(&mut self, id: i64, key: &[u8]) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.keys.insert(key.to_vec());
        }
    }

    /// Detaches `key` from lease `id`.
    pub fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.keys.remove(key);
        }
    }

    /// Keep-alive on the primary: restarts the deadline; returns the TTL.
    pub fn renew(&mut self, id: i64) -> Option<i64> {
        let primary = self.primary;
        let l = self.leases.get_mut(&id)?;
        if primary {
            l.deadline = Some(Instant::now() + Duration::from_secs(l.ttl_secs as u64));
        }
        Some(l.ttl_secs)
    }

    /// Whether this lessor tracks deadlines (this member leads).
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// This member became leader: every lease gets a full TTL from now.
    pub fn promote(&mut self) {
        self.primary = true;
        let now = Instant::now();
        for l in self.leases.values_mut() {
            l.deadline = Some(now + Duration::from_secs(l.ttl_secs as u64));
        }
    }

    /// This member stopped leading: deadlines are the new leader's.
    pub fn demote(&mut self) {
        self.primary = false;
        for l in self.leases.values_mut() {
            l.deadline = None;
        }
    }

    /// Leases past their deadline (at most `max`); each gets `retry` more before it is
    /// reported again, so a revoke in flight is not proposed twice at once.
    pub fn take_expired(&mut self, max: usize, retry: Duration) -> Vec<i64> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (id, l) in &mut self.leases {
            if out.len() >= max {
                break;
            }
            if l.deadline.is_some_and(|d| d <= now) {
                l.deadline = Some(now + retry);
                out.push(*id);
            }
        }
        out
    }

    /// (remaining TTL, granted TTL, keys) of `id`. The remaining TTL is the granted one off
    /// the primary.
    pub fn time_to_live(&self, id: i64) -> Option<(i64, i64, Vec<Vec<u8>>)> {
        let l = self.leases.get(&id)?;
        let remaining = match l.deadline {
            Some(d) => {
                // Whole seconds left, rounded down as etcd reports them.
                d.saturating_duration_since(Instant::now()).as_secs() as i64
            }
            None => l.ttl_secs,
        };
        Some((remaining, l.ttl_secs, l.keys.iter().cloned().collect()))
    }

    /// The keys attached to `id` (none when it is not granted).
    pub fn keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every lease id.
    pub fn ids(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }

    /// How many leases exist.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether none exist.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_primary_expires_and_promotion_restarts_deadlines() {
        let mut l = Lessor::new(1);
        l.grant(7, 1);
        l.attach(7, b"k");
        assert!(l.take_expired(10, Duration::from_secs(1)).is_empty());
        l.promote();
        assert!(l.take_expired(10, Duration::from_secs(1)).is_empty());
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(l.take_expired(10, Duration::from_secs(5)), vec![7]);
        assert!(
            l.take_expired(10, Duration::from_secs(5)).is_empty(),
            "retry delay"
        );
        l.demote();
        l.promote();
        assert!(l.take_expired(10, Duration::from_secs(5)).is_empty());
        assert_eq!(l.renew(7), Some(1));
        assert_eq!(l.revoke(7).unwrap().len(), 1);
        assert_eq!(l.renew(7), None);
    }
}
