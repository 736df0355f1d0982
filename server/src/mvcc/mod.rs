//! The MVCC key space of etcd's model, stored in the B+tree.
//!
//! A global revision counts modifications: each modifying request (or transaction) gets one
//! main revision, its operations sub-revisions 0, 1, ... Every key carries its create and
//! modification revisions, a version and a lease. Deletion writes a tombstone. Reads see the
//! current state or any revision not yet compacted; compaction drops versions that no
//! revision at or after the compaction point can see (the tree reuses their pages). The
//! applied log index is committed with every transaction as the tree's user value, so replay
//! after a crash is idempotent. See `keys.rs` for the layout.

pub mod keys;
pub mod kv;

use quorumkv_btree::{Db, ReadTxn, WriteTxn};

pub use kv::{Event, KeyValue};

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

fn read_u64(v: Option<&[u8]>, default: u64) -> u64 {
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
        Snapshot {
            txn: self.db.begin_read(),
        }
    }

    /// A write transaction; `commit` records `applied_index` with it.
    pub fn write(&self) -> Result<MvccTxn> {
        let txn = self.db.begin_write()?;
        let rev = read_u64(txn.get(keys::META_REV)?.as_deref(), 1);
        let compact = read_u64(txn.get(keys::META_COMPACT)?.as_deref(), 0);
        Ok(MvccTxn {
            txn,
            base_rev: rev,
            sub: 0,
            compact,
            events: Vec::new(),
        })
    }
}

/// A read snapshot of the key space.
#[derive(Debug)]
pub struct Snapshot {
    txn: ReadTxn,
}

impl Snapshot {
    /// Current revision.
    pub fn revision(&self) -> Result<i64> {
        Ok(read_u64(self.txn.get(keys::META_REV)?, 1) as i64)
    }

    /// Compacted revision (0: none).
    pub fn compact_revision(&self) -> Result<i64> {
        Ok(read_u64(self.txn.get(keys::META_COMPACT)?, 0) as i64)
    }

    /// The log index applied in this snapshot.
    pub fn applied_index(&self) -> u64 {
        self.txn.user_value()
    }

    /// etcd's Range: `key` alone (`range_end` empty), `[key, range_end)`, or every key from
    /// `key` on (`range_end` = `"\0"`), at a revision.
    pub fn range(&self, key: &[u8], range_end: &[u8], opts: RangeOpts) -> Result<RangeResult> {
        let current = self.revision()?;
        let rev = if opts.revision <= 0 {
            current
        } else {
            opts.revision
        };
        if rev > current {
            return Err(MvccError::FutureRevision);
        }
        if rev < self.compact_revision()? {
            return Err(MvccError::Compacted);
        }
        let mut out = RangeResult::default();
        let push = |kv: KeyValue, out: &mut RangeResult| {
            out.count += 1;
            if opts.count_only {
                return;
            }
            if opts.limit > 0 && out.kvs.len() >= opts.limit {
                out.more = true;
                return;
            }
            let mut kv = kv;
            if opts.keys_only {
                kv.value.clear();
            }
            out.kvs.push(kv);
        };
        if rev == current {
            let (start, end) = keys::range_bounds(keys::CURRENT, key, range_end);
            for item in self.txn.range(start.as_slice()..end.as_slice()) {
                let (k, v) = item?;
                let user = keys::parse_current(k).ok_or_else(|| MvccError::Corrupt(k.to_vec()))?;
                let (kv, _) = kv::decode(&user, v).ok_or_else(|| MvccError::Corrupt(k.to_vec()))?;
                push(kv, &mut out);
            }
            return Ok(out);
        }
        // A past revision: the newest version of each key at or before `rev`.
        let (start, end) = keys::range_bounds(keys::HISTORY, key, range_end);
        let mut pending: Option<(Vec<u8>, KeyValue, bool)> = None;
        for item in self.txn.range(start.as_slice()..end.as_slice()) {
            let (k, v) = item?;
            let (user, main, _) =
                keys::parse_history(k).ok_or_else(|| MvccError::Corrupt(k.to_vec()))?;
            if pending.as_ref().is_some_and(|(u, _, _)| *u != user)
                && let Some((_, kv, dead)) = pending.take()
                && !dead
            {
                push(kv, &mut out);
            }
            if main as i64 <= rev {
                let (kv, dead) =
                    kv::decode(&user, v).ok_or_else(|| MvccError::Corrupt(k.to_vec()))?;
                pending = Some((user, kv, dead));
            }
        }
        if let Some((_, kv, false)) = pending {
            push(kv, &mut out);
        }
        Ok(out)
    }
}

/// One transaction on the key space: every modification in it shares one main revision.
pub struct MvccTxn {
    txn: WriteTxn,
    base_rev: u64,
    /// Sub-revisions used so far (0: nothing modified yet).
    sub: u64,
    compact: u64,
    events: Vec<Event>,
}

impl std::fmt::Debug for MvccTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MvccTxn")
            .field("base_rev", &self.base_rev)
            .field("sub", &self.sub)
            .finish()
    }
}

impl MvccTxn {
    /// The revision this transaction's modifications get.
    pub fn revision(&self) -> i64 {
        (self.base_rev + 1) as i64
    }

