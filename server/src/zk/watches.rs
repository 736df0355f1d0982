//! ZooKeeper's one-shot watches on a member: data, exist and child watches by path, each held
//! for one connection, fired by the events of applied writes and then forgotten.
//!
//! Two rules give ZooKeeper's ordering. The apply thread fires a revision's events under the
//! table's lock before that revision's writers are answered, and a read registers its watch
//! under the same lock at the revision the table has fired through (see [`Watches::read_at`]),
//! so no event falls between a read and its watch. Each connection has one queue of
//! notifications, drained before every reply it sends, so an event reaches the client before
//! any reply that reflects it.
//!
//! Bounded: a connection holds at most [`WATCHES_PER_CONNECTION_MAX`] watches, and its queue
//! at most [`QUEUED_PER_CONNECTION_MAX`] notifications; past that, the connection is closed
//! (its client reconnects and reads again).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::mpsc;

use super::codes::{event, state, xid};
use super::jute::Jute;
use super::records::{ReplyHeader, WatcherEvent};

/// Most watches one connection holds.
pub const WATCHES_PER_CONNECTION_MAX: usize = 65_536;
/// Most notifications waiting for one connection.
pub const QUEUED_PER_CONNECTION_MAX: usize = 65_536;

/// What a watch waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The node's data changes or it is deleted (getData, or exists on a node).
    Data,
    /// The node is created (exists on a missing node).
    Exist,
    /// Its children change or it is deleted (getChildren).
    Child,
}

/// A change applied to one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `codes::event`.
    pub kind: i32,
    /// The path it happened to.
    pub path: String,
}

/// A connection's notifications.
pub type Notifications = mpsc::Receiver<Vec<u8>>;

#[derive(Debug, Default)]
struct Table {
    /// Watchers by (kind, path).
    by_path: HashMap<(Kind, String), HashSet<u64>>,
    /// Each connection's queue and its watch count.
    conns: HashMap<u64, (mpsc::Sender<Vec<u8>>, usize)>,
    /// The revision fired through.
    revision: i64,
}

/// The watch table of a member.
#[derive(Debug, Default)]
pub struct Watches {
    table: Mutex<Table>,
    next_conn: AtomicU64,
    fired: tokio::sync::Notify,
}

/// A read's hold on the table: registrations made through it see no event in between.
pub struct ReadGuard<'a> {
    table: MutexGuard<'a, Table>,
    conn: u64,
}

impl ReadGuard<'_> {
    /// Arms a watch of `kind` on `path`; false when the connection holds too many already.
    pub fn watch(&mut self, kind: Kind, path: &str) -> bool {
        let Some((_, count)) = self.table.conns.get_mut(&self.conn) else {
            return false;
        };
        if *count >= WATCHES_PER_CONNECTION_MAX {
            return false;
        }
        if self
            .table
            .by_path
            .entry((kind, path.to_string()))
            .or_default()
            .insert(self.conn)
        {
            self.table.conns.get_mut(&self.conn).expect("checked").1 += 1;
        }
        true
    }
}

fn notification(e: &Event) -> Vec<u8> {
    let mut out = ReplyHeader {
        xid: xid::NOTIFICATION,
        zxid: -1,
        err: 0,
    }
    .to_bytes();
    out.extend(
        WatcherEvent {
            kind: e.kind,
            state: state::SYNC_CONNECTED,
            path: e.path.clone(),
        }
        .to_bytes(),
    );
    out
}

impl Watches {
    /// A table that has fired through `revision`.
    pub fn new(revision: i64) -> Watches {
        let w = Watches::default();
        w.table.lock().revision = revision;
        w
    }

