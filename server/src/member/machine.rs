//! The key space as the node's state machine: committed entries queue for the apply thread,
//! which applies them in batches (one B+tree transaction each, without fsync) and makes a
//! durable checkpoint every `checkpoint_entries` entries or `checkpoint_interval` (in between,
//! a flusher thread syncs the pages written so far every tenth of the interval, so neither it
//! nor the checkpoint ever has much to sync at once). The durable
//! point it reports lets the node compact its log; snapshots are written from a consistent
//! read of the tree and installed in place, in order with the entries around them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use quorumkv_replication::Entry;

use super::flusher::Flusher;
use super::snapshot_file;
use crate::mvcc::Mvcc;
use crate::node::StateMachine;

/// A client API's side of the apply thread: it applies that API's committed requests to the
/// key space and answers their proposers, and keeps what lives beside the tree in memory. The
/// apply thread owns batching, durable checkpoints, background flushes and snapshot installs.
pub trait Applier: Send + 'static {
    /// Why applying failed (a storage error: apply stops for good).
    type Error: std::fmt::Display;

    /// Applies `entries` (in log order) in one write transaction committed without sync (the
    /// log holds them durably), then answers their proposers and wakes their watchers.
    fn apply(&mut self, entries: &[Entry]) -> Result<(), Self::Error>;

    /// Commits the tree durably through `applied`, with nothing new.
    fn checkpoint(&mut self, applied: u64) -> Result<(), Self::Error>;

    /// How long a durable checkpoint took.
    fn checkpoint_took(&self, took: Duration);

    /// Apply stopped for good: every waiting proposer, and every later one, is told so.
    fn stop(&self);

    /// A snapshot is about to replace the key space.
    fn before_install(&self);

    /// The key space was replaced by a snapshot applied through `applied`: reload what lives
    /// beside the tree in memory.
    fn after_install(&mut self, applied: u64) -> Result<(), String>;
}

/// What the apply thread is asked to do, in order.
pub enum ApplyMsg {
    /// Apply committed entries.
    Entries(Vec<Entry>),
    /// Replace the key space with the snapshot file; answer with the applied index.
    Install(PathBuf, mpsc::SyncSender<Result<u64, String>>),
}

/// The key space behind a node.
pub struct KvMachine {
    mvcc: Mvcc,
    tx: mpsc::Sender<ApplyMsg>,
    durable: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
}

impl KvMachine {
    /// Starts the apply thread: `applier` applies to `mvcc`, which holds everything through
    /// `applied`.
    pub fn start<A: Applier>(
        mvcc: Mvcc,
        applier: A,
        applied: u64,
        checkpoint_entries: u64,
        checkpoint_interval: Duration,
        name: String,
    ) -> Result<KvMachine, String> {
        let (tx, rx) = mpsc::channel();
        let durable = Arc::new(AtomicU64::new(applied));
        let stopped = Arc::new(AtomicBool::new(false));
        let flusher = Flusher::start(mvcc.db().clone(), format!("flush-{name}"))
            .map_err(|e| e.to_string())?;
        let worker = ApplyThread {
            flusher,
            mvcc: mvcc.clone(),
            applier,
            rx,
            applied,
            durable: Arc::clone(&durable),
            stopped: Arc::clone(&stopped),
            every: checkpoint_entries,
            interval: checkpoint_interval,
        };
        std::thread::Builder::new()
            .name(name)
            .spawn(move || worker.run())
            .map_err(|e| e.to_string())?;
        Ok(KvMachine {
            mvcc,
            tx,
            durable,
            stopped,
        })
    }
}

impl StateMachine for KvMachine {
    fn apply(&self, entries: Vec<Entry>) {
        let _ = self.tx.send(ApplyMsg::Entries(entries));
    }

    fn durable_index(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    fn write_snapshot(&self, path: &Path) -> Result<u64, String> {
        snapshot_file::write(&self.mvcc, path)
            .map(|(applied, _)| applied)
            .map_err(|e| e.to_string())
    }

    fn install_snapshot(&self, path: &Path) -> Result<u64, String> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .send(ApplyMsg::Install(path.to_path_buf(), tx))
            .map_err(|_| "apply stopped".to_string())?;
        rx.recv().map_err(|_| "apply stopped".to_string())?
    }

    fn failure(&self) -> Option<String> {
        self.stopped
            .load(Ordering::SeqCst)
            .then(|| "the key space stopped applying (its storage failed)".to_string())
    }
}

