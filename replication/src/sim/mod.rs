//! The deterministic cluster simulator: a whole cluster on one thread, driven by a seeded RNG
//! and simulated time (microseconds). The network drops, duplicates, delays, reorders and
//! partitions messages; nodes crash, losing unsynced log writes, and restart from their store.
//! Clients issue puts, gets and compare-and-sets on a small key set through the protocol.
//!
//! A run has a safety phase (faults on) and a liveness phase (faults healed, crashed nodes
//! restarted) that must make progress. The invariants are checked continuously; the client
//! history is checked for linearizability at the end. Every run replays exactly from its seed;
//! with `QKV_SIM_TRACE` set in the environment, the replay prints every Ready and crash to
//! stderr.

mod invariants;
pub mod kv;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// The simulator's generator: the seeded splitmix64 every test of the workspace uses.
pub use quorumkv_simdisk::Rng;

use crate::checker::{self, Op, OpKind, OpResult, Outcome};
use crate::protocol::{Protocol, ProtocolMessage, Restored};
use crate::raft::{Raft, RaftConfig};
use crate::store::{LogStore, MemStore};
use crate::types::{Conf, EntryKind, NodeId, ProposeError, Role, SnapshotMeta};
use invariants::{ElectionSafety, LeaderCompleteness, LogMatching, StateMachineSafety};
use kv::{Command, Kv};

/// A protocol the simulator can boot.
pub trait SimProtocol: Protocol + Sized {
    /// Name in reports.
    const NAME: &'static str;
    /// A node; `broken` turns on the protocol's deliberately unsafe read path.
    fn boot(id: NodeId, conf: Conf, restored: Restored, seed: u64, broken: bool) -> Self;
}

impl SimProtocol for Raft {
    const NAME: &'static str = "raft";
    fn boot(id: NodeId, conf: Conf, restored: Restored, seed: u64, broken: bool) -> Self {
        let cfg = RaftConfig {
            seed,
            unsafe_leader_reads: broken,
            // A deposed leader that never notices is what makes unsafe reads observable.
            check_quorum: !broken,
            ..RaftConfig::default()
        };
        Raft::new(id, cfg, conf, restored)
    }
}

impl SimProtocol for crate::zab::Zab {
    const NAME: &'static str = "zab";
    fn boot(id: NodeId, conf: Conf, restored: Restored, seed: u64, broken: bool) -> Self {
        let cfg = crate::zab::ZabConfig {
            seed,
            unsafe_leader_reads: broken,
            ..crate::zab::ZabConfig::default()
        };
        crate::zab::Zab::new(id, cfg, conf, restored)
    }
}

/// Shape and fault rates of a run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Cluster size.
    pub nodes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys (registers).
    pub keys: u8,
    /// Length of the faulty phase.
    pub safety_us: u64,
    /// Length of the healed phase.
    pub liveness_us: u64,
    /// Tick interval.
    pub tick_us: u64,
    /// Probability a message is dropped.
    pub drop: f64,
    /// Probability a message is duplicated.
    pub duplicate: f64,
    /// Message delay range.
    pub delay_us: (u64, u64),
    /// fdatasync latency range.
    pub fsync_us: (u64, u64),
    /// Mean time between crashes (0: none).
    pub crash_every_us: u64,
    /// Mean time between partitions (0: none).
    pub partition_every_us: u64,
    /// Applied entries between state-machine snapshots.
    pub snapshot_every: u64,
    /// Client timeout.
    pub client_timeout_us: u64,
    /// Use the protocol's deliberately broken read path.
    pub broken: bool,
    /// Linearizability search budget per key.
    pub check_budget: u64,
}

