//! The node loop: one task that owns the protocol and turns events into its inputs (a tick,
//! peer messages, commands from the node's handle, syncs the storage thread finished), then
//! carries out each [`Ready`] in the order the persistence contract gives (see
//! `quorumkv_replication::protocol`): messages out at once, durable work to the storage
//! thread, acknowledgements only once that work is durable, committed entries to the state
//! machine, read points once applied.
//!
//! It never blocks on the disk (the storage thread does) and never sends anything once the
//! node has stopped (fail-stop).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorumkv_replication::{
    EntryKind, NodeId, ProposeError, Protocol, ProtocolMessage, Ready, SnapshotMeta,
};
use quorumkv_wal::WalStats;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::forwards::{Forwards, Parked};
use super::shipper::Shipper;
use super::storage::{StorageDone, StorageJob};
use super::{
    Cmd, FORWARD_BATCH_BYTES, NodeConfig, NodeError, NodeState, PeerStatus, StateMachine,
    SubmitMode, Submitted,
};
use crate::transport::{frame, tcp};
use quorumkv_replication::Entry;

/// Proposals waiting for their index to commit: index → (term proposed in, who waits).
pub(super) type Waiters = BTreeMap<u64, (u64, Waiter)>;

/// Who waits for a proposal's index to commit, or (`Handed`) only to hear where it went.
pub(super) enum Waiter {
    Appended(oneshot::Sender<Result<u64, NodeError>>),
    Submitted(oneshot::Sender<Result<Submitted, NodeError>>),
    Handed(oneshot::Sender<Result<Submitted, NodeError>>),
}

impl Waiter {
    /// A submit waiter in `mode`.
    pub(super) fn submit(
        mode: SubmitMode,
        tx: oneshot::Sender<Result<Submitted, NodeError>>,
    ) -> Waiter {
        match mode {
            SubmitMode::UntilCommitted => Waiter::Submitted(tx),
            SubmitMode::Handed => Waiter::Handed(tx),
        }
    }

    pub(super) fn send(self, r: Result<u64, NodeError>) {
        // A caller that gave up is no longer listening.
        match self {
            Waiter::Appended(tx) => {
                let _ = tx.send(r);
            }
            Waiter::Submitted(tx) | Waiter::Handed(tx) => {
                let _ = tx.send(r.map(Submitted::Committed));
            }
        }
    }

    /// The data was handed to the leader in `term` (or refused): only a submit waits for that.
    pub(super) fn forwarded(self, r: &Result<u64, ProposeError>) {
        let r = match r {
            Ok(term) => Ok(Submitted::Forwarded { term: *term }),
            Err(e) => Err(e.clone().into()),
        };
        match self {
            Waiter::Submitted(tx) | Waiter::Handed(tx) => {
                let _ = tx.send(r);
            }
            Waiter::Appended(_) => unreachable!("only submitted data is forwarded"),
        }
    }
}

/// Who waits for a read point.
type ReadReply = oneshot::Sender<Result<u64, NodeError>>;

/// Commands taken at once before the protocol's output is drained: many proposals, one Ready.
const COMMANDS_PER_BATCH: usize = 4096;
/// Peer messages stepped at once.
const MESSAGES_PER_BATCH: usize = 4096;

/// Proposes through `propose` and, if the protocol took it, waits for its index to commit
/// (answered when that index commits with the same term, or is lost).
pub(super) fn propose_tracked<P: Protocol>(
    proto: &mut P,
    waiters: &mut Waiters,
    stopped: Option<&str>,
    w: Waiter,
    propose: impl FnOnce(&mut P) -> Result<u64, ProposeError>,
) {
    if let Some(why) = stopped {
        w.send(Err(NodeError::Stopped(why.to_string())));
        return;
    }
    match propose(proto) {
        Ok(index) => {
            let term = proto.log_entries(index).first().map_or(0, |e| e.term);
            match w {
                // Its caller follows the applied log itself: nothing waits here.
                Waiter::Handed(tx) => {
                    let _ = tx.send(Ok(Submitted::Proposed { term }));
                }
                w => {
                    waiters.insert(index, (term, w));
                }
            }
        }
        Err(e) => w.send(Err(e.into())),
    }
}

/// The channels and helpers a node loop starts with.
pub(super) struct LoopIo<M> {
    pub(super) inbound: mpsc::Receiver<M>,
    pub(super) outbound: Arc<tcp::Outbound>,
    pub(super) shipper: Shipper,
    pub(super) cmds: mpsc::Receiver<Cmd>,
    pub(super) jobs: std::sync::mpsc::Sender<StorageJob<M>>,
    pub(super) done: mpsc::UnboundedReceiver<Result<StorageDone<M>, String>>,
    pub(super) commits: broadcast::Sender<Entry>,
    pub(super) machine: Option<Arc<dyn StateMachine>>,
    pub(super) state: Arc<NodeState>,
    pub(super) compacted: u64,
}

