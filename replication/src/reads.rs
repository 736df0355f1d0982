//! Linearizable read barriers on a leader: a read waits until a quorum of voters confirmed,
//! after it arrived, that this node still leads (a heartbeat or ping round), then is served at
//! the commit index it recorded. One round serves every read queued before it.

use std::collections::{BTreeSet, VecDeque};

use crate::types::{Conf, NodeId};

#[derive(Debug)]
struct ReadReq {
    seq: u64,
    from: NodeId,
    ctx: u64,
    index: u64,
    acks: BTreeSet<NodeId>,
}

/// Reads waiting for their quorum round.
#[derive(Debug, Default)]
pub struct ReadBarrier {
    reads: VecDeque<ReadReq>,
    seq: u64,
}

/// A read that may now be served: requester, its id, and the index to apply first.
pub type ReleasedRead = (NodeId, u64, u64);

impl ReadBarrier {
    /// Queues a read from `from` at `index`; returns the round id to send with the
    /// heartbeats or pings that confirm it.
    pub fn start(&mut self, leader: NodeId, from: NodeId, ctx: u64, index: u64) -> u64 {
        self.seq += 1;
        let mut acks = BTreeSet::new();
        acks.insert(leader);
        self.reads.push_back(ReadReq {
            seq: self.seq,
            from,
            ctx,
            index,
            acks,
        });
        self.seq
    }

    /// `from` answered round `seq` (and so every earlier one); returns the reads now safe.
    pub fn ack(&mut self, from: NodeId, seq: u64, conf: &Conf) -> Vec<ReleasedRead> {
        if seq == 0 || !conf.is_voter(from) {
            return Vec::new();
        }
        for r in self.reads.iter_mut().filter(|r| r.seq <= seq) {
            r.acks.insert(from);
        }
        let mut out = Vec::new();
        while self
            .reads
            .front()
            .is_some_and(|r| r.acks.iter().filter(|a| conf.is_voter(**a)).count() >= conf.quorum())
        {
            let r = self.reads.pop_front().expect("checked");
            out.push((r.from, r.ctx, r.index));
        }
        out
    }

    /// Drops every pending read (leadership lost; clients retry).
    pub fn clear(&mut self) {
        self.reads.clear();
    }
}
