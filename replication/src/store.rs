//! Where a protocol's log and hard state live durably: the [`LogStore`] trait, an in-memory
//! store that models a disk (unsynced writes are lost on [`MemStore::crash`]) for the
//! simulator, and [`WalStore`] on quorumkv's write-ahead log.

use std::path::{Path, PathBuf};

use quorumkv_wal::{Wal, WalOptions};

use crate::codec::{R, W};
use crate::protocol::Restored;
use crate::types::{Entry, HardState, SnapshotMeta};

/// Errors of a log store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] quorumkv_wal::Error),
    /// The state file failed.
    #[error("log store io error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Stored data failed validation.
    #[error("log store corruption: {0}")]
    Corruption(String),
}

/// Durable storage of one node's log, hard state and snapshot point.
pub trait LogStore {
    /// Queues removal of entries at and above `truncate_from`, then `entries`, then
    /// `hard_state`. Nothing is durable until [`LogStore::sync`].
    fn save(
        &mut self,
        hard_state: Option<HardState>,
        truncate_from: Option<u64>,
        entries: &[Entry],
    ) -> Result<(), StoreError>;
    /// Makes everything saved so far durable.
    fn sync(&mut self) -> Result<(), StoreError>;
    /// Durably restarts the log after `snapshot` (its entries up to the snapshot go).
    fn install_snapshot(&mut self, snapshot: &SnapshotMeta) -> Result<(), StoreError>;
    /// Durably records that a snapshot through `snapshot.index` exists; entries up to it may
    /// be discarded.
    fn compact(&mut self, snapshot: &SnapshotMeta) -> Result<(), StoreError>;
    /// What a restarting node finds (`applied` is left at the snapshot index).
    fn load(&self) -> Result<Restored, StoreError>;
}

#[derive(Debug, Clone, Default)]
struct Image {
    hard_state: HardState,
    snapshot: SnapshotMeta,
    entries: Vec<Entry>,
}

impl Image {
    fn apply(&mut self, hs: Option<HardState>, truncate_from: Option<u64>, entries: &[Entry]) {
        if let Some(t) = truncate_from {
            self.entries.retain(|e| e.index < t);
        }
        for e in entries {
            let next = self.snapshot.index + 1 + self.entries.len() as u64;
            if e.index < next {
                self.entries.retain(|x| x.index < e.index);
            }
            let next = self.snapshot.index + 1 + self.entries.len() as u64;
            assert_eq!(e.index, next, "store entries are dense");
            self.entries.push(e.clone());
        }
        if let Some(h) = hs {
            self.hard_state = h;
        }
    }
}

/// Saved but not yet synced.
type PendingSave = (Option<HardState>, Option<u64>, Vec<Entry>);

/// An in-memory store with a durable image and a list of unsynced writes.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    durable: Image,
    live: Image,
    unsynced: Vec<PendingSave>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }
    /// Loses everything not synced, as a power failure would.
    pub fn crash(&mut self) {
        self.live = self.durable.clone();
        self.unsynced.clear();
    }
    /// Writes saved but not synced.
    pub fn unsynced(&self) -> usize {
        self.unsynced.len()
    }
    /// (index, term) of the last entry saved (or of the snapshot point).
    pub fn last_position(&self) -> (u64, u64) {
        self.live
            .entries
            .last()
            .map_or((self.live.snapshot.index, self.live.snapshot.term), |e| {
                (e.index, e.term)
            })
    }
}

impl LogStore for MemStore {
    fn save(
        &mut self,
        hs: Option<HardState>,
        t: Option<u64>,
        entries: &[Entry],
    ) -> Result<(), StoreError> {
        self.live.apply(hs, t, entries);
        self.unsynced.push((hs, t, entries.to_vec()));
        Ok(())
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        for (hs, t, entries) in self.unsynced.drain(..) {
            self.durable.apply(hs, t, &entries);
        }
        Ok(())
    }
    fn install_snapshot(&mut self, s: &SnapshotMeta) -> Result<(), StoreError> {
        self.sync()?;
        for img in [&mut self.live, &mut self.durable] {
            img.entries.clear();
            img.snapshot = s.clone();
        }
        Ok(())
    }
    fn compact(&mut self, s: &SnapshotMeta) -> Result<(), StoreError> {
        for img in [&mut self.live, &mut self.durable] {
            if s.index > img.snapshot.index {
                img.entries.retain(|e| e.index > s.index);
                img.snapshot = s.clone();
            }
        }
        Ok(())
    }
    fn load(&self) -> Result<Restored, StoreError> {
        Ok(Restored {
            hard_state: self.live.hard_state,
            snapshot: self.live.snapshot.clone(),
            entries: self.live.entries.clone(),
            applied: self.live.snapshot.index,
        })
    }
}

const STATE_SLOT_BYTES: usize = 4096;
const STATE_MAGIC: u64 = 0x5154_4b56_5354_4154; // "QKVSTAT" + version

