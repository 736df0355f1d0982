//! The state every client API of a member shares with the apply thread: the key space, the
//! leases, the watch hub, the requests waiting for results, the roster and the checkpoint
//! timings. Client APIs keep what only they need (etcd's users and alarms, say) beside it.

use std::sync::Arc;

use parking_lot::Mutex;

use super::identity::Member;
use super::lessor::Lessor;
use super::pending::Pending;
use super::roster::Roster;
use super::watch_hub::WatchHub;
use crate::duration_histogram::DurationHistogram;
use crate::mvcc::{Mvcc, MvccError};

/// What a member's APIs and its apply thread share.
pub struct Core {
    /// The key space.
    pub mvcc: Mvcc,
    /// Leases.
    pub lessor: Mutex<Lessor>,
    /// Held from taking lease checkpoints until they are handed to the log, and by a
    /// keep-alive while it hands over the clear its renewal asks for: a clear never enters
    /// the log ahead of a checkpoint taken before its renewal, which would shorten the lease.
    pub lease_log_order: Arc<tokio::sync::Mutex<()>>,
    /// Committed events for watchers.
    pub hub: WatchHub,
    /// Requests waiting for their results, and how far apply has got.
    pub pending: Arc<Pending>,
    /// Who the members are.
    pub roster: Arc<Roster>,
    /// How long the tree's durable checkpoints took (etcd's backend commit).
    pub backend_commits: DurationHistogram,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

/// How a member's shared state starts.
#[derive(Debug, Clone, Copy)]
pub struct CoreLimits {
    /// Shortest lease TTL granted, in seconds.
    pub lease_ttl_min_secs: i64,
    /// Bytes of recent events kept for watchers.
    pub watch_ring_bytes: usize,
    /// Requests waiting for results before new ones are refused.
    pub pending_max: usize,
}

impl Core {
    /// The shared state over `mvcc`, whose applied index and revision it starts from, with the
    /// members named by the flags; member rows are loaded from the tree.
    pub fn open(mvcc: Mvcc, members: &[Member], limits: CoreLimits) -> Result<Core, MvccError> {
        let snap = mvcc.snapshot();
        let applied = snap.applied_index();
        let rev = snap.revision()?;
        drop(snap);
        let core = Core {
            mvcc,
            lessor: Mutex::new(Lessor::new(limits.lease_ttl_min_secs)),
            lease_log_order: Arc::new(tokio::sync::Mutex::new(())),
            hub: WatchHub::new(rev, limits.watch_ring_bytes),
            pending: Arc::new(Pending::new(applied, limits.pending_max)),
            roster: Arc::new(Roster::new(members)),
            backend_commits: DurationHistogram::default(),
        };
        core.roster.load(&core.mvcc)?;
        Ok(core)
    }

    /// Highest log index applied.
    pub fn applied(&self) -> u64 {
        self.pending.applied()
    }
}
