//! The database handle: opening and recovery, snapshots and the reader registry, checked page
//! access, and the page allocator's shared state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::meta::{META_BYTES, Meta};
use crate::options::{BTreeOptions, Limits, check_page_size};
use crate::page::{self, PagePtr, ValueRef};
use crate::read::ReadTxn;
use crate::storage::{FileStorage, Storage};
use crate::write::WriteTxn;

/// Deepest tree the code will walk; deeper means a corrupt (cyclic) structure.
pub(crate) const DEPTH_MAX: usize = 48;

/// The committed state and who still reads older ones.
pub(crate) struct Snapshots {
    pub(crate) meta: Meta,
    /// Snapshot txn -> open read transactions on it.
    pub(crate) readers: BTreeMap<u64, usize>,
}

/// Entries rewritten per write transaction by [`Db::defragment`].
const DEFRAG_ROWS_PER_TXN: usize = 512;

/// Allocator state, owned by the one write transaction at a time.
pub(crate) struct Alloc {
    /// Pages free with respect to the last committed state and every live reader.
    pub(crate) free: BTreeSet<u64>,
    /// Pages released by commit `txn`: still visible to snapshots older than `txn`.
    pub(crate) pending: BTreeMap<u64, Vec<u64>>,
    /// Current file length.
    pub(crate) file_bytes: u64,
    /// Pages holding the committed freelist (released by the next commit).
    pub(crate) freelist_pages: Vec<u64>,
    /// The last transaction made durable; pages freed after it stay unused until the next
    /// durable commit (a crash returns to it, and it may still reference them).
    pub(crate) durable_txn: u64,
    /// Pages of that transaction: the file keeps at least these, so that opening can fall
    /// back to it if the next durable commit turns out damaged.
    pub(crate) durable_pages: u64,
}

/// The allocator's counts as the last write transaction left them. The write transaction holds
/// the allocator for its whole life, so space accounting (asked for on every client write, to
/// enforce the quota) reads these instead of waiting for it. Each count is exact as of some
/// transaction end; two counts read together may come from consecutive transactions.
#[derive(Debug, Default)]
pub(crate) struct SpaceCounts {
    free_pages: AtomicU64,
    pending_pages: AtomicU64,
    file_bytes: AtomicU64,
}

impl SpaceCounts {
    /// Records `a`'s counts; called by whoever holds the allocator as they let it go.
    pub(crate) fn publish(&self, a: &Alloc) {
        let pending: usize = a.pending.values().map(Vec::len).sum();
        self.free_pages
            .store(a.free.len() as u64, Ordering::Release);
        self.pending_pages.store(pending as u64, Ordering::Release);
        self.file_bytes.store(a.file_bytes, Ordering::Release);
    }
}

pub(crate) struct Inner {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) limits: Limits,
    pub(crate) snaps: Mutex<Snapshots>,
    pub(crate) alloc: Arc<Mutex<Alloc>>,
    pub(crate) space: SpaceCounts,
    /// One bit per page: its checksum was verified since it was last written.
    verified: Vec<AtomicU64>,
    pub(crate) stopped: Mutex<Option<&'static str>>,
}

/// Space accounting of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbStats {
    /// Latest committed transaction.
    pub txn: u64,
    /// Keys in the tree.
    pub entries: u64,
    /// File length in bytes.
    pub file_bytes: u64,
    /// Pages in use or free (the high-water mark).
    pub page_count: u64,
    /// Pages free for reuse now.
    pub free_pages: u64,
    /// Pages waiting for older readers to finish.
    pub pending_pages: u64,
    /// Page size.
    pub page_size: usize,
}

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The transaction the database opened at.
    pub txn: u64,
    /// Why a newer meta slot was passed over (an interrupted commit, or corruption of the
    /// newest slot or of a page it wrote), if one was.
    pub fell_back: Option<String>,
}

/// A persistent copy-on-write B+tree: one writer, many snapshot readers.
#[derive(Clone)]
pub struct Db {
    pub(crate) inner: Arc<Inner>,
    report: Arc<OpenReport>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("stats", &self.stats()).finish()
    }
}

