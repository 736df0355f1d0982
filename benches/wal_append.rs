//! Criterion bench of the durable append path: 64 concurrent appenders each append one 256 B
//! record and wait for it to be durable; one iteration is one round of 64 appends. Compared:
//! group commit on each backend, and one fdatasync per append.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use quorumkv::wal::{Backend, Wal, WalOptions};

const APPENDERS: usize = 64;
const RECORD_BYTES: usize = 256;

fn round(wal: &Arc<Wal>, payload: &[u8]) {
    let tasks: FuturesUnordered<_> = (0..APPENDERS)
        .map(|_| wal.append([payload]).expect("append"))
        .collect();
    futures::executor::block_on(tasks.for_each(|r| {
        r.expect("durable");
        async {}
    }));
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_append_256B_x64");
    g.throughput(Throughput::Elements(APPENDERS as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let payload = vec![7u8; RECORD_BYTES];
    let cases = [
        ("group_commit_pwrite", Backend::Pwrite, false),
        ("group_commit_uring", Backend::Uring, false),
        ("sync_each_pwrite", Backend::Pwrite, true),
    ];
    for (name, backend, sync_each) in cases {
        let dir = tempfile::tempdir_in(".").expect("temp dir");
        let mut opts = WalOptions::default();
        if sync_each {
            opts.batch_records_max = 1;
            opts.pipeline_depth = 1;
            opts.batch_linger = Duration::ZERO;
        }
        let wal = Arc::new(Wal::open(dir.path(), opts, backend).expect("open"));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    round(&wal, black_box(&payload));
                }
                t0.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
