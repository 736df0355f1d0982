//! A write transaction on the key space.

use quorumkv_btree::WriteTxn;

use super::scan;
use super::{Event, KeyValue, MvccError, RangeOpts, RangeResult, Result, keys, kv, read_u64};

/// One B+tree transaction on the key space, carrying one or more requests: every
/// modification of one request shares one main revision ([`MvccTxn::end_request`] closes it).
pub struct MvccTxn {
    txn: WriteTxn,
    base_rev: u64,
    /// Sub-revisions used so far by the open request (0: nothing modified yet).
    sub: u64,
    rev_dirty: bool,
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
    pub(crate) fn new(txn: WriteTxn) -> Result<MvccTxn> {
        let base_rev = read_u64(txn.get(keys::META_REV)?.as_deref(), 1);
        let compact = read_u64(txn.get(keys::META_COMPACT)?.as_deref(), 0);
        Ok(MvccTxn {
            txn,
            base_rev,
            sub: 0,
            rev_dirty: false,
            compact,
            events: Vec::new(),
        })
    }

    /// The B+tree transaction underneath (for the server's own rows beside the key space).
    pub fn tree(&mut self) -> &mut WriteTxn {
        &mut self.txn
    }

    /// The revision the open request's modifications get.
    pub fn revision(&self) -> i64 {
        (self.base_rev + 1) as i64
    }

    /// The store's revision as the open request leaves it.
    pub fn current_revision(&self) -> i64 {
        if self.sub > 0 {
            self.revision()
        } else {
            self.base_rev as i64
        }
    }

    /// The compacted revision.
    pub fn compact_revision(&self) -> i64 {
        self.compact as i64
    }

    /// Closes the open request: its modifications (if any) keep their revision and the next
    /// request gets the one after.
    pub fn end_request(&mut self) {
        if self.sub > 0 {
            self.base_rev += 1;
            self.sub = 0;
            self.rev_dirty = true;
        }
    }

    /// Takes the events recorded so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The current version of `key`, including this transaction's changes.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.txn.get(&keys::current(key))? {
            Some(v) => Ok(Some(scan::current_version(&self.txn, key, &v, true)?)),
            None => Ok(None),
        }
    }

    /// etcd's Range as of this transaction (its own writes included), at a revision.
    pub fn range_opts(&self, key: &[u8], range_end: &[u8], opts: RangeOpts) -> Result<RangeResult> {
        scan::range(
            &self.txn,
            self.current_revision(),
            self.compact_revision(),
            key,
            range_end,
            opts,
        )
    }

    /// Current versions of keys in etcd's `key` / `range_end` range, at most `limit` (0: all).
    pub fn range(&self, key: &[u8], range_end: &[u8], limit: usize) -> Result<Vec<KeyValue>> {
        let opts = RangeOpts {
            limit,
            ..RangeOpts::default()
        };
        Ok(self.range_opts(key, range_end, opts)?.kvs)
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
        self.txn
            .insert(&keys::current(key), &kv::encode_current(&kv, sub))?;
        self.txn
            .insert(&keys::history(key, main, sub), &kv::encode(&kv, false))?;
        self.txn.insert(&keys::revision(main, sub), key)?;
        self.events.push(Event {
            delete: false,
            kv,
            prev: prev.clone(),
        });
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
            self.events.push(Event {
                delete: true,
                kv: tomb,
                prev: Some(prev.clone()),
            });
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
                if let Some((pu, pk)) = prev_key.take()
                    && pu == user
                {
                    // Superseded by this newer version.
                    self.txn.remove(&pk)?;
                }
                if dead {
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

    fn finish(&mut self, applied_index: u64) -> Result<i64> {
        self.end_request();
        if self.rev_dirty {
            self.txn
                .insert(keys::META_REV, &self.base_rev.to_le_bytes())?;
        }
        self.txn.set_user_value(applied_index);
        Ok(self.base_rev as i64)
    }

    /// Commits durably, recording `applied_index`; returns the revision and the events not
    /// yet taken.
    pub fn commit(mut self, applied_index: u64) -> Result<(i64, Vec<Event>)> {
        let rev = self.finish(applied_index)?;
        self.txn.commit()?;
        Ok((rev, self.events))
    }

    /// Commits without waiting for the disk (the next durable commit covers it).
    pub fn commit_no_sync(mut self, applied_index: u64) -> Result<(i64, Vec<Event>)> {
        let rev = self.finish(applied_index)?;
        self.txn.commit_no_sync()?;
        Ok((rev, self.events))
    }
}