    /// The store's revision as this transaction leaves it.
    pub fn current_revision(&self) -> i64 {
        if self.sub > 0 {
            self.revision()
        } else {
            self.base_rev as i64
        }
    }

    /// The current version of `key`, including this transaction's changes.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let k = keys::current(key);
        match self.txn.get(&k)? {
            Some(v) => Ok(Some(kv::decode(key, &v).ok_or(MvccError::Corrupt(k))?.0)),
            None => Ok(None),
        }
    }

    /// Current versions of keys in etcd's `key` / `range_end` range, at most `limit` (0: all).
    pub fn range(&self, key: &[u8], range_end: &[u8], limit: usize) -> Result<Vec<KeyValue>> {
        let (start, end) = keys::range_bounds(keys::CURRENT, key, range_end);
        let rows = self.txn.scan(
            &start,
            Some(&end),
            if limit == 0 { usize::MAX } else { limit },
        )?;
        rows.into_iter()
            .map(|(k, v)| {
                let user = keys::parse_current(&k).ok_or_else(|| MvccError::Corrupt(k.clone()))?;
                Ok(kv::decode(&user, &v).ok_or(MvccError::Corrupt(k))?.0)
            })
            .collect()
    }

    fn next_sub(&mut self) -> (u64, u64) {
        let s = self.sub;
        self.sub += 1;
        (self.base_rev + 1, s)
    }

    /// etcd's Put; returns the previous version.
    pub fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> Result<Option<KeyValue>> {
        let prev = self.get(key)?;
        let (main, sub) = self.next_sub();
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: prev.as_ref().map_or(main as i64, |p| p.create_revision),
            mod_revision: main as i64,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: value.to_vec(),
            lease,
        };
        let rec = kv::encode(&kv, false);
        self.txn.insert(&keys::current(key), &rec)?;
        self.txn.insert(&keys::history(key, main, sub), &rec)?;
        self.txn.insert(&keys::revision(main, sub), key)?;
        self.events.push(Event::Put(kv));
        Ok(prev)
    }

    /// etcd's DeleteRange; returns the deleted versions.
    pub fn delete_range(&mut self, key: &[u8], range_end: &[u8]) -> Result<Vec<KeyValue>> {
        let victims = self.range(key, range_end, 0)?;
        for prev in &victims {
            let (main, sub) = self.next_sub();
            let tomb = KeyValue {
                key: prev.key.clone(),
                mod_revision: main as i64,
                ..KeyValue::default()
            };
            self.txn.remove(&keys::current(&prev.key))?;
            self.txn.insert(
                &keys::history(&prev.key, main, sub),
                &kv::encode(&tomb, true),
            )?;
            self.txn.insert(&keys::revision(main, sub), &prev.key)?;
            self.events.push(Event::Delete(tomb));
        }
        Ok(victims)
    }

    /// etcd's Compact: versions no revision at or after `rev` can see are removed.
    pub fn compact(&mut self, rev: i64) -> Result<()> {
        let current = self.current_revision();
        if rev > current {
            return Err(MvccError::FutureRevision);
        }
        let rev = rev.max(0) as u64;
        if rev <= self.compact {
            return Err(MvccError::Compacted);
        }
        // Scan the history in bounded chunks; per key, keep the newest version at or before
        // `rev` (unless it is a deletion) and everything after.
        let mut start = vec![keys::HISTORY];
        let end = vec![keys::HISTORY + 1];
        let mut prev_key: Option<(Vec<u8>, Vec<u8>)> = None; // (user key, tree key of its newest version <= rev)
        loop {
            let rows = self.txn.scan(&start, Some(&end), 4096)?;
            let Some((last, _)) = rows.last() else { break };
            let mut next = last.clone();
            next.push(0);
            for (k, v) in rows {
                let (user, main, _) =
                    keys::parse_history(&k).ok_or_else(|| MvccError::Corrupt(k.clone()))?;
                if main > rev {
                    continue;
                }
                let (_, dead) =
                    kv::decode(&user, &v).ok_or_else(|| MvccError::Corrupt(k.clone()))?;
                if let Some((pu, pk)) = prev_key.take() {
                    if pu == user {
                        // Superseded by this newer version.
                        self.txn.remove(&pk)?;
                    }
                }
                if dead && main <= rev {
                    // A deletion at or before the point: nothing of this key survives there.
                    self.txn.remove(&k)?;
                    prev_key = None;
                } else {
                    prev_key = Some((user, k));
                }
            }
            start = next;
        }
        let rows = self.txn.scan(
            &[keys::REVISIONS],
            Some(&keys::revision(rev, 0)),
            usize::MAX,
        )?;
        for (k, _) in rows {
            self.txn.remove(&k)?;
        }
        self.compact = rev;
        self.txn.insert(keys::META_COMPACT, &rev.to_le_bytes())?;
        Ok(())
    }

    /// Commits, recording `applied_index`; returns the revision and the events of this
    /// transaction.
    pub fn commit(mut self, applied_index: u64) -> Result<(i64, Vec<Event>)> {
        if self.sub > 0 {
            self.txn
                .insert(keys::META_REV, &(self.base_rev + 1).to_le_bytes())?;
        }
        let rev = self.current_revision();
        self.txn.set_user_value(applied_index);
        self.txn.commit()?;
        Ok((rev, self.events))
    }
}