struct ApplyThread<A> {
    flusher: Flusher,
    mvcc: Mvcc,
    applier: A,
    rx: mpsc::Receiver<ApplyMsg>,
    applied: u64,
    durable: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
    every: u64,
    interval: Duration,
}

/// Background flushes per checkpoint interval: each carries about a tenth of an interval's
/// pages. Flushing only from halfway through the interval would leave the first flush half an
/// interval's pages: one burst on the disk that the log's fdatasyncs wait behind.
const FLUSHES_PER_INTERVAL: u32 = 10;

impl<A: Applier> ApplyThread<A> {
    /// Apply stops for good.
    fn stop(&self) {
        self.applier.stop();
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Whether the background flush failed; if so the key space stops (a checkpoint after it
    /// could report pages durable that the kernel dropped).
    fn flush_failed(&self) -> bool {
        let Some(e) = self.flusher.failure() else {
            return false;
        };
        tracing::error!(error = %e, "flush failed; apply stops");
        self.stop();
        true
    }

    /// Makes the tree durable through `applied` and publishes that; false when it failed
    /// and apply has stopped.
    fn checkpoint(&mut self) -> bool {
        let started = Instant::now();
        let result = self.applier.checkpoint(self.applied);
        self.applier.checkpoint_took(started.elapsed());
        if let Err(e) = result {
            tracing::error!(error = %e, "checkpoint failed; apply stops");
            self.stop();
            return false;
        }
        self.durable.store(self.applied, Ordering::Release);
        true
    }

    fn run(mut self) {
        use mpsc::RecvTimeoutError;
        let mut since_durable = 0u64;
        let mut last_durable = Instant::now();
        let mut last_flush = Instant::now();
        let flush_every = self.interval / FLUSHES_PER_INTERVAL;
        let mut held: Option<ApplyMsg> = None;
        loop {
            let msg = match held.take() {
                Some(m) => m,
                None => match self.rx.recv_timeout(self.interval) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        if since_durable > 0 {
                            if self.flush_failed() {
                                return;
                            }
                            if !self.checkpoint() {
                                return;
                            }
                            since_durable = 0;
                            last_durable = Instant::now();
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        self.stop();
                        return;
                    }
                },
            };
            let mut batch = match msg {
                ApplyMsg::Entries(b) => b,
                ApplyMsg::Install(path, reply) => {
                    // The install starts with a checkpoint, which a failed flush forbids.
                    if self.flush_failed() {
                        let _ = reply.send(Err("the key space's storage failed".into()));
                        return;
                    }
                    let result = self.install(&path);
                    let failed = result.is_err();
                    let _ = reply.send(result);
                    if failed {
                        // The tree is unchanged, but the node cannot go on without it.
                        self.stop();
                        return;
                    }
                    since_durable = 0;
                    last_durable = Instant::now();
                    continue;
                }
            };
            while batch.len() < 8192 {
                match self.rx.try_recv() {
                    Ok(ApplyMsg::Entries(more)) => batch.extend(more),
                    Ok(other) => {
                        held = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            // After a restart or a snapshot install, entries the tree already holds come again.
            batch.retain(|e| e.index > self.applied);
            let Some(last) = batch.last() else { continue };
            let last = last.index;
            since_durable += batch.len() as u64;
            let durable = since_durable >= self.every || last_durable.elapsed() >= self.interval;
            if durable && self.flush_failed() {
                return;
            }
            // The batch commits without sync and its proposers get their answers; the
            // checkpoint's fsync comes after, off their path. Their entries are durable in the
            // log already: the checkpoint only bounds what a restart replays.
            if let Err(e) = self.applier.apply(&batch) {
                tracing::error!(error = %e, "apply failed; the key space stops");
                self.stop();
                return;
            }
            self.applied = last;
            if durable {
                if !self.checkpoint() {
                    return;
                }
                since_durable = 0;
                last_durable = Instant::now();
                last_flush = last_durable;
            } else if last_flush.elapsed() >= flush_every {
                self.flusher.request();
                last_flush = Instant::now();
            }
        }
    }

    /// Replaces the key space with a snapshot and reloads what lives beside it in memory.
    fn install(&mut self, path: &Path) -> Result<u64, String> {
        self.applier.before_install();
        // What the tree holds so far must be durable before it is replaced, so a failed
        // install leaves a consistent tree.
        self.applier
            .checkpoint(self.applied)
            .map_err(|e| e.to_string())?;
        let applied = snapshot_file::restore(&self.mvcc, path)?;
        self.applier.after_install(applied)?;
        self.applied = applied;
        self.durable.store(applied, Ordering::Release);
        Ok(applied)
    }
}
