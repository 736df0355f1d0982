//! ZAB (ZooKeeper Atomic Broadcast) as a pure state machine behind the same [`Protocol`] trait
//! as Raft: fast leader election (votes ordered by epoch, last zxid, id; notification rounds; a
//! finalize wait), discovery (FOLLOWERINFO, NEWEPOCH, ACKEPOCH: a quorum accepts a new epoch
//! exactly once), synchronization (DIFF, TRUNC or SNAP, then NEWLEADER acknowledged by a quorum
//! before the leader serves), and broadcast (PROPOSAL, ACK after the follower's fsync, COMMIT,
//! pipelined, in zxid order), with pings, observers (learners), read barriers and snapshots.
//!
//! A zxid is (epoch, counter); entries are keyed (epoch, index) with a dense global index, which
//! orders exactly as zxids do. Hard state: `term` is acceptedEpoch, `current_epoch` is
//! currentEpoch. ZAB assumes FIFO channels; a follower that sees a gap in the proposals (a lost
//! message) re-registers with its leader and is synchronized again, as a ZooKeeper learner does
//! after reconnecting.

mod election;
mod follower;
mod message;

use std::collections::BTreeMap;

pub use message::{History, PeerState, Vote, ZabBody, ZabMessage};

use crate::protocol::{Protocol, Ready, Restored};
use crate::reads::ReadBarrier;
use crate::steady::Steady;
use crate::types::{
    Conf, ConfChange, Entry, EntryKind, HardState, NodeId, ProposeError, ReadState, Role,
    SnapshotMeta, Status,
};

/// ZAB's knobs.
#[derive(Debug, Clone)]
pub struct ZabConfig {
    /// Ticks of leader silence before a follower looks for a new leader; also how long a
    /// leader waits for a quorum to answer pings, and for discovery to finish.
    pub election_tick: u32,
    /// Ticks a decided vote waits for a better one before it is final (ZooKeeper's
    /// finalizeWait).
    pub finalize_ticks: u32,
    /// Most bytes of proposals not yet committed.
    pub uncommitted_bytes_max: usize,
    /// Seed (reserved for randomized waits).
    pub seed: u64,
    /// BROKEN ON PURPOSE, for checker tests only: the leader answers reads without a quorum
    /// round, and never steps down for want of a quorum.
    pub unsafe_leader_reads: bool,
}

