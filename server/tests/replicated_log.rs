//! Three nodes of the embeddable replicated log in one process, on loopback, with real WAL
//! files: appends commit, the leader is stopped, a new one takes over, no committed entry is
//! lost, and a restarted node catches up from its data directory. Both protocols.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quorumkv_replication::Role;
use quorumkv_server::node::{Node, NodeConfig, ProtocolKind};
use quorumkv_wal::WalOptions;

fn config(
    id: u64,
    peers: &BTreeMap<u64, SocketAddr>,
    dir: &std::path::Path,
    protocol: ProtocolKind,
) -> NodeConfig {
    let mut c = NodeConfig::new(id, peers.clone(), dir.join(format!("n{id}")));
    c.protocol = protocol;
    c.tick = Duration::from_millis(20);
    c.wal = WalOptions {
        segment_bytes: 1 << 20,
        record_bytes_max: 64 << 10,
        batch_bytes_max: 256 << 10,
        ..WalOptions::default()
    };
    c
}

fn wait_leader(nodes: &BTreeMap<u64, Node>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        for (id, n) in nodes {
            if n.status().is_some_and(|s| s.role == Role::Leader) {
                return *id;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no leader within 15 s");
}

fn append_retrying(nodes: &BTreeMap<u64, Node>, data: Vec<u8>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let leader = wait_leader(nodes);
        match nodes[&leader].append_blocking(data.clone()) {
            Ok(i) => return i,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    panic!("append never committed");
}

fn run(protocol: ProtocolKind) {
    let dir = tempfile::tempdir().unwrap();
    let listeners: BTreeMap<u64, std::net::TcpListener> = (1..=3)
        .map(|id| (id, std::net::TcpListener::bind("127.0.0.1:0").unwrap()))
        .collect();
    let peers: BTreeMap<u64, SocketAddr> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().unwrap()))
        .collect();
    let mut nodes: BTreeMap<u64, Node> = listeners
        .into_iter()
        .map(|(id, l)| {
            (
                id,
                Node::start(config(id, &peers, dir.path(), protocol), l).unwrap(),
            )
        })
        .collect();
    let mut acked = Vec::new();
    for i in 0..50u32 {
        let data = format!("entry {i}").into_bytes();
        acked.push((append_retrying(&nodes, data.clone()), data));
    }
    // Stop the leader; the others elect a new one and the log goes on.
    let old = wait_leader(&nodes);
    drop(nodes.remove(&old));
    for i in 50..80u32 {
        let data = format!("entry {i}").into_bytes();
        acked.push((append_retrying(&nodes, data.clone()), data));
    }
    let new = wait_leader(&nodes);
    assert_ne!(new, old);
    // Linearizable read point on a follower covers everything acknowledged.
    let follower = *nodes.keys().find(|&&i| i != new).unwrap();
    let ri = nodes[&follower].read_index_blocking().unwrap();
    assert!(ri >= acked.last().unwrap().0);
    // The old leader restarts from its data directory and catches up.
    let l = std::net::TcpListener::bind(peers[&old]).unwrap();
    nodes.insert(
        old,
        Node::start(config(old, &peers, dir.path(), protocol), l).unwrap(),
    );
    let last = acked.last().unwrap().0;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let done = nodes
            .values()
            .all(|n| n.status().is_some_and(|s| s.applied >= last));
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "nodes did not catch up");
        std::thread::sleep(Duration::from_millis(20));
    }
    for (id, n) in &nodes {
        let got: BTreeMap<u64, Vec<u8>> = n
            .committed(1, last)
            .into_iter()
            .map(|e| (e.index, e.data))
            .collect();
        for (i, data) in &acked {
            assert_eq!(
                got.get(i),
                Some(data),
                "node {id} lost acknowledged entry {i}"
            );
        }
    }
}

#[test]
fn raft_log_survives_losing_its_leader() {
    run(ProtocolKind::Raft);
}

#[test]
fn zab_log_survives_losing_its_leader() {
    run(ProtocolKind::Zab);
}