/// A log store on the write-ahead log: entry `i` is WAL record `i`; hard state and snapshot
/// point live in a two-slot state file (`state`) next to the WAL directory, each slot
/// checksummed, written alternately and fdatasynced.
pub struct WalStore {
    wal: Wal,
    dir: PathBuf,
    state: std::fs::File,
    state_seq: u64,
    hard_state: HardState,
    snapshot: SnapshotMeta,
    /// Encoded entries saved since the last sync, appended by it (see [`Wal::append_durable`]).
    unsaved: Vec<Vec<u8>>,
    /// Appends already queued (before a truncation) that the next sync waits for.
    pending: Vec<quorumkv_wal::Ticket>,
    hs_dirty: bool,
}

impl std::fmt::Debug for WalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn encode_state(seq: u64, hs: &HardState, snap: &SnapshotMeta) -> Vec<u8> {
    let mut b = Vec::new();
    let mut w = W(&mut b);
    w.u64(STATE_MAGIC);
    w.u64(seq);
    w.u64(hs.term);
    w.u64(hs.vote);
    w.u64(hs.current_epoch);
    w.snapshot(snap);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&u64::from(crc).to_le_bytes());
    assert!(b.len() <= STATE_SLOT_BYTES, "state slot overflow");
    b.resize(STATE_SLOT_BYTES, 0);
    b
}

fn decode_state(b: &[u8]) -> Option<(u64, HardState, SnapshotMeta)> {
    let mut r = R::new(b);
    if r.u64().ok()? != STATE_MAGIC {
        return None;
    }
    let seq = r.u64().ok()?;
    let hs = HardState {
        term: r.u64().ok()?,
        vote: r.u64().ok()?,
        current_epoch: r.u64().ok()?,
    };
    let snap = r.snapshot().ok()?;
    let body_len = {
        let mut probe = Vec::new();
        W(&mut probe).snapshot(&snap);
        40 + probe.len()
    };
    let crc = u64::from_le_bytes(b.get(body_len..body_len + 8)?.try_into().ok()?);
    (u64::from(crc32c::crc32c(&b[..body_len])) == crc).then_some((seq, hs, snap))
}

impl WalStore {
    /// Opens (or creates) a store in `dir`: the WAL in `dir/wal`, the state file `dir/state`.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        backend: quorumkv_wal::Backend,
    ) -> Result<WalStore, StoreError> {
        use std::os::unix::fs::FileExt;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        quorumkv_wal::io::create_dir_all_durable(dir).map_err(io(dir))?;
        let path = dir.join("state");
        let new = !path.exists();
        let state = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        if new {
            // The file's name must outlive a power cut as surely as what is written in it.
            quorumkv_wal::io::sync_dir(dir).map_err(io(dir))?;
        }
        let mut best: Option<(u64, HardState, SnapshotMeta)> = None;
        for slot in 0..2u64 {
            let mut b = vec![0u8; STATE_SLOT_BYTES];
            let n = state
                .read_at(&mut b, slot * STATE_SLOT_BYTES as u64)
                .map_err(io(&path))?;
            if n == STATE_SLOT_BYTES
                && let Some(s) = decode_state(&b)
                && best.as_ref().is_none_or(|b| s.0 > b.0)
            {
                best = Some(s);
            }
        }
        let (state_seq, hard_state, snapshot) = best.unwrap_or_default();
        let wal = Wal::open(dir.join("wal"), opts, backend)?;
        if snapshot.index > 0 && wal.first_index() <= snapshot.index {
            // Entries the snapshot covers are not needed (purge is segment-granular).
            wal.purge_prefix(snapshot.index)?;
        }
        Ok(WalStore {
            wal,
            dir: dir.to_path_buf(),
            state,
            state_seq,
            hard_state,
            snapshot,
            unsaved: Vec::new(),
            pending: Vec::new(),
            hs_dirty: false,
        })
    }

    /// The error a failpoint injects in place of a real IO failure.
    #[cfg(feature = "failpoints")]
    fn injected(&self) -> StoreError {
        StoreError::Io {
            path: self.dir.join("state"),
            source: std::io::Error::other("injected failure"),
        }
    }

    /// The write-ahead log underneath.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    fn write_state(&mut self) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        self.state_seq += 1;
        let b = encode_state(self.state_seq, &self.hard_state, &self.snapshot);
        let path = self.dir.join("state");
        let slot = (self.state_seq % 2) * STATE_SLOT_BYTES as u64;
        let fsync = !self.wal.options().unsafe_no_fsync;
        self.state
            .write_all_at(&b, slot)
            .and_then(|()| {
                if fsync {
                    self.state.sync_data()
                } else {
                    Ok(())
                }
            })
            .map_err(|source| StoreError::Io { path, source })
    }

    /// Last index saved, counting entries not yet handed to the log.
    fn last_index(&self) -> u64 {
        self.wal.last_index() + self.unsaved.len() as u64
    }

    /// Drops every saved entry from `from` on: from the entries not yet handed to the log, or
    /// with them from the log itself (durable on return; appends queued before it complete
    /// first).
    fn truncate_from(&mut self, from: u64) -> Result<(), StoreError> {
        let written = self.wal.last_index();
        if from > written {
            self.unsaved.truncate((from - written - 1) as usize);
        } else {
            self.unsaved.clear();
            self.wal.truncate_suffix(from.max(self.wal.first_index()))?;
        }
        Ok(())
    }

    /// Queues the saved entries on the log without waiting, so a compaction can follow them.
    fn queue_unsaved(&mut self) -> Result<(), StoreError> {
        if !self.unsaved.is_empty() {
            let ticket = self.wal.append(self.unsaved.drain(..))?;
            self.pending.push(ticket);
        }
        Ok(())
    }

    fn encode_entry(e: &Entry) -> Vec<u8> {
        let mut b = Vec::with_capacity(e.data.len() + 17);
        let mut w = W(&mut b);
        w.u64(e.term);
        w.u8(match e.kind {
            crate::types::EntryKind::Normal => 0,
            crate::types::EntryKind::ConfChange => 1,
            crate::types::EntryKind::Noop => 2,
        });
        b.extend_from_slice(&e.data);
        b
    }

    fn decode_entry(index: u64, b: &[u8]) -> Result<Entry, StoreError> {
        if b.len() < 9 {
            return Err(StoreError::Corruption(format!("entry {index} too short")));
        }
        let term = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let kind = match b[8] {
            0 => crate::types::EntryKind::Normal,
            1 => crate::types::EntryKind::ConfChange,
            2 => crate::types::EntryKind::Noop,
            k => {
                return Err(StoreError::Corruption(format!(
                    "entry {index}: unknown kind {k}"
                )));
            }
        };
        Ok(Entry {
            term,
            index,
            kind,
            data: b[9..].to_vec(),
        })
    }
}

