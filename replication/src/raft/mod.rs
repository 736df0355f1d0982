//! Raft as a pure state machine: leader election with randomized timeouts and pre-vote, log
//! replication with batching, pipelining and flow control, the commit rule, ReadIndex reads,
//! CheckQuorum with leader leases, leadership transfer, snapshots, learners and single-server
//! membership changes. Messages and persistence go through [`Ready`]; see
//! [`crate::protocol`] for the order the driver must keep.

mod message;
mod progress;

use std::collections::{BTreeMap, BTreeSet};

pub use message::{RaftBody, RaftMessage};
pub use progress::{Progress, ProgressState};

use crate::protocol::{Protocol, Ready, Restored};
use crate::reads::ReadBarrier;
use crate::steady::Steady;
use crate::types::{
    Conf, ConfChange, Entry, EntryKind, HardState, NodeId, ProposeError, ReadState, Role,
    SnapshotMeta, Status,
};

/// Raft's knobs, with etcd's defaults where etcd has them.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// Ticks without hearing from a leader before campaigning (randomized in
    /// `[election_tick, 2 * election_tick)`).
    pub election_tick: u32,
    /// Ticks between leader heartbeats.
    pub heartbeat_tick: u32,
    /// Run a pre-vote round before incrementing the term (thesis 9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum for an election timeout steps down, and
    /// followers that heard from a leader within it ignore votes (the leader lease).
    pub check_quorum: bool,
    /// Most appends in flight to one follower.
    pub inflight_msgs_max: usize,
    /// Most bytes in flight to one follower.
    pub inflight_bytes_max: usize,
    /// Most entry bytes in one append.
    pub msg_bytes_max: usize,
    /// Most bytes of proposals not yet committed; more are refused (Overloaded).
    pub uncommitted_bytes_max: usize,
    /// Seed of the randomized election timeout.
    pub seed: u64,
    /// On start, a voter's election clock begins `election_tick - 2` ticks in, as etcd's
    /// `--initial-election-tick-advance` has it, and a sole voter's one tick before it
    /// campaigns: a restarted cluster elects after 2 to `election_tick + 2` ticks instead of
    /// `election_tick` to twice that. Pre-vote keeps a member that starts beside a live
    /// leader from disrupting it.
    pub election_tick_advance: bool,
    /// BROKEN ON PURPOSE, for checker tests only: a leader answers reads from its own commit
    /// index without confirming it is still the leader.
    pub unsafe_leader_reads: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            election_tick: 10,
            heartbeat_tick: 1,
            pre_vote: true,
            check_quorum: true,
            election_tick_advance: false,
            inflight_msgs_max: 256,
            inflight_bytes_max: 32 << 20,
            msg_bytes_max: 1 << 20,
            uncommitted_bytes_max: 64 << 20,
            seed: 0,
            unsafe_leader_reads: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Campaign {
    Pre,
    Election,
    Transfer,
}

/// One Raft node.
#[derive(Debug)]
pub struct Raft {
    id: NodeId,
    cfg: RaftConfig,
    term: u64,
    vote: NodeId,
    role: Role,
    leader: NodeId,
    prs: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_timeout: u32,
    rng: u64,
    transferee: NodeId,
    reads: ReadBarrier,
    /// The log, its configurations and what the next Ready hands out.
    st: Steady<RaftMessage>,
    reads_before_commit: Vec<(NodeId, u64)>,
    uncommitted_bytes: usize,
    bcast_pending: bool,
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Raft {
    /// A node with id `id`. `initial` is the membership of a brand-new cluster; a restarted
    /// node takes its membership from `restored` (snapshot and log) when they have one.
    pub fn new(id: NodeId, cfg: RaftConfig, initial: Conf, restored: Restored) -> Raft {
        assert!(id != 0, "node id 0 means none");
        let base_conf = if restored.snapshot.conf.voters.is_empty() {
            initial
        } else {
            restored.snapshot.conf.clone()
        };
        let mut r = Raft {
            id,
            rng: cfg.seed ^ id.wrapping_mul(0x2545_f491_4f6c_dd1d),
            cfg,
            term: restored.hard_state.term,
            vote: restored.hard_state.vote,
            role: Role::Follower,
            leader: 0,
            prs: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: 0,
            transferee: 0,
            reads: ReadBarrier::default(),
            st: Steady::restore(restored, base_conf),
            reads_before_commit: Vec::new(),
            uncommitted_bytes: 0,
            bcast_pending: false,
        };
        for i in r.st.log.first_index()..=r.st.log.last_index() {
            let e = r.st.log.entry(i).expect("in range").clone();
            r.note_conf_entry(&e);
        }
        r.reset_randomized_timeout();
        r.role = if r.conf().is_learner(id) {
            Role::Learner
        } else {
            Role::Follower
        };
        if r.cfg.election_tick_advance && r.promotable() {
            r.election_elapsed = if r.conf().voters.len() == 1 {
                r.randomized_timeout - 1
            } else {
                r.cfg.election_tick.saturating_sub(2)
            };
        }
        r
    }

    /// The configuration in effect (the latest in the log).
    pub fn conf(&self) -> &Conf {
        self.st.confs.current()
    }

    fn pending_conf_index(&self) -> u64 {
        self.st.confs.pending_index()
    }

    fn promotable(&self) -> bool {
        self.conf().is_voter(self.id)
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            current_epoch: 0,
        }
    }

