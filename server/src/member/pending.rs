//! Requests proposed on this member that wait for their results: one waiter per request, by
//! the id its proposer tagged the log entry with, answered by the apply thread when the entry
//! is applied, and failed when it provably never will be. It also publishes how far apply
//! has got, for read barriers.
//!
//! A waiter is *tracked* by the term its entry entered the log in (appended by this member
//! as leader, or handed to the leader): log terms only grow, so once an entry of a later term
//! is applied without it, it never will be, and its proposer may safely propose again. The
//! term lives in the waiter itself, so a request costs one map entry under one lock; the map
//! is searched for passed-over waiters only when apply reaches a term later than the oldest
//! one tracked.
//!
//! It never holds more than its `max` waiters, and never answers a waiter twice: whoever
//! answers one takes it out of the map first.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use super::error::Error;

/// A client API's result for one applied request, opaque to the core.
pub type Answer = Box<dyn Any + Send>;

/// What a proposer hears.
pub type Reply = Result<Answer, Error>;

/// Who waits for one request's result.
struct Waiter {
    /// The term its entry entered the log in; 0 until known.
    term: u64,
    tx: oneshot::Sender<Reply>,
}

/// The requests waiting for their results on this member.
pub struct Pending {
    waiters: Mutex<HashMap<u64, Waiter>>,
    /// At most the lowest term of a tracked waiter (`u64::MAX`: none tracked), changed under
    /// the `waiters` lock.
    oldest_term: AtomicU64,
    /// Snapshots installed (changed under the `waiters` lock).
    installs: AtomicU64,
    /// Highest log index applied.
    applied: watch::Sender<u64>,
    /// Highest log index applied whose proposers have their answers (a request at or below it
    /// still unanswered was not in the log there).
    answered: watch::Sender<u64>,
    /// Apply stopped for good.
    stopped: AtomicBool,
    max: usize,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("waiting", &self.len())
            .field("applied", &self.applied())
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// Nothing waiting; apply has reached `applied`; at most `max` waiters at once.
    pub fn new(applied: u64, max: usize) -> Pending {
        Pending {
            waiters: Mutex::new(HashMap::new()),
            oldest_term: AtomicU64::new(u64::MAX),
            installs: AtomicU64::new(0),
            applied: watch::channel(applied).0,
            answered: watch::channel(applied).0,
            stopped: AtomicBool::new(false),
            max,
        }
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.waiters.lock().len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Highest log index applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Whether apply stopped for good.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Snapshots installed so far (see [`Pending::track`]).
    pub fn installs(&self) -> u64 {
        self.installs.load(Ordering::SeqCst)
    }

    /// Registers the waiter of request `id`.
    pub fn register(&self, id: u64) -> Result<oneshot::Receiver<Reply>, Error> {
        let (tx, rx) = oneshot::channel();
        let mut w = self.waiters.lock();
        // Checked under the waiters' lock, so a stop either sees this waiter or this
        // registration sees the stop.
        if self.stopped() {
            return Err(Error::Stopped);
        }
        if w.len() >= self.max {
            return Err(Error::TooManyRequests);
        }
        let fresh = w.insert(id, Waiter { term: 0, tx }).is_none();
        assert!(fresh, "request id {id} registered twice");
        Ok(rx)
    }

    /// Removes the waiter of request `id`, if still there (its proposer gave up).
    pub fn forget(&self, id: u64) {
        self.waiters.lock().remove(&id);
    }

    /// Tracks request `id` as entered in `term`; false (and the waiter is gone) when a
    /// snapshot was installed since `installs` was read: its fate cannot be told from here.
    pub fn track(&self, term: u64, id: u64, installs: u64) -> bool {
        let mut waiters = self.waiters.lock();
        if self.installs() != installs {
            waiters.remove(&id);
            return false;
        }
        // Answered already when missing. A term of 0 (none known) leaves it untracked: it is
        // then answered when applied, or times out.
        if let Some(w) = waiters.get_mut(&id)
            && term != 0
        {
            w.term = term;
            self.oldest_term.fetch_min(term, Ordering::Relaxed);
        }
        true
    }

    /// Entries through `index` (the last of term `term`) are applied, with `answers` for their
    /// proposers: publishes the applied index, answers, and fails every tracked request of an
    /// earlier term that was not answered (it never will be).
    pub fn applied_through(&self, index: u64, term: u64, answers: Vec<(u64, Answer)>) {
        self.applied.send_replace(index);
        // Waiters are taken out under the lock and answered after it: answering wakes their
        // tasks, and proposers take the same lock to register.
        let mut replies: Vec<(oneshot::Sender<Reply>, Reply)> = Vec::with_capacity(answers.len());
        let mut waiters = self.waiters.lock();
        for (id, answer) in answers {
            if let Some(w) = waiters.remove(&id) {
                replies.push((w.tx, Ok(answer)));
            }
        }
        if self.oldest_term.load(Ordering::Relaxed) < term {
            let passed: Vec<u64> = waiters
                .iter()
                .filter(|(_, w)| w.term != 0 && w.term < term)
                .map(|(id, _)| *id)
                .collect();
            for id in passed {
                let w = waiters.remove(&id).expect("listed above");
                replies.push((w.tx, Err(Error::LeaderChanged)));
            }
            let oldest = waiters.values().map(|w| w.term).filter(|t| *t != 0).min();
            self.oldest_term
                .store(oldest.unwrap_or(u64::MAX), Ordering::Relaxed);
        }
        drop(waiters);
        for (tx, reply) in replies {
            let _ = tx.send(reply);
        }
        self.answered.send_replace(index);
    }

    /// A snapshot replaces the applied entries: whether a tracked request is in it cannot be
    /// told, so each such proposer gets `Timeout`, as the client of a stuck request would, and
    /// none is proposed again.
    pub fn forget_tracked(&self) {
        let mut waiters = self.waiters.lock();
        self.installs.fetch_add(1, Ordering::SeqCst);
        let tracked: Vec<u64> = waiters
            .iter()
            .filter(|(_, w)| w.term != 0)
            .map(|(id, _)| *id)
            .collect();
        for id in tracked {
            let w = waiters.remove(&id).expect("listed above");
            let _ = w.tx.send(Err(Error::Timeout));
        }
        self.oldest_term.store(u64::MAX, Ordering::Relaxed);
    }

    /// A snapshot through `index` was installed.
    pub fn installed(&self, index: u64) {
        self.applied.send_replace(index);
        self.answered.send_replace(index);
    }

    /// Apply stopped for good: every waiting proposer gets `Stopped`, and so does every later
    /// one.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes reads waiting for apply to reach their index: it never will.
        self.applied.send_modify(|_| {});
        self.answered.send_modify(|_| {});
        for (_, w) in self.waiters.lock().drain() {
            let _ = w.tx.send(Err(Error::Stopped));
        }
    }

