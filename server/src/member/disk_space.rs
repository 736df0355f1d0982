//! Free space on the file system under a member's data: whether it has fallen below the
//! reserve the member keeps for what it cannot refuse to write (the log's next segment, the
//! tree's growth, snapshots for peers).
//!
//! Owns only the measurement (statvfs, at most once per interval, so a busy leader pays one
//! syscall per interval, not per write). It never refuses anything itself: the client APIs
//! raise their alarm and refuse new data while the space is short.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a measurement stands.
const MEASURE_EVERY: Duration = Duration::from_millis(100);

/// The free space under one directory, against a reserve.
#[derive(Debug)]
pub struct DiskSpace {
    dir: PathBuf,
    reserve_bytes: u64,
    last: Mutex<Option<(Instant, bool)>>,
}

/// Bytes available to this process on the file system holding `dir`.
pub fn available_bytes(dir: &Path) -> std::io::Result<u64> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: statvfs(3) with a NUL-terminated path and a pointer to writable storage of the
    // right type, read only when the call succeeded.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: initialized by the successful call above.
    let st = unsafe { st.assume_init() };
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

impl DiskSpace {
    /// Watches the file system holding `dir`; 0 `reserve_bytes` never reports it short.
    pub fn new(dir: &Path, reserve_bytes: u64) -> DiskSpace {
        DiskSpace {
            dir: dir.to_path_buf(),
            reserve_bytes,
            last: Mutex::new(None),
        }
    }

    /// The reserve, in bytes.
    pub fn reserve_bytes(&self) -> u64 {
        self.reserve_bytes
    }

    /// Whether less than the reserve is available (a failed measurement counts as enough:
    /// the writes themselves then report what is wrong).
    pub fn short(&self) -> bool {
        if self.reserve_bytes == 0 {
            return false;
        }
        let mut last = self.last.lock();
        if let Some((at, short)) = *last
            && at.elapsed() < MEASURE_EVERY
        {
            return short;
        }
        let short = available_bytes(&self.dir).is_ok_and(|b| b < self.reserve_bytes);
        *last = Some((Instant::now(), short));
        short
    }
}
