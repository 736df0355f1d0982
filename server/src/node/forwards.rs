//! Data a member hands to its leader: gathered from the commands the node loop takes at once
//! into one forwarding message ([`Forwards`]), or held while no leader is known yet
//! ([`Parked`]), as etcd's proposals wait for a leader.
//!
//! Never holds more than [`PARKED_BYTES_MAX`] bytes, nor anything longer than the node loop's
//! patience.

use std::time::{Duration, Instant};

use quorumkv_replication::{ProposeError, Protocol};

use super::event_loop::{Waiter, Waiters, propose_tracked};

/// Data to hand to the leader, gathered from the commands taken at once.
#[derive(Default)]
pub(super) struct Forwards {
    batch: Vec<Vec<u8>>,
    pub(super) bytes: usize,
    waiting: Vec<Waiter>,
}

impl Forwards {
    pub(super) fn push(&mut self, data: Vec<u8>, tx: Waiter) {
        self.bytes += data.len();
        self.batch.push(data);
        self.waiting.push(tx);
    }

    /// Sends what was gathered as one message, and tells each caller. A member that knows no
    /// leader it can hand data to yet (an election, or a ZAB follower still synchronising)
    /// keeps the batch in `parked` instead of failing it: a proposal waits for a leader, as
    /// etcd's do, until `parked` gives up on it.
    pub(super) fn flush<P: Protocol>(&mut self, proto: &mut P, parked: &mut Parked, now: Instant) {
        if self.batch.is_empty() {
            return;
        }
        self.bytes = 0;
        let batch = std::mem::take(&mut self.batch);
        let waiting = std::mem::take(&mut self.waiting);
        if proto.forward_target().is_none() {
            for (data, tx) in batch.into_iter().zip(waiting) {
                parked.park(data, tx, now);
            }
            return;
        }
        let r = proto.forward(batch);
        for w in waiting {
            w.forwarded(&r);
        }
    }
}

/// Most bytes of submitted data held while no leader is known; past it, submits fail at once.
const PARKED_BYTES_MAX: usize = 16 << 20;

/// Submitted data waiting for this member to learn a leader, oldest first.
#[derive(Default)]
pub(super) struct Parked {
    queue: std::collections::VecDeque<(Instant, Vec<u8>, Waiter)>,
    bytes: usize,
}

impl Parked {
    fn park(&mut self, data: Vec<u8>, tx: Waiter, now: Instant) {
        if self.bytes + data.len() > PARKED_BYTES_MAX {
            tx.send(Err(ProposeError::NotLeader { leader: 0 }.into()));
            return;
        }
        self.bytes += data.len();
        self.queue.push_back((now, data, tx));
    }

    /// Fails what has waited longer than `patience` for a leader, and everything once the
    /// member is `cut_off` (leaderless for longer than an election takes: its callers should
    /// try another member rather than wait).
    pub(super) fn expire(&mut self, now: Instant, patience: Duration, cut_off: bool) {
        while let Some((since, ..)) = self.queue.front() {
            if !cut_off && now.duration_since(*since) < patience {
                break;
            }
            let (_, data, tx) = self.queue.pop_front().expect("front exists");
            self.bytes -= data.len();
            tx.send(Err(ProposeError::NotLeader { leader: 0 }.into()));
        }
    }

    /// Submits what is parked again once a leader is known: proposed here if this member
    /// leads, else handed to the leader in one message; kept while there is still none.
    pub(super) fn retry<P: Protocol>(
        &mut self,
        proto: &mut P,
        waiters: &mut Waiters,
        stopped: Option<&str>,
    ) {
        if self.queue.is_empty() {
            return;
        }
        let st = proto.status();
        if st.leader == 0 && stopped.is_none() {
            return;
        }
        if stopped.is_some() || st.leader == st.id {
            self.bytes = 0;
            for (_, data, w) in self.queue.drain(..) {
                propose_tracked(proto, waiters, stopped, w, |p| p.propose(data));
            }
            return;
        }
        if proto.forward_target().is_none() {
            return;
        }
        let (batch, waiting): (Vec<_>, Vec<_>) =
            self.queue.drain(..).map(|(_, d, tx)| (d, tx)).unzip();
        let r = proto.forward(batch);
        self.bytes = 0;
        for w in waiting {
            w.forwarded(&r);
        }
    }
}
