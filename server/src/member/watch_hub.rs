//! The watch hub: recent committed events in a bounded in-memory ring, and a signal that the
//! revision moved.
//!
//! Watch streams pull: each keeps, per watcher, the next revision it owes and reads events
//! from the ring, or from the tree when they are older than the ring. A slow watcher therefore
//! costs no memory here; it falls behind, reads history from the tree, and is cancelled with
//! the compacted revision if compaction removed what it still owes (as etcd does).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::mvcc::Event;

/// The events of one revision.
#[derive(Debug)]
pub struct Revision {
    /// The revision.
    pub rev: i64,
    /// Its events in sub-revision order.
    pub events: Vec<Event>,
    bytes: usize,
}

#[derive(Debug)]
struct Ring {
    revs: VecDeque<Arc<Revision>>,
    bytes: usize,
    /// Every revision at or above this with events is in `revs`.
    covered_from: i64,
}

/// Fan-out point of committed events.
#[derive(Debug)]
pub struct WatchHub {
    ring: Mutex<Ring>,
    ring_bytes_max: usize,
    rev: tokio::sync::watch::Sender<i64>,
    watchers: AtomicUsize,
}

impl WatchHub {
    /// A hub at revision `rev` keeping about `ring_bytes_max` of recent events.
    pub fn new(rev: i64, ring_bytes_max: usize) -> WatchHub {
        WatchHub {
            ring: Mutex::new(Ring {
                revs: VecDeque::new(),
                bytes: 0,
                covered_from: rev + 1,
            }),
            ring_bytes_max,
            rev: tokio::sync::watch::channel(rev).0,
            watchers: AtomicUsize::new(0),
        }
    }

    /// Records the events of revision `rev` (called in revision order, after they are
    /// committed to the tree).
    pub fn publish(&self, rev: i64, events: Vec<Event>) {
        if !events.is_empty() {
            let bytes = events.iter().map(Event::size_bytes).sum::<usize>() + 64;
            let mut ring = self.ring.lock();
            debug_assert!(ring.revs.back().is_none_or(|r| r.rev < rev));
            ring.revs
                .push_back(Arc::new(Revision { rev, events, bytes }));
            ring.bytes += bytes;
            while ring.bytes > self.ring_bytes_max && ring.revs.len() > 1 {
                let old = ring.revs.pop_front().expect("non-empty");
                ring.bytes -= old.bytes;
                ring.covered_from = old.rev + 1;
            }
        }
        self.rev.send_if_modified(|r| {
            let moved = *r < rev;
            *r = (*r).max(rev);
            moved
        });
    }

    /// Starts over at revision `rev` (the key space was replaced by a snapshot): the ring is
    /// emptied, so watchers read what they owe from the tree.
    pub fn reset(&self, rev: i64) {
        let mut ring = self.ring.lock();
        ring.revs.clear();
        ring.bytes = 0;
        ring.covered_from = rev + 1;
        drop(ring);
        self.rev.send_replace(rev);
    }

    /// Forgets events below the compacted revision `rev`: a watcher that still owes them then
    /// reads the tree, which reports the compaction, and is cancelled as etcd cancels it.
    pub fn compacted(&self, rev: i64) {
        let mut ring = self.ring.lock();
        while ring.revs.front().is_some_and(|r| r.rev < rev) {
            let old = ring.revs.pop_front().expect("non-empty");
            ring.bytes -= old.bytes;
        }
        ring.covered_from = ring.covered_from.max(rev);
    }

    /// The latest published revision.
    pub fn revision(&self) -> i64 {
        *self.rev.borrow()
    }

    /// A receiver that wakes when the revision moves.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.rev.subscribe()
    }

    /// Revisions `from..` from the ring, at most about `max_events` events; `None` if the ring
    /// no longer holds `from` (read the tree instead).
    pub fn read(&self, from: i64, max_events: usize) -> Option<Vec<Arc<Revision>>> {
        let ring = self.ring.lock();
        if from < ring.covered_from {
            return None;
        }
        let start = ring.revs.partition_point(|r| r.rev < from);
        let mut out = Vec::new();
        let mut n = 0;
        for r in ring.revs.range(start..) {
            if n >= max_events {
                break;
            }
            n += r.events.len();
            out.push(Arc::clone(r));
        }
        Some(out)
    }

    /// Counts a watcher in (returns the new count).
    pub fn watcher_added(&self) -> usize {
        self.watchers.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts a watcher out.
    pub fn watcher_removed(&self) {
        self.watchers.fetch_sub(1, Ordering::Relaxed);
    }

    /// Watchers open.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::KeyValue;

    fn ev(rev: i64) -> Event {
        Event {
            delete: false,
            kv: KeyValue {
                key: vec![b'k'; 100],
                mod_revision: rev,
                ..KeyValue::default()
            },
            prev: None,
            prev_rev: None,
        }
    }

    #[test]
    fn the_ring_is_bounded_and_reports_what_it_lost() {
        let hub = WatchHub::new(1, 2000);
        for rev in 2..50 {
            hub.publish(rev, vec![ev(rev)]);
        }
        assert_eq!(hub.revision(), 49);
        assert!(hub.read(2, 100).is_none(), "evicted");
        let tail = hub.read(45, 100).unwrap();
        assert_eq!(
            tail.iter().map(|r| r.rev).collect::<Vec<_>>(),
            vec![45, 46, 47, 48, 49]
        );
        assert!(hub.read(50, 100).unwrap().is_empty());
    }

    #[test]
    fn compaction_sends_readers_of_older_revisions_to_the_tree() {
        let hub = WatchHub::new(1, 1 << 20);
        for rev in 2..10 {
            hub.publish(rev, vec![ev(rev)]);
        }
        hub.compacted(6);
        assert!(hub.read(5, 100).is_none(), "below the compaction");
        let tail = hub.read(6, 100).unwrap();
        assert_eq!(
            tail.iter().map(|r| r.rev).collect::<Vec<_>>(),
            vec![6, 7, 8, 9]
        );
        hub.compacted(3);
        assert!(
            hub.read(5, 100).is_none(),
            "an older compaction changes nothing"
        );
    }
}
