//! Read transactions: a stable snapshot (one root) of the committed tree, with point reads and
//! ordered cursors in both directions. Values are borrowed straight from the mapping.

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use crate::db::{DEPTH_MAX, Inner, find_leaf};
use crate::error::{Error, Result};
use crate::meta::Meta;
use crate::page::{self, PagePtr, ValueRef};

/// A snapshot of the committed tree. Pages it can reach are never reused while it lives.
pub struct ReadTxn {
    inner: Arc<Inner>,
    meta: Meta,
}

impl std::fmt::Debug for ReadTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTxn")
            .field("txn", &self.meta.txn)
            .finish()
    }
}

impl ReadTxn {
    pub(crate) fn new(inner: Arc<Inner>) -> ReadTxn {
        let meta = {
            let mut s = inner.snaps.lock();
            let m = s.meta;
            *s.readers.entry(m.txn).or_default() += 1;
            m
        };
        ReadTxn { inner, meta }
    }

    /// The transaction this snapshot shows.
    pub fn txn_id(&self) -> u64 {
        self.meta.txn
    }

    /// The user value committed with this snapshot.
    pub fn user_value(&self) -> u64 {
        self.meta.user
    }

    /// Number of keys.
    pub fn len(&self) -> u64 {
        self.meta.entries
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.meta.entries == 0
    }

    fn resolve<'s>(&'s self, v: ValueRef<'s>) -> Result<&'s [u8]> {
        match v {
            ValueRef::Inline(b) => Ok(b),
            ValueRef::Overflow { ptr, len } => self.inner.overflow(ptr, len, self.meta.page_count),
        }
    }

    fn node(&self, ptr: PagePtr) -> Result<&[u8]> {
        self.inner.node(ptr, self.meta.page_count)
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        match find_leaf(self.meta.root, key, |ptr| self.node(ptr))? {
            Some((p, Ok(i))) => self.resolve(page::value(p, i)).map(Some),
            _ => Ok(None),
        }
    }

    /// Entries with keys in `range`, in ascending order (`.rev()` for descending).
    pub fn range<'a, R>(&'a self, range: R) -> Range<'a>
    where
        R: RangeBounds<&'a [u8]>,
    {
        Range::new(
            self,
            range.start_bound().cloned(),
            range.end_bound().cloned(),
        )
    }

    /// Entries whose keys start with `prefix`.
    pub fn prefix<'a>(&'a self, prefix: &'a [u8]) -> Range<'a> {
        let start = Bound::Included(prefix);
        Range::with_upper(self, start, prefix_end(prefix))
    }

    /// Every entry.
    pub fn iter(&self) -> Range<'_> {
        Range::new(self, Bound::Unbounded, Bound::Unbounded)
    }
}

impl Drop for ReadTxn {
    fn drop(&mut self) {
        let mut s = self.inner.snaps.lock();
        let n = s
            .readers
            .get_mut(&self.meta.txn)
            .expect("registered reader");
        *n -= 1;
        if *n == 0 {
            s.readers.remove(&self.meta.txn);
        }
    }
}

