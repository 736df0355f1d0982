//! ZAB's messages and their wire form.

use crate::codec::{R, W};
use crate::protocol::ProtocolMessage;
use crate::types::{DecodeError, Entry, NodeId, SnapshotMeta};

/// Where a node stands, as told in election notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Electing.
    Looking,
    /// Following a leader.
    Following,
    /// Leading.
    Leading,
}

/// A vote of fast leader election, ordered by (epoch, last zxid, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Vote {
    /// The candidate's current epoch.
    pub epoch: u64,
    /// Epoch of the candidate's last proposal.
    pub last_term: u64,
    /// Index of the candidate's last proposal.
    pub last_index: u64,
    /// The candidate.
    pub leader: NodeId,
}

/// A follower's view of its history, sent in FOLLOWERINFO and ACKEPOCH.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct History {
    /// acceptedEpoch.
    pub accepted_epoch: u64,
    /// currentEpoch.
    pub current_epoch: u64,
    /// Its last entry (index, epoch).
    pub last_index: u64,
    /// Epoch of its last entry.
    pub last_term: u64,
    /// Index its snapshot covers (the prefix is committed).
    pub snapshot_index: u64,
    /// For each epoch in its log, the last index it holds from that epoch, ascending.
    pub boundaries: Vec<(u64, u64)>,
}

/// One ZAB message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZabMessage {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// The epoch the message belongs to (the sender's accepted epoch for elections).
    pub epoch: u64,
    /// What it says.
    pub body: ZabBody,
}

/// The kinds of ZAB messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZabBody {
    /// Fast leader election notification.
    Notification {
        /// Election round (logical clock).
        round: u64,
        /// Sender's state.
        state: PeerState,
        /// Sender's vote.
        vote: Vote,
    },
    /// FOLLOWERINFO: a follower registers with its leader.
    FollowerInfo(History),
    /// NEWEPOCH (LEADERINFO): the leader proposes an epoch.
    NewEpoch,
    /// ACKEPOCH: `fresh` when this follower accepted the epoch just now (it can be counted once).
    AckEpoch {
        /// Accepted now rather than before.
        fresh: bool,
        /// The follower's history.
        history: History,
    },
    /// DIFF / TRUNC / SNAP followed by NEWLEADER, in one message.
    Sync {
        /// Remove the follower's entries from here (TRUNC).
        truncate_from: Option<u64>,
        /// Snapshot to install first (SNAP); data attached by the driver.
        snapshot: Option<(SnapshotMeta, Vec<u8>)>,
        /// Entries to append (DIFF).
        entries: Vec<Entry>,
    },
    /// ACK of NEWLEADER: the follower holds the leader's initial history durably.
    AckNewLeader {
        /// Its last index.
        last_index: u64,
    },
    /// UPTODATE: the leader is established; start serving.
    UpToDate {
        /// Commit index.
        commit: u64,
    },
    /// PROPOSAL (pipelined, in zxid order).
    Proposal {
        /// Entries.
        entries: Vec<Entry>,
        /// Leader's commit index (piggybacked COMMIT).
        commit: u64,
    },
    /// ACK of proposals through an index, after the follower's fsync.
    Ack {
        /// Last index held durably.
        index: u64,
    },
    /// COMMIT through an index.
    Commit {
        /// Commit index.
        index: u64,
    },
    /// PING from the leader; `ctx` != 0 confirms a read barrier.
    Ping {
        /// Commit index (capped at the follower's match).
        commit: u64,
        /// Read round.
        ctx: u64,
    },
    /// Answer to a ping.
    PingResp {
        /// Echoed read round.
        ctx: u64,
    },
    /// A follower asks the leader for a read point.
    ReadIndex {
        /// The follower's request id.
        ctx: u64,
    },
    /// The leader answers.
    ReadIndexResp {
        /// The follower's request id.
        ctx: u64,
        /// Read index.
        index: u64,
    },
    /// REQUEST: proposals a follower hands to its leader, proposed in the sender's epoch or
    /// dropped.
    Request {
        /// Application data, one entry each.
        batch: Vec<Vec<u8>>,
    },
}

fn put_history(w: &mut W<'_>, h: &History) {
    w.u64(h.accepted_epoch);
    w.u64(h.current_epoch);
    w.u64(h.last_index);
    w.u64(h.last_term);
    w.u64(h.snapshot_index);
    w.u64(h.boundaries.len() as u64);
    for (t, i) in &h.boundaries {
        w.u64(*t);
        w.u64(*i);
    }
}