impl SimConfig {
    /// The configuration a seed picks: 3 or 5 nodes, fault rates varying with the seed.
    pub fn for_seed(seed: u64) -> SimConfig {
        let mut r = Rng::new(seed ^ 0x5eed);
        SimConfig {
            nodes: if r.below(3) == 0 { 5 } else { 3 },
            clients: 3 + r.below(3) as usize,
            keys: 3,
            safety_us: 6_000_000,
            liveness_us: 4_000_000,
            tick_us: 10_000,
            drop: [0.0, 0.02, 0.1][r.below(3) as usize],
            duplicate: [0.0, 0.02][r.below(2) as usize],
            delay_us: (100, [2_000, 20_000, 60_000][r.below(3) as usize]),
            fsync_us: (50, [500, 5_000, 40_000][r.below(3) as usize]),
            crash_every_us: [0, 800_000, 2_000_000][r.below(3) as usize],
            partition_every_us: [0, 1_000_000, 2_500_000][r.below(3) as usize],
            snapshot_every: [16, 64, 1_000_000][r.below(3) as usize],
            client_timeout_us: 1_500_000,
            broken: false,
            check_budget: 2_000_000,
        }
    }
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Safety violations (empty on success).
    pub violations: Vec<String>,
    /// Client operations that completed with a known result.
    pub ops_ok: u64,
    /// Client operations whose outcome stayed unknown.
    pub ops_unknown: u64,
    /// Distinct leaderships.
    pub elections: usize,
    /// Highest index applied anywhere.
    pub applied: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Writes acknowledged in the liveness phase.
    pub liveness_writes: u64,
    /// The linearizability verdict.
    pub linearizable: Outcome,
}

enum Event<M> {
    Tick(usize),
    Deliver(M),
    SyncDone(usize, u64),
    Client(usize, u64),
    Resubmit(usize, usize),
    Crash,
    Restart(usize),
    Partition,
    Heal,
    Liveness,
}

struct PendingSync<M> {
    after: Vec<M>,
    last: (u64, u64),
}

struct Node<P: SimProtocol> {
    id: NodeId,
    proto: Option<P>,
    store: MemStore,
    kv: Kv,
    snapshot: (SnapshotMeta, Vec<u8>),
    generation: u64,
    syncs: Vec<PendingSync<P::Message>>,
    sync_scheduled: bool,
    /// index -> (term, history op)
    proposals: BTreeMap<u64, (u64, usize)>,
    /// history op -> term it was handed to the leader in
    forwarded: BTreeMap<usize, u64>,
    /// read ctx -> history op
    reads: BTreeMap<u64, usize>,
    ready_reads: Vec<(u64, usize)>,
    last_term_applied: u64,
    leader_checked_term: u64,
}

#[derive(Debug, Clone, Copy)]
enum ClientState {
    Idle,
    Busy { op: usize, serial: u64 },
}

struct Client {
    state: ClientState,
    serial: u64,
    target: usize,
    attempts: u32,
}

/// One simulated cluster.
pub struct Sim<P: SimProtocol> {
    cfg: SimConfig,
    seed: u64,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event<P::Message>>,
    nodes: Vec<Node<P>>,
    conf: Conf,
    blocked: BTreeSet<(usize, usize)>,
    clients: Vec<Client>,
    history: Vec<Op>,
    /// Result per history op (None: still running).
    done: Vec<bool>,
    /// Ops dropped from the history (definitely never took effect).
    dropped: BTreeSet<usize>,
    faults: bool,
    liveness_start: u64,
    liveness_writes: u64,
    crashes: u64,
    violations: Vec<String>,
    election: ElectionSafety,
    matching: LogMatching,
    completeness: LeaderCompleteness,
    sm: StateMachineSafety,
    steps: u64,
    trace: bool,
}

fn key_of(op: &Op) -> u8 {
    op.key
}

