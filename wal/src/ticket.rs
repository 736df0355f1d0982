//! Completion of appends: a [`Ticket`] resolves once a fdatasync covering its records returned.
//!
//! Durability is tracked by append sequence numbers, which only grow (log indexes can move back
//! on `truncate_suffix`). Waiters are woken one by one, by thread unpark or async waker.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Shared durability state between the syncer and ticket holders.
#[derive(Debug, Default)]
pub(crate) struct Durability {
    durable_seq: AtomicU64,
    stopped_flag: std::sync::atomic::AtomicBool,
    inner: Mutex<Waiters>,
}

#[derive(Debug, Default)]
struct Waiters {
    list: Vec<(u64, Waker)>,
    stopped: Option<(&'static str, String)>,
    closed: bool,
}

impl Durability {
    pub(crate) fn durable_seq(&self) -> u64 {
        self.durable_seq.load(Ordering::Acquire)
    }

    /// Marks every append up to `seq` durable and wakes their waiters.
    pub(crate) fn advance(&self, seq: u64) {
        let ready: Vec<Waker> = {
            let mut g = self.inner.lock();
            if g.stopped.is_some() {
                // Fail-stop: nothing completes after a failure, even if this sync succeeded.
                return;
            }
            let prev = self.durable_seq.fetch_max(seq, Ordering::AcqRel);
            assert!(prev <= seq, "durability moves forward only");
            let mut ready = Vec::new();
            g.list.retain(|(s, w)| {
                if *s <= seq {
                    ready.push(w.clone());
                    false
                } else {
                    true
                }
            });
            ready
        };
        for w in ready {
            w.wake();
        }
    }

    /// Fail-stop: no append that is not durable yet will ever complete.
    pub(crate) fn stop(&self, op: &'static str, message: String) {
        let waiters = {
            let mut g = self.inner.lock();
            if g.stopped.is_none() {
                g.stopped = Some((op, message));
            }
            self.stopped_flag.store(true, Ordering::Release);
            std::mem::take(&mut g.list)
        };
        for (_, w) in waiters {
            w.wake();
        }
    }

    pub(crate) fn close(&self) {
        let waiters = {
            let mut g = self.inner.lock();
            g.closed = true;
            std::mem::take(&mut g.list)
        };
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// Cheap check for the append path.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped_flag.load(Ordering::Acquire)
    }

    pub(crate) fn stopped(&self) -> Option<Error> {
        let g = self.inner.lock();
        g.stopped.as_ref().map(|(op, m)| Error::Stopped {
            op,
            message: m.clone(),
        })
    }

    /// `Ready` with the outcome for `seq`, or `Pending` after registering `waker`.
    fn poll_seq(&self, seq: u64, waker: &Waker) -> Poll<Result<()>> {
        if self.durable_seq() >= seq {
            return Poll::Ready(Ok(()));
        }
        let mut g = self.inner.lock();
        // Re-check under the lock: `advance` stores, then locks to wake.
        if self.durable_seq() >= seq {
            return Poll::Ready(Ok(()));
        }
        if let Some((op, m)) = &g.stopped {
            return Poll::Ready(Err(Error::Stopped {
                op,
                message: m.clone(),
            }));
        }
        if g.closed {
            return Poll::Ready(Err(Error::Closed));
        }
        if let Some(slot) = g
            .list
            .iter_mut()
            .find(|(s, w)| *s == seq && w.will_wake(waker))
        {
            slot.1 = waker.clone();
        } else {
            g.list.push((seq, waker.clone()));
        }
        Poll::Pending
    }
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// The promise of one append: resolves when its records are durable, or with the error that
/// stopped the log. Wait on it with [`Ticket::wait`] or `.await` it.
#[derive(Debug)]
#[must_use = "an append is not durable until its ticket completes"]
pub struct Ticket {
    pub(crate) durability: Arc<Durability>,
    pub(crate) seq: u64,
    pub(crate) first_index: u64,
    pub(crate) last_index: u64,
}

impl Ticket {
    /// Index of the first record of the append.
    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// Index of the last record of the append.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Whether the records are already durable.
    pub fn is_durable(&self) -> bool {
        self.durability.durable_seq() >= self.seq
    }

    /// Blocks until the records are durable.
    pub fn wait(&self) -> Result<()> {
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        loop {
            match self.durability.poll_seq(self.seq, &waker) {
                Poll::Ready(r) => return r,
                Poll::Pending => std::thread::park(),
            }
        }
    }
}

impl Future for Ticket {
    type Output = Result<()>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.durability.poll_seq(self.seq, cx.waker())
    }
}
