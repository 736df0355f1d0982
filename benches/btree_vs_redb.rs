//! quorumkv's B+tree against redb in one criterion run, same data, same durability (every
//! commit fsynced):
//! - `insert_batch`: 1,000 random inserts per durable commit;
//! - `get_random`: random point reads over 1,000,000 keys;
//! - `range_scan`: scans of 1,000 keys from a random start.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quorumkv::btree::{BTreeOptions, Db};
use redb::{ReadableDatabase, TableDefinition};

// The same data set as `quorumkv bench btree`.
#[path = "../src/bench/data.rs"]
mod data;
use data::{XorShift as Rng, key};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bench");
const KEYS: u64 = 1_000_000;
const VALUE_BYTES: usize = 64;
const BATCH: usize = 1000;
const SCAN: usize = 1000;

fn value(i: u64) -> [u8; VALUE_BYTES] {
    [i as u8; VALUE_BYTES]
}

fn load_quorumkv(dir: &std::path::Path) -> Db {
    let db = Db::open(dir.join("quorumkv.db"), BTreeOptions::default()).expect("open");
    for chunk in 0..KEYS / 50_000 {
        let mut t = db.begin_write().expect("write");
        for i in chunk * 50_000..(chunk + 1) * 50_000 {
            t.insert(&key(i), &value(i)).expect("insert");
        }
        t.commit().expect("commit");
    }
    db
}

fn load_redb(dir: &std::path::Path) -> redb::Database {
    let db = redb::Database::create(dir.join("redb.db")).expect("open");
    for chunk in 0..KEYS / 50_000 {
        let t = db.begin_write().expect("write");
        {
            let mut table = t.open_table(TABLE).expect("table");
            for i in chunk * 50_000..(chunk + 1) * 50_000 {
                table.insert(&key(i)[..], &value(i)[..]).expect("insert");
            }
        }
        t.commit().expect("commit");
    }
    db
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(".").expect("temp dir");
    let qdb = load_quorumkv(dir.path());
    let rdb = load_redb(dir.path());

    let mut g = c.benchmark_group("get_random");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    {
        let r = qdb.begin_read();
        let mut rng = Rng(1);
        g.bench_function("quorumkv", |b| {
            b.iter(|| {
                let i = rng.next_u64() % KEYS;
                black_box(r.get(&key(i)).expect("get").expect("present").len())
            })
        });
    }
    {
        let t = rdb.begin_read().expect("read");
        let table = t.open_table(TABLE).expect("table");
        let mut rng = Rng(1);
        g.bench_function("redb", |b| {
            b.iter(|| {
                let i = rng.next_u64() % KEYS;
                black_box(
                    table
                        .get(&key(i)[..])
                        .expect("get")
                        .expect("present")
                        .value()
                        .len(),
                )
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("range_scan");
    g.throughput(Throughput::Elements(SCAN as u64));
    g.measurement_time(Duration::from_secs(5));
    {
        let r = qdb.begin_read();
        let mut rng = Rng(2);
        g.bench_function("quorumkv", |b| {
            b.iter(|| {
                let start = key(rng.next_u64() % KEYS);
                let mut n = 0usize;
                for x in r.range(&start[..]..).take(SCAN) {
                    let (k, v) = x.expect("scan");
                    n += k.len() + v.len();
                }
                black_box(n)
            })
        });
    }
    {
        let t = rdb.begin_read().expect("read");
        let table = t.open_table(TABLE).expect("table");
        let mut rng = Rng(2);
        g.bench_function("redb", |b| {
            b.iter(|| {
                let start = key(rng.next_u64() % KEYS);
                let mut n = 0usize;
                for x in table.range(&start[..]..).expect("range").take(SCAN) {
                    let (k, v) = x.expect("scan");
                    n += k.value().len() + v.value().len();
                }
                black_box(n)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("insert_batch");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    let mut rng = Rng(3);
    g.bench_function(BenchmarkId::new("quorumkv", BATCH), |b| {
        b.iter(|| {
            let mut t = qdb.begin_write().expect("write");
            for _ in 0..BATCH {
                let i = rng.next_u64();
                t.insert(&key(i), &value(i)).expect("insert");
            }
            t.commit().expect("commit");
        })
    });
    let mut rng = Rng(3);
    g.bench_function(BenchmarkId::new("redb", BATCH), |b| {
        b.iter(|| {
            let t = rdb.begin_write().expect("write");
            {
                let mut table = t.open_table(TABLE).expect("table");
                for _ in 0..BATCH {
                    let i = rng.next_u64();
                    table.insert(&key(i)[..], &value(i)[..]).expect("insert");
                }
            }
            t.commit().expect("commit");
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
