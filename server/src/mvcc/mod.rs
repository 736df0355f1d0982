//! The MVCC key space of etcd's model, stored in the B+tree.
//!
//! A global revision counts modifications: each modifying request (or transaction) gets one
//! main revision, its operations sub-revisions 0, 1, ... Every key carries its create and
//! modification revisions, a version and a lease. Deletion writes a tombstone. Reads see the
//! current state or any revision not yet compacted; compaction drops versions that no
//! revision at or after the compaction point can see (the tree reuses their pages). The
//! applied log index is committed with every transaction as the tree's user value, so replay
//! after a crash is idempotent. See `keys.rs` for the layout.
//!
//! One B+tree write transaction may carry many requests (the server applies a batch of log
//! entries at once): [`MvccTxn::end_request`] closes one request's revision.

pub mod keys;
pub mod kv;
mod scan;
mod snapshot;
mod txn;

use quorumkv_btree::Db;

pub use kv::{Event, KeyValue};
pub use snapshot::Snapshot;
pub use txn::MvccTxn;

/// Errors of the key space, worded as etcd words them where etcd has the case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MvccError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] quorumkv_btree::Error),
    /// A read asked for a revision compaction removed.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// A read asked for a revision that does not exist yet.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// Stored bytes are not a record.
    #[error("mvcc: corrupt record under {0:?}")]
    Corrupt(Vec<u8>),
}

/// Result alias.
pub type Result<T, E = MvccError> = std::result::Result<T, E>;

/// What a range read returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeResult {
    /// Matching versions, in key order, at most `limit`.
    pub kvs: Vec<KeyValue>,
    /// How many keys matched in all.
    pub count: usize,
    /// Whether `limit` cut the result.
    pub more: bool,
}

/// Options of a range read.
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeOpts {
    /// Revision to read at (0: current).
    pub revision: i64,
    /// Most keys returned (0: no limit).
    pub limit: usize,
    /// Leave values out.
    pub keys_only: bool,
    /// Only count.
    pub count_only: bool,
}

/// The key space.
#[derive(Debug, Clone)]
pub struct Mvcc {
    db: Db,
}

pub(crate) fn read_u64(v: Option<&[u8]>, default: u64) -> u64 {
    v.and_then(|b| b.try_into().ok())
        .map_or(default, u64::from_le_bytes)
}

impl Mvcc {
    /// The key space in `db`.
    pub fn new(db: Db) -> Mvcc {
        Mvcc { db }
    }

    /// The B+tree underneath.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// A consistent snapshot for reads.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.db.begin_read())
    }

    /// A write transaction; `commit` records `applied_index` with it.
    pub fn write(&self) -> Result<MvccTxn> {
        MvccTxn::new(self.db.begin_write()?)
    }
}