impl Inner {
    /// The bytes of `pages` pages starting at `id`, if they lie inside the snapshot.
    pub(crate) fn raw(&self, id: u64, pages: u64, page_count: u64) -> Result<&[u8]> {
        if id < 2 || pages == 0 || id.checked_add(pages).is_none_or(|end| end > page_count) {
            return Err(Error::Corruption(format!(
                "reference to page {id} (+{pages}) outside the {page_count} pages of the file"
            )));
        }
        let ps = self.limits.page_size as u64;
        let off = usize::try_from(id * ps).expect("inside the reservation");
        let len = usize::try_from(pages * ps).expect("inside the reservation");
        // SAFETY: [off, off+len) lies below page_count pages, which the committed state (or the
        // writer, for its own pages) has written, inside the reserved mapping. Committed pages
        // are never written again while a snapshot that reaches them is alive.
        Ok(unsafe { std::slice::from_raw_parts(self.storage.base().add(off), len) })
    }

    fn is_verified(&self, id: u64) -> bool {
        let w = &self.verified[usize::try_from(id / 64).expect("fits")];
        w.load(Ordering::Acquire) & (1 << (id % 64)) != 0
    }

    pub(crate) fn set_verified(&self, id: u64) {
        self.verified[usize::try_from(id / 64).expect("fits")]
            .fetch_or(1 << (id % 64), Ordering::AcqRel);
    }

    /// Forgets that a page was verified (it is about to be rewritten).
    pub(crate) fn clear_verified(&self, id: u64) {
        self.verified[usize::try_from(id / 64).expect("fits")]
            .fetch_and(!(1 << (id % 64)), Ordering::AcqRel);
    }

    /// A committed tree page (leaf or branch), checked against its reference.
    #[inline]
    pub(crate) fn node(&self, ptr: PagePtr, page_count: u64) -> Result<&[u8]> {
        let p = self.raw(ptr.page, 1, page_count)?;
        if !self.is_verified(ptr.page) {
            page::verify(p, ptr.page, Some(ptr.txn)).map_err(Error::Corruption)?;
            if !matches!(page::kind(p), page::KIND_LEAF | page::KIND_BRANCH) {
                return Err(Error::Corruption(format!(
                    "page {} is not a tree node",
                    ptr.page
                )));
            }
            page::verify_layout(p)
                .map_err(|e| Error::Corruption(format!("page {}: {e}", ptr.page)))?;
            self.set_verified(ptr.page);
        } else if page::txn(p) != ptr.txn {
            return Err(Error::Corruption(format!(
                "page {} written by txn {} but referenced as txn {}",
                ptr.page,
                page::txn(p),
                ptr.txn
            )));
        }
        Ok(p)
    }

    /// A committed overflow value, checked against its reference.
    pub(crate) fn overflow(&self, ptr: PagePtr, len: u64, page_count: u64) -> Result<&[u8]> {
        let pages = run_pages(len, self.limits.page_size);
        let run = self.raw(ptr.page, pages, page_count)?;
        if !self.is_verified(ptr.page) {
            page::verify(run, ptr.page, Some(ptr.txn)).map_err(Error::Corruption)?;
            if page::kind(run) != page::KIND_OVERFLOW || u64::from(page::run_pages(run)) != pages {
                return Err(Error::Corruption(format!(
                    "page {} is not the expected overflow run",
                    ptr.page
                )));
            }
            self.set_verified(ptr.page);
        } else if page::txn(run) != ptr.txn {
            return Err(Error::Corruption(format!(
                "overflow page {} has the wrong writer",
                ptr.page
            )));
        }
        let len = usize::try_from(len).expect("checked by run bounds");
        Ok(&run[page::HEADER_BYTES..page::HEADER_BYTES + len])
    }

    pub(crate) fn check_stopped(&self) -> Result<()> {
        match *self.stopped.lock() {
            Some(op) => Err(Error::Stopped { op }),
            None => Ok(()),
        }
    }
}

/// A leaf and the position of a key in it (`Err`: where it would go).
pub(crate) type LeafHit<'a> = (&'a [u8], std::result::Result<usize, usize>);