    fn reset_randomized_timeout(&mut self) {
        let e = self.cfg.election_tick.max(1);
        self.randomized_timeout = e + (splitmix(&mut self.rng) % u64::from(e)) as u32;
    }

    fn msg(&self, to: NodeId, body: RaftBody) -> RaftMessage {
        RaftMessage {
            from: self.id,
            to,
            term: self.term,
            body,
        }
    }

    fn send(&mut self, to: NodeId, body: RaftBody) {
        let m = self.msg(to, body);
        self.st.msgs.push(m);
    }

    fn send_after_persist(&mut self, to: NodeId, body: RaftBody) {
        let m = self.msg(to, body);
        self.st.msgs_after.push(m);
    }

    fn reset(&mut self, term: u64) {
        if term != self.term {
            self.term = term;
            self.vote = 0;
        }
        self.leader = 0;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_timeout();
        self.transferee = 0;
        self.votes.clear();
        self.prs.clear();
        self.reads.clear();
        self.reads_before_commit.clear();
        self.uncommitted_bytes = 0;
        self.bcast_pending = false;
    }

    fn become_follower(&mut self, term: u64, leader: NodeId) {
        self.reset(term);
        self.leader = leader;
        self.role = if self.conf().is_learner(self.id) {
            Role::Learner
        } else {
            Role::Follower
        };
    }

    fn become_pre_candidate(&mut self) {
        self.votes.clear();
        self.leader = 0;
        self.role = Role::PreCandidate;
    }

    fn become_candidate(&mut self) {
        self.reset(self.term + 1);
        self.vote = self.id;
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) {
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = self.id;
        self.sync_progress();
        let index = self.st.log.last_index() + 1;
        self.st.log.push(Entry {
            term: self.term,
            index,
            kind: EntryKind::Noop,
            data: Vec::new(),
        });
        self.bcast_pending = true;
    }

    /// Progress entries for exactly the other members.
    fn sync_progress(&mut self) {
        let members: BTreeSet<NodeId> = self.conf().members().filter(|&m| m != self.id).collect();
        self.prs.retain(|id, _| members.contains(id));
        let last = self.st.log.last_index();
        for m in members {
            self.prs.entry(m).or_insert_with(|| Progress::new(last));
        }
    }

    fn campaign(&mut self, kind: Campaign) {
        if !self.promotable() {
            return;
        }
        let term = if kind == Campaign::Pre {
            self.become_pre_candidate();
            self.term + 1
        } else {
            self.become_candidate();
            self.term
        };
        let (last_index, last_term) = (self.st.log.last_index(), self.st.log.last_term());
        let voters: Vec<NodeId> = self.conf().voters.clone();
        for v in voters {
            if v == self.id {
                continue;
            }
            let body = if kind == Campaign::Pre {
                RaftBody::PreVote {
                    last_index,
                    last_term,
                }
            } else {
                RaftBody::Vote {
                    last_index,
                    last_term,
                    transfer: kind == Campaign::Transfer,
                }
            };
            self.st.msgs.push(RaftMessage {
                from: self.id,
                to: v,
                term,
                body,
            });
        }
        // Our own vote counts once it is durable (pre-votes need no durability).
        self.tally();
    }

