//! A consistent read view of the key space.

use std::sync::Arc;

use parking_lot::RwLock;
use quorumkv_btree::ReadTxn;

use super::index::{KeyIndex, Revision};
use super::scan;
use super::{
    Event, KeyValue, MvccError, REVISIONS_END, RangeOpts, RangeResult, Result, current_revision,
    keys, kv, read_u64,
};

/// A read snapshot of the key space: a tree snapshot and the key index it was taken with.
#[derive(Debug)]
pub struct Snapshot {
    txn: ReadTxn,
    index: Arc<RwLock<KeyIndex>>,
}

impl Snapshot {
    pub(crate) fn new(txn: ReadTxn, index: Arc<RwLock<KeyIndex>>) -> Snapshot {
        Snapshot { txn, index }
    }

    /// The B+tree snapshot underneath.
    pub fn txn(&self) -> &ReadTxn {
        &self.txn
    }

    /// Current revision.
    pub fn revision(&self) -> Result<i64> {
        let newest = self
            .txn
            .range(..&REVISIONS_END[..])
            .next_back()
            .transpose()?
            .map(|(k, _)| k);
        Ok(current_revision(self.txn.get(keys::META_REV)?, newest) as i64)
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
        scan::range(
            &self.txn,
            &self.index,
            self.revision()?,
            self.compact_revision()?,
            key,
            range_end,
            opts,
        )
    }

    /// Every key live in this snapshot that has a lease, with its lease: from the index alone,
    /// reading no row (at start, with millions of keys, reading each one's record took seconds).
    pub fn leased_keys(&self) -> Result<Vec<(Vec<u8>, i64)>> {
        let rev = self.revision()? as u64;
        let mut out = Vec::new();
        self.index.read().for_each_live(rev, |key, v| {
            if v.meta.lease != 0 {
                out.push((key.to_vec(), v.meta.lease));
            }
        });
        Ok(out)
    }

    /// Fails with `Compacted` when `rev` is below the compacted revision, as of now.
    fn check_compacted(&self, rev: i64) -> Result<()> {
        let compacted = self
            .compact_revision()?
            .max(self.index.read().compacted() as i64);
        if rev < compacted {
            return Err(MvccError::Compacted);
        }
        Ok(())
    }

    /// Events of revisions `from..=to` in revision order, each with its previous version, at
    /// most about `max` of them (a revision is never split). Fails with `Compacted` when
    /// `from` is below the compacted revision.
    pub fn events(&self, from: i64, to: i64, max: usize) -> Result<Vec<Event>> {
        self.check_compacted(from)?;
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        let start = keys::revision(from.max(0) as u64, 0);
        let end = keys::revision(to as u64 + 1, 0);
        let mut last_main = 0;
        for item in self.txn.range(start.as_slice()..end.as_slice()) {
            let (k, row) = item?;
            let (main, sub) =
                keys::parse_revision(k).ok_or_else(|| MvccError::Corrupt(k.into()))?;
            if out.len() >= max && main != last_main {
                break;
            }
            last_main = main;
            let (kv, dead) = kv::decode_record(row).ok_or_else(|| MvccError::Corrupt(k.into()))?;
            let before = self.index.read().before(&kv.key, Revision { main, sub });
            let prev_rev = before.filter(|v| !v.dead).map(|v| v.rev);
            let prev = match prev_rev {
                Some(rev) => Some(scan::live_version(&self.txn, rev)?),
                None => None,
            };
            out.push(Event {
                delete: dead,
                kv,
                prev,
                prev_rev,
            });
        }
        // A compaction meanwhile may have dropped a previous version from the index.
        self.check_compacted(from)?;
        Ok(out)
    }

    /// The version `e` replaced, if the key was live: carried by the event or read at
    /// [`Event::prev_rev`]. Fails with `Compacted` once compaction at or above the event's
    /// revision may have dropped it.
    pub fn prev(&self, e: &Event) -> Result<Option<KeyValue>> {
        if e.prev.is_some() {
            return Ok(e.prev.clone());
        }
        let Some(rev) = e.prev_rev else {
            return Ok(None);
        };
        let seen_at = e.kv.mod_revision - 1;
        self.check_compacted(seen_at)?;
        match scan::live_version(&self.txn, rev) {
            Ok(kv) => Ok(Some(kv)),
            Err(err) => {
                // A compaction after the check above is the likelier story than corruption.
                self.check_compacted(seen_at)?;
                Err(err)
            }
        }
    }

    /// etcd's HashKV: a CRC32C over every version at or below `rev` (0: current) that the
    /// last compaction keeps, with the compacted revision; equal on replicas that applied the
    /// same log, however far each has swept (rows a sweep has yet to remove are left out, as
    /// etcd leaves out what its compaction has yet to delete).
    pub fn hash(&self, rev: i64) -> Result<(u32, i64, i64)> {
        let current = self.revision()?;
        let rev = if rev <= 0 { current } else { rev };
        if rev > current {
            return Err(MvccError::FutureRevision);
        }
        let compacted = self.compact_revision()?;
        if rev < compacted {
            return Err(MvccError::Compacted);
        }
        let mut h = crc32c::crc32c(&compacted.to_le_bytes());
        let end = keys::revision(rev as u64 + 1, 0);
        let kept_from = keys::revision(compacted as u64 + 1, 0);
        for item in self.txn.range(&[keys::REVISIONS][..]..end.as_slice()) {
            let (k, v) = item?;
            if k < kept_from.as_slice() {
                let corrupt = || MvccError::Corrupt(k.to_vec());
                let (main, sub) = keys::parse_revision(k).ok_or_else(corrupt)?;
                let (key, _, _) = kv::record_meta(v).ok_or_else(corrupt)?;
                // The lock is taken per row: writes go on while a hash reads millions.
                let kept = self
                    .index
                    .read()
                    .kept(key, Revision { main, sub }, compacted as u64);
                if !kept {
                    continue;
                }
            }
            h = crc32c::crc32c_append(h, k);
            h = crc32c::crc32c_append(h, v);
        }
        // The index answered for this compaction only if no newer one came meanwhile.
        if self.index.read().compacted() as i64 != compacted {
            return Err(MvccError::Compacted);
        }
        Ok((h, compacted, rev))
    }
}
