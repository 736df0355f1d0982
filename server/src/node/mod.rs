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
//! A slow fdatasync therefore never delays heartbeats or election timers. A failed one stops
//! the storage thread and with it every acknowledgement (fail-stop).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use quorumkv_replication::raft::{Raft, RaftConfig};
use quorumkv_replication::zab::{Zab, ZabConfig};
use quorumkv_replication::{
    Conf, Entry, EntryKind, LogStore, NodeId, ProposeError, Protocol, ProtocolMessage, Ready,
    Status, WalStore,
};
use quorumkv_wal::{Backend, WalOptions, WalStats};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::transport::{frame, tcp};

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
    /// Every voter's peer address, this node's included.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Where the log lives.
    pub data_dir: PathBuf,
    /// Raft or ZAB.
    pub protocol: ProtocolKind,
    /// Tick interval (heartbeat); elections time out after `election_ticks` of them.
    pub tick: Duration,
    /// Ticks before an election.
    pub election_ticks: u32,
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
}

impl NodeConfig {
    /// A node with etcd-like timing (100 ms ticks, 1 s elections) and default limits.
    pub fn new(id: NodeId, peers: BTreeMap<NodeId, SocketAddr>, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            id,
            peers,
            data_dir,
            protocol: ProtocolKind::Raft,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            wal: WalOptions::default(),
            backend: Backend::default(),
            max_frame_bytes: 64 << 20,
            peer_queue_len: 4096,
            cluster_id: 1,
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
#[derive(Debug, Default)]
pub struct StartOptions {
    /// Highest index the state machine has applied; the protocol resumes after it.
    pub applied: u64,
    /// Receives every committed entry, in order, in batches.
    pub sink: Option<std::sync::mpsc::Sender<Vec<Entry>>>,
}

/// What the node loop last saw, readable without a round trip through it.
#[derive(Debug, Default)]
pub struct NodeState {
    term: AtomicU64,
    leader: AtomicU64,
    commit: AtomicU64,
    is_leader: AtomicBool,
    leader_changes: AtomicU64,
    stopped: AtomicBool,
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
    /// Whether the node stopped (its storage failed).
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
    fn update(&self, st: &Status) {
        use quorumkv_replication::Role;
        self.term.store(st.term, Ordering::Relaxed);
        if self.leader.swap(st.leader, Ordering::Relaxed) != st.leader && st.leader != 0 {
            self.leader_changes.fetch_add(1, Ordering::Relaxed);
        }
        self.commit.store(st.commit, Ordering::Relaxed);
        self.is_leader
            .store(st.role == Role::Leader, Ordering::Relaxed);
    }
}

enum Cmd {
    Propose(Vec<u8>, oneshot::Sender<Result<u64, NodeError>>),
    Transfer(NodeId, oneshot::Sender<Result<(), NodeError>>),
    ReadIndex(oneshot::Sender<Result<u64, NodeError>>),
    Status(oneshot::Sender<Status>),
    Committed(u64, u64, oneshot::Sender<Vec<Entry>>),
    WalStats(oneshot::Sender<WalStats>),
}

/// A running node. Dropping it stops it.
pub struct Node {
    cmds: mpsc::Sender<Cmd>,
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

struct StorageJob<M> {
    hard_state: Option<quorumkv_replication::HardState>,
    truncate_from: Option<u64>,
    entries: Vec<Entry>,
    after: Vec<M>,
    last: (u64, u64),
}

struct StorageDone<M> {
    /// Jobs this sync covered.
    jobs: usize,
    after: Vec<M>,
    last: (u64, u64),
    stats: WalStats,
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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name(format!("node-{}", cfg.id))
            .build()
            .map_err(|e| e.to_string())?;
        let store = WalStore::open(&cfg.data_dir, cfg.wal.clone(), cfg.backend)
            .map_err(|e| e.to_string())?;
        let wal_stats = store.wal().stats_reader();
        let mut restored = store.load().map_err(|e| e.to_string())?;
        let last = restored
            .entries
            .last()
            .map_or(restored.snapshot.index, |e| e.index);
        if opts.applied > last {
            return Err(format!(
                "the state machine applied index {} but the log ends at {last}",
                opts.applied
            ));
        }
        restored.applied = restored.applied.max(opts.applied);
        let state = Arc::new(NodeState::default());
        let conf = Conf::new(cfg.peers.keys().copied());
        let (cmd_tx, cmd_rx) = mpsc::channel(4096);
        let (commit_tx, _) = tokio::sync::broadcast::channel(65536);
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let commits = commit_tx.clone();
        let st = Arc::clone(&state);
        runtime.block_on(async {
            let listener = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
            match cfg.protocol {
                ProtocolKind::Raft => {
                    let rc = RaftConfig {
                        election_tick: cfg.election_ticks,
                        seed: cfg.id,
                        ..RaftConfig::default()
                    };
                    let p = Raft::new(cfg.id, rc, conf, restored);
                    spawn_node(p, cfg, store, listener, cmd_rx, commits, opts.sink, st);
                }
                ProtocolKind::Zab => {
                    let zc = ZabConfig {
                        election_tick: cfg.election_ticks,
                        seed: cfg.id,
                        ..ZabConfig::default()
                    };
                    let p = Zab::new(cfg.id, zc, conf, restored);
                    spawn_node(p, cfg, store, listener, cmd_rx, commits, opts.sink, st);
                }
            }
            Ok::<(), String>(())
        })?;
        Ok(Node {
            cmds: cmd_tx,
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

    /// Appends `data`; resolves with its index once it is committed (and durable on a quorum).
    pub async fn append(&self, data: Vec<u8>) -> Result<u64, NodeError> {
        let rx = self.ask_wait(|tx| Cmd::Propose(data, tx)).await?;
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

#[allow(clippy::too_many_arguments)]
fn spawn_node<P>(
    proto: P,
    cfg: NodeConfig,
    store: WalStore,
    listener: TcpListener,
    cmds: mpsc::Receiver<Cmd>,
    commits: tokio::sync::broadcast::Sender<Entry>,
    sink: Option<std::sync::mpsc::Sender<Vec<Entry>>>,
    state: Arc<NodeState>,
) where
    P: Protocol + 'static,
{
    let (inbound_tx, inbound_rx) = mpsc::channel::<P::Message>(cfg.peer_queue_len);
    tokio::spawn(tcp::accept::<P::Message>(
        listener,
        cfg.cluster_id,
        cfg.id,
        cfg.max_frame_bytes,
        inbound_tx,
    ));
    let outbound = tcp::Outbound::start(cfg.cluster_id, cfg.id, &cfg.peers, cfg.peer_queue_len);
    let (job_tx, job_rx) = std::sync::mpsc::channel::<StorageJob<P::Message>>();
    let (done_tx, done_rx) = mpsc::unbounded_channel::<Result<StorageDone<P::Message>, String>>();
    std::thread::Builder::new()
        .name(format!("storage-{}", cfg.id))
        .spawn(move || storage_thread(store, job_rx, done_tx))
        .expect("spawn storage thread");
    tokio::spawn(node_loop(
        proto, cfg, outbound, inbound_rx, cmds, job_tx, done_rx, commits, sink, state,
    ));
}

fn storage_thread<M: Send>(
    mut store: WalStore,
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
            if result.is_ok() {
                result = store.save(j.hard_state, j.truncate_from, &j.entries);
            }
            after.extend(j.after);
            last = j.last;
        }
        let result = result.and_then(|()| store.sync());
        if let Err(e) = result {
            // Fail-stop: nothing saved after this is ever acknowledged.
            tracing::error!(error = %e, "log store failed; the node stops acknowledging");
            let _ = done.send(Err(e.to_string()));
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

#[allow(clippy::too_many_arguments)]
async fn node_loop<P: Protocol>(
    mut proto: P,
    cfg: NodeConfig,
    outbound: tcp::Outbound,
    mut inbound: mpsc::Receiver<P::Message>,
    mut cmds: mpsc::Receiver<Cmd>,
    jobs: std::sync::mpsc::Sender<StorageJob<P::Message>>,
    mut done: mpsc::UnboundedReceiver<Result<StorageDone<P::Message>, String>>,
    commits: tokio::sync::broadcast::Sender<Entry>,
    sink: Option<std::sync::mpsc::Sender<Vec<Entry>>>,
    state: Arc<NodeState>,
) {
    let mut ticker = tokio::time::interval(cfg.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waiters: BTreeMap<u64, (u64, oneshot::Sender<Result<u64, NodeError>>)> =
        BTreeMap::new();
    let mut reads: BTreeMap<u64, oneshot::Sender<Result<u64, NodeError>>> = BTreeMap::new();
    let mut ready_reads: Vec<(u64, oneshot::Sender<Result<u64, NodeError>>)> = Vec::new();
    let mut read_ctx = 0u64;
    let mut in_flight = 0usize;
    let mut last = (proto.status().last_index, 0u64);
    if let Some(e) = proto.log_entries(last.0).first() {
        last.1 = e.term;
    }
    let mut applied = proto.status().applied;
    let mut wal_stats = WalStats::default();
    let mut stopped: Option<String> = None;
    let send = |m: P::Message| {
        let mut payload = Vec::new();
        m.encode(&mut payload);
        let mut f = Vec::with_capacity(payload.len() + frame::HEADER_BYTES);
        frame::encode(&mut f, &payload);
        outbound.send(m.to(), f);
    };
    loop {
        tokio::select! {
            _ = ticker.tick() => proto.tick(),
            Some(m) = inbound.recv() => {
                proto.step(m);
                for _ in 0..4096 {
                    match inbound.try_recv() {
                        Ok(m) => proto.step(m),
                        Err(_) => break,
                    }
                }
            }
            Some(cmd) = cmds.recv() => {
                // Take every queued command at once: many proposals, one Ready.
                let mut next = Some(cmd);
                let mut handled = 0;
                while let Some(cmd) = next.take() {
                    match cmd {
                        Cmd::Propose(data, tx) => {
                            if let Some(why) = &stopped {
                                let _ = tx.send(Err(NodeError::Stopped(why.clone())));
                            } else {
                                match proto.propose(data) {
                                    Ok(index) => {
                                        let term = proto.log_entries(index).first().map_or(0, |e| e.term);
                                        waiters.insert(index, (term, tx));
                                    }
                                    Err(e) => {
                                        let _ = tx.send(Err(e.into()));
                                    }
                                }
                            }
                        }
                        Cmd::Transfer(to, tx) => {
                            let _ = tx.send(proto.transfer_leader(to).map_err(NodeError::from));
                        }
                        Cmd::ReadIndex(tx) => {
                            read_ctx += 1;
                            match proto.read_index(read_ctx) {
                                Ok(()) => {
                                    reads.insert(read_ctx, tx);
                                }
                                Err(e) => {
                                    let _ = tx.send(Err(e.into()));
                                }
                            }
                        }
                        Cmd::Status(tx) => {
                            let _ = tx.send(proto.status());
                        }
                        Cmd::WalStats(tx) => {
                            let _ = tx.send(wal_stats);
                        }
                        Cmd::Committed(lo, hi, tx) => {
                            let hi = hi.min(applied);
                            let es = proto
                                .log_entries(lo)
                                .into_iter()
                                .take_while(|e| e.index <= hi)
                                .filter(|e| e.kind == EntryKind::Normal)
                                .collect();
                            let _ = tx.send(es);
                        }
                                }
                    handled += 1;
                    if handled < 4096 {
                        next = cmds.try_recv().ok();
                    }
                }
            }
            Some(d) = done.recv() => match d {
                Ok(d) => {
                    in_flight -= d.jobs;
                    wal_stats = d.stats;
                    for m in d.after {
                        send(m);
                    }
                    proto.persisted(d.last.0, d.last.1);
                }
                Err(e) => {
                    state.stopped.store(true, Ordering::Relaxed);
                    stopped = Some(e.clone());
                    for (_, (_, tx)) in std::mem::take(&mut waiters) {
                        let _ = tx.send(Err(NodeError::Stopped(e.clone())));
                    }
                }
            },
            else => return,
        }
        while proto.has_ready() {
            let r: Ready<P::Message> = proto.ready();
            for m in r.messages {
                send(m);
            }
            if let Some(t) = r.truncate_from {
                let prev = t - 1;
                last = (
                    prev,
                    proto.log_entries(prev).first().map_or(last.1, |e| e.term),
                );
            }
            if let Some(e) = r.entries.last() {
                last = (e.index, e.term);
            }
            if r.snapshot.is_some() {
                // This node never compacts its log, so no peer sends it a snapshot.
                tracing::error!("unexpected snapshot install request ignored");
            }
            let must = r.hard_state.is_some() || r.truncate_from.is_some() || !r.entries.is_empty();
            if stopped.is_none() && (must || in_flight > 0) {
                // Even a Ready with nothing to persist may acknowledge entries still syncing.
                in_flight += 1;
                let job = StorageJob {
                    hard_state: r.hard_state,
                    truncate_from: r.truncate_from,
                    entries: r.entries,
                    after: r.messages_after_persist,
                    last,
                };
                if jobs.send(job).is_err() {
                    stopped = Some("storage thread gone".into());
                }
            } else if stopped.is_none() {
                for m in r.messages_after_persist {
                    send(m);
                }
            }
            let subscribed = commits.receiver_count() > 0;
            for e in &r.committed {
                if let Some((term, tx)) = waiters.remove(&e.index) {
                    let _ = tx.send(if term == e.term {
                        Ok(e.index)
                    } else {
                        Err(NodeError::Lost)
                    });
                }
                applied = e.index;
                if subscribed && e.kind == EntryKind::Normal {
                    let _ = commits.send(e.clone());
                }
            }
            if let Some(sink) = &sink
                && !r.committed.is_empty()
            {
                let _ = sink.send(r.committed);
            }
            proto.applied(applied);
            for rs in r.read_states {
                if let Some(tx) = reads.remove(&rs.ctx) {
                    ready_reads.push((rs.index, tx));
                }
            }
        }
        state.update(&proto.status());
        // Reads are served once what they must see is applied.
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut ready_reads)
            .into_iter()
            .partition(|(i, _)| *i <= applied);
        ready_reads = later;
        for (i, tx) in now {
            let _ = tx.send(Ok(i));
        }
        // Proposals whose slot another entry took resolve when that entry commits (above);
        // anything below the commit point with no entry of its own is lost.
        let lost: Vec<u64> = waiters.range(..=applied).map(|(i, _)| *i).collect();
        for i in lost {
            if let Some((_, tx)) = waiters.remove(&i) {
                let _ = tx.send(Err(NodeError::Lost));
            }
        }
    }
}
