//! The file system's contents, twice over: what programs see (live) and what a disk holds
//! (durable), and the power cut that throws the difference away.
//!
//! Owns the whole model and nothing of FUSE: every operation is a plain call that answers
//! with the value or an errno, so the model is tested without mounting anything. It must
//! never let a write reach the durable side except through [`State::sync`], and never keep
//! anything live across [`State::power_cut`] that the durable side does not hold.
//!
//! The model:
//! - A file's data and length become durable when that file is fsynced (fsync and
//!   fdatasync alike). Its name does not: a directory's entries (creates, links, unlinks,
//!   renames) become durable only when that directory is fsynced.
//! - A power cut makes every inode what its durable side holds. With tearing, each page
//!   written since the file's last fsync is kept or lost independently (a disk writes back
//!   in any order); the length grows to cover a kept page past the durable length. Directory
//!   entries never tear: a directory comes back as it was at its last fsync.
//! - Inodes no durable directory reaches are gone after a cut, as after a real reboot.
//! - Pages of zeros are holes: a preallocated, zero-filled log segment costs no memory.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::time::SystemTime;

use quorumkv_simdisk::Rng;

/// Granularity of data kept, dirtied and torn.
pub const PAGE_BYTES: usize = 4096;

/// The root directory's inode (FUSE's fixed number).
pub const ROOT_INODE: u64 = 1;

/// Longest name a directory entry takes.
const NAME_BYTES_MAX: usize = 255;

/// Largest file length accepted (beyond it writes get EFBIG).
const FILE_BYTES_MAX: u64 = 1 << 40;

type Page = Arc<[u8; PAGE_BYTES]>;

/// A file's bytes: pages by index (absent pages read as zeros) and a length.
#[derive(Debug, Clone, Default)]
struct Data {
    pages: BTreeMap<u64, Page>,
    len_bytes: u64,
}

impl Data {
    fn read(&self, offset: u64, size: usize) -> Vec<u8> {
        let end = self.len_bytes.min(offset.saturating_add(size as u64));
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; usize::try_from(end - offset).expect("bounded by size")];
        let page = PAGE_BYTES as u64;
        for (&idx, p) in self.pages.range(offset / page..=(end - 1) / page) {
            let start = (idx * page).max(offset);
            let stop = ((idx + 1) * page).min(end);
            let from = usize::try_from(start - idx * page).expect("within a page");
            let to = usize::try_from(stop - idx * page).expect("within a page");
            let at = usize::try_from(start - offset).expect("within the buffer");
            out[at..at + (to - from)].copy_from_slice(&p[from..to]);
        }
        out
    }

    fn write(&mut self, offset: u64, buf: &[u8], dirty: &mut BTreeSet<u64>) {
        let page = PAGE_BYTES as u64;
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let idx = at / page;
            let within = usize::try_from(at % page).expect("within a page");
            let n = (PAGE_BYTES - within).min(buf.len() - done);
            let chunk = &buf[done..done + n];
            let zeros = chunk.iter().all(|b| *b == 0);
            match self.pages.get_mut(&idx) {
                Some(p) => {
                    Arc::make_mut(p)[within..within + n].copy_from_slice(chunk);
                    if zeros && p.iter().all(|b| *b == 0) {
                        self.pages.remove(&idx);
                    }
                }
                None if zeros => {}
                None => {
                    let mut p = [0u8; PAGE_BYTES];
                    p[within..within + n].copy_from_slice(chunk);
                    self.pages.insert(idx, Arc::new(p));
                }
            }
            dirty.insert(idx);
            done += n;
        }
        self.len_bytes = self.len_bytes.max(offset + buf.len() as u64);
    }

    fn set_len(&mut self, len_bytes: u64, dirty: &mut BTreeSet<u64>) {
        let page = PAGE_BYTES as u64;
        if len_bytes < self.len_bytes {
            // Zero the tail of the last partial page, so growing again reads zeros.
            let tail = len_bytes % page;
            if tail != 0 {
                let idx = len_bytes / page;
                let keep = usize::try_from(tail).expect("within a page");
                if let Some(p) = self.pages.get_mut(&idx) {
                    Arc::make_mut(p)[keep..].fill(0);
                    dirty.insert(idx);
                }
            }
            let cut = self.pages.split_off(&len_bytes.div_ceil(page));
            dirty.extend(cut.keys());
        }
        self.len_bytes = len_bytes;
    }

    /// Takes pages `idx` from `live` (or their absence), then `live`'s length.
    fn take(&mut self, live: &Data, idx: impl Iterator<Item = u64>) {
        for i in idx {
            match live.pages.get(&i) {
                Some(p) => {
                    self.pages.insert(i, Arc::clone(p));
                }
                None => {
                    self.pages.remove(&i);
                }
            }
        }
    }

    fn prune(&mut self) {
        let keep = self.len_bytes.div_ceil(PAGE_BYTES as u64);
        self.pages.split_off(&keep);
    }
}

