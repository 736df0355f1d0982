//! A simulated file system that separates live from durable bytes.
//!
//! Every mutation is applied to the live view and queued until the file (or, for directory
//! entries, the directory) is synced. [`SimFs::crash`] builds the file system a machine would
//! find after power loss: synced state, plus optionally a random prefix of unsynced writes with
//! the last sector torn. It records a trace of every mutation so a test can rebuild the state at
//! any point of a run and crash there. It also injects write and fdatasync errors.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
pub use quorumkv_simdisk::CrashMode;
use quorumkv_simdisk::{Rng, SimFile as DiskFile};

use super::{FileSystem, LogFile};

/// One mutation, as recorded in the trace.
#[derive(Debug, Clone)]
pub enum SimOp {
    /// A file was created under a name.
    Create {
        /// Its path.
        path: PathBuf,
        /// Its inode.
        ino: u64,
    },
    /// Bytes were written.
    Write {
        /// Target inode.
        ino: u64,
        /// Byte offset.
        offset: u64,
        /// The bytes.
        data: Arc<[u8]>,
    },
    /// The length changed (allocate or truncate).
    SetLen {
        /// Target inode.
        ino: u64,
        /// New length.
        len: u64,
        /// Whether this may only grow the file (allocate).
        grow_only: bool,
    },
    /// fdatasync of a file.
    Sync {
        /// Target inode.
        ino: u64,
    },
    /// A rename.
    Rename {
        /// Old path.
        from: PathBuf,
        /// New path.
        to: PathBuf,
    },
    /// A removal.
    Remove {
        /// The path.
        path: PathBuf,
    },
    /// fsync of the directory.
    SyncDir,
}

/// The state of a simulated machine's disk.
#[derive(Debug, Clone, Default)]
pub struct SimState {
    inodes: BTreeMap<u64, DiskFile>,
    live_dir: BTreeMap<PathBuf, u64>,
    durable_dir: BTreeMap<PathBuf, u64>,
    pending_dir: Vec<SimOp>,
    next_ino: u64,
}

impl SimState {
    fn apply(&mut self, op: &SimOp) {
        match op {
            SimOp::Create { path, ino } => {
                self.inodes.insert(*ino, DiskFile::default());
                self.live_dir.insert(path.clone(), *ino);
                self.next_ino = self.next_ino.max(ino + 1);
                self.pending_dir.push(op.clone());
            }
            SimOp::Write { ino, offset, data } => {
                let node = self.inodes.get_mut(ino).expect("write to a known inode");
                node.write(*offset, data.clone());
            }
            SimOp::SetLen {
                ino,
                len,
                grow_only,
            } => {
                let node = self.inodes.get_mut(ino).expect("set_len on a known inode");
                node.set_len(*len, *grow_only);
            }
            SimOp::Sync { ino } => {
                let node = self.inodes.get_mut(ino).expect("sync of a known inode");
                node.sync();
            }
            SimOp::Rename { from, to } => {
                let ino = self.live_dir.remove(from).expect("rename of a live entry");
                self.live_dir.insert(to.clone(), ino);
                self.pending_dir.push(op.clone());
            }
            SimOp::Remove { path } => {
                self.live_dir.remove(path);
                self.pending_dir.push(op.clone());
            }
            SimOp::SyncDir => {
                self.durable_dir = self.live_dir.clone();
                self.pending_dir.clear();
            }
        }
    }

    fn crash(&self, mode: CrashMode) -> SimState {
        let mut rng = Rng::new(match mode {
            CrashMode::DropUnsynced => 0,
            CrashMode::TornTail { seed } => seed ^ 0x9e37_79b9_7f4a_7c15,
        });
        let torn = matches!(mode, CrashMode::TornTail { .. });
        let mut dir = self.durable_dir.clone();
        if torn {
            let keep = rng.below(self.pending_dir.len() as u64 + 1) as usize;
            for op in &self.pending_dir[..keep] {
                match op {
                    SimOp::Create { path, ino } => {
                        dir.insert(path.clone(), *ino);
                    }
                    SimOp::Rename { from, to } => {
                        if let Some(ino) = dir.remove(from) {
                            dir.insert(to.clone(), ino);
                        }
                    }
                    SimOp::Remove { path } => {
                        dir.remove(path);
                    }
                    _ => unreachable!("only directory operations are pending on the directory"),
                }
            }
        }
        let mut inodes = BTreeMap::new();
        for ino in dir.values() {
            let node = &self.inodes[ino];
            let data = node.after_crash(torn.then_some(&mut rng));
            inodes.insert(*ino, DiskFile::from_durable(data));
        }
        SimState {
            inodes,
            live_dir: dir.clone(),
            durable_dir: dir,
            pending_dir: Vec::new(),
            next_ino: self.next_ino,
        }
    }
}

#[derive(Debug, Default)]
struct Faults {
    /// Fail the sync that makes this count of syncs reach zero.
    sync_countdown: Option<u64>,
    write_countdown: Option<u64>,
    failed_syncs: u64,
}

#[derive(Debug, Default)]
struct Shared {
    state: SimState,
    trace: Option<Vec<SimOp>>,
    faults: Faults,
    ops: u64,
}

/// The simulated file system. Cheap to clone; clones share one disk.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    shared: Arc<Mutex<Shared>>,
}

impl SimFs {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts recording every mutation.
    pub fn record_trace(&self) {
        self.shared.lock().trace = Some(Vec::new());
    }

    /// The mutations recorded so far.
    pub fn trace(&self) -> Vec<SimOp> {
        self.shared.lock().trace.clone().unwrap_or_default()
    }

