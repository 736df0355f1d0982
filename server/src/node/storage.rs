//! The storage thread: carries out each Ready's durable steps (snapshot install, log
//! truncation and appends, hard state, compaction) in order, group-committing everything that
//! queued while the previous fdatasync ran, and reports back what one sync made durable. A
//! failed write or sync ends the thread: nothing saved after it is ever acknowledged.
//!
//! It never sends a message or answers a proposer itself; the node loop does, once told.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quorumkv_replication::{Entry, LogStore, SnapshotMeta, WalStore};
use quorumkv_wal::WalStats;
use tokio::sync::mpsc;

use super::StateMachine;

/// What the node loop hands the storage thread, in Ready order: what one Ready must make
/// durable (step 2 and 3 of the persistence contract) and what may leave once it is.
pub(super) struct StorageJob<M> {
    pub(super) install: Option<(SnapshotMeta, PathBuf)>,
    pub(super) compact: Option<SnapshotMeta>,
    pub(super) hard_state: Option<quorumkv_replication::HardState>,
    pub(super) truncate_from: Option<u64>,
    pub(super) entries: Vec<Entry>,
    pub(super) after: Vec<M>,
    pub(super) last: (u64, u64),
}

/// One fdatasync's worth of jobs made durable.
pub(super) struct StorageDone<M> {
    /// Jobs this sync covered.
    pub(super) jobs: usize,
    pub(super) after: Vec<M>,
    pub(super) last: (u64, u64),
    pub(super) stats: WalStats,
}

/// Installs a received snapshot: in the state machine first (durably), then the log restarts
/// after it. A crash between the two leaves the machine ahead of the log, which it tolerates
/// (it skips entries it has); the reverse order could lose entries.
fn install_snapshot(
    store: &mut WalStore,
    machine: Option<&Arc<dyn StateMachine>>,
    meta: &SnapshotMeta,
    path: &Path,
) -> Result<(), String> {
    let machine = machine.ok_or("a snapshot arrived but this node has no state machine")?;
    let applied = machine
        .install_snapshot(path)
        .map_err(|e| format!("installing snapshot {}: {e}", path.display()))?;
    if applied < meta.index {
        return Err(format!(
            "snapshot {} holds index {applied}, short of the snapshot point {}",
            path.display(),
            meta.index
        ));
    }
    store.install_snapshot(meta).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(path);
    tracing::info!(index = meta.index, applied, "snapshot installed");
    Ok(())
}

pub(super) fn storage_thread<M: Send>(
    mut store: WalStore,
    machine: Option<Arc<dyn StateMachine>>,
    jobs: std::sync::mpsc::Receiver<StorageJob<M>>,
    done: mpsc::UnboundedSender<Result<StorageDone<M>, String>>,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while let Ok(j) = jobs.try_recv() {
            batch.push(j);
        }
        let mut after = Vec::new();
        let mut last = (0, 0);
        let mut result = Ok(());
        let jobs_n = batch.len();
        for j in batch {
            if result.is_ok()
                && let Some((meta, path)) = &j.install
            {
                result = install_snapshot(&mut store, machine.as_ref(), meta, path);
            }
            if result.is_ok() {
                result = store
                    .save(j.hard_state, j.truncate_from, &j.entries)
                    .map_err(|e| e.to_string());
            }
            if result.is_ok()
                && let Some(meta) = &j.compact
            {
                result = store.compact(meta).map_err(|e| e.to_string());
            }
            after.extend(j.after);
            last = j.last;
        }
        let result = result.and_then(|()| store.sync().map_err(|e| e.to_string()));
        if let Err(e) = result {
            // Fail-stop: nothing saved after this is ever acknowledged.
            tracing::error!(error = %e, "log store failed; the node stops acknowledging");
            let _ = done.send(Err(e));
            return;
        }
        let stats = store.wal().stats();
        if done
            .send(Ok(StorageDone {
                jobs: jobs_n,
                after,
                last,
                stats,
            }))
            .is_err()
        {
            return;
        }
    }
}