impl Default for ZabConfig {
    fn default() -> Self {
        ZabConfig {
            election_tick: 10,
            finalize_ticks: 2,
            uncommitted_bytes_max: 64 << 20,
            seed: 0,
            unsafe_leader_reads: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Looking,
    FollowDiscovery,
    FollowSync,
    FollowBroadcast,
    LeadDiscovery,
    LeadEpochAck,
    LeadSync,
    LeadBroadcast,
}

#[derive(Debug, Default, Clone)]
struct Peer {
    history: Option<History>,
    epoch_acked: bool,
    sync_sent: bool,
    synced: bool,
    matched: u64,
    next: u64,
    heard: bool,
    /// Ticks since `matched` last moved while entries were outstanding, or since a SYNC
    /// went unacknowledged.
    stalled: u32,
}

/// One ZAB node.
#[derive(Debug)]
pub struct Zab {
    id: NodeId,
    cfg: ZabConfig,
    accepted_epoch: u64,
    current_epoch: u64,
    phase: Phase,
    leader: NodeId,
    round: u64,
    vote: Vote,
    votes: BTreeMap<NodeId, Vote>,
    finalize: Option<u32>,
    elapsed: u32,
    /// Ticks in the current follower handshake step, whatever the leader sends meanwhile.
    handshake_ticks: u32,
    peers: BTreeMap<NodeId, Peer>,
    initial_last: u64,
    /// Follower: the log is a prefix of the leader's (a SYNC of this epoch was applied), so
    /// proposals may extend it and commits may apply to it.
    synced: bool,
    commit_sent: u64,
    bcast_pending: bool,
    reads: ReadBarrier,
    /// The log, its configurations and what the next Ready hands out.
    st: Steady<ZabMessage>,
    reads_waiting: Vec<(NodeId, u64)>,
    uncommitted_bytes: usize,
}

impl Zab {
    /// A node with id `id`; see [`crate::raft::Raft::new`] for `initial` and `restored`.
    pub fn new(id: NodeId, cfg: ZabConfig, initial: Conf, restored: Restored) -> Zab {
        assert!(id != 0, "node id 0 means none");
        let base_conf = if restored.snapshot.conf.voters.is_empty() {
            initial
        } else {
            restored.snapshot.conf.clone()
        };
        let hs = restored.hard_state;
        let mut z = Zab {
            id,
            cfg,
            accepted_epoch: hs.term,
            current_epoch: hs.current_epoch,
            phase: Phase::Looking,
            leader: 0,
            round: 0,
            vote: Vote::default(),
            votes: BTreeMap::new(),
            finalize: None,
            elapsed: 0,
            handshake_ticks: 0,
            peers: BTreeMap::new(),
            initial_last: 0,
            synced: false,
            commit_sent: 0,
            bcast_pending: false,
            reads: ReadBarrier::default(),
            st: Steady::restore(restored, base_conf),
            reads_waiting: Vec::new(),
            uncommitted_bytes: 0,
        };
        for i in z.st.log.first_index()..=z.st.log.last_index() {
            let e = z.st.log.entry(i).expect("in range").clone();
            z.note_conf_entry(&e);
        }
        z.start_looking();
        z
    }

    fn conf(&self) -> &Conf {
        self.st.confs.current()
    }

    fn is_voter(&self) -> bool {
        self.conf().is_voter(self.id)
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.accepted_epoch,
            vote: 0,
            current_epoch: self.current_epoch,
        }
    }

    fn own_vote(&self) -> Vote {
        Vote {
            epoch: self.current_epoch,
            last_term: self.st.log.last_term(),
            last_index: self.st.log.last_index(),
            leader: self.id,
        }
    }

    fn msg(&self, to: NodeId, body: ZabBody) -> ZabMessage {
        ZabMessage {
            from: self.id,
            to,
            epoch: self.accepted_epoch,
            body,
        }
    }

    fn send(&mut self, to: NodeId, body: ZabBody) {
        let m = self.msg(to, body);
        self.st.msgs.push(m);
    }

    fn send_after_persist(&mut self, to: NodeId, body: ZabBody) {
        let m = self.msg(to, body);
        self.st.msgs_after.push(m);
    }

    fn history(&self) -> History {
        let mut boundaries: Vec<(u64, u64)> = Vec::new();
        for i in self.st.log.first_index()..=self.st.log.last_index() {
            let t = self.st.log.term(i).expect("in range");
            match boundaries.last_mut() {
                Some((bt, bi)) if *bt == t => *bi = i,
                _ => boundaries.push((t, i)),
            }
        }
        let keep = boundaries
            .len()
            .saturating_sub(crate::codec::MEMBERS_MAX * 64);
        History {
            accepted_epoch: self.accepted_epoch,
            current_epoch: self.current_epoch,
            last_index: self.st.log.last_index(),
            last_term: self.st.log.last_term(),
            snapshot_index: self.st.log.snapshot_point().0,
            boundaries: boundaries.split_off(keep),
        }
    }

    // ---- membership (shared shape with Raft: changes take effect when appended) ----------

    fn note_conf_entry(&mut self, e: &Entry) {
        self.st.confs.note_entry(e);
    }

    fn after_truncation(&mut self, from: u64) {
        self.st.confs.truncate_from(from);
    }

    fn pending_conf_index(&self) -> u64 {
        self.st.confs.pending_index()
    }

    // ---- leader: discovery, synchronization, establishment --------------------------------

    fn lead(&mut self) {
        self.phase = Phase::LeadDiscovery;
        self.leader = self.id;
        self.elapsed = 0;
        self.peers.clear();
        self.maybe_choose_epoch();
    }

    fn voters_with<F: Fn(&Peer) -> bool>(&self, own: bool, f: F) -> usize {
        let conf = self.conf();
        conf.voters
            .iter()
            .filter(|v| {
                if **v == self.id {
                    own
                } else {
                    self.peers.get(v).is_some_and(&f)
                }
            })
            .count()
    }

    fn maybe_choose_epoch(&mut self) {
        if self.phase != Phase::LeadDiscovery
            || self.voters_with(true, |p| p.history.is_some()) < self.conf().quorum()
        {
            return;
        }
        let max = self
            .peers
            .values()
            .filter_map(|p| p.history.as_ref().map(|h| h.accepted_epoch))
            .chain(std::iter::once(self.accepted_epoch))
            .max()
            .unwrap_or(0);
        self.accepted_epoch = max + 1;
        self.phase = Phase::LeadEpochAck;
        self.elapsed = 0;
        let ids: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.history.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.send(id, ZabBody::NewEpoch);
        }
        self.maybe_start_sync();
    }

