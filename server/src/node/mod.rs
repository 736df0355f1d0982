//! The embeddable replicated log: one node of a Raft or ZAB cluster with real IO. Appends go
//! to the write-ahead log (group commit), messages to peers over TCP, ticks come from a tokio
//! timer, and committed entries are handed to the caller in order.
//!
//! Three activities, each never waiting on the others' IO:
//! - the *node loop* (a tokio task) owns the protocol: it feeds it ticks, peer messages,
//!   proposals and persistence acknowledgements, and carries out each Ready's messages;
//! - the *storage thread* owns the log store: it saves every queued Ready, syncs once for all
//!   of them (group commit), and only then releases their after-persist messages and reports
//!   the durable position back;
//! - peer connections (see `transport::tcp`) read and write frames.
//!
//! With a [`StateMachine`] attached, the node also compacts its log: once the machine's
//! durable point is `snapshot_count` entries past the last compaction, the log up to
//! `snapshot_catchup_entries` before that point goes (in memory and in the WAL), so memory
//! and restart time follow the log's tail, not the history. A peer that needs compacted
//! entries gets a snapshot of the machine (see `shipper`); a received one is installed in the
//! machine durably before the log is reset after it.
//!
//! A slow fdatasync therefore never delays heartbeats or election timers. A failed one stops
//! the storage thread and with it every acknowledgement (fail-stop).

mod event_loop;
mod forwards;
mod machine;
mod shipper;
mod storage;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quorumkv_replication::raft::{Raft, RaftConfig};
use quorumkv_replication::zab::{Zab, ZabConfig};
use quorumkv_replication::{
    Conf, ConfChange, Entry, LogStore, NodeId, ProposeError, Protocol, Status, WalStore,
};
use quorumkv_wal::{Backend, WalOptions, WalStats};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use event_loop::{LoopIo, NodeLoop};
pub use machine::StateMachine;
use shipper::Shipper;
use storage::{StorageDone, StorageJob, storage_thread};

use crate::transport::peer_auth::{DEFAULT_CLUSTER_TOKEN, PeerSecret};
use crate::transport::security::PeerSecurity;
use crate::transport::{snapshot, tcp};

/// Which protocol replicates the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtocolKind {
    /// Raft.
    #[default]
    Raft,
    /// ZAB.
    Zab,
}

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node.
    pub id: NodeId,
    /// Every member's peer address, this node's included (voters unless in `learners`).
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Members of `peers` that start as learners (non-voting).
    pub learners: std::collections::BTreeSet<NodeId>,
    /// Where the log lives (unless `wal_dir` says otherwise), and snapshots in transit.
    pub data_dir: PathBuf,
    /// A dedicated directory for the log and its hard state (etcd's `--wal-dir`), e.g. on
    /// its own device so fdatasyncs do not queue behind the tree's writeback.
    pub wal_dir: Option<PathBuf>,
    /// Raft or ZAB.
    pub protocol: ProtocolKind,
    /// Tick interval (heartbeat); elections time out after `election_ticks` of them.
    pub tick: Duration,
    /// Ticks before an election.
    pub election_ticks: u32,
    /// Raft: start the election clock most of the way through (etcd's
    /// `--initial-election-tick-advance`), so a restarted cluster elects sooner.
    pub election_tick_advance: bool,
    /// Write-ahead log options.
    pub wal: WalOptions,
    /// io backend.
    pub backend: Backend,
    /// Largest peer frame accepted.
    pub max_frame_bytes: usize,
    /// Messages queued per peer before new ones are dropped.
    pub peer_queue_len: usize,
    /// Distinguishes clusters sharing hosts.
    pub cluster_id: u64,
    /// Entries the state machine's durable point must advance before the log is compacted
    /// again (etcd `--snapshot-count`; 0: never compact).
    pub snapshot_count: u64,
    /// Entries kept below the durable point at compaction, so slightly slow peers catch up
    /// from the log rather than a snapshot (etcd `--experimental-snapshot-catchup-entries`).
    pub snapshot_catchup_entries: u64,
    /// Largest snapshot accepted from a peer.
    pub snapshot_bytes_max: u64,
    /// How peer connections prove membership, and whether they are TLS.
    pub peer_security: Arc<PeerSecurity>,
}

impl NodeConfig {
    /// The directory holding the log: `wal_dir`, or else `data_dir`.
    pub fn log_dir(&self) -> &std::path::Path {
        self.wal_dir.as_deref().unwrap_or(&self.data_dir)
    }

