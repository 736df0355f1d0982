//! The io_uring backend: writes and fdatasyncs go through a ring owned by the calling thread.
//!
//! `write_and_sync` links the write and the fdatasync in one submission, so a sync-per-batch
//! path costs one kernel entry. Directory operations and reads stay on plain syscalls, where a
//! ring buys nothing.

use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use io_uring::{IoUring, opcode, squeue, types};

use super::std_fs::{self, StdFile};
use super::{FileSystem, LogFile};

const RING_ENTRIES: u32 = 8;

thread_local! {
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
}

/// Real files with writes and syncs submitted through io_uring.
#[derive(Debug)]
pub struct UringFs {
    _private: (),
}

impl UringFs {
    /// Probes io_uring: fails when the kernel or a sandbox forbids it.
    pub fn new() -> io::Result<Self> {
        let ring = IoUring::new(RING_ENTRIES)?;
        // A probe no-op proves submission works, not just setup.
        let mut ring = ring;
        let nop = opcode::Nop::new().build().user_data(0);
        // SAFETY: a no-op references no memory.
        unsafe { ring.submission().push(&nop) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        ring.submit_and_wait(1)?;
        ring.completion().for_each(drop);
        Ok(UringFs { _private: () })
    }
}

/// A file of [`UringFs`].
#[derive(Debug)]
pub struct UringFile {
    inner: StdFile,
}

fn with_ring<T>(f: impl FnOnce(&mut IoUring) -> io::Result<T>) -> io::Result<T> {
    RING.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(IoUring::new(RING_ENTRIES)?);
        }
        f(slot.as_mut().expect("ring was just created"))
    })
}

/// Submits `entries` and returns each one's result, in order of `user_data` (0..n).
///
/// # Safety
/// Every buffer an entry points at must stay valid until this returns (it waits for all).
unsafe fn run(ring: &mut IoUring, entries: &[squeue::Entry]) -> io::Result<Vec<i32>> {
    assert!(entries.len() <= RING_ENTRIES as usize);
    {
        let mut sq = ring.submission();
        for e in entries {
            // SAFETY: the caller keeps the buffers alive until completion.
            unsafe { sq.push(e) }
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
    }
    let mut results = vec![0i32; entries.len()];
    let mut seen = 0;
    while seen < entries.len() {
        match ring.submit_and_wait(entries.len() - seen) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        for cqe in ring.completion() {
            let slot = usize::try_from(cqe.user_data()).expect("user data is an index");
            results[slot] = cqe.result();
            seen += 1;
        }
    }
    Ok(results)
}

fn check(result: i32) -> io::Result<usize> {
    if result < 0 {
        Err(io::Error::from_raw_os_error(-result))
    } else {
        Ok(usize::try_from(result).expect("non-negative"))
    }
}

fn write_entry(fd: i32, buf: &[u8], offset: u64) -> squeue::Entry {
    let len = u32::try_from(buf.len()).expect("a single write is below 4 GiB");
    opcode::Write::new(types::Fd(fd), buf.as_ptr(), len)
        .offset(offset)
        .build()
        .user_data(0)
}

fn fsync_entry(fd: i32, user_data: u64) -> squeue::Entry {
    opcode::Fsync::new(types::Fd(fd))
        .flags(types::FsyncFlags::DATASYNC)
        .build()
        .user_data(user_data)
}

impl UringFile {
    fn fd(&self) -> i32 {
        self.inner.file.as_raw_fd()
    }
}

impl LogFile for UringFile {
    fn len_bytes(&self) -> io::Result<u64> {
        self.inner.len_bytes()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let chunk = &buf[done..buf.len().min(done + (1 << 30))];
            let entry = write_entry(self.fd(), chunk, offset + done as u64);
            // SAFETY: `chunk` outlives the call, which waits for the completion.
            let res = with_ring(|ring| unsafe { run(ring, &[entry]) })?;
            let n = check(res[0])?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"));
            }
            done += n;
        }
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        let entry = fsync_entry(self.fd(), 0);
        // SAFETY: an fsync references no memory.
        let res = with_ring(|ring| unsafe { run(ring, &[entry]) })?;
        check(res[0]).map(drop)
    }
    fn write_and_sync(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if buf.len() >= 1 << 30 {
            self.write_at(buf, offset)?;
            return self.sync_data();
        }
        let write = write_entry(self.fd(), buf, offset).flags(squeue::Flags::IO_LINK);
        let sync = fsync_entry(self.fd(), 1);
        // SAFETY: `buf` outlives the call, which waits for both completions.
        let res = with_ring(|ring| unsafe { run(ring, &[write, sync]) })?;
        let written = check(res[0])?;
        if written < buf.len() {
            // A short write cancels the linked sync: finish both by hand.
            self.write_at(&buf[written..], offset + written as u64)?;
            return self.sync_data();
        }
        check(res[1]).map(drop)
    }
    fn allocate(&self, len_bytes: u64) -> io::Result<()> {
        self.inner.allocate(len_bytes)
    }
    fn truncate(&self, len_bytes: u64) -> io::Result<()> {
        self.inner.truncate(len_bytes)
    }
}

impl FileSystem for UringFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>> {
        Ok(Arc::new(UringFile {
            inner: StdFile {
                file: std_fs::open_file(path, create)?,
            },
        }))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        std_fs::list(dir)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std_fs::sync_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std_fs::create_dir_all_durable(dir)
    }
    fn name(&self) -> &'static str {
        "uring"
    }
}
