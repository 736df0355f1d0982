//! ZooKeeper's watches on a member, each held for one connection: one-shot data, exist and
//! child watches by path, fired by the events of applied writes and then forgotten, and
//! persistent ones (`addWatch`) that stay: on a path (every event of that path) or recursive
//! (creations, deletions and data changes anywhere under it), each delivered only to a
//! connection that may read the node.
//!
//! Three rules give ZooKeeper's ordering. The apply thread fires a revision's events under the
//! table's lock before that revision's writers are answered, and a read takes its view of the
//! key space and registers its watch under the same lock, once the table has fired through the
//! view's revision (see [`Watches::read`]), so no event falls between a read and its watch.
//! No reply goes out before the events of the revision it reflects are queued for its
//! connection (see [`Watches::fired_through`]). And each queued notification carries the
//! revision of its change ([`Note`]): the connection sends it before the replies that reflect
//! that revision and after those that do not (`outbox`). So an event reaches the client
//! before any reply that shows its change, and after the reply of the read that armed its
//! watch, when ZooKeeper's clients register the watcher that is to hear it. A connection cut
//! off (its queue full, or every connection at a snapshot install) sends no reply after the
//! cut: what it would answer may reflect events it was never told of.
//!
//! Bounded: a connection holds at most [`WATCHES_PER_CONNECTION_MAX`] watches, and its queue
//! at most [`QUEUED_PER_CONNECTION_MAX`] notifications; past that, the connection is closed
//! (its client reconnects and reads again).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::mpsc;

use super::acl::{self, AuthId};
use super::codes::{event, perm, state, xid};
use super::jute::Jute;
use super::records::{ReplyHeader, WatcherEvent};
use super::znode::StoredAcl;

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
    /// Every event of the path, until removed (addWatch PERSISTENT).
    Persistent,
    /// Creations, deletions and data changes of the path and below, until removed (addWatch
    /// PERSISTENT_RECURSIVE).
    Recursive,
}

/// Which watches removeWatches and checkWatches name (ZooKeeper's `WatcherType`).
pub mod watcher_type {
    /// One-shot child watches.
    pub const CHILDREN: i32 = 1;
    /// One-shot data and exist watches.
    pub const DATA: i32 = 2;
    /// Every kind.
    pub const ANY: i32 = 3;
    /// Persistent watches.
    pub const PERSISTENT: i32 = 4;
    /// Persistent recursive watches.
    pub const PERSISTENT_RECURSIVE: i32 = 5;
}

impl Kind {
    /// The kinds a `watcher_type` names; None for a type ZooKeeper does not know.
    pub fn of_type(t: i32) -> Option<&'static [Kind]> {
        Some(match t {
            watcher_type::CHILDREN => &[Kind::Child],
            watcher_type::DATA => &[Kind::Data, Kind::Exist],
            watcher_type::ANY => &[
                Kind::Data,
                Kind::Exist,
                Kind::Child,
                Kind::Persistent,
                Kind::Recursive,
            ],
            watcher_type::PERSISTENT => &[Kind::Persistent],
            watcher_type::PERSISTENT_RECURSIVE => &[Kind::Recursive],
            _ => return None,
        })
    }
}

/// A change applied to one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The revision (zxid) that made it.
    pub revision: i64,
    /// `codes::event`.
    pub kind: i32,
    /// The path it happened to.
    pub path: String,
    /// That node's ACL (for a deletion, the one it had), checked before a recursive watch
    /// delivers it.
    pub acl: Vec<StoredAcl>,
}

/// A notification queued for a connection, or [`SESSION_ENDED`] as its frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The revision of the change it tells of. It goes out before any reply that reflects
    /// that revision, and after any reply that does not (a read's whose view is older).
    pub revision: i64,
    /// The frame to send.
    pub frame: Vec<u8>,
}

/// A connection's notifications.
pub type Notifications = mpsc::Receiver<Note>;

/// Queued for a connection whose session was closed: it ends (after answering the
/// closeSession it sent itself, if it did).
pub const SESSION_ENDED: &[u8] = &[];

/// One connection's entry.
#[derive(Debug)]
struct Conn {
    tx: mpsc::Sender<Note>,
    /// The session it serves.
    session: i64,
    /// How many watches it holds.
    count: usize,
    /// Who it is (for recursive deliveries).
    ids: Vec<AuthId>,
}

#[derive(Debug, Default)]
struct Table {
    /// Watchers by (kind, path).
    by_path: HashMap<(Kind, String), HashSet<u64>>,
    /// Each connection.
    conns: HashMap<u64, Conn>,
    /// How many recursive watches are held (none: no ancestor walk per event).
    recursive: usize,
    /// The revision fired through.
    revision: i64,
}

