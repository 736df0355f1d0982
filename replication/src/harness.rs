//! A synchronous in-memory network of protocol nodes for scenario tests and the step bench:
//! every Ready is persisted at once (fdatasync takes no time), messages queue until delivered,
//! and links can be cut. Unlike the simulator there is no randomness: tests say exactly what
//! happens.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::protocol::{Protocol, ProtocolMessage};
use crate::store::{LogStore, MemStore};
use crate::types::{Entry, EntryKind, NodeId, ReadState, SnapshotMeta};

/// Nodes, their stores, what they applied, and the messages in flight.
pub struct Network<P: Protocol> {
    /// The nodes (absent: stopped).
    pub nodes: BTreeMap<NodeId, Option<P>>,
    /// Their stores.
    pub stores: BTreeMap<NodeId, MemStore>,
    /// Entries each node applied, in order.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Read states each node received.
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    /// Snapshot each node holds: meta and the applied entries it covers, as data.
    pub snapshots: BTreeMap<NodeId, (SnapshotMeta, Vec<u8>)>,
    /// Messages in flight.
    pub queue: VecDeque<P::Message>,
    /// Cut links (from, to).
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Dropped message count.
    pub dropped: u64,
}

impl<P: Protocol> Network<P> {
    /// A network of the given nodes.
    pub fn new(nodes: Vec<P>) -> Network<P> {
        let mut n = Network {
            nodes: BTreeMap::new(),
            stores: BTreeMap::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            dropped: 0,
        };
        for p in nodes {
            let id = p.id();
            n.stores.insert(id, MemStore::new());
            n.applied.insert(id, Vec::new());
            n.reads.insert(id, Vec::new());
            n.nodes.insert(id, Some(p));
        }
        n
    }

    /// A network whose stores already hold what each node was restored from.
    pub fn restored(nodes: Vec<(P, crate::protocol::Restored)>) -> Network<P> {
        let restored: Vec<(NodeId, crate::protocol::Restored)> =
            nodes.iter().map(|(p, r)| (p.id(), r.clone())).collect();
        let mut n = Network::new(nodes.into_iter().map(|(p, _)| p).collect());
        for (id, r) in restored {
            let store = n.stores.get_mut(&id).expect("store");
            if r.snapshot.index > 0 {
                store.install_snapshot(&r.snapshot).expect("memory store");
            }
            store
                .save(Some(r.hard_state), None, &r.entries)
                .expect("memory store");
            store.sync().expect("memory store");
        }
        n
    }

    /// A node.
    pub fn node(&mut self, id: NodeId) -> &mut P {
        self.nodes
            .get_mut(&id)
            .and_then(Option::as_mut)
            .expect("running node")
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: NodeId) {
        for &other in self.nodes.keys() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Carries out every pending Ready of `id` synchronously.
    pub fn drain_ready(&mut self, id: NodeId) {
        loop {
            let Some(Some(p)) = self.nodes.get_mut(&id) else {
                return;
            };
            if !p.has_ready() {
                return;
            }
            let r = p.ready();
            let must_persist = r.must_persist();
            let store = self.stores.get_mut(&id).expect("store");
            if let Some((meta, data)) = &r.snapshot {
                store.install_snapshot(meta).expect("memory store");
                self.snapshots.insert(id, (meta.clone(), data.clone()));
                let applied = self.applied.get_mut(&id).expect("node");
                applied.retain(|e| e.index <= meta.index);
            }
            store
                .save(r.hard_state, r.truncate_from, &r.entries)
                .expect("memory store");
            store.sync().expect("memory store");
            let last = store.last_position();
            let mut out = r.messages;
            out.extend(r.messages_after_persist);
            for mut m in out {
                if m.snapshot_request().is_some() {
                    let data = self
                        .snapshots
                        .get(&id)
                        .map(|s| s.1.clone())
                        .unwrap_or_default();
                    m.attach_snapshot(data);
                }
                self.queue.push_back(m);
            }
            let p = self
                .nodes
                .get_mut(&id)
                .and_then(Option::as_mut)
                .expect("running");
            if must_persist {
                p.persisted(last.0, last.1);
            }
            if let Some(e) = r.committed.last() {
                let idx = e.index;
                self.applied.get_mut(&id).expect("node").extend(r.committed);
                p.applied(idx);
            }
            self.reads.get_mut(&id).expect("node").extend(r.read_states);
        }
    }

    /// Drains every node's Ready, then delivers messages until none are left.
    pub fn settle(&mut self) {
        for _ in 0..100_000 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.drain_ready(id);
            }
            let Some(m) = self.queue.pop_front() else {
                return;
            };
            self.deliver(m);
        }
        panic!("network did not settle");
    }

    /// Delivers one message (unless its link is cut or its target stopped).
    pub fn deliver(&mut self, m: P::Message) {
        let (from, to) = (m.from(), m.to());
        if self.cut.contains(&(from, to)) {
            self.dropped += 1;
            return;
        }
        if let Some(Some(p)) = self.nodes.get_mut(&to) {
            p.step(m);
            self.drain_ready(to);
        } else {
            self.dropped += 1;
        }
    }

    /// Ticks `id` `n` times, settling after each.
    pub fn tick(&mut self, id: NodeId, n: u32) {
        for _ in 0..n {
            if let Some(Some(p)) = self.nodes.get_mut(&id) {
                p.tick();
            }
            self.settle();
        }
    }

    /// Ticks every node `n` times, settling after each round.
    pub fn tick_all(&mut self, n: u32) {
        for _ in 0..n {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                if let Some(Some(p)) = self.nodes.get_mut(&id) {
                    p.tick();
                }
            }
            self.settle();
        }
    }

    /// Normal entries node `id` applied, as data.
    pub fn applied_data(&self, id: NodeId) -> Vec<Vec<u8>> {
        self.applied[&id]
            .iter()
            .filter(|e| e.kind == EntryKind::Normal)
            .map(|e| e.data.clone())
            .collect()
    }
}
