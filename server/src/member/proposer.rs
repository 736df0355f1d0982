//! Carries a client API's request through the replicated log: hands its entry to the node
//! (appended here when this member leads, else handed to the leader), waits for the apply
//! thread's answer through [`Pending`], and serves linearizable read barriers.
//!
//! It owns the node and the request ids. It never encodes or decodes a request (an entry is
//! opaque bytes tagged with its id by the API) and never retries one: a retry is the API's
//! choice, made only when [`Failed::never_applied`] says it is safe.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::error::Error;
use super::pending::{Answer, Pending};
use crate::node::{Node, Submitted};

/// A request that got no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// Why.
    pub error: Error,
    /// Its entry is not and never will be applied, so proposing it again cannot apply it
    /// twice.
    pub never_applied: bool,
}

impl Failed {
    fn unsent(error: Error) -> Failed {
        Failed {
            error,
            never_applied: true,
        }
    }

    fn unknown(error: Error) -> Failed {
        Failed {
            error,
            never_applied: false,
        }
    }
}

/// A request in the log's hands ([`Proposer::submit`]), its answer to come
/// ([`Proposer::wait`]). Dropped unwaited, its waiter goes.
#[derive(Debug)]
pub struct Ticket {
    id: u64,
    rx: Option<tokio::sync::oneshot::Receiver<super::pending::Reply>>,
    started: Instant,
    pending: Arc<Pending>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.rx.is_some() {
            self.pending.forget(self.id);
        }
    }
}

/// How a member's requests reach the log and come back answered.
pub struct Proposer {
    node: Node,
    pending: Arc<Pending>,
    next_id: AtomicU64,
    request_timeout: Duration,
    election_timeout: Duration,
    entry_bytes_max: usize,
}

impl std::fmt::Debug for Proposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proposer")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

/// How long a request waits before looking again for a leader.
const LEADER_POLL: Duration = Duration::from_millis(50);

impl Proposer {
    /// Proposes through `node`, answered through `pending`; ids start from `seed` (random per
    /// process, so ids never repeat across restarts); entries longer than `entry_bytes_max` are
    /// refused.
    pub fn new(
        node: Node,
        pending: Arc<Pending>,
        seed: u64,
        request_timeout: Duration,
        election_timeout: Duration,
        entry_bytes_max: usize,
    ) -> Proposer {
        Proposer {
            node,
            pending,
            next_id: AtomicU64::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            request_timeout,
            election_timeout,
            entry_bytes_max,
        }
    }

    /// The node underneath.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The requests waiting for their results.
    pub fn pending(&self) -> &Arc<Pending> {
        &self.pending
    }

    /// How long a request may wait for commit.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The protocol's election timeout.
    pub fn election_timeout(&self) -> Duration {
        self.election_timeout
    }

    /// A fresh odd number, never handed out before by this process: a request's id, or any
    /// other id a member chooses for the log (a lease's, say).
    pub fn fresh_id(&self) -> u64 {
        self.next_id.fetch_add(2, Ordering::Relaxed)
    }

    /// Whether this member has known no leader for three election timeouts: longer than an
    /// election takes, so it is likely cut off from its quorum (etcd's `monitorLeader` gives up
    /// on the same count).
    pub fn leader_lost(&self) -> bool {
        self.node
            .state()
            .leaderless_for()
            .is_some_and(|d| d >= self.election_timeout * 3)
    }

    /// Whether a request due by `deadline` should go on waiting for a leader: only while an
    /// election is likely under way. A member that lost its leader answers "no leader" at
    /// once, so the client moves on to another member.
    pub fn wait_for_leader(&self, deadline: Instant) -> bool {
        Instant::now() < deadline && !self.leader_lost()
    }

    /// Proposes `entry`, tagged with request `id` (from [`Proposer::fresh_id`]), and waits for
    /// its answer: [`Proposer::submit`], then [`Proposer::wait`].
    pub async fn propose(&self, id: u64, entry: Vec<u8>) -> Result<Answer, Failed> {
        let ticket = self.submit(id, entry).await?;
        self.wait(ticket).await
    }

    /// Hands `entry`, tagged with request `id`, to the log: appended here when this member
    /// leads, else handed to the leader. Entries submitted one after another by one caller
    /// enter the log in that order, or the later ones not at all.
    pub async fn submit(&self, id: u64, entry: Vec<u8>) -> Result<Ticket, Failed> {
        if entry.len() > self.entry_bytes_max {
            return Err(Failed::unsent(Error::RequestTooLarge));
        }
        let rx = self.pending.register(id).map_err(Failed::unsent)?;
        let ticket = Ticket {
            id,
            rx: Some(rx),
            started: Instant::now(),
            pending: Arc::clone(&self.pending),
        };
        let installs = self.pending.installs();
        let handed = tokio::time::timeout(self.request_timeout, self.node.hand_over(entry))
            .await
            .map_err(|_| Error::Timeout)
            .and_then(|r| r.map_err(Error::from));
        let term = match handed {
            Ok(Submitted::Proposed { term } | Submitted::Forwarded { term }) => term,
            Ok(Submitted::Committed(_)) => unreachable!("hand_over never waits for commit"),
            Err(e) => {
                return Err(match e {
                    Error::NotLeader | Error::NoLeader => Failed::unsent(e),
                    e => Failed::unknown(e),
                });
            }
        };
        if !self.pending.track(term, id, installs) {
            // A snapshot came in meanwhile: its fate is unknown from here.
            return Err(Failed::unknown(Error::Timeout));
        }
        Ok(ticket)
    }

    /// Waits for a submitted entry's answer. Commit is bounded by the request timeout from
    /// its submission; once committed, the entry will be applied, so its answer is awaited
    /// in full.
    pub async fn wait(&self, mut ticket: Ticket) -> Result<Answer, Failed> {
        let rx = ticket.rx.take().expect("a ticket is waited for once");
        let left = self
            .request_timeout
            .saturating_sub(ticket.started.elapsed());
        let reply = self
            .pending
            .reply(rx, left, || self.node.state().commit())
            .await;
        match reply {
            Ok(answer) => Ok(answer),
            // Gone from the map once answered; an unanswered waiter may still be there.
            Err(e @ (Error::Timeout | Error::Stopped)) => {
                self.pending.forget(ticket.id);
                Err(Failed::unknown(e))
            }
            // Failed by the apply thread: an entry of a later term was applied without it.
            Err(Error::LeaderChanged) => Err(Failed::unsent(Error::LeaderChanged)),
            Err(e) => Err(Failed::unknown(e)),
        }
    }

    /// Waits until everything committed before the call is applied here (a linearizable read
    /// point). While an election is on it waits for its outcome rather than fail the read.
    pub async fn read_barrier(&self) -> Result<(), Error> {
        let deadline = Instant::now() + self.request_timeout;
        let index = loop {
            let r = tokio::time::timeout_at(deadline.into(), self.node.read_index())
                .await
                .map_err(|_| Error::Timeout)?
                .map_err(Error::from);
            match r {
                Err(Error::NoLeader) if self.wait_for_leader(deadline) => {
                    tokio::time::sleep(LEADER_POLL).await;
                }
                r => break r?,
            }
        };
        self.wait_applied(index).await
    }

    /// Waits until apply reaches `index`; fails at once when apply stopped short of it.
    pub async fn wait_applied(&self, index: u64) -> Result<(), Error> {
        self.pending.wait_applied(index, self.request_timeout).await
    }
}