/// The node loop's state.
pub(super) struct NodeLoop<P: Protocol> {
    proto: P,
    cfg: NodeConfig,
    io: LoopIo<P::Message>,
    waiters: Waiters,
    /// Read points asked of the protocol, by context.
    reads: BTreeMap<u64, ReadReply>,
    /// Read points the protocol gave, waiting for apply to reach them.
    ready_reads: Vec<(u64, ReadReply)>,
    read_ctx: u64,
    /// Storage jobs handed out and not yet reported durable.
    in_flight: usize,
    /// The last log position handed to storage: (index, term).
    last: (u64, u64),
    applied: u64,
    /// The term and leader that pending read points were asked under.
    regime: (u64, u64),
    wal_stats: WalStats,
    /// Why the node stopped for good, once it has.
    stopped: Option<String>,
    /// When each peer was last heard from (any message), as etcd's transport tracks activity.
    heard: BTreeMap<NodeId, Instant>,
    /// Submits waiting for a leader.
    parked: Parked,
}

impl<P: Protocol> NodeLoop<P> {
    pub(super) fn new(proto: P, cfg: NodeConfig, io: LoopIo<P::Message>) -> NodeLoop<P> {
        let started = proto.status();
        let mut last = (started.last_index, 0u64);
        if let Some(e) = proto.log_entries(last.0).first() {
            last.1 = e.term;
        }
        NodeLoop {
            applied: started.applied,
            regime: (started.term, started.leader),
            proto,
            cfg,
            io,
            waiters: BTreeMap::new(),
            reads: BTreeMap::new(),
            ready_reads: Vec::new(),
            read_ctx: 0,
            in_flight: 0,
            last,
            wal_stats: WalStats::default(),
            stopped: None,
            heard: BTreeMap::new(),
            parked: Parked::default(),
        }
    }

