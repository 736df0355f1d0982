//! The narrow file-system interface the log talks to the disk through.
//!
//! Owns nothing but the contract: the log never calls `std::fs` directly, so tests can swap in
//! [`SimFs`], which keeps live and durable bytes apart and loses the unsynced ones on a crash.

mod no_sync;
mod sim;
mod std_fs;
#[cfg(target_os = "linux")]
mod uring;

use std::io;
use std::path::Path;
use std::sync::Arc;

pub use no_sync::NoSyncFs;
pub use sim::{CrashMode, SimFs, SimOp};
pub use std_fs::{StdFs, create_dir_all_durable, sync_dir};
#[cfg(target_os = "linux")]
pub use uring::UringFs;

/// One open file of the log. Implementations must be safe to call from several threads: the
/// writer writes while the syncer syncs and readers read.
pub trait LogFile: Send + Sync {
    /// Current length of the file in bytes.
    fn len_bytes(&self) -> io::Result<u64>;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (short at EOF).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Writes `buf` at `offset`, then makes it durable. Backends that can chain the two in one
    /// submission (io_uring) override this.
    fn write_and_sync(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_at(buf, offset)?;
        self.sync_data()
    }
    /// Reserves space so the file is at least `len_bytes` long (fallocate).
    fn allocate(&self, len_bytes: u64) -> io::Result<()>;
    /// Sets the file length to `len_bytes`.
    fn truncate(&self, len_bytes: u64) -> io::Result<()>;
}

/// Directory-level operations plus file opening.
pub trait FileSystem: Send + Sync + 'static {
    /// Opens `path` for reading and writing; creates it (failing if it exists) when `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>>;
    /// Names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates `dir` and its parents, durably (each new directory and its parent fsynced).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// A short name for logs and benchmark output.
    fn name(&self) -> &'static str;
}

/// Which real backend to use.
///
/// The default is pwrite: on the machines measured (ext4, kernel 6.x) a fdatasync submitted
/// through io_uring is handed to an io-wq worker thread and costs about 25% more than the
/// syscall, and buffered writes gain nothing from the ring (see docs/design.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// io_uring where the kernel allows it, otherwise pwrite (with a logged warning).
    Uring,
    /// pwrite + fdatasync.
    #[default]
    Pwrite,
}

impl Backend {
    /// Builds the file system for this backend.
    pub fn file_system(self) -> Arc<dyn FileSystem> {
        match self {
            #[cfg(target_os = "linux")]
            Backend::Uring => match UringFs::new() {
                Ok(fs) => Arc::new(fs),
                Err(e) => {
                    tracing::warn!(error = %e, "io_uring unavailable, falling back to pwrite");
                    Arc::new(StdFs)
                }
            },
            #[cfg(not(target_os = "linux"))]
            Backend::Uring => Arc::new(StdFs),
            Backend::Pwrite => Arc::new(StdFs),
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uring" | "io_uring" => Ok(Backend::Uring),
            "pwrite" => Ok(Backend::Pwrite),
            other => Err(format!(
                "unknown io backend {other:?} (expected uring or pwrite)"
            )),
        }
    }
}