    fn own_epoch_durable(&self) -> bool {
        self.st.hs_durable.term == self.accepted_epoch
    }

    fn maybe_start_sync(&mut self) {
        if self.phase != Phase::LeadEpochAck
            || !self.own_epoch_durable()
            || self.voters_with(true, |p| p.epoch_acked) < self.conf().quorum()
        {
            return;
        }
        self.phase = Phase::LeadSync;
        self.elapsed = 0;
        self.current_epoch = self.accepted_epoch;
        self.initial_last = self.st.log.last_index();
        let ids: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.epoch_acked)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.send_sync(id);
        }
        self.maybe_establish();
    }

    /// The largest index where `h`'s log and ours agree.
    fn common_prefix(&self, h: &History) -> u64 {
        for &(t, last) in h.boundaries.iter().rev() {
            // Our entries of epoch t form one run; find its end within `last`. The snapshot
            // point counts: its (index, epoch) is known.
            let (mut lo, mut hi) = (
                self.st.log.snapshot_point().0.max(1),
                self.st.log.last_index().min(last),
            );
            if lo > hi {
                continue;
            }
            // Largest i in [lo, hi] with term(i) <= t.
            if self.st.log.term(lo).is_none_or(|x| x > t) {
                continue;
            }
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if self.st.log.term(mid).is_some_and(|x| x <= t) {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            if self.st.log.term(lo) == Some(t) {
                return lo;
            }
        }
        h.snapshot_index.min(self.st.log.last_index())
    }

    fn send_sync(&mut self, to: NodeId) {
        let Some(h) = self.peers.get(&to).and_then(|p| p.history.clone()) else {
            return;
        };
        let common = self.common_prefix(&h);
        let (snap_index, _) = self.st.log.snapshot_point();
        let last = self.st.log.last_index();
        let body = if common < snap_index {
            // SNAP: the follower needs entries we compacted.
            let meta = self.st.snapshot.clone();
            let entries = self.st.log.slice(meta.index + 1, last, usize::MAX);
            ZabBody::Sync {
                truncate_from: Some(meta.index + 1),
                snapshot: Some((meta, Vec::new())),
                entries,
            }
        } else {
            let truncate_from = (h.last_index > common).then_some(common + 1);
            let entries = self.st.log.slice(common + 1, last, usize::MAX);
            ZabBody::Sync {
                truncate_from,
                snapshot: None,
                entries,
            }
        };
        if let Some(p) = self.peers.get_mut(&to) {
            p.sync_sent = true;
            p.synced = false;
            p.next = last + 1;
        }
        self.send(to, body);
    }

    fn own_sync_durable(&self) -> bool {
        self.st.hs_durable.current_epoch == self.accepted_epoch
            && self.st.log.persisted >= self.initial_last
    }

    fn maybe_establish(&mut self) {
        if self.phase != Phase::LeadSync
            || !self.own_sync_durable()
            || self.voters_with(true, |p| p.synced) < self.conf().quorum()
        {
            return;
        }
        self.phase = Phase::LeadBroadcast;
        self.elapsed = 0;
        // The initial history is accepted by a quorum in this epoch: it is committed.
        self.st.log.commit_to(self.initial_last);
        let ids: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.synced)
            .map(|(id, _)| *id)
            .collect();
        let commit = self.st.log.committed;
        for id in ids {
            self.send(id, ZabBody::UpToDate { commit });
        }
        self.commit_sent = commit;
        for (from, ctx) in std::mem::take(&mut self.reads_waiting) {
            self.leader_read(from, ctx);
        }
        // An entry of the new epoch, at once (as a Raft leader's empty entry): a member that
        // applies it knows that anything of an earlier epoch not yet applied, a request it
        // handed to the old leader, say, never will be.
        self.append_local(EntryKind::Noop, Vec::new());
    }

    fn is_established(&self) -> bool {
        self.phase == Phase::LeadBroadcast
    }

    fn maybe_commit(&mut self) {
        if !self.is_established() {
            return;
        }
        let durable_of = |v: NodeId| {
            if v == self.id {
                self.st.log.persisted
            } else {
                self.peers
                    .get(&v)
                    .filter(|p| p.synced)
                    .map_or(0, |p| p.matched)
            }
        };
        let mci = self.st.confs.current().quorum_index(durable_of);
        if mci > self.st.log.committed {
            self.st.assert_quorum_durable(mci, durable_of);
            let old = self.st.log.committed;
            self.st.log.commit_to(mci);
            let done = self.st.log.bytes_between(old + 1, mci);
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(done);
            if !self.conf().is_voter(self.id) && self.pending_conf_index() <= self.st.log.committed
            {
                // Removed from the ensemble: stop leading once that is committed.
                self.start_looking();
                return;
            }
            self.bcast_pending = true;
        }
    }

    fn leader_read(&mut self, from: NodeId, ctx: u64) {
        if !self.is_established() {
            self.reads_waiting.push((from, ctx));
            return;
        }
        let index = self.st.log.committed;
        if self.cfg.unsafe_leader_reads || self.conf().quorum() <= usize::from(self.is_voter()) {
            self.respond_read(from, ctx, index);
            return;
        }
        let seq = self.reads.start(self.id, from, ctx, index);
        self.ping_all(seq);
    }

    fn respond_read(&mut self, from: NodeId, ctx: u64, index: u64) {
        if from == self.id {
            self.st.read_states.push(ReadState { ctx, index });
        } else {
            self.send(from, ZabBody::ReadIndexResp { ctx, index });
        }
    }

    fn read_acked(&mut self, from: NodeId, seq: u64) {
        for (from, ctx, index) in self.reads.ack(from, seq, self.st.confs.current()) {
            self.respond_read(from, ctx, index);
        }
    }

    fn ping_all(&mut self, ctx: u64) {
        let targets: Vec<(NodeId, u64)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.sync_sent)
            .map(|(id, p)| (*id, p.matched))
            .collect();
        for (id, matched) in targets {
            let commit = matched.min(self.st.log.committed);
            self.send(id, ZabBody::Ping { commit, ctx });
        }
    }

    fn send_proposals(&mut self) {
        let last = self.st.log.last_index();
        let commit = self.st.log.committed;
        let targets: Vec<(NodeId, u64)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.sync_sent && p.next <= last)
            .map(|(id, p)| (*id, p.next))
            .collect();
        for (id, next) in targets {
            let entries = self.st.log.slice(next, last, usize::MAX);
            self.send(id, ZabBody::Proposal { entries, commit });
            if let Some(p) = self.peers.get_mut(&id) {
                p.next = last + 1;
            }
        }
        if commit > self.commit_sent {
            self.commit_sent = commit;
            let ids: Vec<NodeId> = self
                .peers
                .iter()
                .filter(|(_, p)| p.sync_sent)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                self.send(id, ZabBody::Commit { index: commit });
            }
        }
    }

    fn step_leader(&mut self, m: ZabMessage) {
        let from = m.from;
        if !self.conf().members().any(|x| x == from) {
            return;
        }
        match m.body {
            ZabBody::FollowerInfo(h) => {
                // A follower (re-)registering needs synchronizing again; an epoch it already
                // acknowledged to us stays acknowledged.
                let p = self.peers.entry(from).or_default();
                p.history = Some(h);
                p.heard = true;
                p.sync_sent = false;
                p.synced = false;
                p.matched = 0;
                if self.phase == Phase::LeadDiscovery {
                    self.maybe_choose_epoch();
                } else {
                    self.send(from, ZabBody::NewEpoch);
                }
            }
            ZabBody::AckEpoch { fresh, history } if m.epoch == self.accepted_epoch => {
                let mine = (
                    self.current_epoch,
                    self.st.log.last_term(),
                    self.st.log.last_index(),
                );
                let theirs = (history.current_epoch, history.last_term, history.last_index);
                if theirs > mine && self.phase != Phase::LeadBroadcast {
                    // A follower has a more recent history: this node must not lead.
                    self.start_looking();
                    return;
                }
                let established = matches!(self.phase, Phase::LeadSync | Phase::LeadBroadcast);
                let p = self.peers.entry(from).or_default();
                p.history = Some(history);
                p.heard = true;
                if fresh || established {
                    p.epoch_acked = true;
                }
                if established {
                    self.send_sync(from);
                } else {
                    self.maybe_start_sync();
                }
            }
            ZabBody::AckNewLeader { last_index } if m.epoch == self.accepted_epoch => {
                let Some(p) = self.peers.get_mut(&from) else {
                    return;
                };
                if !p.sync_sent {
                    return;
                }
                p.synced = true;
                p.heard = true;
                p.matched = p.matched.max(last_index);
                if self.phase == Phase::LeadBroadcast {
                    let commit = self.st.log.committed;
                    self.send(from, ZabBody::UpToDate { commit });
                    self.maybe_commit();
                } else {
                    self.maybe_establish();
                }
            }
            ZabBody::Ack { index } if m.epoch == self.accepted_epoch => {
                if let Some(p) = self.peers.get_mut(&from).filter(|p| p.synced) {
                    p.heard = true;
                    let index = index.min(self.st.log.last_index());
                    if index > p.matched {
                        p.matched = index;
                        p.stalled = 0;
                    }
                }
                self.maybe_commit();
            }
            ZabBody::PingResp { ctx } if m.epoch == self.accepted_epoch => {
                if let Some(p) = self.peers.get_mut(&from) {
                    p.heard = true;
                }
                self.read_acked(from, ctx);
            }
            ZabBody::ReadIndex { ctx } => self.leader_read(from, ctx),
            ZabBody::Request { batch }
                if m.epoch == self.accepted_epoch && self.is_established() =>
            {
                // Dropped once the window is full, as the leader's own proposals would be
                // refused; the sender learns from the log.
                for data in batch {
                    if self.uncommitted_bytes + data.len() > self.cfg.uncommitted_bytes_max {
                        break;
                    }
                    self.append_local(EntryKind::Normal, data);
                }
            }
            _ => {}
        }
    }
}

