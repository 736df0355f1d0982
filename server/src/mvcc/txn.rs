//! A write transaction on the key space.

use std::sync::Arc;

use parking_lot::RwLock;
use quorumkv_btree::WriteTxn;

use super::index::{KeyIndex, Meta, Revision, SweepAt, Swept, Version};
use super::scan;
use super::{
    Event, KeyValue, MvccError, REVISIONS_END, RangeOpts, RangeResult, Result, current_revision,
    keys, kv, read_u64,
};

/// A change to the key index, undone if the transaction does not commit.
enum Undo {
    Pushed(Vec<u8>),
    Compacted((u64, SweepAt)),
    Swept(Swept),
    Orphans(Vec<Revision>),
}

/// Keys a transaction's slice of a compaction sweep looks at, at most: a few milliseconds
/// under the index's write lock.
const SWEEP_KEYS: usize = 8192;

/// Versions a slice drops from the index, at most.
const SWEEP_DROPS: usize = 8192;

/// Orphaned rows a slice removes from the tree, at most: consecutive revisions, so a few
/// dozen leaves.
const SWEEP_ROWS: usize = 2048;

/// A point inside the open request that [`MvccTxn::rollback_to`] returns to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Savepoint {
    undo: usize,
    events: usize,
    sub: u64,
    base_rev: u64,
}

/// One B+tree transaction on the key space, carrying one or more requests: every
/// modification of one request shares one main revision ([`MvccTxn::end_request`] closes it).
/// Its versions go to the key index as they are written; if it does not commit, they are
/// taken out again.
pub struct MvccTxn {
    /// `None` once committed.
    txn: Option<WriteTxn>,
    index: Arc<RwLock<KeyIndex>>,
    undo: Vec<Undo>,
    base_rev: u64,
    /// Sub-revisions used so far by the open request (0: nothing modified yet).
    sub: u64,
    /// Whether this transaction compacted or removed revision rows (perhaps the newest).
    compacted_here: bool,
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
    pub(crate) fn new(txn: WriteTxn, index: Arc<RwLock<KeyIndex>>) -> Result<MvccTxn> {
        let base_rev = current_revision(
            txn.get(keys::META_REV)?.as_deref(),
            txn.last_key_before(&REVISIONS_END)?.as_deref(),
        );
        let compact = read_u64(txn.get(keys::META_COMPACT)?.as_deref(), 0);
        Ok(MvccTxn {
            txn: Some(txn),
            index,
            undo: Vec::new(),
            base_rev,
            sub: 0,
            compacted_here: false,
            compact,
            events: Vec::new(),
        })
    }

    /// The B+tree transaction underneath (for the server's own rows beside the key space).
    pub fn tree(&mut self) -> &mut WriteTxn {
        self.txn.as_mut().expect("an open transaction")
    }

