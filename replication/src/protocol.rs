//! The `Protocol` trait: what a replication protocol takes in and hands out, and the order in
//! which the driver must carry out what it hands out.
//!
//! A protocol is a pure state machine. It performs no IO, reads no clock and spawns nothing:
//! time enters through [`Protocol::tick`], the network through [`Protocol::step`], clients
//! through [`Protocol::propose`] and [`Protocol::read_index`], and the disk through
//! [`Protocol::persisted`]. Everything it wants done comes out of [`Protocol::ready`] as one
//! [`Ready`] batch.
//!
//! # The persistence contract
//!
//! For each `Ready`, in the order they were taken, the driver:
//!
//! 1. Sends `messages` at once. They never depend on local durability: a leader's appends and
//!    heartbeats may leave before its own fsync (Raft thesis 10.2.1), because the leader counts
//!    itself towards a quorum only once [`Protocol::persisted`] says its entries are durable.
//! 2. If `snapshot` is set, installs it in the state machine and resets the log to start after
//!    `snapshot.index`, durably, before anything below.
//! 3. Removes log entries at and above `truncate_from`, then appends `entries`, and saves
//!    `hard_state`; all durably (one fdatasync may cover them all, and any number of later
//!    Readys' appends: group commit).
//! 4. Only once steps 2 and 3 of this Ready *and of every earlier one* are durable, sends
//!    `messages_after_persist` (votes granted, append acknowledgements: a node must never
//!    promise what a crash could make it forget). A Ready with nothing to persist may carry
//!    acknowledgements of entries an earlier Ready is still syncing, so its
//!    `messages_after_persist` wait for that sync too. Then the driver calls
//!    [`Protocol::persisted`] with the last index and term it made durable.
//! 5. Applies `committed` entries in order (they are always durable locally), calls
//!    [`Protocol::applied`], and serves each of `read_states` once its index is applied.
//!
//! Steps 1 and 5 may overlap step 3 of the same or later Readys; steps 2–4 are strictly in
//! Ready order. A failed fdatasync must stop the node: it may not call `persisted` again.
//!
//! Raft and ZAB share this steady-state path (propose → persist → ack → commit, keyed by
//! (term or epoch, index)); they differ in how leaders are chosen and logs are reconciled.

use std::fmt::Debug;

use crate::types::{
    ConfChange, DecodeError, Entry, HardState, NodeId, ProposeError, ReadState, SnapshotMeta,
    Status,
};

/// A message between nodes of one protocol.
pub trait ProtocolMessage: Clone + Debug + Send + 'static {
    /// Sender.
    fn from(&self) -> NodeId;
    /// Recipient.
    fn to(&self) -> NodeId;
    /// Appends the wire form to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Parses the wire form; treats `buf` as hostile.
    fn decode(buf: &[u8]) -> Result<Self, DecodeError>;
    /// Payload bytes carried (entries, snapshot data), for flow control and limits.
    fn payload_bytes(&self) -> usize;
    /// Whether it hands application data to the leader ([`Protocol::forward`]). A transport
    /// must deliver such a message at most once: delivered twice, its data would be appended
    /// twice. (Everything else tolerates duplicates.)
    fn carries_proposals(&self) -> bool {
        false
    }
    /// The application data of a message that carries proposals, so the receiving driver can
    /// stamp what only the leader may decide (its clock) before stepping it in.
    fn proposals_mut(&mut self) -> Option<&mut [Vec<u8>]> {
        None
    }
    /// For a snapshot message leaving a leader: the snapshot it needs, so the driver can
    /// attach the state machine's data.
    fn snapshot_request(&self) -> Option<&SnapshotMeta> {
        None
    }
    /// Attaches snapshot data to a snapshot message.
    fn attach_snapshot(&mut self, _data: Vec<u8>) {}
}