    /// A node with etcd-like timing (100 ms ticks, 1 s elections) and default limits.
    pub fn new(id: NodeId, peers: BTreeMap<NodeId, SocketAddr>, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            id,
            peers,
            learners: std::collections::BTreeSet::new(),
            data_dir,
            wal_dir: None,
            protocol: ProtocolKind::Raft,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            election_tick_advance: true,
            wal: WalOptions::default(),
            backend: Backend::default(),
            // ZAB's synchronization of a lagging follower is one message (up to the retained
            // log: `snapshot_count` plus catch-up entries), so frames may be large; the
            // decoder holds only what actually arrives.
            max_frame_bytes: 512 << 20,
            peer_queue_len: 4096,
            cluster_id: 1,
            snapshot_count: 100_000,
            snapshot_catchup_entries: 5_000,
            snapshot_bytes_max: 16 << 30,
            peer_security: Arc::new(PeerSecurity::plain(PeerSecret::from_token(
                DEFAULT_CLUSTER_TOKEN,
            ))),
        }
    }
}

/// Why a node request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The protocol refused.
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// The proposal's slot went to another entry (leadership changed): it will never commit.
    #[error("proposal lost to a leadership change")]
    Lost,
    /// The node stopped (shut down, or its storage failed).
    #[error("node stopped: {0}")]
    Stopped(String),
}

/// Where committed entries go besides the subscription channel: a state machine that applies
/// them in order (and what it had already applied when the node started).
#[derive(Default)]
pub struct StartOptions {
    /// Highest index the state machine has applied; the protocol resumes after it.
    pub applied: u64,
    /// Receives every committed entry, in order, and makes log compaction possible.
    pub machine: Option<Arc<dyn StateMachine>>,
    /// Answers a joining member's query about the cluster, given the current membership.
    pub info: Option<InfoFn>,
    /// Where member-to-member call connections accepted on the peer port go (see
    /// [`Node::dial_calls`]); refused when `None`.
    pub calls: Option<tcp::CallSink>,
}

/// Describes the cluster to a joining member, given the current membership.
pub type InfoFn = Arc<dyn Fn(&Conf) -> Vec<u8> + Send + Sync>;

impl std::fmt::Debug for StartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartOptions")
            .field("applied", &self.applied)
            .field("machine", &self.machine.is_some())
            .finish()
    }
}

/// What the node loop last saw, readable without a round trip through it.
#[derive(Debug, Default)]
pub struct NodeState {
    id: AtomicU64,
    conf: parking_lot::RwLock<Conf>,
    term: AtomicU64,
    leader: AtomicU64,
    commit: AtomicU64,
    is_leader: AtomicBool,
    leader_changes: AtomicU64,
    stopped: AtomicBool,
    leaderless_since: parking_lot::Mutex<Option<Instant>>,
}

impl NodeState {
    /// Term or epoch.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Relaxed)
    }
    /// Known leader (0: none).
    pub fn leader(&self) -> u64 {
        self.leader.load(Ordering::Relaxed)
    }
    /// Highest index known committed.
    pub fn commit(&self) -> u64 {
        self.commit.load(Ordering::Relaxed)
    }
    /// Whether this node leads.
    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Relaxed)
    }
    /// Leader changes seen.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.load(Ordering::Relaxed)
    }
    /// How long the node has known no leader (`None` while it knows one).
    pub fn leaderless_for(&self) -> Option<Duration> {
        self.leaderless_since.lock().map(|t| t.elapsed())
    }
    /// Whether the node stopped (its storage failed).
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
    /// The membership in effect.
    pub fn conf(&self) -> Conf {
        self.conf.read().clone()
    }
    /// Whether the membership in effect no longer lists this node (it was removed).
    pub fn removed(&self) -> bool {
        let me = self.id.load(Ordering::Relaxed);
        let conf = self.conf.read();
        !conf.voters.is_empty() && !conf.voters.contains(&me) && !conf.learners.contains(&me)
    }
    fn update(&self, st: &Status) {
        if *self.conf.read() != st.conf {
            *self.conf.write() = st.conf.clone();
        }
        use quorumkv_replication::Role;
        self.term.store(st.term, Ordering::Relaxed);
        if self.leader.swap(st.leader, Ordering::Relaxed) != st.leader && st.leader != 0 {
            self.leader_changes.fetch_add(1, Ordering::Relaxed);
        }
        self.commit.store(st.commit, Ordering::Relaxed);
        {
            let mut since = self.leaderless_since.lock();
            match (st.leader, *since) {
                (0, None) => *since = Some(Instant::now()),
                (l, Some(_)) if l != 0 => *since = None,
                _ => {}
            }
        }
        self.is_leader
            .store(st.role == Role::Leader, Ordering::Relaxed);
    }
}