/// The smallest key above every key starting with `prefix`, if any.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// An ordered cursor over a snapshot. Yields `(key, value)` borrowed from the mapping.
pub struct Range<'a> {
    txn: &'a ReadTxn,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    /// Forward path: (page, index of the next entry or child).
    front: Vec<(&'a [u8], usize)>,
    /// Backward path: (page, one past the next entry, or index of the current child).
    back: Vec<(&'a [u8], usize)>,
    front_started: bool,
    back_started: bool,
    done: bool,
}

impl<'a> Range<'a> {
    fn new(txn: &'a ReadTxn, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Range<'a> {
        Range {
            txn,
            start: start.map(<[u8]>::to_vec),
            end: end.map(<[u8]>::to_vec),
            front: Vec::new(),
            back: Vec::new(),
            front_started: false,
            back_started: false,
            done: txn.meta.root.page == 0,
        }
    }

    fn with_upper(txn: &'a ReadTxn, start: Bound<&[u8]>, end: Option<Vec<u8>>) -> Range<'a> {
        let mut r = Range::new(txn, start, Bound::Unbounded);
        if let Some(e) = end {
            r.end = Bound::Excluded(e);
        }
        r
    }

    fn below_end(&self, k: &[u8]) -> bool {
        match &self.end {
            Bound::Unbounded => true,
            Bound::Included(e) => k <= e.as_slice(),
            Bound::Excluded(e) => k < e.as_slice(),
        }
    }

    fn above_start(&self, k: &[u8]) -> bool {
        match &self.start {
            Bound::Unbounded => true,
            Bound::Included(s) => k >= s.as_slice(),
            Bound::Excluded(s) => k > s.as_slice(),
        }
    }

    fn seek_front(&mut self) -> Result<()> {
        let mut ptr = self.txn.meta.root;
        for _ in 0..DEPTH_MAX {
            let p = self.txn.node(ptr)?;
            if page::kind(p) == page::KIND_BRANCH {
                let i = match &self.start {
                    Bound::Unbounded => 0,
                    Bound::Included(k) | Bound::Excluded(k) => page::child_index(p, k),
                };
                self.front.push((p, i));
                ptr = page::child(p, i);
                continue;
            }
            let i = match &self.start {
                Bound::Unbounded => 0,
                Bound::Included(k) => page::search(p, k).unwrap_or_else(|i| i),
                Bound::Excluded(k) => page::search(p, k).map_or_else(|i| i, |i| i + 1),
            };
            self.front.push((p, i));
            return Ok(());
        }
        Err(Error::Corruption("tree deeper than any valid tree".into()))
    }

    fn seek_back(&mut self) -> Result<()> {
        let mut ptr = self.txn.meta.root;
        for _ in 0..DEPTH_MAX {
            let p = self.txn.node(ptr)?;
            if page::kind(p) == page::KIND_BRANCH {
                let i = match &self.end {
                    Bound::Unbounded => page::count(p) - 1,
                    Bound::Included(k) | Bound::Excluded(k) => page::child_index(p, k),
                };
                self.back.push((p, i));
                ptr = page::child(p, i);
                continue;
            }
            let i = match &self.end {
                Bound::Unbounded => page::count(p),
                Bound::Included(k) => page::search(p, k).map_or_else(|i| i, |i| i + 1),
                Bound::Excluded(k) => page::search(p, k).unwrap_or_else(|i| i),
            };
            self.back.push((p, i));
            return Ok(());
        }
        Err(Error::Corruption("tree deeper than any valid tree".into()))
    }

    /// Moves the front path to the next leaf; false at the end of the tree.
    fn advance_front_leaf(&mut self) -> Result<bool> {
        self.front.pop();
        loop {
            let Some((p, i)) = self.front.last_mut() else {
                return Ok(false);
            };
            if *i + 1 < page::count(p) {
                *i += 1;
                let mut ptr = page::child(p, *i);
                for _ in 0..DEPTH_MAX {
                    let c = self.txn.node(ptr)?;
                    self.front.push((c, 0));
                    if page::kind(c) != page::KIND_BRANCH {
                        return Ok(true);
                    }
                    ptr = page::child(c, 0);
                }
                return Err(Error::Corruption("tree deeper than any valid tree".into()));
            }
            self.front.pop();
        }
    }

    fn advance_back_leaf(&mut self) -> Result<bool> {
        self.back.pop();
        loop {
            let Some((p, i)) = self.back.last_mut() else {
                return Ok(false);
            };
            if *i > 0 {
                *i -= 1;
                let mut ptr = page::child(p, *i);
                for _ in 0..DEPTH_MAX {
                    let c = self.txn.node(ptr)?;
                    let n = page::count(c);
                    if page::kind(c) != page::KIND_BRANCH {
                        self.back.push((c, n));
                        return Ok(true);
                    }
                    self.back.push((c, n - 1));
                    ptr = page::child(c, n - 1);
                }
                return Err(Error::Corruption("tree deeper than any valid tree".into()));
            }
            self.back.pop();
        }
    }

    fn fail(&mut self, e: Error) -> Option<Result<(&'a [u8], &'a [u8])>> {
        self.done = true;
        Some(Err(e))
    }

    fn item(&self, p: &'a [u8], i: usize) -> Result<(&'a [u8], &'a [u8])> {
        let txn: &'a ReadTxn = self.txn;
        let v = match page::value(p, i) {
            ValueRef::Inline(b) => b,
            ValueRef::Overflow { ptr, len } => txn.inner.overflow(ptr, len, txn.meta.page_count)?,
        };
        Ok((page::key(p, i), v))
    }

    /// Whether the front has passed the back (both started): then the range is exhausted.
    fn crossed(&self, p: &[u8], i: usize) -> bool {
        if !self.back_started {
            return false;
        }
        match self.back.last() {
            Some((bp, bi)) => std::ptr::eq(bp.as_ptr(), p.as_ptr()) && i >= *bi,
            None => true,
        }
    }

    fn crossed_back(&self, p: &[u8], i: usize) -> bool {
        if !self.front_started {
            return false;
        }
        match self.front.last() {
            Some((fp, fi)) => std::ptr::eq(fp.as_ptr(), p.as_ptr()) && i < *fi,
            None => true,
        }
    }
}

impl<'a> Iterator for Range<'a> {
    type Item = Result<(&'a [u8], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if !self.front_started {
            self.front_started = true;
            if let Err(e) = self.seek_front() {
                return self.fail(e);
            }
        }
        loop {
            let (p, i) = *self.front.last()?;
            if i < page::count(p) {
                if self.crossed(p, i) {
                    self.done = true;
                    return None;
                }
                self.front.last_mut().expect("non-empty").1 += 1;
                let k = page::key(p, i);
                if !self.below_end(k) {
                    self.done = true;
                    return None;
                }
                return Some(self.item(p, i));
            }
            match self.advance_front_leaf() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => return self.fail(e),
            }
        }
    }
}

impl DoubleEndedIterator for Range<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if !self.back_started {
            self.back_started = true;
            if let Err(e) = self.seek_back() {
                return self.fail(e);
            }
        }
        loop {
            let (p, i) = *self.back.last()?;
            if i > 0 {
                if self.crossed_back(p, i - 1) {
                    self.done = true;
                    return None;
                }
                self.back.last_mut().expect("non-empty").1 -= 1;
                let k = page::key(p, i - 1);
                if !self.above_start(k) {
                    self.done = true;
                    return None;
                }
                return Some(self.item(p, i - 1));
            }
            match self.advance_back_leaf() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => return self.fail(e),
            }
        }
    }
}