impl<P: SimProtocol> Sim<P> {
    /// A cluster for `seed`.
    pub fn new(seed: u64, cfg: SimConfig) -> Sim<P> {
        let conf = Conf::new(1..=cfg.nodes as u64);
        let mut sim = Sim {
            rng: Rng::new(seed),
            seed,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes: Vec::new(),
            conf: conf.clone(),
            blocked: BTreeSet::new(),
            clients: Vec::new(),
            history: Vec::new(),
            done: Vec::new(),
            dropped: BTreeSet::new(),
            faults: true,
            liveness_start: cfg.safety_us,
            liveness_writes: 0,
            crashes: 0,
            violations: Vec::new(),
            election: ElectionSafety::default(),
            matching: LogMatching::default(),
            completeness: LeaderCompleteness::default(),
            sm: StateMachineSafety::default(),
            steps: 0,
            trace: std::env::var_os("QKV_SIM_TRACE").is_some(),
            cfg,
        };
        for i in 0..sim.cfg.nodes {
            let id = i as u64 + 1;
            let proto = P::boot(
                id,
                conf.clone(),
                Restored::default(),
                seed ^ id,
                sim.cfg.broken,
            );
            sim.nodes.push(Node {
                id,
                proto: Some(proto),
                store: MemStore::new(),
                kv: Kv::default(),
                snapshot: (SnapshotMeta::default(), Kv::default().encode()),
                generation: 0,
                syncs: Vec::new(),
                sync_scheduled: false,
                proposals: BTreeMap::new(),
                forwarded: BTreeMap::new(),
                reads: BTreeMap::new(),
                ready_reads: Vec::new(),
                last_term_applied: 0,
                leader_checked_term: 0,
            });
            let jitter = sim.rng.below(sim.cfg.tick_us);
            sim.schedule(jitter, Event::Tick(i));
        }
        for c in 0..sim.cfg.clients {
            sim.clients.push(Client {
                state: ClientState::Idle,
                serial: 0,
                target: c % sim.cfg.nodes,
                attempts: 0,
            });
            let t = 50_000 + sim.rng.below(100_000);
            sim.schedule(t, Event::Client(c, 0));
        }
        if sim.cfg.crash_every_us > 0 {
            let t = sim.rng.between(1, 2 * sim.cfg.crash_every_us);
            sim.schedule(t, Event::Crash);
        }
        if sim.cfg.partition_every_us > 0 {
            let t = sim.rng.between(1, 2 * sim.cfg.partition_every_us);
            sim.schedule(t, Event::Partition);
        }
        let t = sim.cfg.safety_us;
        sim.schedule(t, Event::Liveness);
        sim
    }