    /// How many mutations have been applied.
    pub fn ops(&self) -> u64 {
        self.shared.lock().ops
    }

    /// Makes the `n`-th next fdatasync (1 = the next one) fail with EIO; its data stays unsynced.
    pub fn fail_sync_after(&self, n: u64) {
        self.shared.lock().faults.sync_countdown = Some(n.max(1));
    }

    /// Makes the `n`-th next write fail with EIO.
    pub fn fail_write_after(&self, n: u64) {
        self.shared.lock().faults.write_countdown = Some(n.max(1));
    }

    /// How many syncs were failed on purpose.
    pub fn failed_syncs(&self) -> u64 {
        self.shared.lock().faults.failed_syncs
    }

    /// The disk a machine would find after losing power now.
    pub fn crash(&self, mode: CrashMode) -> SimFs {
        let state = self.shared.lock().state.crash(mode);
        SimFs::from_state(state)
    }

    /// Replays a recorded trace: the disk as it was after `ops` mutations.
    pub fn replay(ops: &[SimOp]) -> SimReplay {
        let mut state = SimState::default();
        for op in ops {
            state.apply(op);
        }
        SimReplay { state }
    }

    fn from_state(state: SimState) -> SimFs {
        SimFs {
            shared: Arc::new(Mutex::new(Shared {
                state,
                ..Shared::default()
            })),
        }
    }

    /// Flips one bit of the live and durable content of `path`.
    pub fn flip_bit(&self, path: &Path, bit: u64) -> bool {
        let mut g = self.shared.lock();
        let Some(ino) = g.state.live_dir.get(path).copied() else {
            return false;
        };
        let node = g.state.inodes.get_mut(&ino).expect("entry has an inode");
        if bit / 8 >= node.live().len() as u64 {
            return false;
        }
        node.flip_bit(bit)
    }

    /// Live length of `path`, if it exists.
    pub fn file_len(&self, path: &Path) -> Option<u64> {
        let g = self.shared.lock();
        let ino = g.state.live_dir.get(path)?;
        Some(g.state.inodes[ino].live().len() as u64)
    }

    fn mutate(&self, op: SimOp) {
        let mut g = self.shared.lock();
        g.state.apply(&op);
        g.ops += 1;
        if let Some(t) = g.trace.as_mut() {
            t.push(op);
        }
    }
}

/// A disk rebuilt from a trace prefix, ready to crash and reopen.
#[derive(Debug, Clone)]
pub struct SimReplay {
    state: SimState,
}

impl SimReplay {
    /// Applies one more recorded mutation.
    pub fn apply(&mut self, op: &SimOp) {
        self.state.apply(op);
    }
    /// The disk found after a crash at this point.
    pub fn crash(&self, mode: CrashMode) -> SimFs {
        SimFs::from_state(self.state.crash(mode))
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure (EIO)"))
}

struct SimFile {
    fs: SimFs,
    ino: u64,
}

impl LogFile for SimFile {
    fn len_bytes(&self) -> io::Result<u64> {
        let g = self.fs.shared.lock();
        Ok(g.state.inodes[&self.ino].live().len() as u64)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let g = self.fs.shared.lock();
        let data = g.state.inodes[&self.ino].live();
        let off = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let n = buf.len().min(data.len() - off);
        buf[..n].copy_from_slice(&data[off..off + n]);
        Ok(n)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        {
            let mut g = self.fs.shared.lock();
            if let Some(n) = g.faults.write_countdown.as_mut() {
                *n -= 1;
                if *n == 0 {
                    g.faults.write_countdown = None;
                    return Err(injected("write"));
                }
            }
        }
        self.fs.mutate(SimOp::Write {
            ino: self.ino,
            offset,
            data: Arc::from(buf),
        });
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        {
            let mut g = self.fs.shared.lock();
            if let Some(n) = g.faults.sync_countdown.as_mut() {
                *n -= 1;
                if *n == 0 {
                    g.faults.sync_countdown = None;
                    g.faults.failed_syncs += 1;
                    return Err(injected("fdatasync"));
                }
            }
        }
        self.fs.mutate(SimOp::Sync { ino: self.ino });
        Ok(())
    }
    fn allocate(&self, len_bytes: u64) -> io::Result<()> {
        self.fs.mutate(SimOp::SetLen {
            ino: self.ino,
            len: len_bytes,
            grow_only: true,
        });
        Ok(())
    }
    fn truncate(&self, len_bytes: u64) -> io::Result<()> {
        self.fs.mutate(SimOp::SetLen {
            ino: self.ino,
            len: len_bytes,
            grow_only: false,
        });
        Ok(())
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl FileSystem for SimFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>> {
        let existing = self.shared.lock().state.live_dir.get(path).copied();
        let ino = match (existing, create) {
            (Some(_), true) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ));
            }
            (Some(ino), false) => ino,
            (None, false) => return Err(not_found(path)),
            (None, true) => {
                let ino = self.shared.lock().state.next_ino;
                self.mutate(SimOp::Create {
                    path: path.to_path_buf(),
                    ino,
                });
                ino
            }
        };
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            ino,
        }))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let g = self.shared.lock();
        Ok(g.state
            .live_dir
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        if !self.shared.lock().state.live_dir.contains_key(path) {
            return Err(not_found(path));
        }
        self.mutate(SimOp::Remove {
            path: path.to_path_buf(),
        });
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if !self.shared.lock().state.live_dir.contains_key(from) {
            return Err(not_found(from));
        }
        self.mutate(SimOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        });
        Ok(())
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        self.mutate(SimOp::SyncDir);
        Ok(())
    }
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
    fn name(&self) -> &'static str {
        "sim"
    }
}
