//! Leases: which exist, their TTLs, the keys attached to them, and (on the leader) when they
//! expire.
//!
//! Grants, revokes and attachments change only through applied log entries, so every replica
//! holds the same leases. Expiry is the leader's business alone: only the primary lessor
//! (on the leader) tracks deadlines; keep-alives renew them there, and expired leases are
//! revoked through the log like a client's revoke. A lease past its deadline is never renewed
//! while that member leads: its revoke may already be on its way.
//!
//! Checkpoints carry remaining TTLs across leader changes (etcd's lease checkpoints): the
//! leader now and then logs each lease's remaining TTL, rounded up, and a member that becomes
//! leader starts each deadline from the last checkpoint, or from a full TTL when there is none.
//! A keep-alive of a checkpointed lease logs a clear (remaining 0) before it is answered, and
//! the clear enters the log after any checkpoint taken before the renewal (the core's
//! `lease_log_order`), so a checkpoint older than a renewal never shortens the deadline that
//! renewal promised.
//! Neither can make a lease expire earlier than the last acknowledged keep-alive allows.

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
    /// Remaining TTL the last applied checkpoint logged (none: a full TTL).
    remaining_secs: Option<i64>,
    /// On the primary: a checkpoint of this lease was proposed since its last clear.
    checkpoint_sent: bool,
    /// On the primary: it ran past its deadline and its revoke is due; never renewed again
    /// while this member leads (etcd's `Renew` of an expired lease).
    expired: bool,
}

/// What a keep-alive came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed.
    Renewed {
        /// The lease's TTL, from now.
        ttl_secs: i64,
        /// A clear of the lease's checkpoint must be applied before the keep-alive is
        /// answered.
        clear: bool,
    },
    /// Past its deadline: its revoke is due or under way, and a renewal would promise time
    /// the revoke takes away.
    Expired,
    /// No such lease.
    Unknown,
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
                remaining_secs: None,
                checkpoint_sent: false,
                expired: false,
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

    /// Keep-alive: restarts the deadline on the primary, unless the lease is past it.
    pub fn renew(&mut self, id: i64) -> Renewal {
        let primary = self.primary;
        let Some(l) = self.leases.get_mut(&id) else {
            return Renewal::Unknown;
        };
        // A broken renewal (answers, keeps the old deadline), so tests can show that the
        // chaos lease checks catch one.
        fail::fail_point!("lease::renew", |_| Renewal::Renewed {
            ttl_secs: l.ttl_secs,
            clear: false
        });
        if primary {
            let now = Instant::now();
            if l.expired || l.deadline.is_some_and(|d| d <= now) {
                l.expired = true;
                return Renewal::Expired;
            }
            l.deadline = Some(now + Duration::from_secs(l.ttl_secs as u64));
        }
        let clear = l.remaining_secs.is_some() || l.checkpoint_sent;
        l.checkpoint_sent = false;
        Renewal::Renewed {
            ttl_secs: l.ttl_secs,
            clear,
        }
    }

    /// An applied checkpoint: lease `id` had `remaining_secs` left (0 clears it: a full TTL).
    pub fn checkpoint(&mut self, id: i64, remaining_secs: i64) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.remaining_secs = (remaining_secs > 0).then(|| remaining_secs.min(l.ttl_secs));
        }
    }

    /// On the primary: the remaining TTL (whole seconds, rounded up) of at most `max` leases
    /// that have run down part of their TTL, to be logged as a checkpoint.
    pub fn take_checkpoints(&mut self, max: usize) -> Vec<(i64, i64)> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (id, l) in &mut self.leases {
            if out.len() >= max {
                break;
            }
            let Some(d) = l.deadline else { continue };
            let left = d.saturating_duration_since(now);
            let secs = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
            if secs > 0 && secs < l.ttl_secs && l.remaining_secs != Some(secs) {
                l.checkpoint_sent = true;
                out.push((*id, secs));
            }
        }
        out
    }

    /// Whether this lessor tracks deadlines (this member leads).
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// This member became leader: every lease gets its checkpointed remaining TTL from now,
    /// or a full TTL.
    pub fn promote(&mut self) {
        self.primary = true;
        let now = Instant::now();
        for l in self.leases.values_mut() {
            let left = l.remaining_secs.unwrap_or(l.ttl_secs);
            l.deadline = Some(now + Duration::from_secs(left as u64));
            l.checkpoint_sent = false;
            l.expired = false;
        }
    }

    /// This member stopped leading: deadlines are the new leader's.
    pub fn demote(&mut self) {
        self.primary = false;
        for l in self.leases.values_mut() {
            l.deadline = None;
            l.expired = false;
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
                l.expired = true;
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
        assert_eq!(
            l.renew(7),
            Renewal::Renewed {
                ttl_secs: 1,
                clear: false
            }
        );
        assert_eq!(l.revoke(7).unwrap().len(), 1);
        assert_eq!(l.renew(7), Renewal::Unknown);
    }

    #[test]
    fn checkpoints_carry_remaining_ttls_and_a_renewal_asks_for_a_clear() {
        let mut l = Lessor::new(1);
        l.grant(7, 10);
        l.promote();
        assert!(l.take_checkpoints(10).is_empty(), "nothing run down yet");
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(l.take_checkpoints(10), vec![(7, 9)], "rounded up");
        // A renewal after a checkpoint was sent needs a clear logged first.
        let renewed = |clear| Renewal::Renewed {
            ttl_secs: 10,
            clear,
        };
        assert_eq!(l.renew(7), renewed(true));
        assert_eq!(l.renew(7), renewed(false));
        // Applied on another member, which then leads: it starts from the checkpoint.
        let mut f = Lessor::new(1);
        f.grant(7, 10);
        f.checkpoint(7, 2);
        assert_eq!(f.renew(7), renewed(true), "checkpointed: clear first");
        f.promote();
        let (left, _, _) = f.time_to_live(7).unwrap();
        assert!(left <= 2, "{left}");
        f.checkpoint(7, 0);
        f.demote();
        f.promote();
        let (left, _, _) = f.time_to_live(7).unwrap();
        assert!(left >= 9, "cleared: a full TTL, {left}");
    }

    #[test]
    fn a_lease_past_its_deadline_is_never_renewed_while_this_member_leads() {
        let mut l = Lessor::new(1);
        l.grant(7, 1);
        l.promote();
        std::thread::sleep(Duration::from_millis(1100));
        // Past the deadline, before the clock has handed it over: not renewed.
        assert_eq!(l.renew(7), Renewal::Expired);
        assert_eq!(l.take_expired(10, Duration::from_secs(5)), vec![7]);
        // Handed over: its retry delay is no new deadline.
        assert_eq!(l.renew(7), Renewal::Expired);
        // Under the next leader it starts over.
        l.demote();
        assert!(matches!(l.renew(7), Renewal::Renewed { .. }));
        l.promote();
        assert!(matches!(l.renew(7), Renewal::Renewed { .. }));
    }
}
