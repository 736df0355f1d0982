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

use super::{FileSystem, LogFile};

const SECTOR_BYTES: usize = 512;

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

/// What survives a simulated crash.
#[derive(Debug, Clone, Copy)]
pub enum CrashMode {
    /// Only synced data and synced directory entries survive.
    DropUnsynced,
    /// Per file, a random prefix of the unsynced writes survives, the next one torn mid-sector
    /// with garbage; a random prefix of unsynced directory operations survives.
    TornTail {
        /// Seed for the random choices.
        seed: u64,
    },
}

#[derive(Debug, Clone, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Debug, Clone)]
enum Pending {
    Write(u64, Arc<[u8]>),
    SetLen(u64, bool),
}

fn apply(buf: &mut Vec<u8>, p: &Pending) {
    match p {
        Pending::Write(off, data) => {
            let off = usize::try_from(*off).expect("offset fits memory");
            if buf.len() < off + data.len() {
                buf.resize(off + data.len(), 0);
            }
            buf[off..off + data.len()].copy_from_slice(data);
        }
        Pending::SetLen(len, grow_only) => {
            let len = usize::try_from(*len).expect("length fits memory");
            if !grow_only || buf.len() < len {
                buf.resize(len, 0);
            }
        }
    }
}

/// The state of a simulated machine's disk.
#[derive(Debug, Clone, Default)]
pub struct SimState {
    inodes: BTreeMap<u64, Inode>,
    live_dir: BTreeMap<PathBuf, u64>,
    durable_dir: BTreeMap<PathBuf, u64>,
    pending_dir: Vec<SimOp>,
    next_ino: u64,
}

impl SimState {
    fn apply(&mut self, op: &SimOp) {
        match op {
            SimOp::Create { path, ino } => {
                self.inodes.insert(*ino, Inode::default());
                self.live_dir.insert(path.clone(), *ino);
                self.next_ino = self.next_ino.max(ino + 1);
                self.pending_dir.push(op.clone());
            }
            SimOp::Write { ino, offset, data } => {
                let node = self.inodes.get_mut(ino).expect("write to a known inode");
                let p = Pending::Write(*offset, data.clone());
                apply(&mut node.live, &p);
                node.pending.push(p);
            }
            SimOp::SetLen {
                ino,
                len,
                grow_only,
            } => {
                let node = self.inodes.get_mut(ino).expect("set_len on a known inode");
                let p = Pending::SetLen(*len, *grow_only);
                apply(&mut node.live, &p);
                node.pending.push(p);
            }
            SimOp::Sync { ino } => {
                let node = self.inodes.get_mut(ino).expect("sync of a known inode");
                for p in std::mem::take(&mut node.pending) {
                    apply(&mut node.durable, &p);
                }
                debug_assert_eq!(node.durable, node.live);
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
        let mut rng = Rng(match mode {
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
            let mut data = node.durable.clone();
            if torn && !node.pending.is_empty() {
                let keep = rng.below(node.pending.len() as u64 + 1) as usize;
                for p in &node.pending[..keep] {
                    apply(&mut data, p);
                }
                if let Some(Pending::Write(off, bytes)) = node.pending.get(keep) {
                    tear(&mut data, *off, bytes, &mut rng);
                }
            }
            inodes.insert(
                *ino,
                Inode {
                    live: data.clone(),
                    durable: data,
                    pending: Vec::new(),
                },
            );
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

/// Applies whole sectors of a write, then garbage over part of the next sector.
fn tear(buf: &mut Vec<u8>, off: u64, bytes: &[u8], rng: &mut Rng) {
    let off = usize::try_from(off).expect("offset fits memory");
    let sectors = bytes.len().div_ceil(SECTOR_BYTES);
    let whole = rng.below(sectors as u64) as usize;
    let end = (whole * SECTOR_BYTES).min(bytes.len());
    if buf.len() < off + end {
        buf.resize(off + end, 0);
    }
    buf[off..off + end].copy_from_slice(&bytes[..end]);
    let torn_len = (bytes.len() - end).min(SECTOR_BYTES);
    let garbage_len = 1 + rng.below(torn_len as u64) as usize;
    let start = off + end;
    if buf.len() < start + garbage_len {
        buf.resize(start + garbage_len, 0);
    }
    for b in &mut buf[start..start + garbage_len] {
        *b = rng.next() as u8;
    }
}

/// A small deterministic generator (splitmix64) so crashes replay from a seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
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
        let byte = usize::try_from(bit / 8).expect("fits");
        if byte >= node.live.len() {
            return false;
        }
        node.live[byte] ^= 1 << (bit % 8);
        if byte < node.durable.len() {
            node.durable[byte] ^= 1 << (bit % 8);
        }
        true
    }

    /// Live length of `path`, if it exists.
    pub fn file_len(&self, path: &Path) -> Option<u64> {
        let g = self.shared.lock();
        let ino = g.state.live_dir.get(path)?;
        Some(g.state.inodes[ino].live.len() as u64)
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
        Ok(g.state.inodes[&self.ino].live.len() as u64)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let g = self.fs.shared.lock();
        let data = &g.state.inodes[&self.ino].live;
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
