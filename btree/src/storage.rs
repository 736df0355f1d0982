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
    /// Makes every completed write durable.
    fn sync(&self) -> io::Result<()>;
}

/// A real file, read through a reserved shared mapping and written with pwrite.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    map: MmapRaw,
    reserved: u64,
}

impl FileStorage {
    /// Opens or creates `path`, reserving `reserved_bytes` of address space for it.
    pub fn open(path: &Path, reserved_bytes: u64) -> io::Result<FileStorage> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = usize::try_from(reserved_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "reservation too large"))?;
        // The mapping may extend past the end of the file; those bytes are never touched
        // until the file has grown over them.
        let map = MmapOptions::new().len(len).map_raw_read_only(&file)?;
        Ok(FileStorage {
            file,
            map,
            reserved: reserved_bytes,
        })
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
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}