impl Protocol for Zab {
    type Message = ZabMessage;

    fn id(&self) -> NodeId {
        self.id
    }

    fn tick(&mut self) {
        self.elapsed += 1;
        let timeout = self.cfg.election_tick;
        match self.phase {
            Phase::Looking => {
                // A lone voter is its own quorum: no notification will arrive to finalize on.
                if self.finalize.is_none() && self.is_voter() {
                    let agree = self
                        .votes
                        .values()
                        .filter(|x| **x == self.vote)
                        .count()
                        .max(1);
                    if agree >= self.conf().quorum() {
                        self.finalize = Some(self.cfg.finalize_ticks);
                    }
                }
                if let Some(f) = self.finalize.as_mut() {
                    *f = f.saturating_sub(1);
                    if *f == 0 {
                        self.decide();
                        return;
                    }
                }
                if self.elapsed % (timeout / 2).max(1) == 0 {
                    self.broadcast_notification();
                }
                if self.elapsed >= 4 * timeout {
                    self.start_looking();
                }
            }
            Phase::FollowDiscovery | Phase::FollowSync | Phase::FollowBroadcast => {
                if self.elapsed >= timeout {
                    self.start_looking();
                    return;
                }
                if self.phase == Phase::FollowBroadcast {
                    self.handshake_ticks = 0;
                    return;
                }
                // A handshake message or its answer may have been lost: register again.
                self.handshake_ticks += 1;
                if self.handshake_ticks >= timeout {
                    self.handshake_ticks = 0;
                    self.phase = Phase::FollowDiscovery;
                    self.synced = false;
                    let h = self.history();
                    let leader = self.leader;
                    self.send(leader, ZabBody::FollowerInfo(h));
                }
            }
            Phase::LeadDiscovery | Phase::LeadEpochAck | Phase::LeadSync => {
                // ZooKeeper's initLimit: discovery and synchronization get several election
                // timeouts before the attempt is abandoned.
                if self.elapsed >= 5 * timeout {
                    self.start_looking();
                    return;
                }
                self.ping_all(0);
            }
            Phase::LeadBroadcast => {
                self.ping_all(0);
                // Channels may lose messages: resend what a follower has not acknowledged
                // for a few ticks (a TCP-level retransmission, in ZooKeeper's terms).
                let unacked: Vec<NodeId> = self
                    .peers
                    .iter_mut()
                    .filter(|(_, p)| p.sync_sent && !p.synced)
                    .filter_map(|(id, p)| {
                        p.stalled += 1;
                        (p.stalled >= timeout).then(|| {
                            p.stalled = 0;
                            *id
                        })
                    })
                    .collect();
                for id in unacked {
                    // SYNC or its acknowledgement was lost: synchronize again.
                    self.send_sync(id);
                }
                let last = self.st.log.last_index();
                for p in self.peers.values_mut().filter(|p| p.synced) {
                    if p.matched >= last {
                        p.stalled = 0;
                    } else {
                        p.stalled += 1;
                        if p.stalled >= 3 {
                            p.stalled = 0;
                            p.next = p.matched + 1;
                            self.bcast_pending = true;
                        }
                    }
                }
                if self.elapsed >= timeout {
                    self.elapsed = 0;
                    let heard = self.voters_with(true, |p| p.heard && p.synced);
                    // (The broken read path also keeps a deposed leader believing it leads.)
                    if heard < self.conf().quorum() && !self.cfg.unsafe_leader_reads {
                        self.start_looking();
                        return;
                    }
                    for p in self.peers.values_mut() {
                        p.heard = false;
                    }
                }
            }
        }
    }