    /// Waits (up to `within`) until apply reaches `index`; fails at once when apply stopped
    /// short of it.
    pub async fn wait_applied(&self, index: u64, within: Duration) -> Result<(), Error> {
        let mut rx = self.applied.subscribe();
        let applied = tokio::time::timeout(within, rx.wait_for(|a| *a >= index || self.stopped()))
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(|_| Error::Stopped)?;
        if *applied < index {
            return Err(Error::Stopped);
        }
        Ok(())
    }

    /// The reply for a tracked request; `Timeout` if it did not commit within `within`. A
    /// request that committed in time is awaited until applied, however long that takes (a
    /// large delete, say): at the deadline, answers are awaited up to `commit()` then, which
    /// holds the request if it committed at all by then.
    pub async fn reply(
        &self,
        mut rx: oneshot::Receiver<Reply>,
        within: Duration,
        commit: impl FnOnce() -> u64,
    ) -> Reply {
        if let Ok(r) = tokio::time::timeout(within, &mut rx).await {
            return r.unwrap_or(Err(Error::Stopped));
        }
        let commit = commit();
        let mut answered = self.answered.subscribe();
        tokio::select! {
            r = &mut rx => return r.unwrap_or(Err(Error::Stopped)),
            _ = answered.wait_for(|a| *a >= commit || self.stopped()) => {}
        }
        match rx.try_recv() {
            Ok(r) => r,
            Err(oneshot::error::TryRecvError::Empty) => Err(Error::Timeout),
            Err(oneshot::error::TryRecvError::Closed) => Err(Error::Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_of(rx: &mut oneshot::Receiver<Reply>) -> Result<u32, Error> {
        rx.try_recv()
            .expect("answered")
            .map(|a| *a.downcast::<u32>().expect("a u32"))
    }

    #[test]
    fn an_applied_request_gets_its_answer_once() {
        let p = Pending::new(0, 8);
        let mut rx = p.register(7).unwrap();
        assert!(p.track(2, 7, p.installs()));
        p.applied_through(5, 2, vec![(7, Box::new(42u32)), (9, Box::new(1u32))]);
        assert_eq!(answer_of(&mut rx), Ok(42));
        assert_eq!(p.applied(), 5);
        assert!(p.is_empty());
    }

    #[test]
    fn a_request_passed_by_a_later_term_never_applies() {
        let p = Pending::new(0, 8);
        let mut older = p.register(1).unwrap();
        let mut current = p.register(3).unwrap();
        assert!(p.track(2, 1, p.installs()));
        assert!(p.track(3, 3, p.installs()));
        // An entry of term 3 is applied: term 2's request lost its slot, term 3's may come.
        p.applied_through(10, 3, Vec::new());
        assert_eq!(answer_of(&mut older), Err(Error::LeaderChanged));
        assert!(current.try_recv().is_err(), "still waiting");
        p.applied_through(11, 3, vec![(3, Box::new(5u32))]);
        assert_eq!(answer_of(&mut current), Ok(5));
    }

    #[test]
    fn a_snapshot_install_times_out_what_it_may_hold() {
        let p = Pending::new(0, 8);
        let mut tracked = p.register(1).unwrap();
        assert!(p.track(4, 1, p.installs()));
        let seen = p.installs();
        let _late = p.register(3).unwrap();
        p.forget_tracked();
        assert_eq!(answer_of(&mut tracked), Err(Error::Timeout));
        // Tracked after the install with the count read before it: its fate is unknown.
        assert!(!p.track(4, 3, seen));
        assert!(p.is_empty());
    }

    #[test]
    fn a_stop_answers_everyone_and_refuses_more() {
        let p = Pending::new(0, 1);
        let mut rx = p.register(1).unwrap();
        assert_eq!(p.register(3).unwrap_err(), Error::TooManyRequests);
        p.stop();
        assert_eq!(answer_of(&mut rx), Err(Error::Stopped));
        assert_eq!(p.register(5).unwrap_err(), Error::Stopped);
    }
}