/// Walks from `root` to the leaf covering `key`; returns the leaf and where `key` is (or
/// would be) in it. `node` resolves a reference to a checked page.
pub(crate) fn find_leaf<'a>(
    root: PagePtr,
    key: &[u8],
    node: impl Fn(PagePtr) -> Result<&'a [u8]>,
) -> Result<Option<LeafHit<'a>>> {
    if root.page == 0 {
        return Ok(None);
    }
    let mut ptr = root;
    for _ in 0..DEPTH_MAX {
        let p = node(ptr)?;
        if page::kind(p) == page::KIND_BRANCH {
            ptr = page::child(p, page::child_index(p, key));
            continue;
        }
        return Ok(Some((p, page::search(p, key))));
    }
    Err(Error::Corruption("tree deeper than any valid tree".into()))
}

/// Pages an overflow run of a `len`-byte value takes.
pub(crate) fn run_pages(len: u64, page_size: usize) -> u64 {
    (page::HEADER_BYTES as u64 + len).div_ceil(page_size as u64)
}

impl Db {
    /// Opens or creates a database file.
    pub fn open(path: impl AsRef<Path>, opts: BTreeOptions) -> Result<Db> {
        let mut storage =
            FileStorage::open(path.as_ref(), opts.reserved_bytes).map_err(Error::io("open"))?;
        if opts.unsafe_no_fsync {
            storage = storage.without_fsync();
        }
        Db::open_with_storage(Arc::new(storage), opts)
    }

    /// Opens or creates a database on any storage backend.
    pub fn open_with_storage(storage: Arc<dyn Storage>, opts: BTreeOptions) -> Result<Db> {
        check_page_size(opts.page_size)?;
        let file_bytes = storage.len_bytes().map_err(Error::io("stat"))?;
        let meta = if file_bytes == 0 {
            Self::create(&*storage, &opts)?
        } else {
            Self::read_metas(&*storage)?
        };
        let limits = opts.limits(
            meta.first()
                .map_or(opts.page_size, |m| m.page_size as usize),
        )?;
        let pages_max = storage.reserved_bytes() / limits.page_size as u64;
        let verified = (0..pages_max.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        let inner = Inner {
            storage,
            limits,
            snaps: Mutex::new(Snapshots {
                meta: Meta::default(),
                readers: BTreeMap::new(),
            }),
            alloc: Arc::new(Mutex::new(Alloc {
                free: BTreeSet::new(),
                pending: BTreeMap::new(),
                file_bytes,
                freelist_pages: Vec::new(),
                durable_txn: 0,
                durable_pages: 0,
            })),
            space: SpaceCounts::default(),
            verified,
            stopped: Mutex::new(None),
        };
        let file_bytes = inner.storage.len_bytes().map_err(Error::io("stat"))?;
        let mut chosen = None;
        let mut last_err = None;
        for m in meta {
            let claimed_bytes = m.page_count.checked_mul(limits.page_size as u64);
            if claimed_bytes.is_none_or(|b| b > file_bytes)
                || m.page_count < 2
                || m.page_size as usize != limits.page_size
            {
                last_err = Some(Error::Corruption(format!(
                    "meta of txn {} claims {} pages but the file holds {file_bytes} bytes",
                    m.txn, m.page_count
                )));
                continue;
            }
            match verify_txn(&inner, &m) {
                Ok(free) => {
                    chosen = Some((m, free));
                    break;
                }
                Err(e) => {
                    tracing::warn!(txn = m.txn, error = %e, "btree: newest commit is incomplete, using the previous one");
                    last_err = Some(e);
                }
            }
        }
        let fell_back = last_err.as_ref().map(ToString::to_string);
        let Some((m, (free, freelist_pages))) = chosen else {
            return Err(last_err.unwrap_or_else(|| Error::Corruption("no valid meta slot".into())));
        };
        inner.snaps.lock().meta = m;
        {
            let mut a = inner.alloc.lock();
            a.free = free;
            a.file_bytes = file_bytes;
            a.freelist_pages = freelist_pages;
            a.durable_txn = m.txn;
            a.durable_pages = m.page_count;
            inner.space.publish(&a);
        }
        let txn = inner.snaps.lock().meta.txn;
        Ok(Db {
            report: Arc::new(OpenReport { txn, fell_back }),
            inner: Arc::new(inner),
        })
    }

    /// What opening found.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    fn create(storage: &dyn Storage, opts: &BTreeOptions) -> Result<Vec<Meta>> {
        let ps = opts.page_size;
        let meta = Meta {
            page_size: u32::try_from(ps).expect("checked"),
            txn: 0,
            page_count: 2,
            ..Meta::default()
        };
        storage
            .grow(opts.grow_bytes_min.max(2 * ps as u64))
            .and_then(|()| storage.write_at(&meta.encode(), 0))
            .and_then(|()| storage.sync())
            .map_err(Error::io("create"))?;
        Ok(vec![meta])
    }