    fn step(&mut self, m: ZabMessage) {
        if m.to != self.id || m.from == self.id {
            return;
        }
        if let ZabBody::Notification { round, state, vote } = m.body {
            self.on_notification(m.from, round, state, vote);
            return;
        }
        if m.epoch < self.accepted_epoch
            && self.leader != 0
            && matches!(
                m.body,
                ZabBody::Proposal { .. } | ZabBody::Commit { .. } | ZabBody::Ping { .. }
            )
        {
            // A leader of an epoch a quorum has left (one that was paused, say) goes on
            // broadcasting until it misses its quorum for a timeout; tell it who leads now,
            // so it steps down at once.
            let vote = Vote {
                leader: self.leader,
                epoch: self.accepted_epoch,
                ..self.own_vote()
            };
            let (round, state) = (self.round, self.peer_state());
            self.send(m.from, ZabBody::Notification { round, state, vote });
            return;
        }
        match self.phase {
            Phase::LeadDiscovery | Phase::LeadEpochAck | Phase::LeadSync | Phase::LeadBroadcast => {
                self.step_leader(m)
            }
            Phase::FollowDiscovery | Phase::FollowSync | Phase::FollowBroadcast => {
                self.step_follower(m)
            }
            Phase::Looking => {}
        }
    }

    fn propose(&mut self, data: Vec<u8>) -> Result<u64, ProposeError> {
        if !self.is_established() {
            return Err(ProposeError::NotLeader {
                leader: if self.phase == Phase::FollowBroadcast {
                    self.leader
                } else {
                    0
                },
            });
        }
        if self.uncommitted_bytes + data.len() > self.cfg.uncommitted_bytes_max {
            return Err(ProposeError::Overloaded);
        }
        Ok(self.append_local(EntryKind::Normal, data))
    }

