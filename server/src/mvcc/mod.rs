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

pub mod index;
mod index_key;
pub mod keys;
pub mod kv;
mod scan;
mod snapshot;
mod txn;

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use quorumkv_btree::{Db, ReadTxn, WriteTxn};

use index::{KeyIndex, Revision, Version};
use index_key::IndexKey;

pub use kv::{Event, KeyValue};
pub use snapshot::Snapshot;
pub use txn::{MvccTxn, Savepoint};

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
    /// A range read would return more than its `bytes_max`.
    #[error("mvcc: range response over {0} bytes")]
    TooLarge(usize),
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
    /// Most bytes of keys and values returned (0: no limit); past it the read fails.
    pub bytes_max: usize,
}

/// The key space: the tree and the key index over it.
#[derive(Debug, Clone)]
pub struct Mvcc {
    db: Db,
    /// The index of the tree's current contents. Replacing the tree's contents wholesale
    /// (a snapshot install) swaps in a new index under this lock, so a view taken under it
    /// pairs a tree snapshot with the index built for it.
    index: Arc<Mutex<Arc<RwLock<KeyIndex>>>>,
}

pub(crate) fn read_u64(v: Option<&[u8]>, default: u64) -> u64 {
    v.and_then(|b| b.try_into().ok())
        .map_or(default, u64::from_le_bytes)
}

/// The key every revision row sorts below.
pub(crate) const REVISIONS_END: [u8; 1] = [keys::REVISIONS + 1];

/// The current revision of a tree holding `meta_rev` (the `m rev` row) and `newest` (its
/// greatest key below [`REVISIONS_END`], the newest revision row if there is one): that row's
/// revision, or the recorded one where compaction removed the row, whichever is larger.
pub(crate) fn current_revision(meta_rev: Option<&[u8]>, newest: Option<&[u8]>) -> u64 {
    let newest = newest
        .and_then(keys::parse_revision)
        .map_or(0, |(main, _)| main);
    read_u64(meta_rev, 1).max(newest)
}

/// Rewrites a tree in the legacy layout (see `keys.rs`) into revision rows, in one durable
/// transaction; a tree without legacy rows is left alone. Returns how many versions moved.
fn convert_legacy(db: &Db) -> Result<u64> {
    let legacy = |p: u8| db.begin_read().prefix(&[p]).next().is_some();
    if !legacy(keys::HISTORY) && !legacy(keys::CURRENT) {
        return Ok(0);
    }
    let mut w = db.begin_write()?;
    let mut moved = 0;
    // The old revision rows go first: the new ones take their keys.
    for prefix in [keys::REVISIONS, keys::CURRENT, keys::HISTORY] {
        let view = db.begin_read();
        for item in view.prefix(&[prefix]) {
            let (k, v) = item?;
            w.remove(k)?;
            if prefix != keys::HISTORY {
                continue;
            }
            let (user, main, sub) =
                keys::parse_history(k).ok_or_else(|| MvccError::Corrupt(k.to_vec()))?;
            let (version, dead) =
                kv::decode(&user, v).ok_or_else(|| MvccError::Corrupt(k.to_vec()))?;
            w.insert(
                &keys::revision(main, sub),
                &kv::encode_record(&version, dead),
            )?;
            moved += 1;
        }
    }
    w.commit()?;
    tracing::info!(versions = moved, "key space converted to revision rows");
    Ok(moved)
}

/// Most rows [`build_index`] makes room for up front; a larger tree grows the vector as it
/// reads.
const VERSIONS_RESERVED_MAX: usize = 1 << 25;