enum Cmd {
    Propose(Vec<u8>, oneshot::Sender<Result<u64, NodeError>>),
    Submit(
        Vec<u8>,
        SubmitMode,
        oneshot::Sender<Result<Submitted, NodeError>>,
    ),
    ConfChange(ConfChange, oneshot::Sender<Result<u64, NodeError>>),
    Transfer(NodeId, oneshot::Sender<Result<(), NodeError>>),
    ReadIndex(oneshot::Sender<Result<u64, NodeError>>),
    Status(oneshot::Sender<Status>),
    Peers(oneshot::Sender<(u64, Vec<PeerStatus>)>),
    Committed(u64, u64, oneshot::Sender<Vec<Entry>>),
    WalStats(oneshot::Sender<WalStats>),
}

/// Whether the node loop waits for submitted data to commit on the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubmitMode {
    /// Answer once it committed ([`Node::submit`]).
    UntilCommitted,
    /// Answer once it is in the log ([`Node::hand_over`]).
    Handed,
}

/// Where [`Node::submit`] and [`Node::hand_over`] put data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// This node leads: the data committed at this index.
    Committed(u64),
    /// This node leads: the data is in its log in this term, and commits in that term or
    /// never (as for [`Submitted::Forwarded`]). Only [`Node::hand_over`] answers so.
    Proposed {
        /// The term it was appended in.
        term: u64,
    },
    /// Handed to the leader in this term (epoch). It commits in that term or never; once an
    /// entry of a later term is committed before it, it never will.
    Forwarded {
        /// The term it was sent in.
        term: u64,
    },
}

/// Most bytes of data handed to the leader in one message.
const FORWARD_BATCH_BYTES: usize = 4 << 20;

/// Another member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its id.
    pub id: NodeId,
    /// On the leader: the highest index known to match there.
    pub matched: Option<u64>,
    /// Time since any message from it arrived (`None`: never, since this node started).
    pub heard_ago: Option<Duration>,
}

/// A running node. Dropping it stops it.
pub struct Node {
    cmds: mpsc::Sender<Cmd>,
    outbound: Arc<tcp::Outbound>,
    state: Arc<NodeState>,
    wal_stats: Arc<dyn Fn() -> WalStats + Send + Sync>,
    commits: tokio::sync::broadcast::Sender<Entry>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").finish_non_exhaustive()
    }
}

/// Worker threads of a node's runtime: `TOKIO_WORKER_THREADS` if set, otherwise one per core
/// but one, and at least one. Under writes the node's storage (WAL) thread and its state
/// machine's apply thread keep most of a core busy between them; workers on every core preempt
/// them and the clients sharing the machine (measurements in docs/performance.md, "A put does not
/// wait for the apply transaction").
fn runtime_workers() -> Result<usize, String> {
    if let Some(v) = std::env::var_os("TOKIO_WORKER_THREADS") {
        return v
            .to_str()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("TOKIO_WORKER_THREADS must be a positive number, not {v:?}"));
    }
    Ok(std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .saturating_sub(1)
        .max(1))
}

impl Node {
    /// Starts a node on its own runtime; `listener` is its bound peer address.
    pub fn start(cfg: NodeConfig, listener: std::net::TcpListener) -> Result<Node, String> {
        Node::start_with(cfg, listener, StartOptions::default())
    }