    /// Valid meta slots, newest first.
    fn read_metas(storage: &dyn Storage) -> Result<Vec<Meta>> {
        let len = storage.len_bytes().map_err(Error::io("stat"))?;
        let base = storage.base();
        let read = |off: u64| -> Option<Meta> {
            if off + META_BYTES as u64 > len {
                return None;
            }
            // SAFETY: inside the file and the reserved mapping; nothing writes during open.
            let b = unsafe {
                std::slice::from_raw_parts(base.add(usize::try_from(off).ok()?), META_BYTES)
            };
            Meta::decode(b)
        };
        let first = read(0);
        let ps = first.map(|m| m.page_size as u64);
        // Slot 1 sits one page in; its page size is whatever slot 0 or slot 1 says.
        let mut metas: Vec<Meta> = [4096u64, 8192, 16384, 32768]
            .iter()
            .filter(|&&p| ps.is_none_or(|x| x == p))
            .filter_map(|&p| read(p).filter(|m| u64::from(m.page_size) == p))
            .collect();
        metas.extend(first);
        metas.retain(|m| check_page_size(m.page_size as usize).is_ok());
        if let Some(p) = metas.iter().map(|m| m.page_size).next() {
            metas.retain(|m| m.page_size == p);
        }
        metas.sort_by_key(|m| std::cmp::Reverse(m.txn));
        metas.dedup_by_key(|m| m.txn);
        if metas.is_empty() {
            return Err(Error::Corruption("neither meta slot is valid".into()));
        }
        Ok(metas)
    }

    /// A read transaction on the latest committed state.
    pub fn begin_read(&self) -> ReadTxn {
        ReadTxn::new(self.inner.clone())
    }

    /// The write transaction; blocks while another one is open.
    pub fn begin_write(&self) -> Result<WriteTxn> {
        WriteTxn::new(self.inner.clone())
    }

    /// Makes pages already written by commits without sync durable, without committing
    /// anything: a durable commit that follows has less to sync. It may run on any thread
    /// while a transaction writes. After an error the state of those pages is unknown, so the
    /// caller must treat the tree as failed (reopen it) rather than retry.
    pub fn flush(&self) -> Result<()> {
        fail::fail_point!("btree::flush", |_| Err(Error::Io {
            op: "flush",
            source: std::io::Error::other("injected failure"),
        }));
        self.inner.storage.sync().map_err(Error::io("flush"))
    }

    /// Rewrites every entry so the tree packs into the lowest pages, then gives the file's free
    /// tail back to the file system; returns the file's length after.
    ///
    /// It runs as short write transactions of at most 512 entries, each
    /// rereading its entries, so another writer waits for one of them at most and what it
    /// changes meanwhile stays. The first pass copies every page into the lowest free ones;
    /// the second, once the first is durable and its sources are free, into lower ones still.
    /// Pages a reader's snapshot still holds stay where they are.
    pub fn defragment(&self) -> Result<u64> {
        for _ in 0..2 {
            let mut start: Vec<u8> = Vec::new();
            loop {
                let mut w = self.begin_write()?;
                let rows = w.scan(&start, None, DEFRAG_ROWS_PER_TXN)?;
                for (k, v) in &rows {
                    w.insert(k, v)?;
                }
                match rows.last() {
                    Some((k, _)) if rows.len() == DEFRAG_ROWS_PER_TXN => {
                        w.commit_no_sync()?;
                        fail::fail_point!("btree::defragment");
                        start.clone_from(k);
                        start.push(0);
                    }
                    _ => {
                        // Durable even if this last part changed nothing (shrinking forces
                        // the commit), so the next pass can reuse what this one freed.
                        w.shrink_file();
                        w.commit()?;
                        break;
                    }
                }
            }
        }
        // The first shrinking commit keeps what the previous durable commit used.
        for _ in 0..2 {
            let mut w = self.begin_write()?;
            w.shrink_file();
            w.commit()?;
        }
        Ok(self.stats().file_bytes)
    }

