//! Criterion bench of the protocol path alone: propose -> replicate -> persist -> commit ->
//! apply on a 3-node in-memory cluster, with persistence taking no time, so protocol overhead
//! is visible on its own. One iteration proposes a batch of entries on the leader and runs the
//! cluster until every node applied them.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quorumkv::replication::harness::Network;
use quorumkv::replication::raft::{Raft, RaftConfig};
use quorumkv::replication::{Conf, Protocol, Restored, Role};

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

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("protocol_step_3_nodes");
    g.measurement_time(Duration::from_secs(5));
    let payload = vec![7u8; PAYLOAD_BYTES];
    for batch in [1usize, 64] {
        g.throughput(Throughput::Elements(batch as u64));
        let mut net = raft_cluster();
        g.bench_function(format!("raft_batch_{batch}"), |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    let mut last = 0;
                    for _ in 0..batch {
                        last = net.node(1).propose(payload.clone()).expect("leader");
                    }
                    net.settle();
                    black_box(last);
                    for id in 1..=3 {
                        net.applied.get_mut(&id).expect("node").clear();
                    }
                }
                t0.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