    /// Counts votes (our own only when durable) and acts on the outcome.
    fn tally(&mut self) {
        let own = match self.role {
            Role::PreCandidate => true,
            Role::Candidate => {
                self.st.hs_durable.term == self.term && self.st.hs_durable.vote == self.id
            }
            _ => return,
        };
        let conf = self.conf().clone();
        let mut granted = usize::from(own && conf.is_voter(self.id));
        let mut rejected = 0;
        for (id, g) in &self.votes {
            if *id != self.id && conf.is_voter(*id) {
                if *g {
                    granted += 1;
                } else {
                    rejected += 1;
                }
            }
        }
        if granted >= conf.quorum() {
            if self.role == Role::PreCandidate {
                self.campaign(Campaign::Election);
            } else {
                self.become_leader();
            }
        } else if conf.voters.len() - rejected < conf.quorum() {
            self.become_follower(self.term, 0);
        }
    }

    fn note_conf_entry(&mut self, e: &Entry) {
        if self.st.confs.note_entry(e) {
            self.refresh_role();
        }
    }

    /// A follower becomes a learner (or back) as the configuration says.
    fn refresh_role(&mut self) {
        if matches!(self.role, Role::Follower | Role::Learner) {
            self.role = if self.conf().is_learner(self.id) {
                Role::Learner
            } else {
                Role::Follower
            };
        }
    }

    fn after_truncation(&mut self, from: u64) {
        self.st.confs.truncate_from(from);
        self.refresh_role();
    }

    fn append_local(&mut self, kind: EntryKind, data: Vec<u8>) -> u64 {
        let e = Entry {
            term: self.term,
            index: self.st.log.last_index() + 1,
            kind,
            data,
        };
        self.uncommitted_bytes += e.size_bytes();
        self.note_conf_entry(&e);
        let index = e.index;
        self.st.log.push(e);
        if kind == EntryKind::ConfChange {
            self.sync_progress();
        }
        self.bcast_pending = true;
        index
    }

    // ---- leader: replication -------------------------------------------------------------

    fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let (inflight_max, bytes_max) = (self.cfg.inflight_msgs_max, self.cfg.inflight_bytes_max);
        let Some(pr) = self.prs.get(&to) else {
            return false;
        };
        if !pr.can_send(inflight_max, bytes_max) {
            return false;
        }
        let prev = pr.next - 1;
        let Some(prev_term) = self.st.log.term(prev) else {
            // The follower needs entries we compacted: send the snapshot.
            if self.st.snapshot.index == 0 {
                return false;
            }
            let meta = self.st.snapshot.clone();
            self.prs
                .get_mut(&to)
                .expect("checked")
                .become_snapshot(meta.index);
            self.send(
                to,
                RaftBody::Snapshot {
                    meta,
                    data: Vec::new(),
                },
            );
            return true;
        };
        let entries = self
            .st
            .log
            .slice(prev + 1, self.st.log.last_index(), self.cfg.msg_bytes_max);
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let bytes: usize = entries.iter().map(Entry::size_bytes).sum();
        let last = entries.last().map_or(prev, |e| e.index);
        self.prs.get_mut(&to).expect("checked").sent(last, bytes);
        let commit = self.st.log.committed;
        self.send(
            to,
            RaftBody::Append {
                prev_index: prev,
                prev_term,
                entries,
                commit,
            },
        );
        true
    }

    fn bcast_append(&mut self) {
        let peers: Vec<NodeId> = self.prs.keys().copied().collect();
        for p in peers {
            self.send_all_pending(p, true);
        }
    }

    /// Sends appends to `p` until it has everything or its window is full.
    fn send_all_pending(&mut self, p: NodeId, first_even_if_empty: bool) {
        let mut empty_ok = first_even_if_empty;
        while self.maybe_send_append(p, empty_ok) {
            empty_ok = false;
            let pr = &self.prs[&p];
            if pr.state != ProgressState::Replicate || pr.next > self.st.log.last_index() {
                break;
            }
        }
    }

    fn bcast_heartbeat(&mut self, ctx: u64) {
        let peers: Vec<(NodeId, u64)> = self.prs.iter().map(|(id, pr)| (*id, pr.matched)).collect();
        for (p, matched) in peers {
            let commit = matched.min(self.st.log.committed);
            self.send(p, RaftBody::Heartbeat { commit, ctx });
        }
    }

    fn maybe_commit(&mut self) -> bool {
        let durable_of = |v: NodeId| {
            if v == self.id {
                self.st.log.persisted
            } else {
                self.prs.get(&v).map_or(0, |p| p.matched)
            }
        };
        let mci = self.st.confs.current().quorum_index(durable_of);
        // Only entries of the current term commit by counting (Raft paper 5.4.2).
        if mci > self.st.log.committed && self.st.log.term(mci) == Some(self.term) {
            self.st.assert_quorum_durable(mci, durable_of);
            let old = self.st.log.committed;
            self.st.log.commit_to(mci);
            let done = self.st.log.bytes_between(old + 1, mci);
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(done);
            self.on_commit_advanced();
            return true;
        }
        false
    }

    fn on_commit_advanced(&mut self) {
        if self.role == Role::Leader && self.st.log.term(self.st.log.committed) == Some(self.term) {
            for (from, ctx) in std::mem::take(&mut self.reads_before_commit) {
                self.leader_read(from, ctx);
            }
            // A leader removed from the configuration steps down once the removal commits.
            if !self.conf().is_voter(self.id) && self.pending_conf_index() <= self.st.log.committed
            {
                self.become_follower(self.term, 0);
            }
        }
    }

    fn leader_read(&mut self, from: NodeId, ctx: u64) {
        if self.st.log.term(self.st.log.committed) != Some(self.term) {
            // Not yet sure what is committed: wait for our first entry to commit.
            self.reads_before_commit.push((from, ctx));
            return;
        }
        let index = self.st.log.committed;
        if self.cfg.unsafe_leader_reads || self.conf().quorum() <= usize::from(self.promotable()) {
            self.respond_read(from, ctx, index);
            return;
        }
        let seq = self.reads.start(self.id, from, ctx, index);
        self.bcast_heartbeat(seq);
    }

    fn respond_read(&mut self, from: NodeId, ctx: u64, index: u64) {
        if from == self.id {
            self.st.read_states.push(ReadState { ctx, index });
        } else {
            self.send(from, RaftBody::ReadIndexResp { ctx, index });
        }
    }

    fn read_acked(&mut self, from: NodeId, seq: u64) {
        for (from, ctx, index) in self.reads.ack(from, seq, self.st.confs.current()) {
            self.respond_read(from, ctx, index);
        }
    }

    // ---- step -----------------------------------------------------------------------------

    fn step_leader(&mut self, m: RaftMessage) {
        match m.body {
            RaftBody::AppendResp {
                reject,
                index,
                hint,
            } => {
                let last = self.st.log.last_index();
                let Some(pr) = self.prs.get_mut(&m.from) else {
                    return;
                };
                pr.recent_active = true;
                if reject {
                    if pr.reject(index, hint) {
                        self.send_all_pending(m.from, true);
                    }
                    return;
                }
                if pr.ack(index) {
                    match pr.state {
                        ProgressState::Probe => pr.become_replicate(),
                        ProgressState::Snapshot(pending) if pr.matched >= pending => {
                            pr.become_probe();
                            pr.become_replicate();
                        }
                        _ => {}
                    }
                    let caught_up = pr.matched == last;
                    if self.maybe_commit() {
                        self.bcast_append();
                    }
                    if self.transferee == m.from && caught_up {
                        self.send(m.from, RaftBody::TimeoutNow);
                    }
                }
                if self.role == Role::Leader && self.prs.contains_key(&m.from) {
                    self.send_all_pending(m.from, false);
                }
            }
            RaftBody::HeartbeatResp { ctx } => {
                let last = self.st.log.last_index();
                let (inflight_max, bytes_max) =
                    (self.cfg.inflight_msgs_max, self.cfg.inflight_bytes_max);
                if let Some(pr) = self.prs.get_mut(&m.from) {
                    pr.recent_active = true;
                    pr.probe_sent = false;
                    pr.free_first_if_full(inflight_max, bytes_max);
                    if pr.matched < last {
                        self.send_all_pending(m.from, true);
                    }
                }
                self.read_acked(m.from, ctx);
            }
            RaftBody::ReadIndex { ctx } => self.leader_read(m.from, ctx),
            RaftBody::Forward { batch } => {
                // Dropped when a transfer is under way or the window is full, as the
                // leader's own proposals would be refused; the sender learns from the log.
                for data in batch {
                    if self.transferee != 0
                        || self.uncommitted_bytes + data.len() > self.cfg.uncommitted_bytes_max
                    {
                        break;
                    }
                    self.append_local(EntryKind::Normal, data);
                }
            }
            _ => {}
        }
    }

    fn step_candidate(&mut self, m: RaftMessage) {
        match m.body {
            RaftBody::Append { .. } | RaftBody::Heartbeat { .. } | RaftBody::Snapshot { .. } => {
                self.become_follower(m.term, m.from);
                self.step_follower(m);
            }
            RaftBody::PreVoteResp { reject } if self.role == Role::PreCandidate => {
                self.votes.insert(m.from, !reject);
                self.tally();
            }
            RaftBody::VoteResp { reject } if self.role == Role::Candidate => {
                self.votes.insert(m.from, !reject);
                self.tally();
            }
            _ => {}
        }
    }

    fn step_follower(&mut self, m: RaftMessage) {
        match m.body {
            RaftBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.handle_append(m.from, prev_index, prev_term, &entries, commit);
            }
            RaftBody::Heartbeat { commit, ctx } => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.st.log.commit_to(commit);
                self.send(m.from, RaftBody::HeartbeatResp { ctx });
            }
            RaftBody::Snapshot { meta, data } => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.handle_snapshot(m.from, meta, data);
            }
            RaftBody::TimeoutNow if self.promotable() => self.campaign(Campaign::Transfer),
            RaftBody::ReadIndexResp { ctx, index } => {
                self.st.read_states.push(ReadState { ctx, index });
            }
            _ => {}
        }
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev: u64,
        prev_term: u64,
        entries: &[Entry],
        commit: u64,
    ) {
        if prev < self.st.log.committed {
            self.ack_append(from, self.st.log.committed);
            return;
        }
        if !self.st.log.match_term(prev, prev_term) {
            let hint = self.find_conflict_by_term(prev.min(self.st.log.last_index()), prev_term);
            self.send_after_persist(
                from,
                RaftBody::AppendResp {
                    reject: true,
                    index: prev,
                    hint,
                },
            );
            return;
        }
        let dense = entries
            .iter()
            .enumerate()
            .all(|(k, e)| e.index == prev + 1 + k as u64);
        if !dense {
            tracing::warn!(from, "raft: append with non-consecutive entries dropped");
            return;
        }
        let old_last = self.st.log.last_index();
        let conflict = self.st.log.append_after(entries);
        let from_index = match conflict {
            Some(c) => {
                self.after_truncation(c);
                c
            }
            None => old_last + 1,
        };
        for e in entries.iter().filter(|e| e.index >= from_index) {
            self.note_conf_entry(e);
        }
        let last_new = prev + entries.len() as u64;
        self.st.log.commit_to(commit.min(last_new));
        self.ack_append(from, last_new);
    }

    /// Acknowledges the log through `index`, once what was handed out is durable.
    fn ack_append(&mut self, to: NodeId, index: u64) {
        self.send_after_persist(
            to,
            RaftBody::AppendResp {
                reject: false,
                index,
                hint: 0,
            },
        );
    }

    fn find_conflict_by_term(&self, mut i: u64, term: u64) -> u64 {
        loop {
            match self.st.log.term(i) {
                Some(t) if t > term && i > 0 => i -= 1,
                _ => return i,
            }
        }
    }

    fn handle_snapshot(&mut self, from: NodeId, meta: SnapshotMeta, data: Vec<u8>) {
        if meta.index <= self.st.log.committed {
            self.ack_append(from, self.st.log.committed);
            return;
        }
        if self.st.log.match_term(meta.index, meta.term) {
            self.st.log.commit_to(meta.index);
            self.ack_append(from, meta.index);
            return;
        }
        self.st.log.reset_to_snapshot(meta.index, meta.term);
        self.st.confs.reset(&meta);
        self.refresh_role();
        self.st.snapshot = meta.clone();
        let index = meta.index;
        self.st.install = Some((meta, data));
        self.send_after_persist(
            from,
            RaftBody::AppendResp {
                reject: false,
                index,
                hint: 0,
            },
        );
    }
}