    /// Runs until every input is gone (the node was dropped).
    pub(super) async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.cfg.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.on_tick(),
                Some(m) = self.io.inbound.recv() => self.on_messages(m),
                Some(cmd) = self.io.cmds.recv() => self.on_commands(cmd),
                Some(d) = self.io.done.recv() => self.on_storage_done(d),
                else => return,
            }
            self.parked
                .retry(&mut self.proto, &mut self.waiters, self.stopped.as_deref());
            while self.proto.has_ready() {
                let r = self.proto.ready();
                self.on_ready(r);
            }
            self.after_ready();
        }
    }

    /// Submits wait this long for a leader: two election timeouts.
    fn leader_patience(&self) -> Duration {
        self.cfg.tick * self.cfg.election_ticks * 2
    }

    fn send(&self, m: P::Message) {
        if m.snapshot_request().is_some() {
            self.io.shipper.ship(m);
            return;
        }
        let mut payload = Vec::new();
        m.encode(&mut payload);
        let mut f = Vec::with_capacity(payload.len() + frame::HEADER_BYTES);
        frame::encode(&mut f, &payload);
        self.io.outbound.send(m.to(), f);
    }

    /// Hands a job to the storage thread (unless the node stopped).
    fn queue_job(&mut self, job: StorageJob<P::Message>) {
        if self.stopped.is_some() {
            return;
        }
        self.in_flight += 1;
        if self.io.jobs.send(job).is_err() {
            self.stopped = Some("storage thread gone".into());
        }
    }

    /// Stops the node for good (until restarted): nothing more is persisted, acknowledged or
    /// sent, and every proposal and read waiting on it fails.
    fn fail_stop(&mut self, why: String) {
        self.io
            .state
            .stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for (_, (_, w)) in std::mem::take(&mut self.waiters) {
            w.send(Err(NodeError::Stopped(why.clone())));
        }
        for (_, tx) in std::mem::take(&mut self.reads) {
            let _ = tx.send(Err(NodeError::Stopped(why.clone())));
        }
        self.stopped = Some(why);
    }

    fn on_tick(&mut self) {
        if self.stopped.is_none()
            && let Some(why) = self.io.machine.as_ref().and_then(|m| m.failure())
        {
            tracing::error!(error = %why, "the node stops");
            self.fail_stop(why);
        }
        self.proto.tick();
        let cut_off = self
            .io
            .state
            .leaderless_for()
            .is_some_and(|d| d >= self.cfg.tick * self.cfg.election_ticks * 3);
        let patience = self.leader_patience();
        self.parked.expire(Instant::now(), patience, cut_off);
        if let Some(meta) = self.compaction_point() {
            // The protocol forgets the entries now; the WAL drops them once everything
            // saved before is durable (the job runs in order).
            tracing::info!(index = meta.index, term = meta.term, "compacting the log");
            self.io.compacted = meta.index;
            self.proto.compact(meta.clone());
            let job = StorageJob {
                install: None,
                compact: Some(meta),
                hard_state: None,
                truncate_from: None,
                entries: Vec::new(),
                after: Vec::new(),
                last: self.last,
            };
            self.queue_job(job);
        }
    }

    /// Where to compact the log now, if anywhere: `snapshot_catchup_entries` below the state
    /// machine's durable point, once that is `snapshot_count` past the last compaction.
    fn compaction_point(&self) -> Option<SnapshotMeta> {
        let machine = self.io.machine.as_ref()?;
        if self.cfg.snapshot_count == 0 {
            return None;
        }
        let durable = machine.durable_index().min(self.applied);
        let target = durable.saturating_sub(self.cfg.snapshot_catchup_entries);
        if target < self.io.compacted + self.cfg.snapshot_count {
            return None;
        }
        self.proto.snapshot_meta(target)
    }

    fn on_messages(&mut self, first: P::Message) {
        let now = Instant::now();
        self.step(first, now);
        for _ in 0..MESSAGES_PER_BATCH {
            match self.io.inbound.try_recv() {
                Ok(m) => self.step(m, now),
                Err(_) => break,
            }
        }
    }

    fn step(&mut self, mut msg: P::Message, now: Instant) {
        self.heard.insert(msg.from(), now);
        if let (Some(machine), Some(batch)) = (self.io.machine.as_ref(), msg.proposals_mut()) {
            for data in batch {
                machine.stamp_forwarded(data);
            }
        }
        self.proto.step(msg);
    }

    /// Takes every queued command at once: many proposals, one Ready.
    fn on_commands(&mut self, first: Cmd) {
        let mut forwards = Forwards::default();
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(cmd) = next.take() {
            self.on_command(cmd, &mut forwards);
            handled += 1;
            if handled < COMMANDS_PER_BATCH {
                next = self.io.cmds.try_recv().ok();
            }
        }
        forwards.flush(&mut self.proto, &mut self.parked, Instant::now());
    }

    fn on_command(&mut self, cmd: Cmd, forwards: &mut Forwards) {
        let stopped = self.stopped.as_deref();
        match cmd {
            Cmd::Propose(data, tx) => {
                let w = Waiter::Appended(tx);
                propose_tracked(&mut self.proto, &mut self.waiters, stopped, w, |p| {
                    p.propose(data)
                });
            }
            Cmd::Submit(data, mode, tx) if stopped.is_some() || self.io.state.is_leader() => {
                let w = Waiter::submit(mode, tx);
                propose_tracked(&mut self.proto, &mut self.waiters, stopped, w, |p| {
                    p.propose(data)
                });
            }
            Cmd::Submit(data, mode, tx) => {
                forwards.push(data, Waiter::submit(mode, tx));
                if forwards.bytes >= FORWARD_BATCH_BYTES {
                    forwards.flush(&mut self.proto, &mut self.parked, Instant::now());
                }
            }
            Cmd::ConfChange(change, tx) => {
                let w = Waiter::Appended(tx);
                propose_tracked(&mut self.proto, &mut self.waiters, stopped, w, |p| {
                    p.propose_conf_change(change)
                });
            }
            Cmd::Transfer(to, tx) => {
                let _ = tx.send(self.proto.transfer_leader(to).map_err(NodeError::from));
            }
            Cmd::ReadIndex(tx) if stopped.is_some() => {
                // A stopped node sends nothing: the read point would never come.
                let why = stopped.unwrap_or_default().to_string();
                let _ = tx.send(Err(NodeError::Stopped(why)));
            }
            Cmd::ReadIndex(tx) => {
                self.read_ctx += 1;
                match self.proto.read_index(self.read_ctx) {
                    Ok(()) => {
                        self.reads.insert(self.read_ctx, tx);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                    }
                }
            }
            Cmd::Status(tx) => {
                let _ = tx.send(self.proto.status());
            }
            Cmd::Peers(tx) => {
                let st = self.proto.status();
                let peers = st
                    .conf
                    .members()
                    .filter(|&id| id != st.id)
                    .map(|id| PeerStatus {
                        id,
                        matched: st.matched.get(&id).copied(),
                        heard_ago: self.heard.get(&id).map(Instant::elapsed),
                    })
                    .collect();
                let _ = tx.send((st.last_index, peers));
            }
            Cmd::WalStats(tx) => {
                let _ = tx.send(self.wal_stats);
            }
            Cmd::Committed(lo, hi, tx) => {
                let hi = hi.min(self.applied);
                let es = self
                    .proto
                    .log_entries(lo)
                    .into_iter()
                    .take_while(|e| e.index <= hi)
                    .filter(|e| e.kind == EntryKind::Normal)
                    .collect();
                let _ = tx.send(es);
            }
        }
    }

    /// A sync finished: the acknowledgements waiting for it may leave (step 4).
    fn on_storage_done(&mut self, done: Result<StorageDone<P::Message>, String>) {
        match done {
            Ok(d) => {
                self.in_flight -= d.jobs;
                self.wal_stats = d.stats;
                if self.stopped.is_none() {
                    for m in d.after {
                        self.send(m);
                    }
                }
                self.proto.persisted(d.last.0, d.last.1);
            }
            Err(e) => self.fail_stop(e),
        }
    }

    /// Carries out one Ready, in the contract's order.
    fn on_ready(&mut self, r: Ready<P::Message>) {
        let must = r.must_persist();
        // A stopped node falls silent, as a crashed one would: it can no longer persist
        // what it promises, and a leader that kept its heartbeats going would hold the
        // others back from electing one that can.
        if self.stopped.is_none() {
            for m in r.messages {
                self.send(m);
            }
        }
        if let Some(t) = r.truncate_from {
            let prev = t - 1;
            let term = self
                .proto
                .log_entries(prev)
                .first()
                .map_or(self.last.1, |e| e.term);
            self.last = (prev, term);
        }
        if let Some(e) = r.entries.last() {
            self.last = (e.index, e.term);
        }
        let install = r.snapshot.map(|(meta, data)| {
            use std::os::unix::ffi::OsStrExt;
            let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&data));
            self.applied = self.applied.max(meta.index);
            self.io.compacted = self.io.compacted.max(meta.index);
            (meta, path)
        });
        if let Some((meta, _)) = &install
            && r.entries.is_empty()
            && r.truncate_from.is_none()
        {
            self.last = (meta.index, meta.term);
        }
        if self.stopped.is_none() && (must || self.in_flight > 0) {
            // Even a Ready with nothing to persist may acknowledge entries still syncing.
            let job = StorageJob {
                install,
                compact: None,
                hard_state: r.hard_state,
                truncate_from: r.truncate_from,
                entries: r.entries,
                after: r.messages_after_persist,
                last: self.last,
            };
            self.queue_job(job);
        } else if self.stopped.is_none() {
            for m in r.messages_after_persist {
                self.send(m);
            }
        }
        self.on_committed(r.committed);
        for rs in r.read_states {
            if let Some(tx) = self.reads.remove(&rs.ctx) {
                self.ready_reads.push((rs.index, tx));
            }
        }
    }

    /// Committed entries: their proposers learn their fate, subscribers and the state machine
    /// get them (step 5).
    fn on_committed(&mut self, committed: Vec<Entry>) {
        let subscribed = self.io.commits.receiver_count() > 0;
        for e in &committed {
            if let Some((term, w)) = self.waiters.remove(&e.index) {
                w.send(if term == e.term {
                    Ok(e.index)
                } else {
                    Err(NodeError::Lost)
                });
            }
            self.applied = e.index;
            if subscribed && e.kind == EntryKind::Normal {
                let _ = self.io.commits.send(e.clone());
            }
        }
        if let Some(m) = &self.io.machine
            && !committed.is_empty()
        {
            m.apply(committed);
        }
        self.proto.applied(self.applied);
    }

    /// After the Readys: publishes the status, serves the reads apply has reached, and fails
    /// what can no longer happen.
    fn after_ready(&mut self) {
        let st = self.proto.status();
        self.io.state.update(&st);
        if (st.term, st.leader) != self.regime {
            // A read point asked of another leader may never come (that leader is gone):
            // those reads fail as leaderless, and their callers ask again.
            self.regime = (st.term, st.leader);
            for (_, tx) in std::mem::take(&mut self.reads) {
                let _ = tx.send(Err(ProposeError::NotLeader { leader: 0 }.into()));
            }
        }
        // Reads are served once what they must see is applied.
        let applied = self.applied;
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ready_reads)
            .into_iter()
            .partition(|(i, _)| *i <= applied);
        self.ready_reads = later;
        for (i, tx) in now {
            let _ = tx.send(Ok(i));
        }
        // Proposals whose slot another entry took resolve when that entry commits (above);
        // anything below the commit point with no entry of its own is lost.
        let lost: Vec<u64> = self.waiters.range(..=applied).map(|(i, _)| *i).collect();
        for i in lost {
            if let Some((_, w)) = self.waiters.remove(&i) {
                w.send(Err(NodeError::Lost));
            }
        }
    }
}
