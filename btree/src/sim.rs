//! A simulated storage backend that separates live from durable bytes, for crash and fault
//! tests.
//!
//! Writes land in the live image at once and are queued until `sync`. [`SimStorage::crash`]
//! builds the storage a machine would find after power loss: the durable image, optionally with
//! a random prefix of the unsynced writes and the next one torn mid-sector. Every mutation can
//! be recorded, and [`SimReplay`] rebuilds the disk at any point of the trace.

use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

pub use quorumkv_simdisk::CrashMode;
use quorumkv_simdisk::SimFile;

use crate::storage::Storage;

/// One recorded mutation.
#[derive(Debug, Clone)]
pub enum SimOp {
    /// Bytes written at an offset.
    Write(u64, Arc<[u8]>),
    /// The file grew to a length.
    Grow(u64),
    /// A sync.
    Sync,
}

/// The file the disk holds, as the shared simulated disk models it.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    file: SimFile,
}

impl SimDisk {
    fn apply(&mut self, op: &SimOp) {
        match op {
            SimOp::Write(off, data) => self.file.write(*off, data.clone()),
            SimOp::Grow(len) => self.file.set_len(*len, true),
            SimOp::Sync => self.file.sync(),
        }
    }

    /// The live length.
    fn len(&self) -> u64 {
        self.file.live().len() as u64
    }

    fn crash(&self, mode: CrashMode) -> SimDisk {
        SimDisk {
            file: self.file.crash(mode),
        }
    }
}

#[derive(Default)]
struct Faults {
    sync_countdown: Option<u64>,
    write_countdown: Option<u64>,
}

/// The simulated backend.
pub struct SimStorage {
    live: *mut u8,
    reserved: usize,
    disk: Mutex<SimDisk>,
    faults: Mutex<Faults>,
    trace: Mutex<Option<Vec<SimOp>>>,
}

// SAFETY: the live image is written only through `write_at` under the tree's single-writer
// discipline, at pages no reader can reach; the raw pointer is owned by this value.
unsafe impl Send for SimStorage {}
// SAFETY: as above.
unsafe impl Sync for SimStorage {}

impl std::fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStorage")
            .field("len", &self.disk.lock().len())
            .finish_non_exhaustive()
    }
}

impl SimStorage {
    /// An empty disk with room for `reserved_bytes`.
    pub fn new(reserved_bytes: usize) -> SimStorage {
        Self::from_disk(SimDisk::default(), reserved_bytes)
    }

    fn from_disk(disk: SimDisk, reserved: usize) -> SimStorage {
        let mut buf = vec![0u8; reserved].into_boxed_slice();
        let durable = disk.file.durable();
        let n = durable.len().min(reserved);
        buf[..n].copy_from_slice(&durable[..n]);
        let live = Box::into_raw(buf).cast::<u8>();
        SimStorage {
            live,
            reserved,
            disk: Mutex::new(disk),
            faults: Mutex::new(Faults::default()),
            trace: Mutex::new(None),
        }
    }

    /// Starts recording mutations.
    pub fn record_trace(&self) {
        *self.trace.lock() = Some(Vec::new());
    }

    /// The recorded mutations.
    pub fn trace(&self) -> Vec<SimOp> {
        self.trace.lock().clone().unwrap_or_default()
    }

    /// Mutations so far (when recording).
    pub fn ops(&self) -> usize {
        self.trace.lock().as_ref().map_or(0, Vec::len)
    }

    /// The storage found after losing power now.
    pub fn crash(&self, mode: CrashMode) -> SimStorage {
        let disk = self.disk.lock().crash(mode);
        Self::from_disk(disk, self.reserved)
    }

    /// Makes the `n`-th next sync fail.
    pub fn fail_sync_after(&self, n: u64) {
        self.faults.lock().sync_countdown = Some(n.max(1));
    }

    /// Makes the `n`-th next write fail.
    pub fn fail_write_after(&self, n: u64) {
        self.faults.lock().write_countdown = Some(n.max(1));
    }

    /// Flips one bit of both the live and the durable image.
    pub fn flip_bit(&self, bit: u64) {
        let byte = usize::try_from(bit / 8).expect("fits");
        let mask = 1u8 << (bit % 8);
        self.disk.lock().file.flip_bit(bit);
        assert!(byte < self.reserved);
        // SAFETY: in bounds of the live image; tests flip bits with no transaction running.
        unsafe { *self.live.add(byte) ^= mask };
    }

    /// Rebuilds a disk from a trace.
    pub fn replay() -> SimReplay {
        SimReplay {
            disk: SimDisk::default(),
        }
    }

    fn record(&self, op: SimOp) {
        self.disk.lock().apply(&op);
        if let Some(t) = self.trace.lock().as_mut() {
            t.push(op);
        }
    }
}

impl Drop for SimStorage {
    fn drop(&mut self) {
        // SAFETY: `live` came from `Box::into_raw` of a slice of `reserved` bytes.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.live,
                self.reserved,
            )));
        }
    }
}

/// A disk rebuilt from a trace, one mutation at a time.
#[derive(Debug, Clone)]
pub struct SimReplay {
    disk: SimDisk,
}

impl SimReplay {
    /// Applies one recorded mutation.
    pub fn apply(&mut self, op: &SimOp) {
        self.disk.apply(op);
    }
    /// The storage found after a crash at this point.
    pub fn crash(&self, mode: CrashMode, reserved_bytes: usize) -> SimStorage {
        SimStorage::from_disk(self.disk.crash(mode), reserved_bytes)
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure (EIO)"))
}

impl Storage for SimStorage {
    fn base(&self) -> *const u8 {
        self.live
    }
    fn reserved_bytes(&self) -> u64 {
        self.reserved as u64
    }
    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.disk.lock().len())
    }
    fn grow(&self, len_bytes: u64) -> io::Result<()> {
        if len_bytes > self.reserved as u64 {
            return Err(io::Error::other("simulated disk reservation exceeded"));
        }
        if len_bytes > self.disk.lock().len() {
            self.record(SimOp::Grow(len_bytes));
        }
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        {
            let mut f = self.faults.lock();
            if let Some(n) = f.write_countdown.as_mut() {
                *n -= 1;
                if *n == 0 {
                    f.write_countdown = None;
                    return Err(injected("write"));
                }
            }
        }
        let off = usize::try_from(offset).expect("fits");
        assert!(
            off + buf.len() <= self.reserved,
            "write past the reservation"
        );
        // SAFETY: in bounds; the tree never writes a page a reader can reach.
        unsafe {
            self.live
                .add(off)
                .copy_from_nonoverlapping(buf.as_ptr(), buf.len())
        };
        self.record(SimOp::Write(offset, Arc::from(buf)));
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        {
            let mut f = self.faults.lock();
            if let Some(n) = f.sync_countdown.as_mut() {
                *n -= 1;
                if *n == 0 {
                    f.sync_countdown = None;
                    return Err(injected("sync"));
                }
            }
        }
        self.record(SimOp::Sync);
        Ok(())
    }
}