impl LogStore for WalStore {
    fn save(
        &mut self,
        hs: Option<HardState>,
        t: Option<u64>,
        entries: &[Entry],
    ) -> Result<(), StoreError> {
        if let Some(t) = t
            && t <= self.last_index()
        {
            self.truncate_from(t)?;
        }
        if let Some(first) = entries.first() {
            if first.index <= self.last_index() {
                self.truncate_from(first.index)?;
            }
            assert_eq!(
                first.index,
                self.last_index() + 1,
                "entries continue the log"
            );
            self.unsaved.extend(entries.iter().map(Self::encode_entry));
        }
        if let Some(h) = hs {
            self.hard_state = h;
            self.hs_dirty = true;
        }
        Ok(())
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        for t in self.pending.drain(..) {
            t.wait()?;
        }
        if !self.unsaved.is_empty() {
            self.wal.append_durable(self.unsaved.drain(..))?;
        }
        if self.hs_dirty {
            self.write_state()?;
            self.hs_dirty = false;
        }
        Ok(())
    }
    fn install_snapshot(&mut self, s: &SnapshotMeta) -> Result<(), StoreError> {
        self.sync()?;
        // The snapshot point first: a crash before the log is reset leaves stale entries
        // after it, which the protocol treats like any unmatched suffix.
        self.snapshot = s.clone();
        self.write_state()?;
        fail::fail_point!("store::install_snapshot", |_| Err(self.injected()));
        if self.wal.last_index() > s.index {
            self.wal
                .truncate_suffix((s.index + 1).max(self.wal.first_index()))?;
        }
        self.wal.purge_prefix(s.index)?;
        Ok(())
    }
    fn compact(&mut self, s: &SnapshotMeta) -> Result<(), StoreError> {
        if s.index <= self.snapshot.index {
            return Ok(());
        }
        self.queue_unsaved()?;
        self.snapshot = s.clone();
        self.write_state()?;
        fail::fail_point!("store::compact", |_| Err(self.injected()));
        self.wal.purge_prefix(s.index.min(self.wal.last_index()))?;
        Ok(())
    }
    fn load(&self) -> Result<Restored, StoreError> {
        debug_assert!(self.unsaved.is_empty(), "a store is loaded before it saves");
        let first = (self.snapshot.index + 1).max(self.wal.first_index());
        let last = self.wal.last_index();
        let mut entries = Vec::new();
        if first <= last {
            for (k, b) in self.wal.read(first..last + 1)?.iter().enumerate() {
                entries.push(Self::decode_entry(first + k as u64, b)?);
            }
        }
        if first > self.snapshot.index + 1 {
            return Err(StoreError::Corruption(format!(
                "log starts at {first} but the snapshot ends at {}",
                self.snapshot.index
            )));
        }
        Ok(Restored {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries,
            applied: self.snapshot.index,
        })
    }
}
