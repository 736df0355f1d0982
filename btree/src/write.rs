//! The write transaction: copy-on-write inserts and deletes with splits and merges, overflow
//! values, page allocation, and the one-fsync commit.
//!
//! Every page on the path to a change is copied to a page that is free with respect to the last
//! committed state and to every live reader, so the committed tree is never modified in place.
//! Commit writes the new pages and the freelist, then the meta slot `txn % 2`, then syncs once.
//! A crash before the sync completes leaves the previous slot, whose pages were untouched.

use std::collections::HashMap;

use std::sync::Arc;

use parking_lot::{ArcMutexGuard, RawMutex};

use crate::db::{Alloc, DEPTH_MAX, Inner, find_leaf, run_pages};
use crate::error::{Error, Result};
use crate::meta::Meta;
use crate::page::{self, LeafValue, PagePtr, ValueRef};

/// The single write transaction. Dropping it without [`WriteTxn::commit`] discards it.
pub struct WriteTxn {
    inner: Arc<Inner>,
    alloc: ArcMutexGuard<RawMutex, Alloc>,
    txn: u64,
    base: Meta,
    meta: Meta,
    /// Pages (and overflow runs, keyed by their first page) written by this transaction.
    dirty: HashMap<u64, Box<[u8]>>,
    /// Committed pages this transaction stopped referencing.
    freed: Vec<u64>,
    /// Changes to the free set, undone if the transaction is dropped: (taken?, page).
    undo: Vec<(bool, u64)>,
    scratch: Vec<u8>,
    /// Give the file's free tail back on a durable commit.
    shrink: bool,
    done: bool,
}

impl std::fmt::Debug for WriteTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTxn").field("txn", &self.txn).finish()
    }
}

/// The shortest key `s` with `left < s <= right`.
/// The error a failpoint injects in place of a real IO failure.
#[cfg(feature = "failpoints")]
fn injected() -> std::io::Error {
    std::io::Error::other("injected failure")
}

fn separator(left: &[u8], right: &[u8]) -> Vec<u8> {
    debug_assert!(left < right);
    for l in 1..=right.len() {
        if &right[..l] > left {
            return right[..l].to_vec();
        }
    }
    right.to_vec()
}

impl WriteTxn {
    pub(crate) fn new(inner: Arc<Inner>) -> Result<WriteTxn> {
        inner.check_stopped()?;
        let mut alloc = inner.alloc.lock_arc();
        inner.check_stopped()?;
        let (base, oldest) = {
            let s = inner.snaps.lock();
            (s.meta, s.readers.keys().next().copied())
        };
        // Pages released by commit t were visible to snapshots before t only.
        let releasable: Vec<u64> = alloc
            .pending
            .keys()
            .copied()
            .filter(|&t| oldest.is_none_or(|o| t <= o) && t <= alloc.durable_txn)
            .collect();
        for t in releasable {
            let pages = alloc.pending.remove(&t).expect("listed");
            alloc.free.extend(pages);
        }
        Ok(WriteTxn {
            inner,
            alloc,
            txn: base.txn + 1,
            base,
            meta: base,
            dirty: HashMap::new(),
            freed: Vec::new(),
            undo: Vec::new(),
            scratch: Vec::new(),
            shrink: false,
            done: false,
        })
    }

    /// This transaction's id.
    pub fn txn_id(&self) -> u64 {
        self.txn
    }

    /// Sets the user value committed with this transaction.
    pub fn set_user_value(&mut self, v: u64) {
        self.meta.user = v;
    }

    /// The user value (as set in this transaction, or last committed).
    pub fn user_value(&self) -> u64 {
        self.meta.user
    }

    /// Gives the pages at the end of the file that are free back to the file system when this
    /// transaction commits durably (a commit without sync ignores it). The file keeps what the
    /// previous durable commit used, since opening may fall back to it, so the space that
    /// commit held past the new end is given back by the next durable commit that asks.
    pub fn shrink_file(&mut self) {
        self.shrink = true;
    }

    /// Number of keys, including this transaction's changes.
    pub fn len(&self) -> u64 {
        self.meta.entries
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.meta.entries == 0
    }

    fn ptr(&self, page: u64) -> PagePtr {
        PagePtr {
            page,
            txn: self.txn,
        }
    }

