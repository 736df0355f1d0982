//! Raft's messages and their wire form.

use crate::codec::{R, W};
use crate::protocol::ProtocolMessage;
use crate::types::{DecodeError, Entry, NodeId, SnapshotMeta};

/// One Raft message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftMessage {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// Sender's term (a pre-vote carries the term it would campaign in).
    pub term: u64,
    /// What it says.
    pub body: RaftBody,
}

/// The kinds of Raft messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaftBody {
    /// "Would you vote for me?" without disrupting anyone (thesis 9.6).
    PreVote {
        /// Candidate's last index.
        last_index: u64,
        /// Candidate's last term.
        last_term: u64,
    },
    /// Answer to a pre-vote.
    PreVoteResp {
        /// Refused.
        reject: bool,
    },
    /// RequestVote.
    Vote {
        /// Candidate's last index.
        last_index: u64,
        /// Candidate's last term.
        last_term: u64,
        /// Sent on a leadership transfer: overrides the leader lease.
        transfer: bool,
    },
    /// Answer to a vote.
    VoteResp {
        /// Refused.
        reject: bool,
    },
    /// AppendEntries.
    Append {
        /// Index before the first entry.
        prev_index: u64,
        /// Its term.
        prev_term: u64,
        /// Entries.
        entries: Vec<Entry>,
        /// Leader's commit index.
        commit: u64,
    },
    /// Answer to an append (or a snapshot).
    AppendResp {
        /// Refused: the log does not match at `index`.
        reject: bool,
        /// Accepted: last matching index. Refused: the `prev_index` refused.
        index: u64,
        /// Refused: the highest index that may match.
        hint: u64,
    },
    /// Heartbeat, also the quorum check of a read index round (`ctx` != 0).
    Heartbeat {
        /// Commit index, capped at the follower's match.
        commit: u64,
        /// Read round.
        ctx: u64,
    },
    /// Answer to a heartbeat.
    HeartbeatResp {
        /// Echoed read round.
        ctx: u64,
    },
    /// InstallSnapshot; `data` is attached by the driver.
    Snapshot {
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// State-machine data.
        data: Vec<u8>,
    },
    /// Start an election now (leadership transfer).
    TimeoutNow,
    /// A follower asks the leader for a read index.
    ReadIndex {
        /// The follower's request id.
        ctx: u64,
    },
    /// The leader answers a read index.
    ReadIndexResp {
        /// The follower's request id.
        ctx: u64,
        /// Read index.
        index: u64,
    },
    /// Proposals a follower hands to its leader (etcd-raft's forwarded MsgProp); the leader
    /// appends them in the sender's term or drops them.
    Forward {
        /// Application data, one entry each.
        batch: Vec<Vec<u8>>,
    },
}

