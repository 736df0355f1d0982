//! The steady-state bookkeeping Raft and ZAB share: the in-memory log, the configurations in
//! it, the last snapshot, and everything a [`Ready`] hands the driver (messages before and
//! after persistence, read states, a snapshot to install, the hard state in flight).
//!
//! It owns the persistence contract's accounting (see [`crate::protocol`]): which hard state
//! was handed out, which is in flight, which is durable. It never decides anything a protocol
//! decides: elections, commits and who is sent what stay in `raft/` and `zab/`.

use std::collections::BTreeMap;

use crate::confs::ConfHistory;
use crate::log::MemLog;
use crate::protocol::{Ready, Restored};
use crate::types::{Conf, Entry, HardState, NodeId, ReadState, Role, SnapshotMeta, Status};

/// One protocol's log and outputs between two [`Ready`]s.
#[derive(Debug)]
pub(crate) struct Steady<M> {
    pub(crate) log: MemLog,
    /// (index, configuration from that index on); the first is the snapshot's.
    pub(crate) confs: ConfHistory,
    pub(crate) snapshot: SnapshotMeta,
    /// Messages that may leave at once.
    pub(crate) msgs: Vec<M>,
    /// Messages that may leave only once everything handed out before is durable.
    pub(crate) msgs_after: Vec<M>,
    pub(crate) read_states: Vec<ReadState>,
    /// A snapshot received from the leader, to install.
    pub(crate) install: Option<(SnapshotMeta, Vec<u8>)>,
    /// Hard state last handed out.
    hs_handed: HardState,
    /// Hard state handed out with the writes not yet reported durable.
    hs_in_flight: Option<HardState>,
    /// Hard state known durable.
    pub(crate) hs_durable: HardState,
}

impl<M> Steady<M> {
    /// The state a node restarts with; `base_conf` is the membership before any in the log.
    pub(crate) fn restore(restored: Restored, base_conf: Conf) -> Steady<M> {
        let hs = restored.hard_state;
        Steady {
            confs: ConfHistory::new(restored.snapshot.index, base_conf),
            snapshot: restored.snapshot.clone(),
            log: MemLog::restore(&restored.snapshot, restored.entries, restored.applied),
            msgs: Vec::new(),
            msgs_after: Vec::new(),
            read_states: Vec::new(),
            install: None,
            hs_handed: hs,
            hs_in_flight: None,
            hs_durable: hs,
        }
    }

    /// The driver made everything handed out through (`index`, `term`) durable, with the hard
    /// state handed out alongside. Never moves the durable point back.
    pub(crate) fn persisted(&mut self, index: u64, term: u64) {
        let before = self.log.persisted;
        if let Some(hs) = self.hs_in_flight.take() {
            self.hs_durable = hs;
        }
        self.log.persisted_to(index, term);
        assert!(self.log.persisted >= before, "the durable point moved back");
    }

    /// The state machine applied through `index` (ignored beyond what was handed out).
    pub(crate) fn applied(&mut self, index: u64) {
        if index > self.log.applied && index <= self.log.applying {
            self.log.applied = index;
        }
    }

    /// Forgets the log through `snapshot` (applied, and of the term the log holds there).
    pub(crate) fn compact(&mut self, snapshot: SnapshotMeta) {
        if snapshot.index <= self.snapshot.index || snapshot.index > self.log.applied {
            return;
        }
        if self.log.term(snapshot.index) != Some(snapshot.term) {
            return;
        }
        self.log.compact(snapshot.index, snapshot.term);
        // Configurations before the snapshot collapse into its own.
        self.confs.compact(&snapshot);
        self.snapshot = snapshot;
    }

    /// The snapshot point a compaction at `index` would make.
    pub(crate) fn snapshot_meta(&self, index: u64) -> Option<SnapshotMeta> {
        self.confs.snapshot_meta(&self.log, index)
    }

    /// Whether a [`Ready`] has anything, given the protocol's hard state now.
    pub(crate) fn has_ready(&self, hs: HardState) -> bool {
        !self.msgs.is_empty()
            || !self.msgs_after.is_empty()
            || self.log.has_unstable()
            || hs != self.hs_handed
            || self.log.has_committed()
            || !self.read_states.is_empty()
            || self.install.is_some()
    }

    /// Hands out everything pending, given the protocol's hard state now. Hard state handed
    /// out with writes (or a snapshot) is durable once the next `persisted` arrives.
    pub(crate) fn ready(&mut self, hs: HardState) -> Ready<M> {
        let (truncate_from, entries) = self.log.take_unstable();
        let hard_state = (hs != self.hs_handed).then_some(hs);
        if hard_state.is_some() {
            self.hs_handed = hs;
        }
        let snapshot = self.install.take();
        if hard_state.is_some()
            || !entries.is_empty()
            || truncate_from.is_some()
            || snapshot.is_some()
        {
            self.hs_in_flight = Some(hs);
        }
        let mut committed = self.log.take_committed(usize::MAX);
        committed.retain(|e| e.index > 0);
        Ready {
            messages: std::mem::take(&mut self.msgs),
            snapshot,
            truncate_from,
            entries,
            hard_state,
            messages_after_persist: std::mem::take(&mut self.msgs_after),
            committed,
            read_states: std::mem::take(&mut self.read_states),
        }
    }

    /// The log from `lo` on.
    pub(crate) fn log_entries(&self, lo: u64) -> Vec<Entry> {
        self.log.slice(lo, self.log.last_index(), usize::MAX)
    }

    /// The node's [`Status`]: the protocol's role, term and leader, the log's figures, and
    /// (on a leader) what each peer has matched.
    pub(crate) fn status(
        &self,
        id: NodeId,
        (role, term, leader): (Role, u64, NodeId),
        matched: BTreeMap<NodeId, u64>,
    ) -> Status {
        Status {
            id,
            role,
            term,
            leader,
            commit: self.log.committed,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            persisted: self.log.persisted,
            conf: self.confs.current().clone(),
            matched,
        }
    }

    /// Asserts that a quorum of the voters in effect made `index` durable, given each
    /// voter's durable index (a leader's own is its `persisted`, never what it merely sent):
    /// nothing commits beyond what a quorum holds.
    pub(crate) fn assert_quorum_durable(&self, index: u64, durable_of: impl Fn(NodeId) -> u64) {
        let conf = self.confs.current();
        let holding = conf
            .voters
            .iter()
            .filter(|&&v| durable_of(v) >= index)
            .count();
        assert!(
            holding >= conf.quorum(),
            "commit {index} is durable on {holding} of {} voters",
            conf.voters.len()
        );
    }
}