/// What an inode holds.
#[derive(Debug, Clone)]
enum Body {
    File(Data),
    Dir(BTreeMap<OsString, u64>),
}

/// Kinds of inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// What `stat` shows of an inode.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: Kind,
    /// Length in bytes (entries for a directory).
    pub len_bytes: u64,
    /// Bytes held in memory, pages only.
    pub stored_bytes: u64,
    /// Permission bits.
    pub perm: u16,
    /// Last change of data or entries.
    pub mtime: SystemTime,
}

#[derive(Debug, Clone)]
struct Inode {
    live: Body,
    durable: Body,
    /// Pages written or cut since the last fsync.
    dirty: BTreeSet<u64>,
    perm: u16,
    mtime: SystemTime,
    /// Open handles (an unlinked file stays while one is open).
    open: u32,
}

impl Inode {
    fn new(kind: Kind, perm: u16) -> Inode {
        let body = match kind {
            Kind::File => Body::File(Data::default()),
            Kind::Dir => Body::Dir(BTreeMap::new()),
        };
        Inode {
            live: body.clone(),
            durable: body,
            dirty: BTreeSet::new(),
            perm,
            mtime: SystemTime::now(),
            open: 0,
        }
    }

    fn kind(&self) -> Kind {
        match self.live {
            Body::File(_) => Kind::File,
            Body::Dir(_) => Kind::Dir,
        }
    }
}

/// How a power cut treats pages written since their file's last fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Every unsynced page is lost.
    DropAll,
    /// Each unsynced page is kept or lost at random, from this seed.
    Torn(u64),
}

/// What a power cut threw away, for the log of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Unsynced pages lost.
    pub pages_lost: u64,
    /// Unsynced pages a torn cut kept.
    pub pages_kept: u64,
    /// Inodes that no durable directory reached.
    pub inodes_lost: u64,
}

/// The whole file system.
#[derive(Debug)]
pub struct State {
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
}

impl Default for State {
    fn default() -> Self {
        let mut inodes = BTreeMap::new();
        inodes.insert(ROOT_INODE, Inode::new(Kind::Dir, 0o755));
        State {
            inodes,
            next_ino: ROOT_INODE + 1,
        }
    }
}

/// An errno.
pub type Errno = i32;

impl State {
    fn inode(&self, ino: u64) -> Result<&Inode, Errno> {
        self.inodes.get(&ino).ok_or(libc::ENOENT)
    }