impl ProtocolMessage for RaftMessage {
    fn from(&self) -> NodeId {
        self.from
    }
    fn to(&self) -> NodeId {
        self.to
    }
    fn encode(&self, out: &mut Vec<u8>) {
        let mut w = W(out);
        w.u64(self.from);
        w.u64(self.to);
        w.u64(self.term);
        match &self.body {
            RaftBody::PreVote {
                last_index,
                last_term,
            } => {
                w.u8(1);
                w.u64(*last_index);
                w.u64(*last_term);
            }
            RaftBody::PreVoteResp { reject } => {
                w.u8(2);
                w.u8(u8::from(*reject));
            }
            RaftBody::Vote {
                last_index,
                last_term,
                transfer,
            } => {
                w.u8(3);
                w.u64(*last_index);
                w.u64(*last_term);
                w.u8(u8::from(*transfer));
            }
            RaftBody::VoteResp { reject } => {
                w.u8(4);
                w.u8(u8::from(*reject));
            }
            RaftBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                w.u8(5);
                w.u64(*prev_index);
                w.u64(*prev_term);
                w.entries(entries);
                w.u64(*commit);
            }
            RaftBody::AppendResp {
                reject,
                index,
                hint,
            } => {
                w.u8(6);
                w.u8(u8::from(*reject));
                w.u64(*index);
                w.u64(*hint);
            }
            RaftBody::Heartbeat { commit, ctx } => {
                w.u8(7);
                w.u64(*commit);
                w.u64(*ctx);
            }
            RaftBody::HeartbeatResp { ctx } => {
                w.u8(8);
                w.u64(*ctx);
            }
            RaftBody::Snapshot { meta, data } => {
                w.u8(9);
                w.snapshot(meta);
                w.bytes(data);
            }
            RaftBody::TimeoutNow => w.u8(10),
            RaftBody::ReadIndex { ctx } => {
                w.u8(11);
                w.u64(*ctx);
            }
            RaftBody::ReadIndexResp { ctx, index } => {
                w.u8(12);
                w.u64(*ctx);
                w.u64(*index);
            }
            RaftBody::Forward { batch } => {
                w.u8(13);
                w.blobs(batch);
            }
        }
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = R::new(buf);
        let from = r.u64()?;
        let to = r.u64()?;
        let term = r.u64()?;
        let flag = |v: u8| -> Result<bool, DecodeError> {
            match v {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(DecodeError("bad flag".into())),
            }
        };
        let body = match r.u8()? {
            1 => RaftBody::PreVote {
                last_index: r.u64()?,
                last_term: r.u64()?,
            },
            2 => RaftBody::PreVoteResp {
                reject: flag(r.u8()?)?,
            },
            3 => RaftBody::Vote {
                last_index: r.u64()?,
                last_term: r.u64()?,
                transfer: flag(r.u8()?)?,
            },
            4 => RaftBody::VoteResp {
                reject: flag(r.u8()?)?,
            },
            5 => RaftBody::Append {
                prev_index: r.u64()?,
                prev_term: r.u64()?,
                entries: r.entries()?,
                commit: r.u64()?,
            },
            6 => RaftBody::AppendResp {
                reject: flag(r.u8()?)?,
                index: r.u64()?,
                hint: r.u64()?,
            },
            7 => RaftBody::Heartbeat {
                commit: r.u64()?,
                ctx: r.u64()?,
            },
            8 => RaftBody::HeartbeatResp { ctx: r.u64()? },
            9 => RaftBody::Snapshot {
                meta: r.snapshot()?,
                data: r.bytes()?,
            },
            10 => RaftBody::TimeoutNow,
            11 => RaftBody::ReadIndex { ctx: r.u64()? },
            12 => RaftBody::ReadIndexResp {
                ctx: r.u64()?,
                index: r.u64()?,
            },
            13 => RaftBody::Forward { batch: r.blobs()? },
            t => return Err(DecodeError(format!("unknown raft message type {t}"))),
        };
        r.finish()?;
        Ok(RaftMessage {
            from,
            to,
            term,
            body,
        })
    }
    fn payload_bytes(&self) -> usize {
        match &self.body {
            RaftBody::Append { entries, .. } => entries.iter().map(Entry::size_bytes).sum(),
            RaftBody::Snapshot { data, .. } => data.len(),
            RaftBody::Forward { batch } => batch.iter().map(Vec::len).sum(),
            _ => 0,
        }
    }
    fn carries_proposals(&self) -> bool {
        matches!(self.body, RaftBody::Forward { .. })
    }
    fn proposals_mut(&mut self) -> Option<&mut [Vec<u8>]> {
        match &mut self.body {
            RaftBody::Forward { batch } => Some(batch),
            _ => None,
        }
    }
    fn snapshot_request(&self) -> Option<&SnapshotMeta> {
        match &self.body {
            RaftBody::Snapshot { meta, data } if data.is_empty() => Some(meta),
            _ => None,
        }
    }
    fn attach_snapshot(&mut self, d: Vec<u8>) {
        if let RaftBody::Snapshot { data, .. } = &mut self.body {
            *data = d;
        }
    }
}