    fn alloc_page(&mut self) -> u64 {
        if let Some(id) = self.alloc.free.pop_first() {
            self.undo.push((true, id));
            return id;
        }
        let id = self.meta.page_count;
        self.meta.page_count += 1;
        id
    }

    fn alloc_run(&mut self, pages: u64) -> u64 {
        if pages == 1 {
            return self.alloc_page();
        }
        let mut start = None;
        let (mut run_start, mut run_len, mut prev) = (0u64, 0u64, u64::MAX);
        for &id in &self.alloc.free {
            if prev != u64::MAX && id == prev + 1 {
                run_len += 1;
            } else {
                run_start = id;
                run_len = 1;
            }
            prev = id;
            if run_len == pages {
                start = Some(run_start);
                break;
            }
        }
        if let Some(s) = start {
            for id in s..s + pages {
                self.alloc.free.remove(&id);
                self.undo.push((true, id));
            }
            return s;
        }
        let id = self.meta.page_count;
        self.meta.page_count += pages;
        id
    }

    /// Releases pages: committed ones wait for readers; this transaction's own are free now.
    fn release(&mut self, ptr: PagePtr, pages: u64) {
        if ptr.txn == self.txn {
            self.dirty.remove(&ptr.page).expect("own page is dirty");
            for id in ptr.page..ptr.page + pages {
                self.alloc.free.insert(id);
                self.undo.push((false, id));
            }
        } else {
            self.freed.extend(ptr.page..ptr.page + pages);
        }
    }

    fn node(&self, ptr: PagePtr) -> Result<&[u8]> {
        if ptr.txn == self.txn {
            Ok(&self.dirty[&ptr.page])
        } else {
            self.inner.node(ptr, self.base.page_count)
        }
    }

    fn page_mut(&mut self, id: u64) -> &mut [u8] {
        self.dirty.get_mut(&id).expect("page is dirty")
    }

    /// Copies a committed page to a new one owned by this transaction.
    fn make_dirty(&mut self, ptr: PagePtr) -> Result<u64> {
        if ptr.txn == self.txn {
            debug_assert!(self.dirty.contains_key(&ptr.page));
            return Ok(ptr.page);
        }
        let copy: Box<[u8]> = self.inner.node(ptr, self.base.page_count)?.into();
        let id = self.alloc_page();
        self.dirty.insert(id, copy);
        self.freed.push(ptr.page);
        Ok(id)
    }

    fn value_bytes(&self, v: ValueRef<'_>) -> Result<Vec<u8>> {
        match v {
            ValueRef::Inline(b) => Ok(b.to_vec()),
            ValueRef::Overflow { ptr, len } if ptr.txn == self.txn => {
                let run = &self.dirty[&ptr.page];
                let len = usize::try_from(len).expect("own run");
                Ok(run[page::HEADER_BYTES..page::HEADER_BYTES + len].to_vec())
            }
            ValueRef::Overflow { ptr, len } => Ok(self
                .inner
                .overflow(ptr, len, self.base.page_count)?
                .to_vec()),
        }
    }

