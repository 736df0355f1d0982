//! The apply thread: applies committed entries in batches (one B+tree transaction each,
//! without fsync), the member-level operations itself and each client API's requests through
//! its [`Applier`]; publishes their events, answers their proposers, and makes the tree
//! durable every `every` entries or `interval`, with background flushes between. Snapshots
//! are installed in order with the entries around them.
//!
//! It never applies an entry twice (entries at or below the applied index are skipped), and
//! once stopped by a storage failure it applies nothing more.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use prost::Message;
use quorumkv_replication::{Entry, EntryKind};

use super::core::Core;
use super::envelope::{Envelope, MemberApplied};
use super::flusher::Flusher;
use super::machine::{Appliers, ApplyMsg};
use super::pending::Answer;
use super::snapshot_file;
use crate::mvcc::{Event, MvccError};

/// The apply thread's state.
pub(super) struct ApplyThread {
    pub(super) flusher: Flusher,
    pub(super) core: Arc<Core>,
    pub(super) appliers: Appliers,
    pub(super) rx: mpsc::Receiver<ApplyMsg>,
    /// Highest log index applied.
    pub(super) applied: u64,
    /// Highest log index the tree holds durably (read by the node to compact its log).
    pub(super) durable: Arc<AtomicU64>,
    pub(super) stopped: Arc<AtomicBool>,
    /// A durable checkpoint every this many entries...
    pub(super) every: u64,
    /// ... or this often.
    pub(super) interval: Duration,
}

/// Background flushes per checkpoint interval: each carries about a tenth of an interval's
/// pages. Flushing only from halfway through the interval would leave the first flush half an
/// interval's pages: one burst on the disk that the log's fdatasyncs wait behind.
const FLUSHES_PER_INTERVAL: u32 = 10;

impl ApplyThread {
    /// Apply stops for good.
    fn stop(&self) {
        self.core.pending.stop();
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
        let result = self.commit_durably();
        self.core.backend_commits.record(started.elapsed());
        if let Err(e) = result {
            tracing::error!(error = %e, "checkpoint failed; apply stops");
            self.stop();
            return false;
        }
        self.durable.store(self.applied, Ordering::Release);
        true
    }

    /// Commits the tree durably through what is applied, with nothing new.
    fn commit_durably(&self) -> Result<(), MvccError> {
        self.core.mvcc.write()?.commit(self.applied)?;
        Ok(())
    }

    /// A transaction with nothing but a slice of the compaction's sweep, committed without
    /// sync like a batch.
    fn sweep_idle(&self) -> Result<(), MvccError> {
        self.core.mvcc.write()?.commit_no_sync(self.applied)?;
        Ok(())
    }

    pub(super) fn run(mut self) {
        use mpsc::RecvTimeoutError;
        let mut since_durable = 0u64;
        let mut last_durable = Instant::now();
        let mut last_flush = Instant::now();
        let flush_every = self.interval / FLUSHES_PER_INTERVAL;
        let mut held: Option<ApplyMsg> = None;
        loop {
            // While a compaction sweeps, an idle moment carries a slice of it.
            let sweeping = held.is_none() && self.core.mvcc.sweeping();
            let wait = if sweeping {
                Duration::ZERO
            } else {
                self.interval
            };
            let msg = match held.take() {
                Some(m) => m,
                None => match self.rx.recv_timeout(wait) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) if sweeping => {
                        if let Err(e) = self.sweep_idle() {
                            tracing::error!(error = %e, "compaction sweep failed; apply stops");
                            self.stop();
                            return;
                        }
                        since_durable += 1;
                        if last_durable.elapsed() >= self.interval {
                            if self.flush_failed() || !self.checkpoint() {
                                return;
                            }
                            since_durable = 0;
                            last_durable = Instant::now();
                            last_flush = last_durable;
                        } else if last_flush.elapsed() >= flush_every {
                            self.flusher.request();
                            last_flush = Instant::now();
                        }
                        continue;
                    }
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
            if let Err(e) = self.apply(&batch) {
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

    /// Applies `entries` (in log order) in one write transaction, committed without sync
    /// (the log holds them durably; a checkpoint makes the tree catch up); then publishes
    /// their events and answers their proposers.
    fn apply(&mut self, entries: &[Entry]) -> Result<(), String> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let core = &self.core;
        let mut txn = core.mvcc.write().map_err(|e| e.to_string())?;
        let compacted_before = txn.compact_revision();
        let mut answers: Vec<(u64, Answer)> = Vec::with_capacity(entries.len());
        let mut published: Vec<(i64, Vec<Event>)> = Vec::with_capacity(entries.len());
        for e in entries {
            if e.kind == EntryKind::ConfChange {
                fail::fail_point!("apply::conf_change");
            }
            if e.kind != EntryKind::Normal || e.data.is_empty() {
                continue;
            }
            let envelope = match Envelope::decode(e.data.as_slice()) {
                Ok(env) => env,
                Err(err) => {
                    tracing::error!(index = e.index, error = %err, "undecodable log entry skipped");
                    continue;
                }
            };
            let answer = match &envelope.member_attributes {
                Some(m) => {
                    core.roster
                        .apply(&mut txn, m.clone())
                        .map_err(|e| e.to_string())?;
                    Box::new(MemberApplied {
                        revision: txn.current_revision(),
                    }) as Answer
                }
                None => self
                    .appliers
                    .of(&envelope)
                    .apply(&mut txn, &envelope, &e.data)?,
            };
            txn.end_request();
            let events = txn.take_events();
            if let Some(ev) = events.first() {
                published.push((ev.kv.mod_revision, events));
            }
            if envelope.id != 0 {
                answers.push((envelope.id, answer));
            }
        }
        let compacted_after = txn.compact_revision();
        fail::fail_point!("apply::before_commit");
        let (revision, _) = txn.commit_no_sync(last.index).map_err(|e| e.to_string())?;
        // Widens the gap between a batch becoming readable and its events being fired.
        fail::fail_point!("apply::before_fire");
        self.appliers.base.committed(revision);
        self.appliers.zookeeper.committed(revision);
        for (rev, events) in published {
            core.hub.publish(rev, events);
        }
        if compacted_after != compacted_before {
            core.hub.compacted(compacted_after);
        }
        core.pending.applied_through(last.index, last.term, answers);
        Ok(())
    }

    /// Replaces the key space with a snapshot and reloads what lives beside it in memory.
    fn install(&mut self, path: &Path) -> Result<u64, String> {
        self.core.pending.forget_tracked();
        // What the tree holds so far must be durable before it is replaced, so a failed
        // install leaves a consistent tree.
        self.commit_durably().map_err(|e| e.to_string())?;
        let core = &self.core;
        let applied = snapshot_file::restore(&core.mvcc, path)?;
        fail::fail_point!("apply::after_install");
        let rev = core.mvcc.snapshot().revision().map_err(|e| e.to_string())?;
        core.roster.load(&core.mvcc).map_err(|e| e.to_string())?;
        self.appliers.base.reload()?;
        self.appliers.zookeeper.reload()?;
        self.appliers.base.committed(rev);
        self.appliers.zookeeper.committed(rev);
        core.hub.reset(rev);
        core.pending.installed(applied);
        self.applied = applied;
        self.durable.store(applied, Ordering::Release);
        Ok(applied)
    }
}