/// The key index of what `view` holds.
fn build_index(view: &ReadTxn) -> Result<KeyIndex> {
    let compacted = read_u64(view.get(keys::META_COMPACT)?, 0);
    // Room for every row at once (the tree's entry count bounds the revision rows), rather
    // than growing by copying: at four million rows the copies were a twentieth of an open.
    // The count comes from the file, so it is bounded before it sizes an allocation.
    let rows_hint = usize::try_from(view.len()).map_or(0, |n| n.min(VERSIONS_RESERVED_MAX));
    let mut versions = Vec::with_capacity(rows_hint);
    let mut newest = None;
    for item in view.prefix(&[keys::REVISIONS]) {
        let (k, v) = item?;
        let corrupt = || MvccError::Corrupt(k.to_vec());
        let (main, sub) = keys::parse_revision(k).ok_or_else(corrupt)?;
        let (key, dead, meta) = kv::record_meta(v).ok_or_else(corrupt)?;
        let rev = Revision { main, sub };
        // Rows come in key order, so revisions rise; a row that breaks that is not a revision
        // row as this layout writes it.
        if newest.is_some_and(|n| n >= rev) {
            return Err(corrupt());
        }
        newest = Some(rev);
        versions.push((IndexKey::new(key), Version { rev, dead, meta }));
    }
    Ok(KeyIndex::from_versions(compacted, versions))
}

impl Mvcc {
    /// The key space in `db`, converting a tree in the legacy layout first.
    pub fn open(db: Db) -> Result<Mvcc> {
        convert_legacy(&db)?;
        let ix = build_index(&db.begin_read())?;
        Ok(Mvcc {
            db,
            index: Arc::new(Mutex::new(Arc::new(RwLock::new(ix)))),
        })
    }

    /// The B+tree underneath.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// How many keys the index holds (each with at least one version) and the compacted
    /// revision.
    pub fn index_stats(&self) -> (usize, u64) {
        let index = Arc::clone(&self.index.lock());
        let index = index.read();
        (index.len(), index.compacted())
    }

    /// Whether a compaction's sweep is still removing versions no reader can see.
    pub fn sweeping(&self) -> bool {
        let index = Arc::clone(&self.index.lock());
        index.read().sweeping()
    }

    /// A consistent snapshot for reads.
    pub fn snapshot(&self) -> Snapshot {
        let slot = self.index.lock();
        Snapshot::new(self.db.begin_read(), Arc::clone(&slot))
    }

    /// A write transaction; `commit` records `applied_index` with it.
    pub fn write(&self) -> Result<MvccTxn> {
        let index = Arc::clone(&self.index.lock());
        MvccTxn::new(self.db.begin_write()?, index)
    }

    /// Moves every row whose key starts with byte `from` to the same key under `to`, in one
    /// durable transaction; returns how many moved (none moved: nothing is written). For rows
    /// outside the revision rows, whose layout changed between versions.
    pub fn move_prefix(&self, from: u8, to: u8) -> Result<u64> {
        assert!(
            from != keys::REVISIONS && to != keys::REVISIONS,
            "revision rows stay"
        );
        let view = self.db.begin_read();
        if view.prefix(&[from]).next().is_none() {
            return Ok(0);
        }
        let mut w = self.db.begin_write()?;
        let mut moved = 0;
        for item in view.prefix(&[from]) {
            let (k, v) = item?;
            let mut to_key = k.to_vec();
            to_key[0] = to;
            w.remove(k)?;
            w.insert(&to_key, v)?;
            moved += 1;
        }
        w.commit()?;
        Ok(moved)
    }

    /// Runs `replace`, which rewrites the tree's contents wholesale in the transaction it
    /// returns, then commits that durably and rebuilds the key index for the new contents;
    /// readers meanwhile keep the old pair.
    pub fn replace<T>(
        &self,
        replace: impl FnOnce(&Db) -> std::result::Result<(WriteTxn, T), String>,
    ) -> std::result::Result<T, String> {
        let (w, out) = replace(&self.db)?;
        let mut slot = self.index.lock();
        w.commit().map_err(|e| e.to_string())?;
        convert_legacy(&self.db).map_err(|e| e.to_string())?;
        let ix = build_index(&self.db.begin_read()).map_err(|e| e.to_string())?;
        *slot = Arc::new(RwLock::new(ix));
        Ok(out)
    }
}
