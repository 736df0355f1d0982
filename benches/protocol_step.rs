//! Criterion bench of the protocol path alone: propose -> replicate -> persist -> commit ->
//! apply on a 3-node in-memory cluster, with persistence taking no time, so protocol overhead
//! is visible on its own. One iteration proposes a batch of entries on the leader and runs the
//! cluster until every node applied them.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quorumkv::replication::harness::Network;
use quorumkv::replication::raft::{Raft, RaftConfig};
use quorumkv::replication::zab::{Zab, ZabConfig};
use quorumkv::replication::{Conf, LogStore, Protocol, Restored, Role, SnapshotMeta};

const PAYLOAD_BYTES: usize = 256;

fn raft_cluster() -> Network<Raft> {
    let conf = Conf::new([1, 2, 3]);
    let mut net = Network::new(
        (1..=3)
            .map(|id| {
                Raft::new(
                    id,
                    RaftConfig {
                        seed: id,
                        ..RaftConfig::default()
                    },
                    conf.clone(),
                    Restored::default(),
                )
            })
            .collect(),
    );
    net.tick(1, 25);
    assert_eq!(net.node(1).status().role, Role::Leader);
    net
}

/// A 3-node ZAB ensemble and its established leader.
fn zab_cluster() -> (Network<Zab>, u64) {
    let conf = Conf::new([1, 2, 3]);
    let mut net = Network::new(
        (1..=3)
            .map(|id| {
                Zab::new(
                    id,
                    ZabConfig {
                        seed: id,
                        ..ZabConfig::default()
                    },
                    conf.clone(),
                    Restored::default(),
                )
            })
            .collect(),
    );
    for _ in 0..100 {
        net.tick_all(1);
        if let Some(l) = (1..=3).find(|&i| net.node(i).status().role == Role::Leader) {
            return (net, l);
        }
    }
    panic!("no ZAB leader");
}

/// Snapshots every node at its applied index so logs stay bounded, as a real node's would.
fn compact_all<P: Protocol>(net: &mut Network<P>, ids: &[u64]) {
    for &id in ids {
        let st = net.node(id).status();
        let Some(term) = net.node(id).log_entries(st.applied).first().map(|e| e.term) else {
            continue;
        };
        let meta = SnapshotMeta {
            index: st.applied,
            term,
            conf: st.conf.clone(),
        };
        net.node(id).compact(meta.clone());
        net.stores
            .get_mut(&id)
            .expect("store")
            .compact(&meta)
            .expect("memory store");
    }
}

fn bench_batches<P: Protocol>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    net: &mut Network<P>,
    leader: u64,
    batch: usize,
) {
    let payload = vec![7u8; PAYLOAD_BYTES];
    let ids: Vec<u64> = net.nodes.keys().copied().collect();
    let mut rounds = 0u64;
    g.bench_function(format!("{name}_batch_{batch}"), |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                let mut last = 0;
                for _ in 0..batch {
                    last = net.node(leader).propose(payload.clone()).expect("leader");
                }
                net.settle();
                black_box(last);
                for id in &ids {
                    net.applied.get_mut(id).expect("node").clear();
                }
                rounds += 1;
                if rounds % 256 == 0 {
                    compact_all(net, &ids);
                }
            }
            t0.elapsed()
        })
    });
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("protocol_step_3_nodes");
    g.measurement_time(Duration::from_secs(5));
    for batch in [1usize, 64] {
        g.throughput(Throughput::Elements(batch as u64));
        let mut raft = raft_cluster();
        bench_batches(&mut g, "raft", &mut raft, 1, batch);
        let (mut zab, leader) = zab_cluster();
        bench_batches(&mut g, "zab", &mut zab, leader, batch);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
