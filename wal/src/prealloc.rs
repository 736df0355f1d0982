//! The preallocator: keeps the next segment file created, allocated and zero-filled ahead of
//! need, on its own thread, so rotation never waits for allocation and a steady-state fdatasync
//! flushes data rather than extent metadata.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::io::{FileSystem, LogFile};
use crate::segment;

const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// A file ready to become the next segment.
pub(crate) struct Ready {
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn LogFile>,
}

#[derive(Default)]
struct Slot {
    ready: Option<Ready>,
    error: Option<String>,
    wanted: bool,
    closing: bool,
    counter: u64,
}

struct Inner {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    segment_bytes: u64,
    zero_fill: bool,
    slot: Mutex<Slot>,
    cv: Condvar,
}

/// Hands out fresh segment files; in the background when preallocation is on.
pub(crate) struct Preallocator {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

fn make_file(inner: &Inner, n: u64) -> std::io::Result<Ready> {
    let path = inner.dir.join(format!("{n:016x}{}", segment::TMP_SUFFIX));
    let file = inner.fs.open(&path, true)?;
    if inner.zero_fill {
        file.allocate(inner.segment_bytes)?;
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut off = 0u64;
        while off < inner.segment_bytes {
            let n = (inner.segment_bytes - off).min(ZERO_CHUNK_BYTES as u64) as usize;
            file.write_at(&zeros[..n], off)?;
            off += n as u64;
        }
        file.sync_data()?;
    }
    Ok(Ready { path, file })
}

impl Preallocator {
    pub(crate) fn start(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        segment_bytes: u64,
        background: bool,
    ) -> Preallocator {
        let inner = Arc::new(Inner {
            fs,
            dir: dir.to_path_buf(),
            segment_bytes,
            zero_fill: background,
            slot: Mutex::new(Slot {
                wanted: true,
                ..Slot::default()
            }),
            cv: Condvar::new(),
        });
        let thread = background.then(|| {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("wal-prealloc".into())
                .spawn(move || run(&inner))
                .expect("spawn preallocator thread")
        });
        Preallocator { inner, thread }
    }

    /// The next segment file; waits for the background thread if it is still filling it.
    pub(crate) fn take(&self) -> std::io::Result<Ready> {
        if self.thread.is_none() {
            let n = {
                let mut s = self.inner.slot.lock();
                s.counter += 1;
                s.counter
            };
            return make_file(&self.inner, n);
        }
        let mut s = self.inner.slot.lock();
        loop {
            if let Some(r) = s.ready.take() {
                s.wanted = true;
                self.inner.cv.notify_all();
                return Ok(r);
            }
            if let Some(e) = s.error.take() {
                s.wanted = true;
                self.inner.cv.notify_all();
                return Err(std::io::Error::other(format!(
                    "segment preallocation failed: {e}"
                )));
            }
            self.inner.cv.wait(&mut s);
        }
    }
}

fn run(inner: &Inner) {
    loop {
        let n = {
            let mut s = inner.slot.lock();
            while !(s.closing || s.wanted && s.ready.is_none() && s.error.is_none()) {
                inner.cv.wait(&mut s);
            }
            if s.closing {
                return;
            }
            s.wanted = false;
            s.counter += 1;
            s.counter
        };
        let outcome = make_file(inner, n);
        let mut s = inner.slot.lock();
        match outcome {
            Ok(r) => s.ready = Some(r),
            Err(e) => s.error = Some(e.to_string()),
        }
        inner.cv.notify_all();
    }
}

impl Drop for Preallocator {
    fn drop(&mut self) {
        self.inner.slot.lock().closing = true;
        self.inner.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