/// Everything a protocol asks its driver to do, in one batch. See the module docs for the
/// order.
#[derive(Debug)]
pub struct Ready<M> {
    /// Send now.
    pub messages: Vec<M>,
    /// Install this snapshot (metadata and state-machine data) and restart the log after it.
    pub snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    /// Remove log entries with index >= this before appending.
    pub truncate_from: Option<u64>,
    /// Append these.
    pub entries: Vec<Entry>,
    /// Save this.
    pub hard_state: Option<HardState>,
    /// Send once the above is durable.
    pub messages_after_persist: Vec<M>,
    /// Apply these, in order.
    pub committed: Vec<Entry>,
    /// Serve these reads once their index is applied.
    pub read_states: Vec<ReadState>,
}

impl<M> Default for Ready<M> {
    fn default() -> Self {
        Ready {
            messages: Vec::new(),
            snapshot: None,
            truncate_from: None,
            entries: Vec::new(),
            hard_state: None,
            messages_after_persist: Vec::new(),
            committed: Vec::new(),
            read_states: Vec::new(),
        }
    }
}

impl<M> Ready<M> {
    /// Whether anything must be made durable before `messages_after_persist` may leave.
    pub fn must_persist(&self) -> bool {
        self.snapshot.is_some()
            || self.truncate_from.is_some()
            || !self.entries.is_empty()
            || self.hard_state.is_some()
    }
}

/// What a restarting node recovered from its storage.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// Durable hard state.
    pub hard_state: HardState,
    /// Latest snapshot (index 0: none); the log continues after it.
    pub snapshot: SnapshotMeta,
    /// Durable log entries after the snapshot, dense.
    pub entries: Vec<Entry>,
    /// Highest index the state machine has applied (at least `snapshot.index`).
    pub applied: u64,
}

/// A pure, IO-free replication protocol. See the module docs for the persistence contract.
pub trait Protocol: Send {
    /// Its message type.
    type Message: ProtocolMessage;

    /// This node's id.
    fn id(&self) -> NodeId;
    /// Advances logical time by one tick.
    fn tick(&mut self);
    /// Handles a message from a peer. Messages for another node or from a stale term are
    /// dropped; malformed content is ignored with a log line, never a panic.
    fn step(&mut self, msg: Self::Message);
    /// Proposes application data; returns the index it will occupy if committed.
    fn propose(&mut self, data: Vec<u8>) -> Result<u64, ProposeError>;
    /// Hands application data to the leader, from a member that does not lead: the leader
    /// appends it in the term returned here, or drops it (a newer term, a full window). The
    /// outcome shows in the log: the data commits in that term, or, once an entry of a later
    /// term is committed before it, never. `NotLeader` when no leader is known; a leader
    /// proposes nothing through this (it returns `NotLeader` naming itself).
    fn forward(&mut self, batch: Vec<Vec<u8>>) -> Result<u64, ProposeError>;
    /// The member [`Protocol::forward`] would hand data to now (`None`: it would refuse with
    /// `NotLeader`), so a driver can hold data until there is one without giving it away.
    fn forward_target(&self) -> Option<NodeId>;
    /// Proposes a single-server membership change (one at a time).
    fn propose_conf_change(&mut self, change: ConfChange) -> Result<u64, ProposeError>;
    /// Asks for a linearizable read point; answered through `Ready::read_states`.
    fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError>;
    /// Asks the leader to hand leadership to `to`.
    fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError>;
    /// The driver made the log durable through (`index`, `term`).
    fn persisted(&mut self, index: u64, term: u64);
    /// The driver applied everything through `index`.
    fn applied(&mut self, index: u64);
    /// The state machine holds a snapshot through `snapshot.index`: log entries up to it may
    /// be discarded, and followers further behind get this snapshot.
    fn compact(&mut self, snapshot: SnapshotMeta);
    /// The snapshot point describing the applied state through `index` (its term and the
    /// membership then), if `index` is applied and still in the log.
    fn snapshot_meta(&self, index: u64) -> Option<SnapshotMeta>;
    /// Whether `ready` has anything.
    fn has_ready(&self) -> bool;
    /// Takes the pending batch of work.
    fn ready(&mut self) -> Ready<Self::Message>;
    /// Current state.
    fn status(&self) -> Status;
    /// Entries currently held in memory from `lo` (for invariant checks and diagnostics).
    fn log_entries(&self, lo: u64) -> Vec<Entry>;
}
