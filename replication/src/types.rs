//! Vocabulary shared by every protocol: entries, durable state, configurations, snapshots,
//! read states and errors.

/// A node's id; 0 means "none".
pub type NodeId = u64;

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Application data.
    Normal,
    /// A membership change (encoded [`ConfChange`]).
    ConfChange,
    /// An empty entry a new leader appends to commit its predecessors' entries.
    Noop,
}

/// One log entry, keyed by (term or epoch, index).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Raft term or ZAB epoch of the leader that created it.
    pub term: u64,
    /// Position in the log (1-based, dense).
    pub index: u64,
    /// What it carries.
    pub kind: EntryKind,
    /// Payload.
    pub data: Vec<u8>,
}

impl Entry {
    /// Bytes it counts for in flow control and limits.
    pub fn size_bytes(&self) -> usize {
        self.data.len() + 24
    }
}

/// State that must be durable before the messages that depend on it leave the node.
/// Raft: `term` and `vote`. ZAB: `term` is acceptedEpoch, `current_epoch` is currentEpoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct HardState {
    /// Raft term / ZAB accepted epoch.
    pub term: u64,
    /// Raft: the candidate voted for in `term` (0: none).
    pub vote: NodeId,
    /// ZAB: the epoch whose NEWLEADER this node acknowledged.
    pub current_epoch: u64,
}

/// Cluster membership.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Conf {
    /// Members that vote and count for quorums.
    pub voters: Vec<NodeId>,
    /// Members that receive the log but do not vote (ZAB observers).
    pub learners: Vec<NodeId>,
}

impl Conf {
    /// A configuration of voters only.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Conf {
        let mut v: Vec<NodeId> = voters.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Conf {
            voters: v,
            learners: Vec::new(),
        }
    }
    /// Whether `id` votes.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }
    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }
    /// Every member.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }
    /// Votes needed for a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
    /// The highest index a quorum of voters holds, given each voter's matched index.
    pub fn quorum_index(&self, matched: impl Fn(NodeId) -> u64) -> u64 {
        if self.voters.is_empty() {
            return 0;
        }
        let mut m: Vec<u64> = self.voters.iter().map(|&v| matched(v)).collect();
        m.sort_unstable_by(|a, b| b.cmp(a));
        m[self.quorum() - 1]
    }

    /// The configuration after `change`, or why it cannot apply.
    pub fn apply(&self, change: ConfChange) -> Result<Conf, String> {
        let mut c = self.clone();
        match change {
            ConfChange::AddVoter(id) => {
                if c.is_voter(id) {
                    return Err(format!("{id} is already a voter"));
                }
                c.learners.retain(|&l| l != id);
                c.voters.push(id);
            }
            ConfChange::AddLearner(id) => {
                if c.is_voter(id) || c.is_learner(id) {
                    return Err(format!("{id} is already a member"));
                }
                c.learners.push(id);
            }
            ConfChange::PromoteLearner(id) => {
                if !c.is_learner(id) {
                    return Err(format!("{id} is not a learner"));
                }
                c.learners.retain(|&l| l != id);
                c.voters.push(id);
            }
            ConfChange::Remove(id) => {
                if !c.is_voter(id) && !c.is_learner(id) {
                    return Err(format!("{id} is not a member"));
                }
                c.voters.retain(|&v| v != id);
                c.learners.retain(|&l| l != id);
                if c.voters.is_empty() {
                    return Err("cannot remove the last voter".into());
                }
            }
        }
        c.voters.sort_unstable();
        c.learners.sort_unstable();
        Ok(c)
    }
}

/// A single-server membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfChange {
    /// Add a voter.
    AddVoter(NodeId),
    /// Add a learner (observer).
    AddLearner(NodeId),
    /// Make a learner a voter.
    PromoteLearner(NodeId),
    /// Remove a voter or learner.
    Remove(NodeId),
}

impl ConfChange {
    /// Encodes the change as entry data.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, id) = match *self {
            ConfChange::AddVoter(id) => (1u8, id),
            ConfChange::AddLearner(id) => (2, id),
            ConfChange::PromoteLearner(id) => (3, id),
            ConfChange::Remove(id) => (4, id),
        };
        let mut v = vec![tag];
        v.extend_from_slice(&id.to_le_bytes());
        v
    }
    /// Decodes entry data.
    pub fn decode(b: &[u8]) -> Option<ConfChange> {
        if b.len() != 9 {
            return None;
        }
        let id = u64::from_le_bytes(b[1..9].try_into().ok()?);
        Some(match b[0] {
            1 => ConfChange::AddVoter(id),
            2 => ConfChange::AddLearner(id),
            3 => ConfChange::PromoteLearner(id),
            4 => ConfChange::Remove(id),
            _ => return None,
        })
    }
}

/// Describes a state-machine snapshot: everything up to `index` applied.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct SnapshotMeta {
    /// Last index included.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Membership as of `index`.
    pub conf: Conf,
}

impl SnapshotMeta {
    /// Appends the wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        crate::codec::W(out).snapshot(self);
    }

    /// Parses the wire form; treats `buf` as hostile.
    pub fn decode(buf: &[u8]) -> Result<SnapshotMeta, DecodeError> {
        let mut r = crate::codec::R::new(buf);
        let meta = r.snapshot()?;
        r.finish()?;
        Ok(meta)
    }
}

/// A linearizable read became safe: once `index` is applied, read locally for `ctx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's request id.
    pub ctx: u64,
    /// Apply at least this far, then read.
    pub index: u64,
}

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (ZAB: following, or looking before an election settles).
    Follower,
    /// Raft pre-candidate.
    PreCandidate,
    /// Raft candidate / ZAB looking.
    Candidate,
    /// Established leader (ZAB: after a quorum acknowledged NEWLEADER).
    Leader,
    /// Non-voting member (learner / observer).
    Learner,
}

/// What a node reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Node id.
    pub id: NodeId,
    /// Role.
    pub role: Role,
    /// Term or epoch.
    pub term: u64,
    /// Known leader (0: none).
    pub leader: NodeId,
    /// Highest index known committed.
    pub commit: u64,
    /// Highest index applied (as acknowledged by the driver).
    pub applied: u64,
    /// Last index in the log.
    pub last_index: u64,
    /// Highest index known durable locally.
    pub persisted: u64,
    /// Current membership.
    pub conf: Conf,
    /// On the leader: the highest index known to match on each other member.
    pub matched: std::collections::BTreeMap<NodeId, u64>,
}

/// Why a proposal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is the one it knows (0: none).
    #[error("not the leader (leader: {leader})")]
    NotLeader {
        /// The known leader.
        leader: NodeId,
    },
    /// Too much is already in flight.
    #[error("too many uncommitted proposals")]
    Overloaded,
    /// A leadership transfer is in progress.
    #[error("leadership transfer in progress")]
    Transferring,
    /// Another membership change is not committed yet (one at a time).
    #[error("a membership change is already in progress")]
    ConfChangePending,
    /// The change does not apply to the current membership.
    #[error("invalid membership change: {0}")]
    InvalidConfChange(String),
    /// The protocol does not support this operation.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

/// A malformed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct DecodeError(pub String);