impl ProtocolMessage for ZabMessage {
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
        w.u64(self.epoch);
        match &self.body {
            ZabBody::Notification { round, state, vote } => {
                w.u8(1);
                w.u64(*round);
                w.u8(match state {
                    PeerState::Looking => 0,
                    PeerState::Following => 1,
                    PeerState::Leading => 2,
                });
                w.u64(vote.epoch);
                w.u64(vote.last_term);
                w.u64(vote.last_index);
                w.u64(vote.leader);
            }
            ZabBody::FollowerInfo(h) => {
                w.u8(2);
                put_history(&mut w, h);
            }
            ZabBody::NewEpoch => w.u8(3),
            ZabBody::AckEpoch { fresh, history } => {
                w.u8(4);
                w.u8(u8::from(*fresh));
                put_history(&mut w, history);
            }
            ZabBody::Sync {
                truncate_from,
                snapshot,
                entries,
            } => {
                w.u8(5);
                w.u64(truncate_from.map_or(0, |t| t));
                match snapshot {
                    Some((meta, data)) => {
                        w.u8(1);
                        w.snapshot(meta);
                        w.bytes(data);
                    }
                    None => w.u8(0),
                }
                w.entries(entries);
            }
            ZabBody::AckNewLeader { last_index } => {
                w.u8(6);
                w.u64(*last_index);
            }
            ZabBody::UpToDate { commit } => {
                w.u8(7);
                w.u64(*commit);
            }
            ZabBody::Proposal { entries, commit } => {
                w.u8(8);
                w.entries(entries);
                w.u64(*commit);
            }
            ZabBody::Ack { index } => {
                w.u8(9);
                w.u64(*index);
            }
            ZabBody::Commit { index } => {
                w.u8(10);
                w.u64(*index);
            }
            ZabBody::Ping { commit, ctx } => {
                w.u8(11);
                w.u64(*commit);
                w.u64(*ctx);
            }
            ZabBody::PingResp { ctx } => {
                w.u8(12);
                w.u64(*ctx);
            }
            ZabBody::ReadIndex { ctx } => {
                w.u8(13);
                w.u64(*ctx);
            }
            ZabBody::ReadIndexResp { ctx, index } => {
                w.u8(14);
                w.u64(*ctx);
                w.u64(*index);
            }
            ZabBody::Request { batch } => {
                w.u8(15);
                w.blobs(batch);
            }
        }
    }
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = R::new(buf);
        let from = r.u64()?;
        let to = r.u64()?;
        let epoch = r.u64()?;
        let body = match r.u8()? {
            1 => ZabBody::Notification {
                round: r.u64()?,
                state: match r.u8()? {
                    0 => PeerState::Looking,
                    1 => PeerState::Following,
                    2 => PeerState::Leading,
                    _ => return Err(DecodeError("bad peer state".into())),
                },
                vote: Vote {
                    epoch: r.u64()?,
                    last_term: r.u64()?,
                    last_index: r.u64()?,
                    leader: r.u64()?,
                },
            },
            2 => ZabBody::FollowerInfo(decode_history(&mut r)?),
            3 => ZabBody::NewEpoch,
            4 => {
                let fresh = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError("bad flag".into())),
                };
                ZabBody::AckEpoch {
                    fresh,
                    history: decode_history(&mut r)?,
                }
            }
            5 => {
                let t = r.u64()?;
                let snapshot = match r.u8()? {
                    0 => None,
                    1 => Some((r.snapshot()?, r.bytes()?)),
                    _ => return Err(DecodeError("bad flag".into())),
                };
                ZabBody::Sync {
                    truncate_from: (t != 0).then_some(t),
                    snapshot,
                    entries: r.entries()?,
                }
            }
            6 => ZabBody::AckNewLeader {
                last_index: r.u64()?,
            },
            7 => ZabBody::UpToDate { commit: r.u64()? },
            8 => ZabBody::Proposal {
                entries: r.entries()?,
                commit: r.u64()?,
            },
            9 => ZabBody::Ack { index: r.u64()? },
            10 => ZabBody::Commit { index: r.u64()? },
            11 => ZabBody::Ping {
                commit: r.u64()?,
                ctx: r.u64()?,
            },
            12 => ZabBody::PingResp { ctx: r.u64()? },
            13 => ZabBody::ReadIndex { ctx: r.u64()? },
            14 => ZabBody::ReadIndexResp {
                ctx: r.u64()?,
                index: r.u64()?,
            },
            15 => ZabBody::Request { batch: r.blobs()? },
            t => return Err(DecodeError(format!("unknown zab message type {t}"))),
        };
        r.finish()?;
        Ok(ZabMessage {
            from,
            to,
            epoch,
            body,
        })
    }
    fn carries_proposals(&self) -> bool {
        matches!(self.body, ZabBody::Request { .. })
    }
    fn proposals_mut(&mut self) -> Option<&mut [Vec<u8>]> {
        match &mut self.body {
            ZabBody::Request { batch } => Some(batch),
            _ => None,
        }
    }
    fn payload_bytes(&self) -> usize {
        match &self.body {
            ZabBody::Proposal { entries, .. } => entries.iter().map(Entry::size_bytes).sum(),
            ZabBody::Request { batch } => batch.iter().map(Vec::len).sum(),
            ZabBody::Sync {
                entries, snapshot, ..
            } => {
                entries.iter().map(Entry::size_bytes).sum::<usize>()
                    + snapshot.as_ref().map_or(0, |s| s.1.len())
            }
            _ => 0,
        }
    }
    fn snapshot_request(&self) -> Option<&SnapshotMeta> {
        match &self.body {
            ZabBody::Sync {
                snapshot: Some((meta, data)),
                ..
            } if data.is_empty() => Some(meta),
            _ => None,
        }
    }
    fn attach_snapshot(&mut self, d: Vec<u8>) {
        if let ZabBody::Sync {
            snapshot: Some((_, data)),
            ..
        } = &mut self.body
        {
            *data = d;
        }
    }
}

fn decode_history(r: &mut R<'_>) -> Result<History, DecodeError> {
    let accepted_epoch = r.u64()?;
    let current_epoch = r.u64()?;
    let last_index = r.u64()?;
    let last_term = r.u64()?;
    let snapshot_index = r.u64()?;
    let flat = r.pairs()?;
    Ok(History {
        accepted_epoch,
        current_epoch,
        last_index,
        last_term,
        snapshot_index,
        boundaries: flat,
    })
}