    fn schedule(&mut self, after_us: u64, e: Event<P::Message>) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + after_us, self.seq)));
        self.events.insert(self.seq, e);
    }

    fn violation(&mut self, v: String) {
        if self.violations.len() < 10 {
            self.violations.push(format!("t={}us: {v}", self.now));
        }
    }

    /// Runs to the end and reports.
    pub fn run(mut self) -> SimReport {
        let end = self.cfg.safety_us + self.cfg.liveness_us;
        while let Some(Reverse((t, seq))) = self.queue.pop() {
            if t > end || !self.violations.is_empty() {
                break;
            }
            self.now = t;
            let e = self.events.remove(&seq).expect("scheduled event");
            self.handle(e);
            self.steps += 1;
            if self.steps % 64 == 0 {
                self.check_logs();
            }
        }
        self.check_logs();
        // Ops still running at the end never completed: unknown outcome.
        for (i, op) in self.history.iter_mut().enumerate() {
            if !self.done[i] {
                op.result = OpResult::Unknown;
            }
        }
        let history: Vec<Op> = self
            .history
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.dropped.contains(i))
            .map(|(_, o)| *o)
            .collect();
        let linearizable = checker::check(&history, self.cfg.check_budget);
        if self.violations.is_empty() && self.liveness_writes == 0 {
            self.violations
                .push("liveness: no write completed after faults were healed".into());
        }
        let ops_unknown = history
            .iter()
            .filter(|o| o.result == OpResult::Unknown)
            .count() as u64;
        SimReport {
            seed: self.seed,
            violations: self.violations,
            ops_ok: history.len() as u64 - ops_unknown,
            ops_unknown,
            elections: self.election.leaderships(),
            applied: self.sm.max_index(),
            crashes: self.crashes,
            liveness_writes: self.liveness_writes,
            linearizable,
        }
    }

    fn handle(&mut self, e: Event<P::Message>) {
        match e {
            Event::Tick(n) => {
                if let Some(p) = self.nodes[n].proto.as_mut() {
                    p.tick();
                    self.drive(n);
                }
                let t = self.cfg.tick_us;
                self.schedule(t, Event::Tick(n));
            }
            Event::Deliver(m) => {
                let n = (m.to() - 1) as usize;
                if let Some(p) = self.nodes[n].proto.as_mut() {
                    p.step(m);
                    self.drive(n);
                }
            }
            Event::SyncDone(n, generation) => {
                let node = &mut self.nodes[n];
                if node.proto.is_none() || node.generation != generation {
                    return;
                }
                node.sync_scheduled = false;
                node.store.sync().expect("memory store");
                let syncs = std::mem::take(&mut node.syncs);
                let mut last = None;
                let mut outgoing = Vec::new();
                for s in syncs {
                    outgoing.extend(s.after);
                    last = Some(s.last);
                }
                for m in outgoing {
                    self.send(n, m);
                }
                if let Some((i, t)) = last {
                    self.nodes[n].proto.as_mut().expect("alive").persisted(i, t);
                }
                self.drive(n);
            }
            Event::Client(c, serial) => self.client_step(c, serial),
            Event::Resubmit(c, op) => {
                if matches!(self.clients[c].state, ClientState::Busy { op: o, .. } if o == op)
                    && !self.done[op]
                {
                    self.submit(c, op);
                }
            }
            Event::Crash => {
                if self.faults {
                    let n = self.rng.below(self.nodes.len() as u64) as usize;
                    if self.nodes[n].proto.is_some() {
                        self.crash(n);
                        let t = self.rng.between(100_000, 1_500_000);
                        self.schedule(t, Event::Restart(n));
                    }
                    let t = self.rng.between(1, 2 * self.cfg.crash_every_us);
                    self.schedule(t, Event::Crash);
                }
            }
            Event::Restart(n) => self.restart(n),
            Event::Partition => {
                if self.faults {
                    self.partition();
                    let t = self.rng.between(200_000, 2_000_000);
                    self.schedule(t, Event::Heal);
                    let t = self.rng.between(1, 2 * self.cfg.partition_every_us);
                    self.schedule(t, Event::Partition);
                }
            }
            Event::Heal => self.blocked.clear(),
            Event::Liveness => {
                self.faults = false;
                self.blocked.clear();
                self.liveness_start = self.now;
                for n in 0..self.nodes.len() {
                    if self.nodes[n].proto.is_none() {
                        self.restart(n);
                    }
                }
            }
        }
    }

    fn partition(&mut self) {
        let n = self.nodes.len();
        let mut side: Vec<bool> = (0..n).map(|_| self.rng.below(2) == 0).collect();
        if self.rng.below(2) == 0 {
            // Isolate the leader, if there is one.
            if let Some(l) = (0..n).find(|&i| self.role(i) == Some(Role::Leader)) {
                side = (0..n).map(|i| i == l).collect();
            }
        }
        self.blocked.clear();
        for a in 0..n {
            for b in 0..n {
                if side[a] != side[b] {
                    self.blocked.insert((a, b));
                }
            }
        }
    }

    fn role(&self, n: usize) -> Option<Role> {
        self.nodes[n].proto.as_ref().map(|p| p.status().role)
    }

    fn crash(&mut self, n: usize) {
        if self.trace {
            eprintln!("t={} n{} CRASH", self.now, n + 1);
        }
        self.crashes += 1;
        let node = &mut self.nodes[n];
        node.proto = None;
        node.store.crash();
        node.generation += 1;
        node.syncs.clear();
        node.sync_scheduled = false;
        node.proposals.clear();
        node.forwarded.clear();
        node.reads.clear();
        node.ready_reads.clear();
    }

    fn restart(&mut self, n: usize) {
        if self.nodes[n].proto.is_some() {
            return;
        }
        let (seed, broken, conf) = (self.seed, self.cfg.broken, self.conf.clone());
        let node = &mut self.nodes[n];
        let restored = node.store.load().expect("memory store");
        // The state machine restarts from its durable snapshot; the log replays the rest.
        let snap_kv = Kv::decode(&node.snapshot.1).expect("own snapshot");
        node.kv = snap_kv;
        node.last_term_applied = node.snapshot.0.term;
        node.leader_checked_term = 0;
        let restored = Restored {
            applied: node.kv.applied,
            ..restored
        };
        node.proto = Some(P::boot(
            node.id,
            conf,
            restored,
            seed ^ node.id ^ (node.generation << 32),
            broken,
        ));
    }

    fn send(&mut self, from: usize, mut m: P::Message) {
        if m.snapshot_request().is_some() {
            m.attach_snapshot(self.nodes[from].snapshot.1.clone());
        }
        let to = (m.to() - 1) as usize;
        if to >= self.nodes.len() || self.blocked.contains(&(from, to)) {
            return;
        }
        if self.faults && self.rng.chance(self.cfg.drop) {
            return;
        }
        let (lo, hi) = self.cfg.delay_us;
        let d = self.rng.between(lo, hi);
        if self.faults && self.rng.chance(self.cfg.duplicate) && !m.carries_proposals() {
            let d2 = self.rng.between(lo, hi);
            self.schedule(d2, Event::Deliver(m.clone()));
        }
        self.schedule(d, Event::Deliver(m));
    }

    /// Carries out every Ready of node `n`, per the persistence contract.
    fn drive(&mut self, n: usize) {
        loop {
            let Some(p) = self.nodes[n].proto.as_mut() else {
                return;
            };
            if !p.has_ready() {
                break;
            }
            let mut r = p.ready();
            if self.trace {
                let st = p.status();
                eprintln!(
                    "t={} n{} {:?} term={} commit={} last={} persisted={} | hs={:?} trunc={:?} ents={:?} committed={:?} msgs={:?} after={:?}",
                    self.now,
                    n + 1,
                    st.role,
                    st.term,
                    st.commit,
                    st.last_index,
                    st.persisted,
                    r.hard_state,
                    r.truncate_from,
                    r.entries
                        .iter()
                        .map(|e| (e.index, e.term))
                        .collect::<Vec<_>>(),
                    r.committed
                        .iter()
                        .map(|e| (e.index, e.term))
                        .collect::<Vec<_>>(),
                    r.messages,
                    r.messages_after_persist
                );
            }
            let must_persist = r.must_persist();
            for m in std::mem::take(&mut r.messages) {
                self.send(n, m);
            }
            let node = &mut self.nodes[n];
            if let Some((meta, data)) = &r.snapshot {
                match Kv::decode(data) {
                    Some(kv) if kv.applied == meta.index => {
                        // Whether a forwarded request is in the snapshot is unknown here (as
                        // to a server's client after a timeout).
                        node.forwarded.clear();
                        node.kv = kv;
                        node.last_term_applied = meta.term;
                        node.snapshot = (meta.clone(), data.clone());
                        node.store.install_snapshot(meta).expect("memory store");
                    }
                    _ => {
                        let v = format!(
                            "node {} got an unusable snapshot at {}",
                            node.id, meta.index
                        );
                        self.violation(v);
                        return;
                    }
                }
            }
            let node = &mut self.nodes[n];
            node.store
                .save(r.hard_state, r.truncate_from, &r.entries)
                .expect("memory store");
            if must_persist {
                let last = node.store_last();
                node.syncs.push(PendingSync {
                    after: r.messages_after_persist,
                    last,
                });
                if !node.sync_scheduled {
                    node.sync_scheduled = true;
                    let (lo, hi) = self.cfg.fsync_us;
                    let d = self.rng.between(lo, hi);
                    let g = self.nodes[n].generation;
                    self.schedule(d, Event::SyncDone(n, g));
                }
            } else if let Some(last) = node.syncs.last_mut() {
                // Acknowledgements may cover entries an earlier Ready is still syncing.
                last.after.extend(r.messages_after_persist);
            } else {
                for m in r.messages_after_persist {
                    self.send(n, m);
                }
            }
            if let Err(v) = self.completeness.committed(&r.committed) {
                self.violation(v);
            }
            for e in &r.committed {
                self.apply(n, e);
            }
            let node = &mut self.nodes[n];
            for rs in r.read_states {
                if let Some(op) = node.reads.remove(&rs.ctx) {
                    node.ready_reads.push((rs.index, op));
                }
            }
            self.serve_reads(n);
            self.maybe_snapshot(n);
        }
        self.check_leader(n);
    }

    fn apply(&mut self, n: usize, e: &crate::types::Entry) {
        if let Err(v) = self.sm.applied(self.nodes[n].id, e) {
            self.violation(v);
        }
        let node = &mut self.nodes[n];
        if e.index <= node.kv.applied {
            return;
        }
        assert_eq!(e.index, node.kv.applied + 1, "entries are applied in order");
        node.kv.applied = e.index;
        node.last_term_applied = e.term;
        let mut outcome = None;
        if e.kind == EntryKind::Normal {
            if let Some(cmd) = Command::decode(&e.data) {
                let took = node.kv.apply(&cmd);
                outcome = Some((cmd, took));
            }
        }
        if let Some((cmd, took)) = &outcome
            && node.forwarded.remove(&(cmd.op() as usize)).is_some()
        {
            let result = match cmd {
                Command::Put { .. } => OpResult::Done,
                Command::Cas { .. } => OpResult::Swapped(*took),
            };
            self.complete(cmd.op() as usize, result);
        }
        // A forwarded request of an earlier term not applied by now never will be: the
        // client may take it as not done (the checker holds the protocol to that).
        let node = &mut self.nodes[n];
        let lost: Vec<usize> = node
            .forwarded
            .iter()
            .filter(|&(_, &term)| term < e.term)
            .map(|(&op, _)| op)
            .collect();
        for op in lost {
            self.nodes[n].forwarded.remove(&op);
            self.drop_op(op);
        }
        let node = &mut self.nodes[n];
        if let Some((term, op)) = node.proposals.remove(&e.index) {
            match outcome {
                Some((cmd, took)) if term == e.term && cmd.op() == op as u64 => {
                    let result = match cmd {
                        Command::Put { .. } => OpResult::Done,
                        Command::Cas { .. } => OpResult::Swapped(took),
                    };
                    self.complete(op, result);
                }
                _ => {
                    // Another entry took the slot: our proposal can never commit.
                    self.drop_op(op);
                }
            }
        }
        let p = self.nodes[n].proto.as_mut().expect("alive");
        p.applied(e.index);
    }

    fn serve_reads(&mut self, n: usize) {
        let applied = self.nodes[n].kv.applied;
        let ready: Vec<(u64, usize)> = self.nodes[n]
            .ready_reads
            .iter()
            .copied()
            .filter(|(i, _)| *i <= applied)
            .collect();
        self.nodes[n].ready_reads.retain(|(i, _)| *i > applied);
        for (_, op) in ready {
            let key = key_of(&self.history[op]);
            let v = self.nodes[n].kv.map.get(&key).copied().unwrap_or(0);
            self.complete(op, OpResult::Value(v));
        }
    }

    fn maybe_snapshot(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if node.kv.applied < node.snapshot.0.index + self.cfg.snapshot_every {
            return;
        }
        let Some(p) = node.proto.as_mut() else { return };
        let meta = SnapshotMeta {
            index: node.kv.applied,
            term: node.last_term_applied,
            conf: p.status().conf,
        };
        node.snapshot = (meta.clone(), node.kv.encode());
        node.store.compact(&meta).expect("memory store");
        p.compact(meta);
    }

    fn check_leader(&mut self, n: usize) {
        let Some(p) = self.nodes[n].proto.as_ref() else {
            return;
        };
        let st = p.status();
        if st.role != Role::Leader {
            return;
        }
        let fresh = self.nodes[n].leader_checked_term != st.term;
        let log = if fresh { p.log_entries(0) } else { Vec::new() };
        if let Err(v) = self.election.observe(st.term, st.id) {
            self.violation(v);
        }
        if fresh {
            self.nodes[n].leader_checked_term = st.term;
            let first = log.first().map_or(st.last_index + 1, |e| e.index);
            if let Err(v) = self.completeness.leader(st.id, st.term, first, &log) {
                self.violation(v);
            }
        }
    }

    fn check_logs(&mut self) {
        for n in 0..self.nodes.len() {
            if let Some(p) = self.nodes[n].proto.as_ref() {
                let log = p.log_entries(0);
                if let Err(v) = self.matching.observe(self.nodes[n].id, None, &log) {
                    self.violation(v);
                }
            }
        }
    }

    // ---- clients ----------------------------------------------------------------------------

    fn complete(&mut self, op: usize, result: OpResult) {
        if self.done[op] || self.dropped.contains(&op) {
            return;
        }
        self.done[op] = true;
        self.history[op].result = result;
        self.history[op].complete = self.now;
        if matches!(result, OpResult::Done | OpResult::Swapped(_))
            && self.now >= self.liveness_start
        {
            self.liveness_writes += 1;
        }
        let c = self.history[op].client as usize;
        if let ClientState::Busy { op: o, .. } = self.clients[c].state
            && o == op
        {
            self.clients[c].state = ClientState::Idle;
            let serial = self.clients[c].serial;
            let t = self.rng.between(1_000, 30_000);
            self.schedule(t, Event::Client(c, serial));
        }
    }

    fn drop_op(&mut self, op: usize) {
        if self.done[op] {
            return;
        }
        self.dropped.insert(op);
        self.done[op] = true;
        let c = self.history[op].client as usize;
        if let ClientState::Busy { op: o, .. } = self.clients[c].state
            && o == op
        {
            self.clients[c].state = ClientState::Idle;
            let serial = self.clients[c].serial;
            self.schedule(1_000, Event::Client(c, serial));
        }
    }

    fn client_step(&mut self, c: usize, serial: u64) {
        if serial != self.clients[c].serial {
            return;
        }
        match self.clients[c].state {
            ClientState::Busy { op, serial: s } if s == serial => {
                // Timed out: the outcome is unknown (or, for a read, irrelevant).
                if !self.done[op] {
                    self.done[op] = true;
                    self.history[op].result = OpResult::Unknown;
                }
                self.clients[c].state = ClientState::Idle;
            }
            _ => {}
        }
        self.clients[c].serial += 1;
        let serial = self.clients[c].serial;
        let key = self.rng.below(u64::from(self.cfg.keys)) as u8;
        let id = self.history.len();
        let roll = self.rng.below(10);
        let kind = if roll < 5 {
            OpKind::Put(id as u64 + 1)
        } else if roll < 8 {
            OpKind::Get
        } else {
            let expect = if self.rng.below(2) == 0 {
                0
            } else {
                self.rng.below(id as u64 + 1)
            };
            OpKind::Cas {
                expect,
                new: id as u64 + 1,
            }
        };
        self.history.push(Op {
            client: c as u64,
            key,
            kind,
            result: OpResult::Unknown,
            invoke: self.now,
            complete: 0,
        });
        self.done.push(false);
        self.clients[c].state = ClientState::Busy { op: id, serial };
        self.clients[c].attempts = 0;
        let timeout = self.cfg.client_timeout_us;
        self.schedule(timeout, Event::Client(c, serial));
        self.submit(c, id);
    }

    fn submit(&mut self, c: usize, op: usize) {
        let n = self.clients[c].target;
        let Some(p) = self.nodes[n].proto.as_mut() else {
            self.retry(c, op, 0);
            return;
        };
        let o = self.history[op];
        let command = match o.kind {
            OpKind::Get => None,
            OpKind::Put(value) => Some(Command::Put {
                op: op as u64,
                key: o.key,
                value,
            }),
            OpKind::Cas { expect, new } => Some(Command::Cas {
                op: op as u64,
                key: o.key,
                expect,
                new,
            }),
        };
        let r = match &command {
            None => p.read_index(op as u64 + 1).map(|()| None),
            Some(c) => p.propose(c.encode()).map(Some),
        };
        let term = p.status().term;
        match r {
            Ok(Some(index)) => {
                self.nodes[n].proposals.insert(index, (term, op));
            }
            Ok(None) => {
                self.nodes[n].reads.insert(op as u64 + 1, op);
            }
            // Half the time a member that does not lead hands the write to the leader, as
            // servers do; the outcome shows in its own applied log.
            Err(ProposeError::NotLeader { leader })
                if leader != 0 && command.is_some() && self.rng.chance(0.5) =>
            {
                let data = command.expect("a write").encode();
                match p.forward(vec![data]) {
                    Ok(term) => {
                        self.nodes[n].forwarded.insert(op, term);
                    }
                    Err(_) => self.retry(c, op, leader),
                }
            }
            Err(ProposeError::NotLeader { leader }) => self.retry(c, op, leader),
            Err(_) => self.retry(c, op, 0),
        }
        self.drive(n);
    }

    fn retry(&mut self, c: usize, op: usize, leader: NodeId) {
        self.clients[c].attempts += 1;
        self.clients[c].target = if leader != 0 {
            (leader - 1) as usize
        } else {
            self.rng.below(self.nodes.len() as u64) as usize
        };
        if self.clients[c].attempts > 20 {
            // Nothing was ever accepted: the operation definitely did not happen.
            self.drop_op(op);
            return;
        }
        let d = self.rng.between(5_000, 50_000);
        self.schedule(d, Event::Resubmit(c, op));
    }
}

impl<P: SimProtocol> Node<P> {
    fn store_last(&self) -> (u64, u64) {
        self.store.last_position()
    }
}

/// Runs one seed of protocol `P`.
pub fn run_seed<P: SimProtocol>(seed: u64, broken: bool) -> SimReport {
    let mut cfg = SimConfig::for_seed(seed);
    cfg.broken = broken;
    Sim::<P>::new(seed, cfg).run()
}

/// Whether a report shows any violation (safety, liveness or linearizability).
pub fn failed(r: &SimReport) -> bool {
    !r.violations.is_empty() || r.linearizable != Outcome::Ok
}
