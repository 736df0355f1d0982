//! A file system that skips every fsync: `--unsafe-no-fsync`, for benchmarks and for proving
//! that power-loss tests catch a log that acknowledges before its data is durable.
//!
//! Owns nothing but the skipping: every other call goes to the file system underneath. It
//! must never be chosen by default; whoever picks it accepts losing acknowledged writes.

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::{FileSystem, LogFile};

/// Wraps a file system so `sync_data` and `sync_dir` return at once without syncing.
pub struct NoSyncFs(pub Arc<dyn FileSystem>);

struct NoSyncFile(Arc<dyn LogFile>);

impl LogFile for NoSyncFile {
    fn len_bytes(&self) -> io::Result<u64> {
        self.0.len_bytes()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn write_and_sync(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn allocate(&self, len_bytes: u64) -> io::Result<()> {
        self.0.allocate(len_bytes)
    }
    fn truncate(&self, len_bytes: u64) -> io::Result<()> {
        self.0.truncate(len_bytes)
    }
}

impl FileSystem for NoSyncFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>> {
        Ok(Arc::new(NoSyncFile(self.0.open(path, create)?)))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.0.list(dir)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.0.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.0.create_dir_all(dir)
    }
    fn name(&self) -> &'static str {
        "no-fsync"
    }
}