    /// Space accounting as of the last committed (or discarded) write transaction; it does
    /// not wait for one in progress.
    pub fn stats(&self) -> DbStats {
        let meta = self.inner.snaps.lock().meta;
        let space = &self.inner.space;
        DbStats {
            txn: meta.txn,
            entries: meta.entries,
            file_bytes: space.file_bytes.load(Ordering::Acquire),
            page_count: meta.page_count,
            free_pages: space.free_pages.load(Ordering::Acquire),
            pending_pages: space.pending_pages.load(Ordering::Acquire),
            page_size: self.inner.limits.page_size,
        }
    }

    /// Largest key accepted.
    pub fn key_bytes_max(&self) -> usize {
        self.inner.limits.key_bytes_max
    }
}

/// Verifies every page the transaction of `m` wrote; returns its free set and the pages that
/// hold it.
fn verify_txn(inner: &Inner, m: &Meta) -> Result<(BTreeSet<u64>, Vec<u64>)> {
    if m.root.page != 0 {
        verify_subtree(inner, m, m.root, 0)?;
    }
    let mut free = BTreeSet::new();
    let mut pages = Vec::new();
    let mut ptr = m.freelist;
    let mut hops = 0u64;
    while ptr.page != 0 {
        pages.push(ptr.page);
        if ptr.txn != m.txn {
            return Err(Error::Corruption(
                "freelist page from an older transaction".into(),
            ));
        }
        let p = inner.raw(ptr.page, 1, m.page_count)?;
        page::verify(p, ptr.page, Some(ptr.txn)).map_err(Error::Corruption)?;
        if page::kind(p) != page::KIND_FREELIST {
            return Err(Error::Corruption(format!(
                "page {} is not a freelist page",
                ptr.page
            )));
        }
        let n = page::count(p);
        let cap = (p.len() - page::HEADER_BYTES - 16) / 8;
        if n > cap {
            return Err(Error::Corruption("freelist page overfull".into()));
        }
        for i in 0..n {
            let id = page::u64_at(p, page::HEADER_BYTES + 16 + 8 * i);
            if id < 2 || id >= m.page_count || !free.insert(id) {
                return Err(Error::Corruption(format!(
                    "freelist holds invalid page {id}"
                )));
            }
        }
        ptr = PagePtr {
            page: page::u64_at(p, page::HEADER_BYTES),
            txn: page::u64_at(p, page::HEADER_BYTES + 8),
        };
        hops += 1;
        if hops > m.page_count {
            return Err(Error::Corruption("freelist chain loops".into()));
        }
    }
    Ok((free, pages))
}

fn verify_subtree(inner: &Inner, m: &Meta, ptr: PagePtr, depth: usize) -> Result<()> {
    if depth > DEPTH_MAX || ptr.txn > m.txn {
        return Err(Error::Corruption(format!(
            "bad reference to page {}",
            ptr.page
        )));
    }
    let p = inner.node(ptr, m.page_count)?;
    match page::kind(p) {
        page::KIND_BRANCH => {
            for i in 0..page::count(p) {
                let c = page::child(p, i);
                if c.txn > m.base {
                    verify_subtree(inner, m, c, depth + 1)?;
                } else if c.txn > m.txn || c.page >= m.page_count {
                    return Err(Error::Corruption(format!(
                        "bad child reference in page {}",
                        ptr.page
                    )));
                }
            }
        }
        _ => {
            for i in 0..page::count(p) {
                if let ValueRef::Overflow { ptr: o, len } = page::value(p, i)
                    && o.txn > m.base
                {
                    inner.overflow(o, len, m.page_count)?;
                }
            }
        }
    }
    Ok(())
}
