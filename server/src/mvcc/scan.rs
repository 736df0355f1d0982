//! Reads shared by snapshots and write transactions: ranges at a revision, resolved in the
//! key index and read from the revision rows of any tree view.

use parking_lot::RwLock;
use quorumkv_btree::{ReadTxn, WriteTxn};

use super::index::{KeyIndex, Revision};
use super::{KeyValue, MvccError, RangeOpts, RangeResult, Result, keys, kv};

/// A view of the tree's rows: a read snapshot or a write transaction (which sees its own
/// writes).
pub(crate) trait Source {
    /// The row at `key`.
    fn row(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
}

impl Source for ReadTxn {
    fn row(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get(key)?.map(<[u8]>::to_vec))
    }
}

impl Source for WriteTxn {
    fn row(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get(key)?)
    }
}

/// The version stored at `rev` and whether it is a deletion.
pub(crate) fn version(src: &dyn Source, rev: Revision) -> Result<(KeyValue, bool)> {
    let k = keys::revision(rev.main, rev.sub);
    let row = src.row(&k)?.ok_or_else(|| MvccError::Corrupt(k.clone()))?;
    kv::decode_record(&row).ok_or(MvccError::Corrupt(k))
}

/// The live version stored at `rev` (which the index names as live).
pub(crate) fn live_version(src: &dyn Source, rev: Revision) -> Result<KeyValue> {
    match version(src, rev)? {
        (kv, false) => Ok(kv),
        (_, true) => Err(MvccError::Corrupt(keys::revision(rev.main, rev.sub))),
    }
}

/// etcd's Range over `src`: `key` alone (`range_end` empty), `[key, range_end)`, or every
/// key from `key` on (`range_end` = `"\0"`), at `opts.revision` (0: `current`).
pub(crate) fn range(
    src: &dyn Source,
    index: &RwLock<KeyIndex>,
    current: i64,
    compacted: i64,
    key: &[u8],
    range_end: &[u8],
    opts: RangeOpts,
) -> Result<RangeResult> {
    let rev = if opts.revision <= 0 {
        current
    } else {
        opts.revision
    };
    if rev > current {
        return Err(MvccError::FutureRevision);
    }
    let mut out = RangeResult::default();
    let mut shown: Vec<Revision> = Vec::new();
    {
        let ix = index.read();
        if rev < compacted.max(ix.compacted() as i64) {
            return Err(MvccError::Compacted);
        }
        ix.range(key, range_end, rev as u64, |_, r| {
            out.count += 1;
            if !opts.count_only && (opts.limit == 0 || shown.len() < opts.limit) {
                shown.push(r);
            }
            true
        });
    }
    out.more = !opts.count_only && opts.limit > 0 && out.count > opts.limit;
    out.kvs.reserve(shown.len());
    let mut bytes = 0usize;
    for r in shown {
        let mut kv = live_version(src, r)?;
        if opts.keys_only {
            kv.value = Vec::new();
        }
        bytes += kv.key.len() + kv.value.len();
        if opts.bytes_max > 0 && bytes > opts.bytes_max {
            return Err(MvccError::TooLarge(opts.bytes_max));
        }
        out.kvs.push(kv);
    }
    Ok(out)
}
