//! A consistent read view of the key space.

use quorumkv_btree::ReadTxn;

use super::scan::{self, Source};
use super::{Event, KeyValue, MvccError, RangeOpts, RangeResult, Result, keys, kv, read_u64};

/// A read snapshot of the key space.
#[derive(Debug)]
pub struct Snapshot {
    txn: ReadTxn,
}

impl Snapshot {
    pub(crate) fn new(txn: ReadTxn) -> Snapshot {
        Snapshot { txn }
    }

    /// The B+tree snapshot underneath.
    pub fn txn(&self) -> &ReadTxn {
        &self.txn
    }

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
        scan::range(
            &self.txn,
            self.revision()?,
            self.compact_revision()?,
            key,
            range_end,
            opts,
        )
    }

    /// Events of revisions `from..=to` in revision order, each with its previous version, at
    /// most about `max` of them (a revision is never split). Fails with `Compacted` when
    /// `from` is below the compacted revision.
    pub fn events(&self, from: i64, to: i64, max: usize) -> Result<Vec<Event>> {
        if from < self.compact_revision()? {
            return Err(MvccError::Compacted);
        }
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        let start = keys::revision(from.max(0) as u64, 0);
        let end = keys::revision(to as u64 + 1, 0);
        let mut last_main = 0;
        let mut failure = None;
        self.txn.each(&start, &end, &mut |k, user| {
            let Some((main, sub)) = keys::parse_revision(k) else {
                failure = Some(MvccError::Corrupt(k.to_vec()));
                return Ok(false);
            };
            if out.len() >= max && main != last_main {
                return Ok(false);
            }
            last_main = main;
            let hk = keys::history(user, main, sub);
            let rec = self
                .txn
                .get(&hk)?
                .ok_or_else(|| MvccError::Corrupt(hk.clone()))?;
            let (kv, dead) = kv::decode(user, rec).ok_or_else(|| MvccError::Corrupt(hk.clone()))?;
            let prev = self.version_before(user, main, sub)?;
            out.push(Event {
                delete: dead,
                kv,
                prev,
            });
            Ok(true)
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// The live version of `key` just before revision (`main`, `sub`), if any.
    fn version_before(&self, key: &[u8], main: u64, sub: u64) -> Result<Option<KeyValue>> {
        let lo = keys::history_prefix(key);
        let hi = keys::history(key, main, sub);
        let Some(item) = self.txn.range(lo.as_slice()..hi.as_slice()).next_back() else {
            return Ok(None);
        };
        let (k, v) = item?;
        let (kv, dead) = kv::decode(key, v).ok_or_else(|| MvccError::Corrupt(k.to_vec()))?;
        Ok((!dead).then_some(kv))
    }

    /// etcd's HashKV: a CRC32C over every stored version at or below `rev` (0: current),
    /// with the compacted revision; equal on replicas that applied the same log.
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
        self.txn
            .each(&[keys::HISTORY], &[keys::HISTORY + 1], &mut |k, v| {
                let (_, main, _) =
                    keys::parse_history(k).ok_or_else(|| MvccError::Corrupt(k.to_vec()))?;
                if main as i64 <= rev {
                    h = crc32c::crc32c_append(h, k);
                    h = crc32c::crc32c_append(h, v);
                }
                Ok(true)
            })?;
        Ok((h, compacted, rev))
    }
}