    /// Starts a node whose committed entries also go to a state machine (see
    /// [`StartOptions`]).
    pub fn start_with(
        cfg: NodeConfig,
        listener: std::net::TcpListener,
        opts: StartOptions,
    ) -> Result<Node, String> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(runtime_workers()?)
            .enable_all()
            .thread_name(format!("node-{}", cfg.id));
        // A task woken by the running task normally runs next (tokio's LIFO slot). Answers
        // are finished by one stream task after another, each waking its connection's task,
        // so that slot had the connection write after every single answer. Without it, the
        // connection runs after the streams ready with it and writes their answers together:
        // writes per put under 1,000 clients on 100 connections fall from 0.86 to 0.14, and
        // the member's CPU per put by about a quarter.
        #[cfg(tokio_unstable)]
        builder.disable_lifo_slot();
        let runtime = builder.build().map_err(|e| e.to_string())?;
        let store = WalStore::open(cfg.log_dir(), cfg.wal.clone(), cfg.backend)
            .map_err(|e| e.to_string())?;
        let wal_stats = store.wal().stats_reader();
        let mut restored = store.load().map_err(|e| e.to_string())?;
        let last = restored
            .entries
            .last()
            .map_or(restored.snapshot.index, |e| e.index);
        if opts.machine.is_some() && opts.applied < restored.snapshot.index {
            return Err(format!(
                "the log was compacted through index {} but the state machine only applied {}",
                restored.snapshot.index, opts.applied
            ));
        }
        if opts.machine.is_none() && opts.applied > last {
            return Err(format!(
                "the state machine applied index {} but the log ends at {last}",
                opts.applied
            ));
        }
        // A tree that applied entries over a log with no trace of any (no term, no snapshot,
        // no entries) sits on a log directory that is not its own: going on would reuse the
        // indices the tree already holds, and the machine would skip every new write.
        if opts.applied > 0 && last == 0 && restored.hard_state.term == 0 {
            return Err(format!(
                "the state machine applied index {} but the log in {} is empty: the log \
                 directory is missing or not this member's (check --wal-dir)",
                opts.applied,
                cfg.log_dir().display()
            ));
        }
        // A machine may be ahead of the log after a snapshot install; it skips what it has.
        restored.applied = restored.applied.max(opts.applied.min(last));
        clear_snapshot_dir(&snapshot_dir(&cfg.data_dir))?;
        let compacted = restored.snapshot.index;
        let state = Arc::new(NodeState::default());
        state.id.store(cfg.id, Ordering::Relaxed);
        let mut conf = Conf::new(
            cfg.peers
                .keys()
                .copied()
                .filter(|id| !cfg.learners.contains(id)),
        );
        conf.learners = cfg.learners.iter().copied().collect();
        let (cmd_tx, cmd_rx) = mpsc::channel(4096);
        let (commit_tx, _) = tokio::sync::broadcast::channel(65536);
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let commits = commit_tx.clone();
        let st = Arc::clone(&state);
        let info: Option<tcp::InfoFn> = opts.info.map(|f| {
            let st = Arc::clone(&state);
            Arc::new(move || f(&st.conf())) as tcp::InfoFn
        });
        let outbound = runtime.block_on(async {
            Arc::new(tcp::Outbound::start(
                cfg.cluster_id,
                cfg.id,
                &cfg.peers,
                cfg.peer_queue_len,
                Arc::clone(&cfg.peer_security),
            ))
        });
        let out = Arc::clone(&outbound);
        runtime.block_on(async {
            let listener = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
            let peer = PeerIo {
                listener,
                outbound: out,
                info,
                calls: opts.calls,
            };
            let (id, protocol, election_tick) = (cfg.id, cfg.protocol, cfg.election_ticks);
            let election_tick_advance = cfg.election_tick_advance;
            let io = NodeIo {
                cfg,
                store,
                cmds: cmd_rx,
                commits,
                machine: opts.machine,
                state: st,
                compacted,
            };
            match protocol {
                ProtocolKind::Raft => {
                    let rc = RaftConfig {
                        election_tick,
                        election_tick_advance,
                        seed: id,
                        ..RaftConfig::default()
                    };
                    spawn_node(Raft::new(id, rc, conf, restored), io, peer);
                }
                ProtocolKind::Zab => {
                    let zc = ZabConfig {
                        election_tick,
                        seed: id,
                        ..ZabConfig::default()
                    };
                    spawn_node(Zab::new(id, zc, conf, restored), io, peer);
                }
            }
            Ok::<(), String>(())
        })?;
        Ok(Node {
            cmds: cmd_tx,
            outbound,
            state,
            wal_stats,
            commits: commit_tx,
            runtime: Some(runtime),
        })
    }

    fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Cmd,
    ) -> Result<oneshot::Receiver<T>, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .try_send(make(tx))
            .map_err(|_| NodeError::Stopped("node loop gone or busy".into()))?;
        Ok(rx)
    }

    /// Like `ask`, but waits for room in the command queue (backpressure) rather than
    /// failing when it is full.
    async fn ask_wait<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Cmd,
    ) -> Result<oneshot::Receiver<T>, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped("node loop gone".into()))?;
        Ok(rx)
    }

    /// Proposes a membership change (this node must lead); resolves with its index once it is
    /// committed.
    pub async fn change_membership(&self, change: ConfChange) -> Result<u64, NodeError> {
        let rx = self.ask_wait(|tx| Cmd::ConfChange(change, tx)).await?;
        rx.await
            .map_err(|_| NodeError::Stopped("node loop gone".into()))?
    }

    /// This node's outbound peer side: where each peer is reached, and member-to-member call
    /// connections to them ([`tcp::Outbound::dial_calls`]).
    pub fn outbound(&self) -> &Arc<tcp::Outbound> {
        &self.outbound
    }

    /// Reaches member `id` at `addr` from now on (a member added at runtime, or moved).
    pub fn set_peer(&self, id: NodeId, addr: SocketAddr) {
        self.outbound.set_peer(id, addr);
    }

    /// Appends `data`; resolves with its index once it is committed (and durable on a quorum).
    pub async fn append(&self, data: Vec<u8>) -> Result<u64, NodeError> {
        let rx = self.ask_wait(|tx| Cmd::Propose(data, tx)).await?;
        rx.await
            .map_err(|_| NodeError::Stopped("node loop gone".into()))?
    }

    /// Appends `data` on the leader, or hands it to the leader from any other member (as
    /// etcd followers forward proposals): resolves once it committed here, or once it was
    /// sent. The caller of a forwarded one learns its fate from the committed log.
    pub async fn submit(&self, data: Vec<u8>) -> Result<Submitted, NodeError> {
        let rx = self
            .ask_wait(|tx| Cmd::Submit(data, SubmitMode::UntilCommitted, tx))
            .await?;
        rx.await
            .map_err(|_| NodeError::Stopped("node loop gone".into()))?
    }

    /// Like [`Node::submit`], but the leader answers as soon as the data is in its log
    /// ([`Submitted::Proposed`]) and keeps no waiter for it: a caller that tags its data and
    /// watches the applied log for the tag learns its fate there, wherever it was submitted.
    pub async fn hand_over(&self, data: Vec<u8>) -> Result<Submitted, NodeError> {
        let rx = self
            .ask_wait(|tx| Cmd::Submit(data, SubmitMode::Handed, tx))
            .await?;
        rx.await
            .map_err(|_| NodeError::Stopped("node loop gone".into()))?
    }

    /// A linearizable read point (see [`Node::read_index_blocking`]).
    pub async fn read_index(&self) -> Result<u64, NodeError> {
        let rx = self.ask_wait(Cmd::ReadIndex).await?;
        rx.await
            .map_err(|_| NodeError::Stopped("node loop gone".into()))?
    }

    /// Asks the leader (this node) to hand leadership to `to`.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), NodeError> {
        let rx = self.ask_wait(|tx| Cmd::Transfer(to, tx)).await?;
        rx.await
            .map_err(|_| NodeError::Stopped("node loop gone".into()))?
    }

    /// What the node loop last saw.
    pub fn state(&self) -> &Arc<NodeState> {
        &self.state
    }

    /// The runtime the node runs on (to run servers beside it).
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.as_ref().expect("running").handle().clone()
    }

    /// Blocking form of [`Node::append`].
    pub fn append_blocking(&self, data: Vec<u8>) -> Result<u64, NodeError> {
        let rt = self.runtime.as_ref().expect("running");
        rt.block_on(self.append(data))
    }

    /// A linearizable read point: every entry committed before the call is at or below it,
    /// and this node has committed through it.
    pub fn read_index_blocking(&self) -> Result<u64, NodeError> {
        let rx = self.ask(Cmd::ReadIndex)?;
        let rt = self.runtime.as_ref().expect("running");
        rt.block_on(rx)
            .map_err(|_| NodeError::Stopped("node loop gone".into()))?
    }

    /// This node's last log index, and the other members as it sees them: how far each
    /// matches (when it leads) and when it was last heard from.
    pub async fn peers(&self) -> Result<(u64, Vec<PeerStatus>), NodeError> {
        self.ask(Cmd::Peers)?
            .await
            .map_err(|_| NodeError::Stopped("node loop gone".into()))
    }

    /// The protocol's status.
    pub fn status(&self) -> Option<Status> {
        let rx = self.ask(Cmd::Status).ok()?;
        self.runtime.as_ref()?.block_on(rx).ok()
    }

    /// Committed application entries with index in `lo..=hi` (still in memory).
    pub fn committed(&self, lo: u64, hi: u64) -> Vec<Entry> {
        let Ok(rx) = self.ask(|tx| Cmd::Committed(lo, hi, tx)) else {
            return Vec::new();
        };
        self.runtime
            .as_ref()
            .and_then(|rt| rt.block_on(rx).ok())
            .unwrap_or_default()
    }

    /// IO counters of this node's write-ahead log (as of its last sync).
    pub fn wal_stats(&self) -> WalStats {
        let Ok(rx) = self.ask(Cmd::WalStats) else {
            return WalStats::default();
        };
        self.runtime
            .as_ref()
            .and_then(|rt| rt.block_on(rx).ok())
            .unwrap_or_default()
    }

    /// What has travelled to and from each peer.
    pub fn peer_traffic(&self) -> Vec<crate::transport::traffic::PeerTotals> {
        self.outbound.traffic().totals()
    }

    /// IO counters of this node's write-ahead log, read live.
    pub fn wal_stats_now(&self) -> WalStats {
        (self.wal_stats)()
    }

    /// Every entry as it commits, in order.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Entry> {
        self.commits.subscribe()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// Where snapshots live: `data_dir/snap`.
fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snap")
}

/// Snapshot files are transient (sent, or received and not yet installed): a restart starts
/// without them.
fn clear_snapshot_dir(dir: &Path) -> Result<(), String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("snapshot dir {}: {e}", dir.display())),
    }
}

/// Everything a node loop works with besides its protocol.
struct NodeIo {
    cfg: NodeConfig,
    store: WalStore,
    cmds: mpsc::Receiver<Cmd>,
    commits: tokio::sync::broadcast::Sender<Entry>,
    machine: Option<Arc<dyn StateMachine>>,
    state: Arc<NodeState>,
    /// Index the log is compacted through.
    compacted: u64,
}

/// The peer side of a node: its listener, its outbound queues, its answer to info queries.
struct PeerIo {
    listener: TcpListener,
    outbound: Arc<tcp::Outbound>,
    info: Option<tcp::InfoFn>,
    calls: Option<tcp::CallSink>,
}

fn spawn_node<P>(proto: P, io: NodeIo, peer: PeerIo)
where
    P: Protocol + 'static,
{
    let NodeIo {
        cfg,
        store,
        cmds,
        commits,
        machine,
        state,
        compacted,
    } = io;
    let (inbound_tx, inbound_rx) = mpsc::channel::<P::Message>(cfg.peer_queue_len);
    let snap_dir = snapshot_dir(&cfg.data_dir);
    let PeerIo {
        listener,
        outbound,
        info,
        calls,
    } = peer;
    tokio::spawn(tcp::accept::<P::Message>(
        listener,
        tcp::Acceptor {
            cluster: cfg.cluster_id,
            me: cfg.id,
            max_frame_bytes: cfg.max_frame_bytes,
            snapshots: snapshot::ReceiveLimits {
                dir: snap_dir.clone(),
                bytes_max: cfg.snapshot_bytes_max,
            },
            info,
            calls,
            traffic: Arc::clone(outbound.traffic()),
            security: Arc::clone(outbound.security()),
        },
        inbound_tx,
    ));
    let shipper = Shipper::new(machine.clone(), Arc::clone(&outbound), snap_dir);
    let (job_tx, job_rx) = std::sync::mpsc::channel::<StorageJob<P::Message>>();
    let (done_tx, done_rx) = mpsc::unbounded_channel::<Result<StorageDone<P::Message>, String>>();
    let storage_machine = machine.clone();
    std::thread::Builder::new()
        .name(format!("storage-{}", cfg.id))
        .spawn(move || storage_thread(store, storage_machine, job_rx, done_tx))
        .expect("spawn storage thread");
    let io = LoopIo {
        inbound: inbound_rx,
        outbound,
        shipper,
        cmds,
        jobs: job_tx,
        done: done_rx,
        commits,
        machine,
        state,
        compacted,
    };
    tokio::spawn(NodeLoop::new(proto, cfg, io).run());
}
