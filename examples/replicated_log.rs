//! Three nodes of the replicated log in one process on loopback: append through the leader,
//! stop the leader, keep appending through the new one, and check that every entry that was
//! acknowledged is on every remaining node.
//!
//! Run with `cargo run --release --example replicated_log [raft|zab]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quorumkv::replication::Role;
use quorumkv::server::node::{Node, NodeConfig, ProtocolKind};

fn leader(nodes: &BTreeMap<u64, Node>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(id) = nodes
            .iter()
            .find(|(_, n)| n.status().is_some_and(|s| s.role == Role::Leader))
            .map(|(id, _)| *id)
        {
            return id;
        }
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn append(nodes: &BTreeMap<u64, Node>, data: &[u8]) -> u64 {
    loop {
        if let Ok(i) = nodes[&leader(nodes)].append_blocking(data.to_vec()) {
            return i;
        }
    }
}

fn main() {
    let protocol = match std::env::args().nth(1).as_deref() {
        Some("zab") => ProtocolKind::Zab,
        _ => ProtocolKind::Raft,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let listeners: BTreeMap<u64, std::net::TcpListener> = (1..=3)
        .map(|id| {
            (
                id,
                std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
            )
        })
        .collect();
    let peers: BTreeMap<u64, SocketAddr> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().expect("addr")))
        .collect();
    let mut nodes: BTreeMap<u64, Node> = listeners
        .into_iter()
        .map(|(id, l)| {
            let mut cfg = NodeConfig::new(id, peers.clone(), dir.path().join(format!("node{id}")));
            cfg.protocol = protocol;
            cfg.tick = Duration::from_millis(20);
            (id, Node::start(cfg, l).expect("start"))
        })
        .collect();
    let mut acked = Vec::new();
    for i in 0..100 {
        let data = format!("before {i}").into_bytes();
        acked.push((append(&nodes, &data), data));
    }
    let old = leader(&nodes);
    println!("{protocol:?}: 100 entries committed; stopping leader {old}");
    drop(nodes.remove(&old));
    for i in 0..100 {
        let data = format!("after {i}").into_bytes();
        acked.push((append(&nodes, &data), data));
    }
    let new = leader(&nodes);
    let last = acked.last().expect("entries").0;
    for (id, n) in &nodes {
        while n.status().is_none_or(|s| s.applied < last) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let got: BTreeMap<u64, Vec<u8>> = n
            .committed(1, last)
            .into_iter()
            .map(|e| (e.index, e.data))
            .collect();
        let lost = acked.iter().filter(|(i, d)| got.get(i) != Some(d)).count();
        println!(
            "node {id}: {} entries, {lost} acknowledged entries lost",
            got.len()
        );
        assert_eq!(lost, 0);
    }
    println!("new leader {new}; the log continued and no committed entry was lost");
}