    /// The value of `key`, including this transaction's changes.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match find_leaf(self.meta.root, key, |ptr| self.node(ptr))? {
            Some((p, Ok(i))) => self.value_bytes(page::value(p, i)).map(Some),
            _ => Ok(None),
        }
    }

    /// The greatest key below `end`, including this transaction's changes (`None`: there is
    /// none).
    pub fn last_key_before(&self, end: &[u8]) -> Result<Option<Vec<u8>>> {
        if self.meta.root.page == 0 {
            return Ok(None);
        }
        self.last_key_under(self.meta.root, end, 0)
    }

    /// The greatest key below `end` under `ptr`: from the child covering `end` back.
    fn last_key_under(&self, ptr: PagePtr, end: &[u8], depth: usize) -> Result<Option<Vec<u8>>> {
        if depth > DEPTH_MAX {
            return Err(Error::Corruption("tree deeper than any valid tree".into()));
        }
        let p = self.node(ptr)?;
        if page::kind(p) == page::KIND_BRANCH {
            for i in (0..=page::child_index(p, end)).rev() {
                if let Some(k) = self.last_key_under(page::child(p, i), end, depth + 1)? {
                    return Ok(Some(k));
                }
            }
            return Ok(None);
        }
        let above = page::search(p, end).unwrap_or_else(|i| i);
        Ok(above.checked_sub(1).map(|i| page::key(p, i).to_vec()))
    }

    /// Entries with `start <= key < end` (`end` None: no upper bound) in key order, at most
    /// `limit`, including this transaction's changes.
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if self.meta.root.page != 0 && limit > 0 {
            self.scan_node(self.meta.root, start, end, limit, 0, &mut out)?;
        }
        Ok(out)
    }

    fn scan_node(
        &self,
        ptr: PagePtr,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        depth: usize,
        out: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<bool> {
        if depth > DEPTH_MAX {
            return Err(Error::Corruption("tree deeper than any valid tree".into()));
        }
        let p = self.node(ptr)?;
        let n = page::count(p);
        if page::kind(p) == page::KIND_BRANCH {
            for i in page::child_index(p, start)..n {
                if i > 0 && end.is_some_and(|e| page::key(p, i) >= e) {
                    return Ok(true);
                }
                if self.scan_node(page::child(p, i), start, end, limit, depth + 1, out)? {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        for i in page::search(p, start).unwrap_or_else(|i| i)..n {
            let k = page::key(p, i);
            if end.is_some_and(|e| k >= e) || out.len() >= limit {
                return Ok(true);
            }
            out.push((k.to_vec(), self.value_bytes(page::value(p, i))?));
        }
        Ok(out.len() >= limit)
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        let max = self.inner.limits.key_bytes_max;
        if key.is_empty() || key.len() > max {
            return Err(Error::KeySize {
                len: key.len(),
                max,
            });
        }
        Ok(())
    }

    /// Copies the path from the root to the leaf that covers `key`; returns the branches
    /// (page, child index) and the leaf.
    fn cow_path(&mut self, key: &[u8]) -> Result<(Vec<(u64, usize)>, u64)> {
        let mut cur = self.make_dirty(self.meta.root)?;
        self.meta.root = self.ptr(cur);
        let mut path = Vec::new();
        for _ in 0..DEPTH_MAX {
            let p = &self.dirty[&cur];
            if page::kind(p) != page::KIND_BRANCH {
                return Ok((path, cur));
            }
            let i = page::child_index(p, key);
            let c = page::child(p, i);
            let nc = self.make_dirty(c)?;
            if c.txn != self.txn {
                let ptr = self.ptr(nc);
                page::set_child(self.page_mut(cur), i, ptr);
            }
            path.push((cur, i));
            cur = nc;
        }
        Err(Error::Corruption("tree deeper than any valid tree".into()))
    }

    /// Inserts or replaces `key`.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_key(key)?;
        let lim = self.inner.limits;
        if value.len() > lim.value_bytes_max {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: lim.value_bytes_max,
            });
        }
        let stored = if key.len() + value.len() > lim.inline_entry_bytes_max {
            let pages = run_pages(value.len() as u64, lim.page_size);
            let first = self.alloc_run(pages);
            let mut run =
                vec![0u8; usize::try_from(pages).expect("fits") * lim.page_size].into_boxed_slice();
            page::init_overflow(&mut run, u32::try_from(pages).expect("run size"));
            run[page::HEADER_BYTES..page::HEADER_BYTES + value.len()].copy_from_slice(value);
            self.dirty.insert(first, run);
            LeafValue::Overflow {
                ptr: self.ptr(first),
                len: value.len() as u64,
            }
        } else {
            LeafValue::Inline(value)
        };
        let mut entry = std::mem::take(&mut self.scratch);
        page::encode_leaf_entry(&mut entry, key, stored);
        let r = self.insert_entry_at_key(key, &entry);
        self.scratch = entry;
        r
    }

    fn insert_entry_at_key(&mut self, key: &[u8], entry: &[u8]) -> Result<()> {
        if self.meta.root.page == 0 {
            let id = self.alloc_page();
            let mut p = vec![0u8; self.inner.limits.page_size].into_boxed_slice();
            page::init(&mut p, page::KIND_LEAF);
            page::push_raw(&mut p, entry);
            self.dirty.insert(id, p);
            self.meta.root = self.ptr(id);
            self.meta.entries += 1;
            return Ok(());
        }
        let (path, leaf) = self.cow_path(key)?;
        let idx = match page::search(&self.dirty[&leaf], key) {
            Ok(i) => {
                if let ValueRef::Overflow { ptr, len } = page::value(&self.dirty[&leaf], i) {
                    self.release(ptr, run_pages(len, self.inner.limits.page_size));
                }
                page::remove(self.page_mut(leaf), i);
                i
            }
            Err(i) => {
                self.meta.entries += 1;
                i
            }
        };
        self.insert_into(path, leaf, idx, entry)
    }

    /// Puts `entry` at `idx` of dirty page `node`, splitting up the path as needed.
    fn insert_into(
        &mut self,
        mut path: Vec<(u64, usize)>,
        node: u64,
        idx: usize,
        entry: &[u8],
    ) -> Result<()> {
        let (mut node, mut idx) = (node, idx);
        let mut entry = entry.to_vec();
        loop {
            if page::fits(&self.dirty[&node], entry.len() + 2) {
                page::insert_raw(self.page_mut(node), idx, &entry);
                return Ok(());
            }
            let (right, sep) = self.split(node, idx, &entry);
            let right_ptr = self.ptr(right);
            match path.pop() {
                Some((parent, ci)) => {
                    page::encode_branch_entry(&mut entry, &sep, right_ptr);
                    node = parent;
                    idx = ci + 1;
                }
                None => {
                    let id = self.alloc_page();
                    let mut root = vec![0u8; self.inner.limits.page_size].into_boxed_slice();
                    page::init(&mut root, page::KIND_BRANCH);
                    let mut e = Vec::new();
                    page::encode_branch_entry(&mut e, b"", self.ptr(node));
                    page::push_raw(&mut root, &e);
                    page::encode_branch_entry(&mut e, &sep, right_ptr);
                    page::push_raw(&mut root, &e);
                    self.dirty.insert(id, root);
                    self.meta.root = self.ptr(id);
                    return Ok(());
                }
            }
        }
    }

    /// Splits dirty page `node` with `entry` added at `idx`; returns the new right page and
    /// the separator key to insert in the parent.
    fn split(&mut self, node: u64, idx: usize, entry: &[u8]) -> (u64, Vec<u8>) {
        let ps = self.inner.limits.page_size;
        let p = &self.dirty[&node];
        let kind = page::kind(p);
        let n = page::count(p);
        let mut entries: Vec<Vec<u8>> = (0..n).map(|i| page::entry_raw(p, i).to_vec()).collect();
        entries.insert(idx, entry.to_vec());
        let sizes: Vec<usize> = entries.iter().map(|e| e.len() + 2).collect();
        let total: usize = sizes.iter().sum();
        let cap = ps - page::HEADER_BYTES;
        // Appends at the right end (sequential keys) keep the left page full.
        let mut k = 0;
        if idx == n && total - sizes[n] <= cap {
            k = n;
        } else {
            let mut left = 0;
            let mut best = usize::MAX;
            for i in 1..entries.len() {
                left += sizes[i - 1];
                let right = total - left;
                if left <= cap && right <= cap && left.abs_diff(right) < best {
                    best = left.abs_diff(right);
                    k = i;
                }
            }
        }
        assert!(
            k > 0 && k < entries.len(),
            "entries are at most half a page, so a split exists"
        );
        let key_of = |e: &[u8]| -> Vec<u8> {
            let klen = usize::from(page::u16_at(e, 0));
            let hdr = if kind == page::KIND_LEAF {
                page::LEAF_ENTRY_HEADER
            } else {
                page::BRANCH_ENTRY_HEADER
            };
            e[hdr..hdr + klen].to_vec()
        };
        let sep = if kind == page::KIND_LEAF {
            separator(&key_of(&entries[k - 1]), &key_of(&entries[k]))
        } else {
            let sep = key_of(&entries[k]);
            // The right branch's first entry covers everything below its second: no key.
            let child = PagePtr {
                page: page::u64_at(&entries[k], 2),
                txn: page::u64_at(&entries[k], 10),
            };
            let mut e = Vec::new();
            page::encode_branch_entry(&mut e, b"", child);
            entries[k] = e;
            sep
        };
        let right = self.alloc_page();
        let mut rp = vec![0u8; ps].into_boxed_slice();
        page::init(&mut rp, kind);
        for e in &entries[k..] {
            page::push_raw(&mut rp, e);
        }
        let lp = self.page_mut(node);
        page::init(lp, kind);
        for e in &entries[..k] {
            page::push_raw(lp, e);
        }
        self.dirty.insert(right, rp);
        (right, sep)
    }

    /// Removes `key`; returns whether it was there.
    pub fn remove(&mut self, key: &[u8]) -> Result<bool> {
        if key.is_empty() || key.len() > self.inner.limits.key_bytes_max {
            return Ok(false);
        }
        if self.get_exists(key)?.is_none() {
            return Ok(false);
        }
        let (path, leaf) = self.cow_path(key)?;
        let i = page::search(&self.dirty[&leaf], key).expect("checked present");
        if let ValueRef::Overflow { ptr, len } = page::value(&self.dirty[&leaf], i) {
            self.release(ptr, run_pages(len, self.inner.limits.page_size));
        }
        page::remove(self.page_mut(leaf), i);
        self.meta.entries -= 1;
        self.rebalance(path, leaf)?;
        Ok(true)
    }

    fn get_exists(&self, key: &[u8]) -> Result<Option<()>> {
        Ok(
            match find_leaf(self.meta.root, key, |ptr| self.node(ptr))? {
                Some((_, Ok(_))) => Some(()),
                _ => None,
            },
        )
    }

    /// Merges underfull pages upward from `node` after a removal.
    fn rebalance(&mut self, mut path: Vec<(u64, usize)>, mut node: u64) -> Result<()> {
        let ps = self.inner.limits.page_size;
        loop {
            let Some((parent, ci)) = path.pop() else {
                return self.shrink_root();
            };
            let (used, n) = {
                let p = &self.dirty[&node];
                (page::used_bytes(p), page::count(p))
            };
            if used >= ps / 4 {
                return Ok(());
            }
            if n == 0 {
                page::remove(self.page_mut(parent), ci);
                self.release(self.ptr(node), 1);
                node = parent;
                continue;
            }
            let pc = page::count(&self.dirty[&parent]);
            let (li, ri) = if ci > 0 {
                (ci - 1, ci)
            } else if ci + 1 < pc {
                (ci, ci + 1)
            } else {
                node = parent;
                continue;
            };
            let lptr = page::child(&self.dirty[&parent], li);
            let rptr = page::child(&self.dirty[&parent], ri);
            let sep = page::key(&self.dirty[&parent], ri).to_vec();
            let (lused, rused, is_branch) = {
                let l = self.node(lptr)?;
                let r = self.node(rptr)?;
                (
                    page::used_bytes(l),
                    page::used_bytes(r),
                    page::kind(l) == page::KIND_BRANCH,
                )
            };
            let extra = if is_branch { sep.len() } else { 0 };
            if lused + rused - page::HEADER_BYTES + extra > ps {
                return Ok(());
            }
            let l = self.make_dirty(lptr)?;
            let r = self.make_dirty(rptr)?;
            let right: Vec<Vec<u8>> = {
                let rp = &self.dirty[&r];
                (0..page::count(rp))
                    .map(|i| page::entry_raw(rp, i).to_vec())
                    .collect()
            };
            let mut e = Vec::new();
            for (k, raw) in right.iter().enumerate() {
                if is_branch && k == 0 {
                    let child = PagePtr {
                        page: page::u64_at(raw, 2),
                        txn: page::u64_at(raw, 10),
                    };
                    page::encode_branch_entry(&mut e, &sep, child);
                    page::push_raw(self.page_mut(l), &e);
                } else {
                    page::push_raw(self.page_mut(l), raw);
                }
            }
            let lp = self.ptr(l);
            page::set_child(self.page_mut(parent), li, lp);
            page::remove(self.page_mut(parent), ri);
            self.release(self.ptr(r), 1);
            node = parent;
        }
    }

    /// Drops a root branch with one child, and an empty root leaf.
    fn shrink_root(&mut self) -> Result<()> {
        loop {
            let root = self.meta.root;
            if root.page == 0 {
                return Ok(());
            }
            let (kind, n) = {
                let p = self.node(root)?;
                (page::kind(p), page::count(p))
            };
            if kind == page::KIND_BRANCH && n == 1 {
                let child = page::child(self.node(root)?, 0);
                self.release(root, 1);
                self.meta.root = child;
            } else if kind == page::KIND_LEAF && n == 0 {
                self.release(root, 1);
                self.meta.root = PagePtr::default();
                return Ok(());
            } else {
                return Ok(());
            }
        }
    }

    /// Makes the transaction durable with one sync and publishes it to new readers.
    pub fn commit(self) -> Result<()> {
        self.finish(true)
    }

    /// Publishes the transaction to new readers without making it durable: its pages are
    /// written but neither the meta slot nor a sync is. A crash returns the tree to the last
    /// durable commit, which must therefore be recoverable from elsewhere (the server replays
    /// the log from the applied index of the last durable commit). The next durable commit
    /// makes every earlier one durable too.
    pub fn commit_no_sync(self) -> Result<()> {
        self.finish(false)
    }

    fn finish(mut self, durable: bool) -> Result<()> {
        self.done = true;
        let shrink = self.shrink && durable;
        // A durable commit with no changes of its own still has work when the state it starts
        // from was committed without sync: it is what makes that state durable.
        let unsynced_base = durable && self.base.txn > self.alloc.durable_txn;
        if self.dirty.is_empty()
            && self.freed.is_empty()
            && self.meta == self.base
            && !shrink
            && !unsynced_base
        {
            return Ok(());
        }
        match self.write_out(durable) {
            Ok(()) => Ok(()),
            Err((op, e)) => {
                *self.inner.stopped.lock() = Some(op);
                self.rollback();
                tracing::error!(op, error = %e, "btree: commit failed; refusing writes until reopened");
                Err(Error::Io { op, source: e })
            }
        }
    }

    fn write_out(&mut self, durable: bool) -> Result<(), (&'static str, std::io::Error)> {
        let ps = self.inner.limits.page_size;
        let txn = self.txn;
        if !durable {
            return self.write_pages_only();
        }
        if self.shrink {
            // The free tail goes first, so the freelist below neither lists nor uses it.
            while self.meta.page_count > 2
                && self.alloc.free.last() == Some(&(self.meta.page_count - 1))
            {
                let id = self.meta.page_count - 1;
                self.alloc.free.remove(&id);
                self.undo.push((true, id));
                self.meta.page_count -= 1;
            }
        }
        let old_lists = std::mem::take(&mut self.alloc.freelist_pages);
        self.freed.extend(old_lists.iter().copied());
        // The freelist lists every page free now or after readers finish: on reopen there are
        // no readers. Its own pages come from the free set, so the loop shrinks what it lists.
        let cap = (ps - page::HEADER_BYTES - 16) / 8;
        let pending: usize = self.alloc.pending.values().map(Vec::len).sum();
        let mut list_pages: Vec<u64> = Vec::new();
        loop {
            let total = self.alloc.free.len() + pending + self.freed.len();
            if list_pages.len() >= total.div_ceil(cap) {
                break;
            }
            let id = self.alloc_page();
            list_pages.push(id);
        }
        let mut ids: Vec<u64> = self.alloc.free.iter().copied().collect();
        for v in self.alloc.pending.values() {
            ids.extend_from_slice(v);
        }
        ids.extend_from_slice(&self.freed);
        ids.sort_unstable();
        debug_assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "a page is free at most once"
        );
        let chunks: Vec<&[u64]> = ids.chunks(cap).collect();
        for (j, &id) in list_pages.iter().enumerate() {
            let mut p = vec![0u8; ps].into_boxed_slice();
            page::init(&mut p, page::KIND_FREELIST);
            let chunk = chunks.get(j).copied().unwrap_or(&[]);
            p[6..8].copy_from_slice(&u16::try_from(chunk.len()).expect("fits").to_le_bytes());
            let next = list_pages
                .get(j + 1)
                .map_or(PagePtr::default(), |&n| self.ptr(n));
            page::put_u64(&mut p, page::HEADER_BYTES, next.page);
            page::put_u64(&mut p, page::HEADER_BYTES + 8, next.txn);
            for (k, id) in chunk.iter().enumerate() {
                page::put_u64(&mut p, page::HEADER_BYTES + 16 + 8 * k, *id);
            }
            self.dirty.insert(id, p);
        }
        self.meta.freelist = list_pages
            .first()
            .map_or(PagePtr::default(), |&p| self.ptr(p));
        self.meta.txn = txn;
        fail::fail_point!("btree::write_pages", |_| Err(("write", injected())));
        self.write_dirty_pages()?;
        // Pages written, the meta slot still names the previous commit.
        fail::fail_point!("btree::write_meta", |_| Err(("write meta", injected())));
        let slot = (txn % 2) * ps as u64;
        self.inner
            .storage
            .write_at(&self.meta.encode(), slot)
            .map_err(|e| ("write meta", e))?;
        fail::fail_point!("btree::sync", |_| Err(("sync", injected())));
        self.inner.storage.sync().map_err(|e| ("sync", e))?;
        // Durable, not yet published or acknowledged.
        fail::fail_point!("btree::after_sync", |_| Err(("sync", injected())));
        self.alloc.durable_txn = txn;
        let keep_pages = self.alloc.durable_pages.max(self.meta.page_count);
        self.alloc.durable_pages = self.meta.page_count;
        self.alloc.freelist_pages = list_pages;
        self.publish();
        let keep_bytes = keep_pages * ps as u64;
        if self.shrink && keep_bytes < self.alloc.file_bytes {
            // Committed already: a file left longer than it needs is harmless.
            let shrunk = self
                .inner
                .storage
                .shrink(keep_bytes)
                .and_then(|()| self.inner.storage.len_bytes());
            match shrunk {
                Ok(len) => self.alloc.file_bytes = len,
                Err(e) => tracing::warn!(error = %e, "btree: could not shrink the file"),
            }
        }
        Ok(())
    }

    fn publish(&mut self) {
        let freed = std::mem::take(&mut self.freed);
        if !freed.is_empty() {
            self.alloc.pending.insert(self.txn, freed);
        }
        self.undo.clear();
        self.inner.snaps.lock().meta = self.meta;
    }

    /// A commit without sync: the pages go to the file (so readers can map them), the meta
    /// and freelist stay in memory until the next durable commit.
    fn write_pages_only(&mut self) -> Result<(), (&'static str, std::io::Error)> {
        self.meta.txn = self.txn;
        self.write_dirty_pages()?;
        self.publish();
        Ok(())
    }

    /// Grows the file as needed and writes every dirty page, sealed, in page order.
    fn write_dirty_pages(&mut self) -> Result<(), (&'static str, std::io::Error)> {
        let ps = self.inner.limits.page_size;
        let txn = self.txn;
        let need = self.meta.page_count * ps as u64;
        if need > self.alloc.file_bytes {
            let grow = self
                .inner
                .limits
                .grow_bytes_min
                .max(self.alloc.file_bytes / 8);
            let target = need.max(self.alloc.file_bytes + grow).div_ceil(ps as u64) * ps as u64;
            self.inner.storage.grow(target).map_err(|e| ("grow", e))?;
            self.alloc.file_bytes = target;
        }
        let mut ids: Vec<u64> = self.dirty.keys().copied().collect();
        ids.sort_unstable();
        let mut pages: Vec<(u64, Box<[u8]>)> = Vec::with_capacity(ids.len());
        for id in ids {
            let mut p = self.dirty.remove(&id).expect("listed");
            page::seal(&mut p, id, txn);
            self.inner.clear_verified(id);
            pages.push((id, p));
        }
        // Contiguous pages go out in one vectored write of up to 1 MiB.
        let mut start = 0;
        while start < pages.len() {
            let first = pages[start].0;
            let mut end = start;
            let mut next = first;
            let mut bytes = 0usize;
            while end < pages.len() && pages[end].0 == next && bytes < 1 << 20 {
                bytes += pages[end].1.len();
                next += (pages[end].1.len() / ps) as u64;
                end += 1;
            }
            let bufs: Vec<&[u8]> = pages[start..end].iter().map(|(_, p)| &p[..]).collect();
            self.inner
                .storage
                .write_all_at(&bufs, first * ps as u64)
                .map_err(|e| ("write", e))?;
            start = end;
        }
        // What this process sealed and wrote needs no checking when read back.
        for (id, p) in &pages {
            if matches!(page::kind(p), page::KIND_LEAF | page::KIND_BRANCH) {
                self.inner.set_verified(*id);
            }
        }
        Ok(())
    }

    fn rollback(&mut self) {
        for (taken, id) in self.undo.drain(..).rev() {
            if taken {
                self.alloc.free.insert(id);
            } else {
                self.alloc.free.remove(&id);
            }
        }
        // Pages past the committed high-water mark may have entered the free set.
        let hw = self.base.page_count;
        self.alloc.free.retain(|&id| id < hw);
    }
}

impl Drop for WriteTxn {
    fn drop(&mut self) {
        if !self.done {
            self.rollback();
        }
        // The allocator is let go with this guard, committed or not.
        self.inner.space.publish(&self.alloc);
    }
}