    /// A new connection: its id and its notifications.
    pub fn connect(&self) -> (u64, Notifications) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUED_PER_CONNECTION_MAX);
        self.table.lock().conns.insert(id, (tx, 0));
        (id, rx)
    }

    /// The connection is gone: its watches go too.
    pub fn disconnect(&self, conn: u64) {
        let mut t = self.table.lock();
        t.conns.remove(&conn);
        t.by_path.retain(|_, set| {
            set.remove(&conn);
            !set.is_empty()
        });
    }

    /// Waits until the table has fired through `revision`, then holds it: a read made at
    /// that revision and the watches registered through the guard see no event in between.
    pub async fn read_at(&self, conn: u64, revision: i64) -> ReadGuard<'_> {
        loop {
            let notified = self.fired.notified();
            {
                let table = self.table.lock();
                if table.revision >= revision {
                    return ReadGuard { table, conn };
                }
            }
            notified.await;
        }
    }

    /// Fires `events`, applied through `revision`: each watcher hears once and is forgotten.
    /// A connection whose queue is full is cut off (its notifications stop; it is closed).
    pub fn fire(&self, revision: i64, events: &[Event]) {
        let mut t = self.table.lock();
        for e in events {
            let kinds: &[Kind] = match e.kind {
                event::NODE_CREATED => &[Kind::Exist],
                event::NODE_DATA_CHANGED => &[Kind::Data, Kind::Exist],
                event::NODE_CHILDREN_CHANGED => &[Kind::Child],
                event::NODE_DELETED => &[Kind::Data, Kind::Exist, Kind::Child],
                _ => &[],
            };
            let mut hearers = HashSet::new();
            for k in kinds {
                if let Some(set) = t.by_path.remove(&(*k, e.path.clone())) {
                    for conn in set {
                        if let Some((_, count)) = t.conns.get_mut(&conn) {
                            *count -= 1;
                        }
                        hearers.insert(conn);
                    }
                }
            }
            if hearers.is_empty() {
                continue;
            }
            let frame = notification(e);
            let mut full = Vec::new();
            for conn in hearers {
                if let Some((tx, _)) = t.conns.get(&conn)
                    && tx.try_send(frame.clone()).is_err()
                {
                    full.push(conn);
                }
            }
            for conn in full {
                // Dropping its sender ends the connection's notifications: it closes.
                t.conns.remove(&conn);
            }
        }
        t.revision = t.revision.max(revision);
        drop(t);
        self.fired.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: i32, path: &str) -> Event {
        Event {
            kind,
            path: path.into(),
        }
    }

    #[tokio::test]
    async fn a_watch_fires_once_for_its_kind() {
        let w = Watches::new(1);
        let (c, mut rx) = w.connect();
        {
            let mut g = w.read_at(c, 1).await;
            assert!(g.watch(Kind::Exist, "/a"));
            assert!(g.watch(Kind::Child, "/"));
        }
        w.fire(
            2,
            &[
                ev(event::NODE_CREATED, "/a"),
                ev(event::NODE_CHILDREN_CHANGED, "/"),
            ],
        );
        w.fire(3, &[ev(event::NODE_CREATED, "/a")]);
        let first = rx.try_recv().unwrap();
        assert!(first.ends_with(b"/a"));
        assert!(rx.try_recv().unwrap().ends_with(b"/"));
        assert!(rx.try_recv().is_err(), "one-shot");
    }

    #[tokio::test]
    async fn a_read_waits_for_the_events_of_its_revision() {
        let w = std::sync::Arc::new(Watches::new(1));
        let (c, _rx) = w.connect();
        let w2 = std::sync::Arc::clone(&w);
        let read = tokio::spawn(async move {
            let _g = w2.read_at(c, 3).await;
        });
        tokio::task::yield_now().await;
        assert!(!read.is_finished());
        w.fire(3, &[]);
        read.await.unwrap();
    }

    #[tokio::test]
    async fn a_gone_connection_holds_no_watch() {
        let w = Watches::new(1);
        let (c, rx) = w.connect();
        assert!(w.read_at(c, 1).await.watch(Kind::Data, "/a"));
        drop(rx);
        w.disconnect(c);
        assert!(w.table.lock().by_path.is_empty());
    }
}
