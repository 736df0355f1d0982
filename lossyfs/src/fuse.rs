//! The FUSE face of [`State`]: each kernel request becomes one call on the model under its
//! lock, and its answer or errno goes back.
//!
//! Owns only the translation. It never holds data of its own (file handles are the inode
//! number), so a power cut on the model is the whole truth once the mount is made afresh.
//! The kernel keeps no writes back (no writeback cache): a write has reached the model when
//! the program's write(2) returns, and an fsync(2) reaches [`State::sync`] before it returns.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;

use crate::state::{Attr, Kind, PAGE_BYTES, State};

/// How long the kernel may trust an answer: every change passes through here, so caching is
/// safe; a power cut remounts, which drops the kernel's caches.
const TTL: Duration = Duration::from_secs(1);

/// The file system a mount serves.
pub(crate) struct Fs {
    pub(crate) state: Arc<Mutex<State>>,
}

fn attr(a: &Attr, req: &Request) -> FileAttr {
    let (kind, nlink) = match a.kind {
        Kind::File => (FileType::RegularFile, 1),
        Kind::Dir => (FileType::Directory, 2),
    };
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.len_bytes,
        blocks: a.stored_bytes / 512,
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind,
        perm: a.perm,
        nlink,
        uid: req.uid(),
        gid: req.gid(),
        rdev: 0,
        blksize: PAGE_BYTES as u32,
        flags: 0,
    }
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

impl Fs {
    fn entry(&self, req: &Request, r: Result<u64, i32>, reply: ReplyEntry) {
        let state = self.state.lock();
        match r.and_then(|ino| state.attr(ino)) {
            Ok(a) => reply.entry(&TTL, &attr(&a, req), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn empty(r: Result<(), i32>, reply: ReplyEmpty) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }
}

impl Filesystem for Fs {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self.state.lock().lookup(parent.0, name);
        self.entry(req, r, reply);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state.lock().attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &attr(&a, req)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state.lock();
        let r = (|| {
            if let Some(len) = size {
                state.set_len(ino.0, len)?;
            }
            if let Some(mode) = mode {
                state.set_perm(ino.0, (mode & 0o7777) as u16)?;
            }
            state.attr(ino.0)
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &attr(&a, req)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            reply.error(Errno::EPERM);
            return;
        }
        let perm = (mode & !umask & 0o7777) as u16;
        let r = self.state.lock().create(parent.0, name, Kind::File, perm);
        self.entry(req, r, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let perm = (mode & !umask & 0o7777) as u16;
        let r = self.state.lock().create(parent.0, name, Kind::Dir, perm);
        self.entry(req, r, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(self.state.lock().remove(parent.0, name, Kind::File), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(self.state.lock().remove(parent.0, name, Kind::Dir), reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            reply.error(Errno::EINVAL);
            return;
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let r = self
            .state
            .lock()
            .rename(parent.0, name, newparent.0, newname, no_replace);
        Self::empty(r, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state.lock();
        let r = state.open(ino.0).and_then(|()| {
            if flags.0 & libc::O_TRUNC != 0 {
                state.set_len(ino.0, 0)?;
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.opened(FileHandle(ino.0), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.state.lock();
        let perm = (mode & !umask & 0o7777) as u16;
        let r = state
            .create(parent.0, name, Kind::File, perm)
            .and_then(|ino| state.open(ino).and_then(|()| state.attr(ino)));
        match r {
            Ok(a) => reply.created(
                &TTL,
                &attr(&a, req),
                Generation(0),
                FileHandle(a.ino),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.state.lock().read(ino.0, offset, size as usize) {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.state.lock().write(ino.0, offset, data) {
            Ok(()) => reply.written(u32::try_from(data.len()).expect("FUSE writes fit u32")),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state.lock().release(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(self.state.lock().sync(ino.0), reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let list = match self.state.lock().list(ino.0) {
            Ok(l) => l,
            Err(e) => {
                reply.error(errno(e));
                return;
            }
        };
        let dots = [
            (ino.0, FileType::Directory, OsStr::new(".").to_owned()),
            (ino.0, FileType::Directory, OsStr::new("..").to_owned()),
        ];
        let all = dots.into_iter().chain(list.into_iter().map(|(i, k, n)| {
            let t = match k {
                Kind::File => FileType::RegularFile,
                Kind::Dir => FileType::Directory,
            };
            (i, t, n)
        }));
        for (n, (i, t, name)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(i), (n + 1) as u64, t, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(self.state.lock().sync(ino.0), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Plenty of room: the model is bounded by memory, not by a size of its own.
        let blocks = 1u64 << 28;
        reply.statfs(
            blocks,
            blocks,
            blocks,
            1 << 20,
            1 << 20,
            PAGE_BYTES as u32,
            255,
            0,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        Self::empty(self.state.lock().attr(ino.0).map(|_| ()), reply);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // No extended attributes are kept; the kernel asks for security ones on every write.
        reply.error(Errno::ENODATA);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.size(0);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            reply.error(Errno::EOPNOTSUPP);
            return;
        }
        let mut state = self.state.lock();
        let r = state.attr(ino.0).and_then(|a| {
            let end = offset.saturating_add(length);
            if end > a.len_bytes {
                state.set_len(ino.0, end)?;
            }
            Ok(())
        });
        Self::empty(r, reply);
    }
}