impl Protocol for Raft {
    type Message = RaftMessage;

    fn id(&self) -> NodeId {
        self.id
    }

    fn tick(&mut self) {
        if self.role == Role::Leader {
            self.heartbeat_elapsed += 1;
            self.election_elapsed += 1;
            if self.election_elapsed >= self.cfg.election_tick {
                self.election_elapsed = 0;
                if self.cfg.check_quorum {
                    let conf = self.conf().clone();
                    let active = conf
                        .voters
                        .iter()
                        .filter(|v| {
                            **v == self.id || self.prs.get(v).is_some_and(|p| p.recent_active)
                        })
                        .count();
                    if active < conf.quorum() {
                        self.become_follower(self.term, 0);
                        return;
                    }
                    for pr in self.prs.values_mut() {
                        pr.recent_active = false;
                    }
                }
                self.transferee = 0;
                let stuck: Vec<NodeId> = self
                    .prs
                    .iter_mut()
                    .filter_map(|(id, pr)| {
                        if let ProgressState::Snapshot(_) = pr.state {
                            pr.snapshot_ticks += 1;
                            if pr.snapshot_ticks >= 2 {
                                pr.become_probe();
                                return Some(*id);
                            }
                        }
                        None
                    })
                    .collect();
                for id in stuck {
                    self.send_all_pending(id, true);
                }
            }
            if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
                self.heartbeat_elapsed = 0;
                self.bcast_heartbeat(0);
            }
            return;
        }
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_timeout {
            self.election_elapsed = 0;
            self.campaign(if self.cfg.pre_vote {
                Campaign::Pre
            } else {
                Campaign::Election
            });
        }
    }

    fn step(&mut self, m: RaftMessage) {
        if m.to != self.id || m.from == self.id {
            return;
        }
        if m.term > self.term {
            if let RaftBody::PreVote { .. } | RaftBody::Vote { .. } = m.body {
                let transfer = matches!(m.body, RaftBody::Vote { transfer: true, .. });
                let in_lease = self.cfg.check_quorum
                    && self.leader != 0
                    && self.election_elapsed < self.cfg.election_tick;
                if in_lease && !transfer {
                    return;
                }
            }
            match m.body {
                RaftBody::PreVote { .. } | RaftBody::PreVoteResp { reject: false } => {}
                _ => {
                    let leader = match m.body {
                        RaftBody::Append { .. }
                        | RaftBody::Heartbeat { .. }
                        | RaftBody::Snapshot { .. } => m.from,
                        _ => 0,
                    };
                    self.become_follower(m.term, leader);
                }
            }
        } else if m.term < self.term {
            match m.body {
                RaftBody::Append { .. } | RaftBody::Heartbeat { .. }
                    if self.cfg.check_quorum || self.cfg.pre_vote =>
                {
                    // Tell a deposed leader about the newer term.
                    self.send(
                        m.from,
                        RaftBody::AppendResp {
                            reject: true,
                            index: 0,
                            hint: 0,
                        },
                    );
                }
                RaftBody::PreVote { .. } => {
                    self.send(m.from, RaftBody::PreVoteResp { reject: true })
                }
                _ => {}
            }
            return;
        }
        match m.body {
            RaftBody::PreVote {
                last_index,
                last_term,
            }
            | RaftBody::Vote {
                last_index,
                last_term,
                ..
            } => {
                let pre = matches!(m.body, RaftBody::PreVote { .. });
                let can_vote = self.vote == m.from
                    || (self.vote == 0 && self.leader == 0)
                    || (pre && m.term > self.term);
                let grant = can_vote && self.st.log.is_up_to_date(last_index, last_term);
                if pre {
                    let reply = RaftMessage {
                        from: self.id,
                        to: m.from,
                        term: if grant { m.term } else { self.term },
                        body: RaftBody::PreVoteResp { reject: !grant },
                    };
                    self.st.msgs.push(reply);
                } else {
                    if grant {
                        self.election_elapsed = 0;
                        self.vote = m.from;
                    }
                    self.send_after_persist(m.from, RaftBody::VoteResp { reject: !grant });
                }
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::PreCandidate | Role::Candidate => self.step_candidate(m),
                Role::Follower | Role::Learner => self.step_follower(m),
            },
        }
    }

    fn propose(&mut self, data: Vec<u8>) -> Result<u64, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transferee != 0 {
            return Err(ProposeError::Transferring);
        }
        if self.uncommitted_bytes + data.len() > self.cfg.uncommitted_bytes_max {
            return Err(ProposeError::Overloaded);
        }
        Ok(self.append_local(EntryKind::Normal, data))
    }

    fn forward_target(&self) -> Option<NodeId> {
        (self.role != Role::Leader && self.leader != 0).then_some(self.leader)
    }

    fn forward(&mut self, batch: Vec<Vec<u8>>) -> Result<u64, ProposeError> {
        if self.forward_target().is_none() {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        let leader = self.leader;
        self.send(leader, RaftBody::Forward { batch });
        Ok(self.term)
    }

    fn propose_conf_change(&mut self, change: ConfChange) -> Result<u64, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transferee != 0 {
            return Err(ProposeError::Transferring);
        }
        // One change at a time: the previous one must be committed (thesis 4.1), and so must
        // an entry of this term (so the previous configuration is settled).
        if self.pending_conf_index() > self.st.log.committed
            || self.st.log.term(self.st.log.committed) != Some(self.term)
        {
            return Err(ProposeError::ConfChangePending);
        }
        self.conf()
            .apply(change)
            .map_err(ProposeError::InvalidConfChange)?;
        Ok(self.append_local(EntryKind::ConfChange, change.encode()))
    }

    fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        match self.role {
            Role::Leader => {
                self.leader_read(self.id, ctx);
                Ok(())
            }
            _ if self.leader != 0 => {
                let leader = self.leader;
                self.send(leader, RaftBody::ReadIndex { ctx });
                Ok(())
            }
            _ => Err(ProposeError::NotLeader { leader: 0 }),
        }
    }

    fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.id {
            return Ok(());
        }
        if !self.conf().is_voter(to) {
            return Err(ProposeError::InvalidConfChange(format!(
                "{to} is not a voter"
            )));
        }
        self.transferee = to;
        self.election_elapsed = 0;
        if self
            .prs
            .get(&to)
            .is_some_and(|p| p.matched == self.st.log.last_index())
        {
            self.send(to, RaftBody::TimeoutNow);
        } else {
            self.send_all_pending(to, true);
        }
        Ok(())
    }

    fn persisted(&mut self, index: u64, term: u64) {
        self.st.persisted(index, term);
        if self.role == Role::Leader {
            if self.maybe_commit() {
                self.bcast_append();
            }
        } else if self.role == Role::Candidate {
            self.tally();
        }
    }

    fn applied(&mut self, index: u64) {
        self.st.applied(index);
    }

    fn compact(&mut self, snapshot: SnapshotMeta) {
        self.st.compact(snapshot);
    }

    fn snapshot_meta(&self, index: u64) -> Option<SnapshotMeta> {
        self.st.snapshot_meta(index)
    }

    fn has_ready(&self) -> bool {
        self.st.has_ready(self.hard_state()) || (self.bcast_pending && self.role == Role::Leader)
    }

    fn ready(&mut self) -> Ready<RaftMessage> {
        if self.bcast_pending && self.role == Role::Leader {
            self.bcast_pending = false;
            self.bcast_append();
        }
        let hs = self.hard_state();
        self.st.ready(hs)
    }

    fn status(&self) -> Status {
        let matched = if self.role == Role::Leader {
            self.prs
                .iter()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, p)| (*id, p.matched))
                .collect()
        } else {
            BTreeMap::new()
        };
        self.st
            .status(self.id, (self.role, self.term, self.leader), matched)
    }

    fn log_entries(&self, lo: u64) -> Vec<Entry> {
        self.st.log_entries(lo)
    }
}
