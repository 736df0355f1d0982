//! Reads shared by snapshots and write transactions: ranges at a revision over any source of
//! ordered tree rows.

use quorumkv_btree::{ReadTxn, WriteTxn};

use super::{KeyValue, MvccError, RangeOpts, RangeResult, Result, keys, kv};

/// A visitor of rows: returns whether to go on.
pub(crate) type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'a;

/// A source of ordered rows: a read snapshot or a write transaction (which sees its own
/// writes).
pub(crate) trait Source {
    /// Calls `f` on every row in `[start, end)` in order until it returns `false`.
    fn each(&self, start: &[u8], end: &[u8], f: &mut Visit<'_>) -> Result<()>;
    /// The row at `key`.
    fn row(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
}

/// The current version of `key` from its current row `v`, its value fetched from the history
/// row the current row refers to unless `with_value` is false.
pub(crate) fn current_version(
    src: &dyn Source,
    key: &[u8],
    v: &[u8],
    with_value: bool,
) -> Result<KeyValue> {
    let corrupt = || MvccError::Corrupt(keys::current(key));
    let (mut kv, at) = kv::decode_current(key, v).ok_or_else(corrupt)?;
    if let Some(sub) = at
        && with_value
    {
        let h = keys::history(
            key,
            u64::try_from(kv.mod_revision).map_err(|_| corrupt())?,
            sub,
        );
        let row = src.row(&h)?.ok_or_else(corrupt)?;
        let (version, dead) = kv::decode(key, &row).ok_or_else(corrupt)?;
        if dead || version.mod_revision != kv.mod_revision {
            return Err(corrupt());
        }
        kv.value = version.value;
    }
    Ok(kv)
}

impl Source for ReadTxn {
    fn row(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get(key)?.map(<[u8]>::to_vec))
    }
    fn each(&self, start: &[u8], end: &[u8], f: &mut Visit<'_>) -> Result<()> {
        if start >= end {
            return Ok(());
        }
        for item in self.range(start..end) {
            let (k, v) = item?;
            if !f(k, v)? {
                break;
            }
        }
        Ok(())
    }
}

impl Source for WriteTxn {
    fn row(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get(key)?)
    }
    fn each(&self, start: &[u8], end: &[u8], f: &mut Visit<'_>) -> Result<()> {
        const CHUNK: usize = 1024;
        let mut from = start.to_vec();
        while from.as_slice() < end {
            let rows = self.scan(&from, Some(end), CHUNK)?;
            let n = rows.len();
            for (k, v) in &rows {
                if !f(k, v)? {
                    return Ok(());
                }
            }
            match rows.into_iter().last() {
                Some((mut last, _)) if n == CHUNK => {
                    last.push(0);
                    from = last;
                }
                _ => break,
            }
        }
        Ok(())
    }
}

fn push(opts: &RangeOpts, kv: KeyValue, out: &mut RangeResult) {
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
}

/// etcd's Range over `src`: `key` alone (`range_end` empty), `[key, range_end)`, or every
/// key from `key` on (`range_end` = `"\0"`), at `opts.revision` (0: `current`).
pub(crate) fn range(
    src: &dyn Source,
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
    if rev < compacted {
        return Err(MvccError::Compacted);
    }
    let mut out = RangeResult::default();
    if rev == current {
        let (start, end) = keys::range_bounds(keys::CURRENT, key, range_end);
        src.each(&start, &end, &mut |k, v| {
            let user = keys::parse_current(k).ok_or_else(|| MvccError::Corrupt(k.to_vec()))?;
            let shown = opts.limit == 0 || out.kvs.len() < opts.limit;
            let with_value = shown && !opts.keys_only && !opts.count_only;
            push(&opts, current_version(src, &user, v, with_value)?, &mut out);
            Ok(true)
        })?;
        return Ok(out);
    }
    // A past revision: the newest version of each key at or before `rev`.
    let (start, end) = keys::range_bounds(keys::HISTORY, key, range_end);
    let mut pending: Option<(Vec<u8>, KeyValue, bool)> = None;
    src.each(&start, &end, &mut |k, v| {
        let (user, main, _) =
            keys::parse_history(k).ok_or_else(|| MvccError::Corrupt(k.to_vec()))?;
        if pending.as_ref().is_some_and(|(u, _, _)| *u != user)
            && let Some((_, kv, dead)) = pending.take()
            && !dead
        {
            push(&opts, kv, &mut out);
        }
        if main as i64 <= rev {
            let (kv, dead) = kv::decode(&user, v).ok_or_else(|| MvccError::Corrupt(k.to_vec()))?;
            pending = Some((user, kv, dead));
        }
        Ok(true)
    })?;
    if let Some((_, kv, false)) = pending {
        push(&opts, kv, &mut out);
    }
    Ok(out)
}
