//! The leader's view of one follower: how far its log matches, what to send next, and the
//! flow-control window of appends in flight.

use std::collections::VecDeque;

/// How the leader currently replicates to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// Unknown match: one append at a time until one is accepted.
    Probe,
    /// Matching: appends are pipelined up to the in-flight limits.
    Replicate,
    /// A snapshot through this index is on its way.
    Snapshot(u64),
}

/// Replication state of one peer.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Highest index known to match.
    pub matched: u64,
    /// Next index to send.
    pub next: u64,
    /// Replication state.
    pub state: ProgressState,
    /// Last index and bytes of each append in flight (Replicate state).
    inflight: VecDeque<(u64, usize)>,
    inflight_bytes: usize,
    /// In Probe state: an append is outstanding.
    pub probe_sent: bool,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Ticks spent in Snapshot state.
    pub snapshot_ticks: u32,
}

impl Progress {
    /// A peer whose log is assumed to end at `last`.
    pub fn new(last: u64) -> Progress {
        Progress {
            matched: 0,
            next: last + 1,
            state: ProgressState::Probe,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            probe_sent: false,
            recent_active: true,
            snapshot_ticks: 0,
        }
    }

    /// Whether another append may be sent now.
    pub fn can_send(&self, inflight_max: usize, inflight_bytes_max: usize) -> bool {
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => {
                self.inflight.len() < inflight_max && self.inflight_bytes < inflight_bytes_max
            }
            ProgressState::Snapshot(_) => false,
        }
    }

    /// Records an append through `last` of `bytes` that was sent.
    pub fn sent(&mut self, last: u64, bytes: usize) {
        match self.state {
            ProgressState::Replicate => {
                if last >= self.next {
                    self.next = last + 1;
                }
                self.inflight.push_back((last, bytes));
                self.inflight_bytes += bytes;
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot(_) => {}
        }
    }

    /// An acknowledgement through `index`; returns whether it advanced the match.
    pub fn ack(&mut self, index: u64) -> bool {
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        let advanced = index > self.matched;
        if advanced {
            self.matched = index;
            self.probe_sent = false;
        }
        if self.next <= index {
            self.next = index + 1;
        }
        advanced
    }

    /// A rejection of an append after `rejected`, with the follower's hint of where its log
    /// could match; returns whether the rejection was current (not a stale duplicate).
    pub fn reject(&mut self, rejected: u64, hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.become_probe();
            self.next = (hint + 1).min(rejected).max(self.matched + 1);
            return true;
        }
        if self.next == 0 || self.next - 1 != rejected {
            return false;
        }
        self.next = (hint + 1).min(rejected).max(self.matched + 1).max(1);
        self.probe_sent = false;
        true
    }

    /// Frees the oldest slot of a full window, so a follower that lost appends (it restarted,
    /// or the connection dropped them) gets one more and can reject it.
    pub fn free_first_if_full(&mut self, inflight_max: usize, inflight_bytes_max: usize) {
        if self.state == ProgressState::Replicate
            && (self.inflight.len() >= inflight_max || self.inflight_bytes >= inflight_bytes_max)
            && let Some((_, bytes)) = self.inflight.pop_front()
        {
            self.inflight_bytes -= bytes;
        }
    }

    /// Back to probing from just after the match.
    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next = self.matched + 1;
        self.probe_sent = false;
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// Pipelining from just after the match.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next = self.matched + 1;
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// Sending a snapshot through `index`.
    pub fn become_snapshot(&mut self, index: u64) {
        self.state = ProgressState::Snapshot(index);
        self.snapshot_ticks = 0;
        self.inflight.clear();
        self.inflight_bytes = 0;
    }
}