    fn inode_mut(&mut self, ino: u64) -> Result<&mut Inode, Errno> {
        self.inodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match &self.inode(dir)?.live {
            Body::Dir(e) => Ok(e),
            Body::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        let node = self.inode_mut(dir)?;
        node.mtime = SystemTime::now();
        match &mut node.live {
            Body::Dir(e) => Ok(e),
            Body::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn data_mut(&mut self, ino: u64) -> Result<(&mut Data, &mut BTreeSet<u64>), Errno> {
        let node = self.inode_mut(ino)?;
        node.mtime = SystemTime::now();
        match &mut node.live {
            Body::File(d) => Ok((d, &mut node.dirty)),
            Body::Dir(_) => Err(libc::EISDIR),
        }
    }

    /// What `stat` shows of `ino`.
    pub fn attr(&self, ino: u64) -> Result<Attr, Errno> {
        let node = self.inode(ino)?;
        let (len_bytes, stored_bytes) = match &node.live {
            Body::File(d) => (d.len_bytes, (d.pages.len() * PAGE_BYTES) as u64),
            Body::Dir(e) => (e.len() as u64, 0),
        };
        Ok(Attr {
            ino,
            kind: node.kind(),
            len_bytes,
            stored_bytes,
            perm: node.perm,
            mtime: node.mtime,
        })
    }

    /// The inode `name` names in `dir`.
    pub fn lookup(&self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(dir)?.get(name).copied().ok_or(libc::ENOENT)
    }

    /// Creates `name` in `dir`.
    pub fn create(&mut self, dir: u64, name: &OsStr, kind: Kind, perm: u16) -> Result<u64, Errno> {
        if name.len() > NAME_BYTES_MAX {
            return Err(libc::ENAMETOOLONG);
        }
        if self.entries(dir)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::new(kind, perm));
        self.entries_mut(dir)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    /// Removes the entry `name` of `dir`: a file (`want` = File) or an empty directory.
    pub fn remove(&mut self, dir: u64, name: &OsStr, want: Kind) -> Result<(), Errno> {
        let ino = self.lookup(dir, name)?;
        match (&self.inode(ino)?.live, want) {
            (Body::File(_), Kind::Dir) => return Err(libc::ENOTDIR),
            (Body::Dir(_), Kind::File) => return Err(libc::EISDIR),
            (Body::Dir(e), Kind::Dir) if !e.is_empty() => return Err(libc::ENOTEMPTY),
            _ => {}
        }
        self.entries_mut(dir)?.remove(name);
        Ok(())
    }

    /// Renames `dir/name` to `to_dir/to_name`, replacing a file or an empty directory there
    /// unless `no_replace`.
    pub fn rename(
        &mut self,
        dir: u64,
        name: &OsStr,
        to_dir: u64,
        to_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), Errno> {
        if to_name.len() > NAME_BYTES_MAX {
            return Err(libc::ENAMETOOLONG);
        }
        let ino = self.lookup(dir, name)?;
        self.entries(to_dir)?;
        if let Ok(old) = self.lookup(to_dir, to_name) {
            if old == ino {
                return Ok(());
            }
            if no_replace {
                return Err(libc::EEXIST);
            }
            match (self.inode(ino)?.kind(), &self.inode(old)?.live) {
                (Kind::File, Body::Dir(_)) => return Err(libc::EISDIR),
                (Kind::Dir, Body::File(_)) => return Err(libc::ENOTDIR),
                (Kind::Dir, Body::Dir(e)) if !e.is_empty() => return Err(libc::ENOTEMPTY),
                _ => {}
            }
        }
        if self.inode(ino)?.kind() == Kind::Dir && self.reaches(ino, to_dir) {
            return Err(libc::EINVAL);
        }
        self.entries_mut(dir)?.remove(name);
        self.entries_mut(to_dir)?.insert(to_name.to_owned(), ino);
        Ok(())
    }

    /// Whether directory `from` is `to` or holds it somewhere beneath (live entries).
    fn reaches(&self, from: u64, to: u64) -> bool {
        let mut todo = vec![from];
        while let Some(d) = todo.pop() {
            if d == to {
                return true;
            }
            if let Some(Inode {
                live: Body::Dir(e), ..
            }) = self.inodes.get(&d)
            {
                todo.extend(e.values());
            }
        }
        false
    }

    /// The entries of `dir`: inode, kind and name.
    pub fn list(&self, dir: u64) -> Result<Vec<(u64, Kind, OsString)>, Errno> {
        self.entries(dir)?
            .iter()
            .map(|(name, &ino)| Ok((ino, self.inode(ino)?.kind(), name.clone())))
            .collect()
    }

    /// Reads up to `size` bytes of `ino` at `offset`.
    pub fn read(&self, ino: u64, offset: u64, size: usize) -> Result<Vec<u8>, Errno> {
        match &self.inode(ino)?.live {
            Body::File(d) => Ok(d.read(offset, size)),
            Body::Dir(_) => Err(libc::EISDIR),
        }
    }

    /// Writes `buf` to `ino` at `offset`.
    pub fn write(&mut self, ino: u64, offset: u64, buf: &[u8]) -> Result<(), Errno> {
        if offset.saturating_add(buf.len() as u64) > FILE_BYTES_MAX {
            return Err(libc::EFBIG);
        }
        let (data, dirty) = self.data_mut(ino)?;
        data.write(offset, buf, dirty);
        Ok(())
    }

    /// Sets the length of `ino`.
    pub fn set_len(&mut self, ino: u64, len_bytes: u64) -> Result<(), Errno> {
        if len_bytes > FILE_BYTES_MAX {
            return Err(libc::EFBIG);
        }
        let (data, dirty) = self.data_mut(ino)?;
        data.set_len(len_bytes, dirty);
        Ok(())
    }

    /// Sets the permission bits of `ino`.
    pub fn set_perm(&mut self, ino: u64, perm: u16) -> Result<(), Errno> {
        self.inode_mut(ino)?.perm = perm;
        Ok(())
    }

    /// Counts a handle opened on `ino`.
    pub fn open(&mut self, ino: u64) -> Result<(), Errno> {
        self.inode_mut(ino)?.open += 1;
        Ok(())
    }

    /// Counts a handle of `ino` closed; drops the inode if nothing reaches it any more.
    pub fn release(&mut self, ino: u64) {
        if let Some(node) = self.inodes.get_mut(&ino) {
            node.open = node.open.saturating_sub(1);
            if node.open == 0 {
                self.collect();
            }
        }
    }

    /// fsync: makes `ino`'s data and length durable (a file), or its entries (a directory).
    pub fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        let node = self.inode_mut(ino)?;
        match (&node.live, &mut node.durable) {
            (Body::File(live), Body::File(durable)) => {
                durable.take(live, node.dirty.iter().copied());
                durable.len_bytes = live.len_bytes;
                durable.prune();
                node.dirty.clear();
            }
            (Body::Dir(live), durable @ Body::Dir(_)) => {
                *durable = Body::Dir(live.clone());
                self.collect();
            }
            _ => unreachable!("an inode keeps its kind"),
        }
        Ok(())
    }

    /// Drops inodes that neither a live nor a durable directory reaches and no handle holds.
    fn collect(&mut self) {
        let live = self.reachable(|n| &n.live);
        let durable = self.reachable(|n| &n.durable);
        self.inodes
            .retain(|ino, n| n.open > 0 || live.contains(ino) || durable.contains(ino));
    }

    fn reachable(&self, side: impl Fn(&Inode) -> &Body) -> BTreeSet<u64> {
        let mut seen = BTreeSet::from([ROOT_INODE]);
        let mut todo = vec![ROOT_INODE];
        while let Some(d) = todo.pop() {
            if let Some(Body::Dir(e)) = self.inodes.get(&d).map(&side) {
                for &child in e.values() {
                    if seen.insert(child) {
                        todo.push(child);
                    }
                }
            }
        }
        seen
    }

    /// A power cut: every inode becomes what its durable side holds (with `Torn`, plus a
    /// random part of what was written since its last fsync); what no durable directory
    /// reaches is gone. Nothing may have a handle open (the programs using it are dead).
    pub fn power_cut(&mut self, cut: Cut) -> CutReport {
        let mut rng = match cut {
            Cut::DropAll => None,
            Cut::Torn(seed) => Some(Rng::new(seed)),
        };
        let mut report = CutReport::default();
        for node in self.inodes.values_mut() {
            if let (Body::File(live), Body::File(durable)) = (&node.live, &mut node.durable) {
                let dirty = std::mem::take(&mut node.dirty);
                let kept: Vec<u64> = dirty
                    .iter()
                    .copied()
                    .filter(|_| rng.as_mut().is_some_and(|r| r.chance(0.5)))
                    .collect();
                report.pages_kept += kept.len() as u64;
                report.pages_lost += (dirty.len() - kept.len()) as u64;
                for &idx in &kept {
                    let end = (idx + 1) * PAGE_BYTES as u64;
                    if idx * (PAGE_BYTES as u64) < live.len_bytes {
                        durable.len_bytes = durable.len_bytes.max(end.min(live.len_bytes));
                    }
                }
                durable.take(live, kept.into_iter());
                durable.prune();
            }
            node.live = node.durable.clone();
            node.open = 0;
        }
        let durable = self.reachable(|n| &n.durable);
        let before = self.inodes.len();
        self.inodes.retain(|ino, _| durable.contains(ino));
        report.inodes_lost = (before - self.inodes.len()) as u64;
        debug_assert!(self.inodes.values().all(|n| n.dirty.is_empty()));
        report
    }

    /// Bytes of pages held, live and durable sides counted once each page.
    pub fn stored_bytes(&self) -> u64 {
        let mut seen = BTreeSet::new();
        for node in self.inodes.values() {
            for body in [&node.live, &node.durable] {
                if let Body::File(d) = body {
                    for p in d.pages.values() {
                        seen.insert(Arc::as_ptr(p) as usize);
                    }
                }
            }
        }
        (seen.len() * PAGE_BYTES) as u64
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