impl Table {
    /// Takes `conn`'s watch of `kind` on `path` out; whether it held one.
    fn remove(&mut self, conn: u64, kind: Kind, path: &str) -> bool {
        let key = (kind, path.to_string());
        let Some(set) = self.by_path.get_mut(&key) else {
            return false;
        };
        if !set.remove(&conn) {
            return false;
        }
        if set.is_empty() {
            self.by_path.remove(&key);
        }
        if kind == Kind::Recursive {
            self.recursive -= 1;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.count -= 1;
        }
        true
    }
}

/// The watch table of a member.
#[derive(Debug, Default)]
pub struct Watches {
    table: Mutex<Table>,
    next_conn: AtomicU64,
    /// The table's revision, for replies that arm no watch (see [`Watches::fired_through`]).
    fired_revision: AtomicI64,
    fired: tokio::sync::Notify,
}

/// A read's hold on the table: registrations made through it see no event in between.
pub struct ReadGuard<'a> {
    table: MutexGuard<'a, Table>,
    conn: u64,
    /// The revision of the read's view.
    revision: i64,
}

impl ReadGuard<'_> {
    /// Arms a watch of `kind` on `path`; false when the connection holds too many already.
    pub fn watch(&mut self, kind: Kind, path: &str) -> bool {
        let Some(c) = self.table.conns.get_mut(&self.conn) else {
            return false;
        };
        if c.count >= WATCHES_PER_CONNECTION_MAX {
            return false;
        }
        if self
            .table
            .by_path
            .entry((kind, path.to_string()))
            .or_default()
            .insert(self.conn)
        {
            self.table.conns.get_mut(&self.conn).expect("checked").count += 1;
            if kind == Kind::Recursive {
                self.table.recursive += 1;
            }
        }
        true
    }

    /// Queues a notification of `kind` on `path` for this connection now (setWatches'
    /// events for what the client missed, as of the read's view); false when its queue is
    /// full.
    pub fn notify(&mut self, kind: i32, path: &str) -> bool {
        let note = Note {
            revision: self.revision,
            frame: notification(kind, path),
        };
        self.table
            .conns
            .get(&self.conn)
            .is_some_and(|c| c.tx.try_send(note).is_ok())
    }
}