    fn view(&self) -> &WriteTxn {
        self.txn.as_ref().expect("an open transaction")
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
        }
    }

    /// A point the open request can return to (a request made of steps that must all
    /// succeed or leave nothing).
    pub fn savepoint(&self) -> Savepoint {
        Savepoint {
            undo: self.undo.len(),
            events: self.events.len(),
            sub: self.sub,
            base_rev: self.base_rev,
        }
    }

    /// Takes out every change the open request made after `sp`: its versions, their rows and
    /// their events.
    pub fn rollback_to(&mut self, sp: Savepoint) -> Result<()> {
        assert_eq!(
            sp.base_rev, self.base_rev,
            "a savepoint holds only inside its request"
        );
        assert!(sp.undo <= self.undo.len() && sp.sub <= self.sub);
        let main = self.base_rev + 1;
        for sub in sp.sub..self.sub {
            self.tree().remove(&keys::revision(main, sub))?;
        }
        let mut ix = self.index.write();
        for u in self.undo.drain(sp.undo..).rev() {
            match u {
                Undo::Pushed(key) => ix.pop(&key),
                Undo::Compacted(_) | Undo::Swept(_) | Undo::Orphans(_) => {
                    unreachable!("compaction is a request of its own, the sweep comes at commit")
                }
            }
        }
        drop(ix);
        self.events.truncate(sp.events);
        self.sub = sp.sub;
        Ok(())
    }

    /// Records an event of the open request. Most requests change one key, and the watch ring
    /// keeps each request's events as they are, so the first event gets a vector of one.
    fn record(&mut self, e: Event) {
        if self.events.capacity() == 0 {
            self.events.reserve_exact(1);
        }
        self.events.push(e);
    }

    /// Takes the events recorded so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The current version of `key`, including this transaction's changes.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let Some(rev) = self.index.read().get(key, u64::MAX) else {
            return Ok(None);
        };
        Ok(Some(scan::live_version(self.view(), rev)?))
    }

    /// etcd's Range as of this transaction (its own writes included), at a revision.
    pub fn range_opts(&self, key: &[u8], range_end: &[u8], opts: RangeOpts) -> Result<RangeResult> {
        scan::range(
            self.view(),
            &self.index,
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

    /// Stores `kv` at (`main`, `sub`) and records it in the index.
    fn store(&mut self, kv: &KeyValue, main: u64, sub: u64, dead: bool) -> Result<()> {
        self.tree()
            .insert(&keys::revision(main, sub), &kv::encode_record(kv, dead))?;
        let rev = Revision { main, sub };
        let meta = Meta {
            create_revision: kv.create_revision,
            version: kv.version,
            lease: kv.lease,
        };
        self.index
            .write()
            .push(&kv.key, Version { rev, dead, meta });
        self.undo.push(Undo::Pushed(kv.key.clone()));
        Ok(())
    }

    /// The current version of `key` as the index knows it (no value), including this
    /// transaction's changes; `None` if the key is not live.
    pub fn current(&self, key: &[u8]) -> Option<Version> {
        self.index.read().current(key)
    }

    /// etcd's Put; returns the previous version (its event leaves it to be read later).
    pub fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> Result<Option<KeyValue>> {
        let prev = self.get(key)?;
        self.put_at(key, value, Some(lease), None)?;
        Ok(prev)
    }

    /// etcd's Put of `value` under `lease` (`None`: the lease of the version it replaces, as
    /// etcd's `ignore_lease`), in one lookup of the key index and no read of the tree. `prev`
    /// is the key's current version in full if the caller read it anyway (the event carries
    /// it; else a watcher that wants it reads it later). Returns the replaced version as the
    /// index knows it and the lease the new version has.
    pub fn put_at(
        &mut self,
        key: &[u8],
        value: &[u8],
        lease: Option<i64>,
        prev: Option<KeyValue>,
    ) -> Result<(Option<Version>, i64)> {
        let (main, sub) = self.next_sub();
        let rev = Revision { main, sub };
        let tree = self.txn.as_mut().expect("an open transaction");
        let mut stored = None;
        let replaced = self.index.write().push_with(key, |current| {
            let meta = Meta {
                create_revision: current.map_or(main as i64, |c| c.meta.create_revision),
                version: current.map_or(1, |c| c.meta.version + 1),
                lease: lease.or(current.map(|c| c.meta.lease)).unwrap_or(0),
            };
            let kv = KeyValue {
                key: key.to_vec(),
                create_revision: meta.create_revision,
                mod_revision: main as i64,
                version: meta.version,
                value: value.to_vec(),
                lease: meta.lease,
            };
            tree.insert(&keys::revision(main, sub), &kv::encode_record(&kv, false))?;
            stored = Some(kv);
            Ok::<_, MvccError>(Version {
                rev,
                dead: false,
                meta,
            })
        })?;
        let kv = stored.expect("the version was stored");
        self.undo.push(Undo::Pushed(key.to_vec()));
        debug_assert!(
            prev.as_ref()
                .is_none_or(|p| replaced.is_some_and(|c| c.rev.main as i64 == p.mod_revision)),
            "prev is the version the put replaces"
        );
        let new_lease = kv.lease;
        self.record(Event {
            delete: false,
            kv,
            prev,
            prev_rev: replaced.map(|c| c.rev),
        });
        Ok((replaced, new_lease))
    }

    /// etcd's DeleteRange; returns the deleted versions.
    pub fn delete_range(&mut self, key: &[u8], range_end: &[u8]) -> Result<Vec<KeyValue>> {
        let victims = self.range(key, range_end, 0)?;
        for prev in &victims {
            let prev_rev = self.current(&prev.key).map(|c| c.rev);
            let (main, sub) = self.next_sub();
            let tomb = KeyValue {
                key: prev.key.clone(),
                mod_revision: main as i64,
                ..KeyValue::default()
            };
            self.store(&tomb, main, sub, true)?;
            self.record(Event {
                delete: true,
                kv: tomb,
                prev: Some(prev.clone()),
                prev_rev,
            });
        }
        Ok(victims)
    }

    /// etcd's Compact: versions no revision at or after `rev` can see are removed. Readers
    /// below `rev` get `Compacted` once this commits; the versions go a slice at a time, with
    /// this and the following transactions ([`MvccTxn::sweep`]).
    pub fn compact(&mut self, rev: i64) -> Result<()> {
        let current = self.current_revision();
        if rev > current {
            return Err(MvccError::FutureRevision);
        }
        let rev = rev.max(0) as u64;
        if rev <= self.compact {
            return Err(MvccError::Compacted);
        }
        let before = self.index.write().compact(rev);
        self.undo.push(Undo::Compacted(before));
        fail::fail_point!("mvcc::compact");
        self.compact = rev;
        self.compacted_here = true;
        self.tree().insert(keys::META_COMPACT, &rev.to_le_bytes())?;
        Ok(())
    }

    /// One slice of a compaction's sweep, if one is under way: versions dropped from the
    /// index while the pass over its keys lasts, then the orphaned rows removed from the tree
    /// in revision order.
    fn sweep(&mut self) -> Result<()> {
        let mut ix = self.index.write();
        if ix.sweeping_keys() {
            let swept = ix.sweep(SWEEP_KEYS, SWEEP_DROPS);
            drop(ix);
            self.undo.push(Undo::Swept(swept));
            fail::fail_point!("mvcc::sweep");
            return Ok(());
        }
        let orphans = ix.take_orphans(SWEEP_ROWS);
        drop(ix);
        if orphans.is_empty() {
            return Ok(());
        }
        self.compacted_here = true;
        let rows: Vec<Vec<u8>> = orphans
            .iter()
            .map(|r| keys::revision(r.main, r.sub))
            .collect();
        self.undo.push(Undo::Orphans(orphans));
        fail::fail_point!("mvcc::sweep");
        for row in rows {
            self.tree().remove(&row)?;
        }
        Ok(())
    }

    fn finish(&mut self, applied_index: u64) -> Result<i64> {
        self.end_request();
        self.sweep()?;
        // The newest revision row says the current revision unless compaction removed it; only
        // then is it recorded (beside the compacted revision, in the same leaf), so a put
        // rewrites no page but its own row's path.
        if self.compacted_here {
            let rev = self.base_rev;
            self.tree().insert(keys::META_REV, &rev.to_le_bytes())?;
        }
        self.tree().set_user_value(applied_index);
        Ok(self.base_rev as i64)
    }

    /// Commits the tree transaction (`durable` or not); the index keeps its changes only if
    /// that succeeds.
    fn commit_tree(&mut self, durable: bool) -> Result<()> {
        let txn = self.txn.take().expect("an open transaction");
        if durable {
            txn.commit()?;
        } else {
            txn.commit_no_sync()?;
        }
        self.undo.clear();
        Ok(())
    }

    /// Commits durably, recording `applied_index`; returns the revision and the events not
    /// yet taken.
    pub fn commit(mut self, applied_index: u64) -> Result<(i64, Vec<Event>)> {
        let rev = self.finish(applied_index)?;
        self.commit_tree(true)?;
        Ok((rev, std::mem::take(&mut self.events)))
    }

    /// Commits without waiting for the disk (the next durable commit covers it).
    pub fn commit_no_sync(mut self, applied_index: u64) -> Result<(i64, Vec<Event>)> {
        let rev = self.finish(applied_index)?;
        self.commit_tree(false)?;
        Ok((rev, std::mem::take(&mut self.events)))
    }
}

impl Drop for MvccTxn {
    /// A transaction that did not commit takes its versions out of the index again.
    fn drop(&mut self) {
        if self.undo.is_empty() {
            return;
        }
        let mut ix = self.index.write();
        for u in self.undo.drain(..).rev() {
            match u {
                Undo::Pushed(key) => ix.pop(&key),
                Undo::Compacted(before) => ix.restore(before),
                Undo::Swept(swept) => ix.unsweep(swept),
                Undo::Orphans(taken) => ix.untake_orphans(taken),
            }
        }
    }
}
