//! The state machine a node drives: it applies committed entries, reports how far its state
//! is durable (so the log before that point can be compacted), writes snapshots for peers that
//! fell behind the compacted log, and installs snapshots received from a leader.

use std::path::Path;

use quorumkv_replication::Entry;

/// A state machine behind a node. Entries arrive in index order, each exactly once per
/// process lifetime; after a restart or a snapshot install, entries at or below the machine's
/// own applied index may arrive again and must be skipped (apply is idempotent by index).
pub trait StateMachine: Send + Sync + 'static {
    /// Queues committed entries for apply, in order. Must not block on disk.
    fn apply(&self, entries: Vec<Entry>);
    /// Highest index whose effects are durable in the machine (the log up to it may go).
    fn durable_index(&self) -> u64;
    /// Writes a consistent snapshot of the state to `path` and makes it durable; returns the
    /// applied index it holds.
    fn write_snapshot(&self, path: &Path) -> Result<u64, String>;
    /// Replaces the whole state with the snapshot at `path` (written by `write_snapshot` on a
    /// peer), durably and atomically, after everything queued by `apply` before it; returns
    /// the applied index the machine now holds. The file is hostile until verified.
    fn install_snapshot(&self, path: &Path) -> Result<u64, String>;
    /// Why the machine can no longer apply (its storage failed), if it cannot. The node then
    /// stops as it does when its own storage fails.
    fn failure(&self) -> Option<String> {
        None
    }
    /// Rewrites a proposal another member forwarded to this one, just before this member's
    /// protocol appends it (if it leads), so the entry carries the leader's facts rather than
    /// the proposer's (its clock). Must keep the entry's meaning otherwise.
    fn stamp_forwarded(&self, _data: &mut Vec<u8>) {}
}