    fn forward_target(&self) -> Option<NodeId> {
        (self.phase == Phase::FollowBroadcast).then_some(self.leader)
    }

    fn forward(&mut self, batch: Vec<Vec<u8>>) -> Result<u64, ProposeError> {
        if self.forward_target().is_none() {
            let leader = if self.is_established() { self.id } else { 0 };
            return Err(ProposeError::NotLeader { leader });
        }
        let leader = self.leader;
        self.send(leader, ZabBody::Request { batch });
        Ok(self.accepted_epoch)
    }

    fn propose_conf_change(&mut self, change: ConfChange) -> Result<u64, ProposeError> {
        if !self.is_established() {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.pending_conf_index() > self.st.log.committed {
            return Err(ProposeError::ConfChangePending);
        }
        self.conf()
            .apply(change)
            .map_err(ProposeError::InvalidConfChange)?;
        let index = self.append_local(EntryKind::ConfChange, change.encode());
        // New members register through discovery like any follower.
        Ok(index)
    }

    fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        match self.phase {
            Phase::LeadBroadcast | Phase::LeadSync | Phase::LeadEpochAck | Phase::LeadDiscovery => {
                self.leader_read(self.id, ctx);
                Ok(())
            }
            Phase::FollowBroadcast => {
                let leader = self.leader;
                self.send(leader, ZabBody::ReadIndex { ctx });
                Ok(())
            }
            _ => Err(ProposeError::NotLeader { leader: 0 }),
        }
    }

