//! The narrow storage interface the tree reaches the disk through, and its file backend.
//!
//! Reads go through one mapping reserved large up front: growing the file never remaps, so
//! readers holding page references are never disturbed. Writes go through `write_at` (pwrite);
//! the file is grown (fallocate) before pages past its end are written. Tests swap in
//! [`crate::SimStorage`], which keeps live and durable bytes apart.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use memmap2::{MmapOptions, MmapRaw};

/// Where the tree's pages live.
pub trait Storage: Send + Sync + 'static {
    /// Start of the reserved read mapping; bytes below `len_bytes()` are readable there.
    fn base(&self) -> *const u8;
    /// Size of the reserved mapping: the largest the file may grow to.
    fn reserved_bytes(&self) -> u64;
    /// Current file length.
    fn len_bytes(&self) -> io::Result<u64>;
    /// Grows the file to `len_bytes` (never shrinks it).
    fn grow(&self, len_bytes: u64) -> io::Result<()>;
    /// Writes `buf` at `offset` (below `len_bytes()`).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Writes `bufs` back to back from `offset`, as one `write_at` of their concatenation
    /// would (the default does exactly that; a file writes them without the copy).
    fn write_all_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        self.write_at(&bufs.concat(), offset)
    }
    /// Makes every completed write durable.
    fn sync(&self) -> io::Result<()>;
    /// Gives the file's bytes past `len_bytes` back (storage that cannot, keeps them: the
    /// default). Nothing readable lies there any more.
    fn shrink(&self, len_bytes: u64) -> io::Result<()> {
        let _ = len_bytes;
        Ok(())
    }
}

/// A real file, read through a reserved shared mapping and written with pwrite.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    map: MmapRaw,
    reserved: u64,
    /// False under `unsafe_no_fsync`: `sync` returns without syncing.
    fsync: bool,
}

impl FileStorage {
    /// Opens or creates `path`, reserving `reserved_bytes` of address space for it.
    pub fn open(path: &Path, reserved_bytes: u64) -> io::Result<FileStorage> {
        let new = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if new {
            // A commit's fsync covers the file's data, not its name: make the name durable.
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            File::open(parent.unwrap_or(Path::new(".")))?.sync_all()?;
        }
        let len = usize::try_from(reserved_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "reservation too large"))?;
        // The mapping may extend past the end of the file; those bytes are never touched
        // until the file has grown over them.
        let map = MmapOptions::new().len(len).map_raw_read_only(&file)?;
        Ok(FileStorage {
            file,
            map,
            reserved: reserved_bytes,
            fsync: true,
        })
    }

    /// The same file with `sync` skipped: what it reports done is not durable.
    pub fn without_fsync(self) -> FileStorage {
        FileStorage {
            fsync: false,
            ..self
        }
    }
}

impl Storage for FileStorage {
    fn base(&self) -> *const u8 {
        self.map.as_ptr()
    }
    fn reserved_bytes(&self) -> u64 {
        self.reserved
    }
    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn grow(&self, len_bytes: u64) -> io::Result<()> {
        if len_bytes > self.reserved {
            return Err(io::Error::other(format!(
                "database would grow to {len_bytes} bytes, past its reservation of {} bytes",
                self.reserved
            )));
        }
        let len = libc::off_t::try_from(len_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        // SAFETY: plain syscall on an owned descriptor.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, len) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(e);
            }
            if self.len_bytes()? < len_bytes {
                self.file.set_len(len_bytes)?;
            }
        }
        Ok(())
    }
    fn shrink(&self, len_bytes: u64) -> io::Result<()> {
        if len_bytes < self.len_bytes()? {
            self.file.set_len(len_bytes)?;
        }
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn write_all_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        pwritev_all(&self.file, bufs, offset)
    }
    fn sync(&self) -> io::Result<()> {
        if !self.fsync {
            return Ok(());
        }
        self.file.sync_data()
    }
}

/// Most buffers one `pwritev` takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Writes `bufs` back to back from `offset` with `pwritev`, resuming after short writes.
fn pwritev_all(file: &File, bufs: &[&[u8]], mut offset: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // (index of the first buffer not fully written, bytes of it already written)
    let (mut idx, mut done) = (0usize, 0usize);
    loop {
        while idx < bufs.len() && done == bufs[idx].len() {
            idx += 1;
            done = 0;
        }
        if idx == bufs.len() {
            return Ok(());
        }
        let iov: Vec<libc::iovec> = bufs[idx..]
            .iter()
            .take(IOV_MAX)
            .enumerate()
            .map(|(j, b)| {
                let b = if j == 0 { &b[done..] } else { b };
                libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                }
            })
            .collect();
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        // SAFETY: every iovec points into a live slice of `bufs` for the length given, and
        // the count is the vector's length (at most IOV_MAX).
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                libc::c_int::try_from(iov.len()).expect("at most IOV_MAX"),
                off,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        let mut n = usize::try_from(n).expect("non-negative");
        offset += n as u64;
        while n > 0 {
            let left = bufs[idx].len() - done;
            if n >= left {
                n -= left;
                idx += 1;
                done = 0;
            } else {
                done += n;
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectored_writes_land_back_to_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::open(&dir.path().join("f"), 1 << 20).unwrap();
        s.grow(64 << 10).unwrap();
        let a = vec![1u8; 5000];
        let c = vec![3u8; 3];
        // More buffers than one pwritev takes, an empty one among them.
        let many: Vec<Vec<u8>> = (0..IOV_MAX + 7).map(|i| vec![i as u8; 7]).collect();
        let mut bufs: Vec<&[u8]> = vec![&a, &[], &c];
        bufs.extend(many.iter().map(Vec::as_slice));
        s.write_all_at(&bufs, 100).unwrap();
        let want = bufs.concat();
        let got = std::fs::read(dir.path().join("f")).unwrap();
        assert_eq!(&got[100..100 + want.len()], &want[..]);
        assert!(got[..100].iter().all(|b| *b == 0));
    }
}
