//! What travels to and from each peer: bytes sent and received on message connections, and
//! messages that could not be sent, as etcd's `etcd_network_peer_*` metrics count them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use quorumkv_replication::NodeId;

/// Peers counted at most: ids come from connection handshakes, so a stream of invented ids
/// cannot grow the table (or `/metrics`) past this.
const PEERS_MAX: usize = 256;

/// The counters of one peer.
#[derive(Debug, Default)]
pub struct PeerCounts {
    sent_bytes: AtomicU64,
    received_bytes: AtomicU64,
    sent_failures: AtomicU64,
}

impl PeerCounts {
    /// Counts `n` bytes written to the peer.
    pub fn sent(&self, n: usize) {
        self.sent_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts `n` bytes read from the peer.
    pub fn received(&self, n: usize) {
        self.received_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts a message dropped (queue full) or a write that failed.
    pub fn failed(&self) {
        self.sent_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// One peer's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerTotals {
    /// The peer.
    pub id: NodeId,
    /// Bytes written to it.
    pub sent_bytes: u64,
    /// Bytes read from it.
    pub received_bytes: u64,
    /// Messages dropped for it and writes to it that failed.
    pub sent_failures: u64,
}

/// Every peer's counters.
#[derive(Debug, Default)]
pub struct PeerTraffic {
    peers: RwLock<BTreeMap<NodeId, Arc<PeerCounts>>>,
}

impl PeerTraffic {
    /// The counters of `id`; counts that go nowhere once [`PEERS_MAX`] peers are known.
    pub fn peer(&self, id: NodeId) -> Arc<PeerCounts> {
        if let Some(c) = self.peers.read().get(&id) {
            return Arc::clone(c);
        }
        let mut peers = self.peers.write();
        if peers.len() >= PEERS_MAX && !peers.contains_key(&id) {
            return Arc::default();
        }
        Arc::clone(peers.entry(id).or_default())
    }

    /// Every counted peer's totals, by id.
    pub fn totals(&self) -> Vec<PeerTotals> {
        self.peers
            .read()
            .iter()
            .map(|(id, c)| PeerTotals {
                id: *id,
                sent_bytes: c.sent_bytes.load(Ordering::Relaxed),
                received_bytes: c.received_bytes.load(Ordering::Relaxed),
                sent_failures: c.sent_failures.load(Ordering::Relaxed),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_peer_and_the_table_stays_bounded() {
        let t = PeerTraffic::default();
        t.peer(2).sent(10);
        t.peer(2).sent(5);
        t.peer(3).received(7);
        t.peer(3).failed();
        let totals = |p: PeerTotals| (p.id, p.sent_bytes, p.received_bytes, p.sent_failures);
        let all: Vec<_> = t.totals().into_iter().map(totals).collect();
        assert_eq!(all, vec![(2, 15, 0, 0), (3, 0, 7, 1)]);
        for id in 100..1000 {
            t.peer(id).received(1);
        }
        assert_eq!(t.totals().len(), PEERS_MAX);
    }
}