fn notification(kind: i32, path: &str) -> Vec<u8> {
    let mut out = ReplyHeader {
        xid: xid::NOTIFICATION,
        zxid: -1,
        err: 0,
    }
    .to_bytes();
    out.extend(
        WatcherEvent {
            kind,
            state: state::SYNC_CONNECTED,
            path: path.to_string(),
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
        w.fired_revision.store(revision, Ordering::Release);
        w
    }

    /// Waits until every event up to `revision` has been fired: queued for the connections
    /// watching, so a reply that reflects `revision` goes out after them. A write commits
    /// before its events are fired, so a read that takes no watch can see a revision whose
    /// notifications are not queued yet; it waits here (briefly) before it answers.
    pub async fn fired_through(&self, revision: i64) {
        loop {
            let notified = self.fired.notified();
            if self.fired_revision.load(Ordering::Acquire) >= revision {
                return;
            }
            notified.await;
        }
    }

    /// A new connection of `session`: its id and its notifications.
    pub fn connect(&self, session: i64) -> (u64, Notifications) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUED_PER_CONNECTION_MAX);
        let c = Conn {
            tx,
            session,
            count: 0,
            ids: Vec::new(),
        };
        self.table.lock().conns.insert(id, c);
        (id, rx)
    }

    /// `conn` is now `ids`.
    pub fn identify(&self, conn: u64, ids: Vec<AuthId>) {
        if let Some(c) = self.table.lock().conns.get_mut(&conn) {
            c.ids = ids;
        }
    }

    /// The connection is gone: its watches go too.
    pub fn disconnect(&self, conn: u64) {
        let mut t = self.table.lock();
        t.conns.remove(&conn);
        let mut recursive = 0;
        t.by_path.retain(|(kind, _), set| {
            if set.remove(&conn) && *kind == Kind::Recursive {
                recursive += 1;
            }
            !set.is_empty()
        });
        t.recursive -= recursive;
    }

    /// Cuts every connection off (their notifications end, so they close) and forgets every
    /// watch: after a snapshot install, which changes the tree without events, as ZooKeeper
    /// closes its clients' connections when a follower resynchronizes. Clients reconnect to
    /// their sessions and re-arm their watches from the last zxid they saw (setWatches), which
    /// fires what changed meanwhile.
    pub fn cut_all(&self) {
        let mut t = self.table.lock();
        t.conns.clear();
        t.by_path.clear();
        t.recursive = 0;
    }

    /// `sessions` were closed (applied, committed): each of their connections gets
    /// [`SESSION_ENDED`] behind its notifications, or is cut off if its queue is full. As a
    /// ZooKeeper server closes the connection of a session it closes, a client never goes on
    /// using a session whose ephemerals are gone.
    pub fn end_sessions(&self, sessions: &[i64]) {
        let mut t = self.table.lock();
        let full: Vec<u64> = t
            .conns
            .iter()
            .filter(|(_, c)| sessions.contains(&c.session))
            .filter(|(_, c)| {
                let ended = Note {
                    revision: t.revision,
                    frame: SESSION_ENDED.to_vec(),
                };
                c.tx.try_send(ended).is_err()
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in full {
            t.conns.remove(&conn);
        }
    }

    /// For `wchs`: connections holding watches, paths watched, watches held.
    pub fn stats(&self) -> (usize, usize, usize) {
        let t = self.table.lock();
        let watching = t.conns.values().filter(|c| c.count > 0).count();
        let paths: HashSet<&str> = t.by_path.keys().map(|(_, p)| p.as_str()).collect();
        let total = t.by_path.values().map(HashSet::len).sum();
        (watching, paths.len(), total)
    }

    /// Takes out `conn`'s watches of `kinds` on `path` (`remove`), or only looks; whether it
    /// held any.
    pub fn unwatch(&self, conn: u64, kinds: &[Kind], path: &str, remove: bool) -> bool {
        let mut t = self.table.lock();
        let mut held = false;
        for kind in kinds {
            if remove {
                held |= t.remove(conn, *kind, path);
            } else {
                held |= t
                    .by_path
                    .get(&(*kind, path.to_string()))
                    .is_some_and(|s| s.contains(&conn));
            }
        }
        held
    }

    /// A read and the hold on the table its watches are armed through: `take` reads (under
    /// the table's lock) a view of the key space and its revision, again until the table has
    /// fired every event up to that revision. So a watch armed through the guard misses no
    /// event after the view, and hears none the view already reflects.
    pub async fn read<T>(
        &self,
        conn: u64,
        mut take: impl FnMut() -> (T, i64),
    ) -> (ReadGuard<'_>, T) {
        loop {
            let notified = self.fired.notified();
            {
                let table = self.table.lock();
                let (view, revision) = take();
                if table.revision >= revision {
                    return (
                        ReadGuard {
                            table,
                            conn,
                            revision,
                        },
                        view,
                    );
                }
            }
            notified.await;
        }
    }

    /// Fires `events`, applied through `revision`: each connection watching hears each event
    /// once; one-shot watches are then forgotten. A connection whose queue is full is cut off
    /// (its notifications stop; it is closed).
    pub fn fire(&self, revision: i64, events: &[Event]) {
        // A broken member for the chaos checks to catch: it drops a batch of notifications.
        let dropped = (|| {
            fail::fail_point!("zk::fire", |_| true);
            false
        })();
        let events = if dropped { &[] } else { events };
        let mut t = self.table.lock();
        for e in events {
            let once: &[Kind] = match e.kind {
                event::NODE_CREATED => &[Kind::Exist],
                event::NODE_DATA_CHANGED => &[Kind::Data, Kind::Exist],
                event::NODE_CHILDREN_CHANGED => &[Kind::Child],
                event::NODE_DELETED => &[Kind::Data, Kind::Exist, Kind::Child],
                _ => &[],
            };
            let mut hearers = HashSet::new();
            for k in once {
                if let Some(set) = t.by_path.remove(&(*k, e.path.clone())) {
                    for conn in set {
                        if let Some(c) = t.conns.get_mut(&conn) {
                            c.count -= 1;
                        }
                        hearers.insert(conn);
                    }
                }
            }
            // A watch that stays hears only while its connection may read the node (the
            // one-shot ones were armed by reads that needed READ, or by exists).
            let may_read = |t: &Table, conn: &u64| {
                t.conns
                    .get(conn)
                    .is_some_and(|c| acl::allows(&e.acl, &c.ids, perm::READ))
            };
            if let Some(set) = t.by_path.get(&(Kind::Persistent, e.path.clone())) {
                hearers.extend(set.iter().filter(|c| may_read(&t, c)).copied());
            }
            if t.recursive > 0 && e.kind != event::NODE_CHILDREN_CHANGED {
                for at in ancestors(&e.path) {
                    let Some(set) = t.by_path.get(&(Kind::Recursive, at.to_string())) else {
                        continue;
                    };
                    hearers.extend(set.iter().filter(|c| may_read(&t, c)).copied());
                }
            }
            if hearers.is_empty() {
                continue;
            }
            let note = Note {
                revision: e.revision,
                frame: notification(e.kind, &e.path),
            };
            let mut full = Vec::new();
            for conn in hearers {
                if let Some(c) = t.conns.get(&conn)
                    && c.tx.try_send(note.clone()).is_err()
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
        self.fired_revision.store(t.revision, Ordering::Release);
        drop(t);
        self.fired.notify_waiters();
    }
}

/// `path` and every ancestor up to the root.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let at = next?;
        next = match at.rfind('/') {
            _ if at == "/" => None,
            Some(0) => Some("/"),
            Some(i) => Some(&at[..i]),
            None => None,
        };
        Some(at)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: i32, path: &str) -> Event {
        Event {
            revision: 2,
            kind,
            path: path.into(),
            acl: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_watch_fires_once_for_its_kind() {
        let w = Watches::new(1);
        let (c, mut rx) = w.connect(1);
        {
            let (mut g, ()) = w.read(c, || ((), 1)).await;
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
        assert!(first.frame.ends_with(b"/a"));
        assert!(rx.try_recv().unwrap().frame.ends_with(b"/"));
        assert!(rx.try_recv().is_err(), "one-shot");
    }

    #[tokio::test]
    async fn a_read_waits_for_the_events_of_its_revision() {
        let w = std::sync::Arc::new(Watches::new(1));
        let (c, _rx) = w.connect(1);
        let w2 = std::sync::Arc::clone(&w);
        let read = tokio::spawn(async move {
            let _g = w2.read(c, || ((), 3)).await;
        });
        tokio::task::yield_now().await;
        assert!(!read.is_finished());
        w.fire(3, &[]);
        read.await.unwrap();
    }

    #[tokio::test]
    async fn a_gone_connection_holds_no_watch() {
        let w = Watches::new(1);
        let (c, rx) = w.connect(1);
        assert!(w.read(c, || ((), 1)).await.0.watch(Kind::Data, "/a"));
        assert!(w.read(c, || ((), 1)).await.0.watch(Kind::Recursive, "/a"));
        drop(rx);
        w.disconnect(c);
        let t = w.table.lock();
        assert!(t.by_path.is_empty() && t.recursive == 0);
    }

    #[test]
    fn ancestors_reach_the_root() {
        assert_eq!(ancestors("/a/b").collect::<Vec<_>>(), ["/a/b", "/a", "/"]);
        assert_eq!(ancestors("/").collect::<Vec<_>>(), ["/"]);
    }

    #[tokio::test]
    async fn persistent_watches_stay_and_recursive_ones_check_read_access() {
        let w = Watches::new(1);
        let (c, mut rx) = w.connect(1);
        {
            let (mut g, ()) = w.read(c, || ((), 1)).await;
            assert!(g.watch(Kind::Persistent, "/p"));
            assert!(g.watch(Kind::Recursive, "/r"));
        }
        let locked = vec![StoredAcl {
            perms: perm::ALL,
            scheme: "digest".into(),
            id: "someone:hash".into(),
        }];
        let mut secret = ev(event::NODE_CREATED, "/r/secret");
        secret.acl = locked;
        w.fire(
            2,
            &[
                ev(event::NODE_CHILDREN_CHANGED, "/p"),
                ev(event::NODE_DATA_CHANGED, "/p"),
                ev(event::NODE_CREATED, "/r/a/b"),
                ev(event::NODE_CHILDREN_CHANGED, "/r/a"),
                secret,
                ev(event::NODE_DELETED, "/r"),
            ],
        );
        w.fire(3, &[ev(event::NODE_DATA_CHANGED, "/p")]);
        let mut heard = Vec::new();
        while let Ok(n) = rx.try_recv() {
            heard.push(String::from_utf8_lossy(&n.frame[n.frame.len() - 6..]).to_string());
        }
        assert_eq!(heard.len(), 5, "{heard:?}");
        assert!(heard.iter().all(|h| !h.contains("secret")));
        assert!(w.unwatch(c, &[Kind::Persistent], "/p", false));
        assert!(w.unwatch(c, Kind::of_type(watcher_type::ANY).unwrap(), "/p", true));
        assert!(!w.unwatch(c, &[Kind::Persistent], "/p", false));
    }
}
