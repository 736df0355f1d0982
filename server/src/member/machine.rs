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
use std::time::Duration;

use quorumkv_replication::Entry;

use super::apply_thread::ApplyThread;
use super::core::Core;
use super::envelope::{self, Envelope};
use super::flusher::Flusher;
use super::pending::Answer;
use super::snapshot_file;
use crate::mvcc::MvccTxn;
use crate::node::StateMachine;

/// A client API's side of the apply thread: it applies that API's committed requests to the
/// key space and keeps what lives beside the tree in memory. The apply thread owns batching,
/// the member-level operations of the envelope, answering proposers, publishing events,
/// durable checkpoints, background flushes and snapshot installs.
pub trait Applier: Send + 'static {
    /// Applies one committed request of this API (the whole entry, whose envelope the core
    /// has read) inside the batch's write transaction, and returns its proposer's answer. A
    /// request it refuses changes nothing and is answered with the refusal; `Err` is for a
    /// storage failure only, and stops apply for good.
    fn apply(
        &mut self,
        txn: &mut MvccTxn,
        envelope: &Envelope,
        entry: &[u8],
    ) -> Result<Answer, String>;

    /// The key space was replaced by a snapshot: reload what this API keeps beside the tree
    /// in memory.
    fn reload(&mut self) -> Result<(), String>;

    /// A batch (or a snapshot) is in the tree through `revision`, and its proposers are about
    /// to hear: the moment to tell this API's watchers what it changed.
    fn committed(&mut self, revision: i64) {
        let _ = revision;
    }
}

/// The appliers of the client APIs, by the envelope field their requests use. Every member
/// has all of them, whichever APIs it serves: the state they apply is replicated.
pub struct Appliers {
    /// Requests in no other API's field (etcd's, fields 3–31).
    pub base: Box<dyn Applier>,
    /// Requests in field 40 (ZooKeeper's).
    pub zookeeper: Box<dyn Applier>,
}

impl Appliers {
    /// The applier of `envelope`'s request.
    pub(super) fn of(&mut self, envelope: &Envelope) -> &mut dyn Applier {
        if envelope.zookeeper.is_some() {
            self.zookeeper.as_mut()
        } else {
            self.base.as_mut()
        }
    }
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
    core: Arc<Core>,
    tx: mpsc::Sender<ApplyMsg>,
    durable: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
}

impl KvMachine {
    /// Starts the apply thread: `appliers` apply their APIs' requests to the key space of
    /// `core`, which holds everything through its applied index.
    pub fn start(
        core: Arc<Core>,
        appliers: Appliers,
        checkpoint_entries: u64,
        checkpoint_interval: Duration,
        name: String,
    ) -> Result<KvMachine, String> {
        let (tx, rx) = mpsc::channel();
        let applied = core.applied();
        let durable = Arc::new(AtomicU64::new(applied));
        let stopped = Arc::new(AtomicBool::new(false));
        let flusher = Flusher::start(core.mvcc.db().clone(), format!("flush-{name}"))
            .map_err(|e| e.to_string())?;
        let worker = ApplyThread {
            flusher,
            core: Arc::clone(&core),
            appliers,
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
            core,
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
        snapshot_file::write(&self.core.mvcc, path)
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

    fn stamp_forwarded(&self, data: &mut Vec<u8>) {
        envelope::restamp(data, envelope::now_ms());
    }

    fn failure(&self) -> Option<String> {
        self.stopped
            .load(Ordering::SeqCst)
            .then(|| "the key space stopped applying (its storage failed)".to_string())
    }
}
