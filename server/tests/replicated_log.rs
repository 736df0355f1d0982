//! Three nodes of the embeddable replicated log in one process, on loopback, with real WAL
//! files: appends commit (also when a follower hands them to the leader), the leader is
//! stopped, a new one takes over, no committed entry is lost, and a restarted node catches up
//! from its data directory. Both protocols.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quorumkv_replication::Role;
use quorumkv_server::node::{Node, NodeConfig, ProtocolKind, Submitted};
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

/// Three nodes on loopback with their logs under `dir`, and their peer addresses.
fn start_three(
    dir: &std::path::Path,
    protocol: ProtocolKind,
) -> (BTreeMap<u64, SocketAddr>, BTreeMap<u64, Node>) {
    let listeners: BTreeMap<u64, std::net::TcpListener> = (1..=3)
        .map(|id| (id, std::net::TcpListener::bind("127.0.0.1:0").unwrap()))
        .collect();
    let peers: BTreeMap<u64, SocketAddr> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().unwrap()))
        .collect();
    let nodes = listeners
        .into_iter()
        .map(|(id, l)| {
            (
                id,
                Node::start(config(id, &peers, dir, protocol), l).unwrap(),
            )
        })
        .collect();
    (peers, nodes)
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

/// The index `data` committed at on `node`, which must be in `term`.
fn committed_in(node: &Node, data: &[u8], term: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let applied = node.status().unwrap().applied;
        let found = node
            .committed(1, applied)
            .into_iter()
            .find(|e| e.data == data);
        if let Some(e) = found {
            assert_eq!(e.term, term, "committed in the term it was sent in");
            return e.index;
        }
        assert!(Instant::now() < deadline, "submitted data never committed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(protocol: ProtocolKind) {
    let dir = tempfile::tempdir().unwrap();
    let (peers, mut nodes) = start_three(dir.path(), protocol);
    let mut acked = Vec::new();
    for i in 0..50u32 {
        let data = format!("entry {i}").into_bytes();
        acked.push((append_retrying(&nodes, data.clone()), data));
    }
    // Submitted on the leader, data commits there; on a follower it is handed to the leader
    // in the current term and shows up in the follower's committed log.
    let leader = wait_leader(&nodes);
    let on_leader = &nodes[&leader];
    let submitted = on_leader
        .handle()
        .block_on(on_leader.submit(b"through the leader".to_vec()))
        .unwrap();
    let Submitted::Committed(index) = submitted else {
        panic!("the leader commits what it is given: {submitted:?}");
    };
    acked.push((index, b"through the leader".to_vec()));
    let term = on_leader.status().unwrap().term;
    let follower = *nodes.keys().find(|&&i| i != leader).unwrap();
    let on_follower = &nodes[&follower];
    let data = b"through a follower".to_vec();
    let submitted = on_follower
        .handle()
        .block_on(on_follower.submit(data.clone()))
        .unwrap();
    assert_eq!(submitted, Submitted::Forwarded { term });
    acked.push((committed_in(on_follower, &data, term), data));
    // Handed over on the leader, data is in its log in the current term at once: nothing
    // waits for its commit there, and it commits in that term.
    let data = b"handed to the leader".to_vec();
    let handed = on_leader
        .handle()
        .block_on(on_leader.hand_over(data.clone()))
        .unwrap();
    assert_eq!(handed, Submitted::Proposed { term });
    acked.push((committed_in(on_leader, &data, term), data));
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

/// A submit made before the member knows any leader (all three just started) waits for one
/// and then commits, instead of failing with "no leader": etcd's proposals wait the same way.
fn submit_before_any_leader(protocol: ProtocolKind) {
    let dir = tempfile::tempdir().unwrap();
    let (_, nodes) = start_three(dir.path(), protocol);
    // All three submit at once, before any election could have ended (one takes at least
    // `election_ticks` ticks).
    assert!(
        nodes
            .values()
            .all(|n| n.status().is_some_and(|s| s.leader == 0)),
        "a leader before the first election timeout"
    );
    let sent: Vec<Vec<u8>> = (1..=3u64)
        .map(|id| format!("early from {id}").into_bytes())
        .collect();
    let (a, b, c) = nodes[&1].handle().block_on(async {
        tokio::join!(
            nodes[&1].submit(sent[0].clone()),
            nodes[&2].submit(sent[1].clone()),
            nodes[&3].submit(sent[2].clone()),
        )
    });
    for (id, submitted) in [(1, a), (2, b), (3, c)] {
        assert!(submitted.is_ok(), "node {id}: {submitted:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for (id, n) in &nodes {
        loop {
            let applied = n.status().unwrap().applied;
            let have: Vec<Vec<u8>> = n
                .committed(1, applied)
                .into_iter()
                .map(|e| e.data)
                .collect();
            if sent.iter().all(|d| have.contains(d)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} never committed every early submit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn raft_submit_waits_for_a_leader() {
    submit_before_any_leader(ProtocolKind::Raft);
}

#[test]
fn zab_submit_waits_for_a_leader() {
    submit_before_any_leader(ProtocolKind::Zab);
}