    fn transfer_leader(&mut self, _to: NodeId) -> Result<(), ProposeError> {
        Err(ProposeError::Unsupported(
            "leadership transfer on ZAB (ZooKeeper has none)",
        ))
    }

    fn persisted(&mut self, index: u64, term: u64) {
        self.st.persisted(index, term);
        match self.phase {
            Phase::LeadEpochAck => self.maybe_start_sync(),
            Phase::LeadSync => self.maybe_establish(),
            Phase::LeadBroadcast => self.maybe_commit(),
            _ => {}
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
        self.st.has_ready(self.hard_state()) || (self.bcast_pending && self.is_established())
    }

    fn ready(&mut self) -> Ready<ZabMessage> {
        if self.bcast_pending && self.is_established() {
            self.bcast_pending = false;
            self.send_proposals();
        }
        let hs = self.hard_state();
        self.st.ready(hs)
    }

    fn status(&self) -> Status {
        let role = match self.phase {
            Phase::LeadBroadcast => Role::Leader,
            Phase::Looking | Phase::LeadDiscovery | Phase::LeadEpochAck | Phase::LeadSync => {
                Role::Candidate
            }
            _ if self.conf().is_learner(self.id) => Role::Learner,
            _ => Role::Follower,
        };
        let leader = if matches!(self.phase, Phase::FollowBroadcast | Phase::LeadBroadcast) {
            self.leader
        } else {
            0
        };
        let matched = if role == Role::Leader {
            self.peers
                .iter()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, p)| (*id, p.matched))
                .collect()
        } else {
            BTreeMap::new()
        };
        self.st
            .status(self.id, (role, self.accepted_epoch, leader), matched)
    }

    fn log_entries(&self, lo: u64) -> Vec<Entry> {
        self.st.log_entries(lo)
    }
}

impl Zab {
    fn append_local(&mut self, kind: EntryKind, data: Vec<u8>) -> u64 {
        let e = Entry {
            term: self.accepted_epoch,
            index: self.st.log.last_index() + 1,
            kind,
            data,
        };
        self.uncommitted_bytes += e.size_bytes();
        self.note_conf_entry(&e);
        let index = e.index;
        self.st.log.push(e);
        self.bcast_pending = true;
        index
    }
}
