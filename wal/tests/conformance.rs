//! One conformance suite, run against every backend: io_uring, pwrite and the simulated disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quorumkv_wal::io::{FileSystem, SimFs, StdFs};
use quorumkv_wal::{Error, Wal, WalOptions};

/// A place to open logs on one backend.
trait Env {
    fn fs(&self) -> Arc<dyn FileSystem>;
    fn dir(&self) -> PathBuf;
}

struct RealEnv {
    tmp: tempfile::TempDir,
    fs: Arc<dyn FileSystem>,
}

impl Env for RealEnv {
    fn fs(&self) -> Arc<dyn FileSystem> {
        self.fs.clone()
    }
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("wal")
    }
}

struct SimEnv(SimFs);

impl Env for SimEnv {
    fn fs(&self) -> Arc<dyn FileSystem> {
        Arc::new(self.0.clone())
    }
    fn dir(&self) -> PathBuf {
        PathBuf::from("/sim/wal")
    }
}

fn small() -> WalOptions {
    WalOptions {
        segment_bytes: 16 << 10,
        record_bytes_max: 4 << 10,
        batch_bytes_max: 8 << 10,
        queued_bytes_max: 64 << 10,
        ..WalOptions::default()
    }
}

fn open(env: &dyn Env, opts: WalOptions) -> Wal {
    Wal::open_with_fs(env.dir(), opts, env.fs()).expect("open wal")
}

fn rec(i: u64) -> Vec<u8> {
    let len = (i * 37 % 300) as usize;
    let mut v = i.to_le_bytes().to_vec();
    v.extend((0..len).map(|j| (i as usize + j) as u8));
    v
}

fn segment_count(env: &dyn Env) -> usize {
    let dir = env.dir();
    env.fs()
        .list(Path::new(&dir))
        .unwrap()
        .iter()
        .filter(|n| n.ends_with(".wal"))
        .count()
}

fn append_read_reopen(env: &dyn Env) {
    {
        let wal = open(env, small());
        assert!(wal.recovery_report().created);
        assert_eq!((wal.first_index(), wal.last_index()), (1, 0));
        for i in 1..=500u64 {
            let t = wal.append([rec(i)]).unwrap();
            assert_eq!((t.first_index(), t.last_index()), (i, i));
            if i % 50 == 0 {
                t.wait().unwrap();
                assert!(wal.durable_index() >= i);
            }
        }
        let t = wal.append((501..=600).map(rec)).unwrap();
        assert_eq!((t.first_index(), t.last_index()), (501, 600));
        t.wait().unwrap();
        assert_eq!(
            wal.read(1..601).unwrap(),
            (1..=600).map(rec).collect::<Vec<_>>()
        );
        assert_eq!(wal.read(300..301).unwrap(), vec![rec(300)]);
        assert!(segment_count(env) > 3, "small segments rotate");
    }
    let wal = open(env, small());
    let r = wal.recovery_report();
    assert_eq!((r.first_index, r.last_index, r.records), (1, 600, 600));
    assert!(r.torn_tail.is_none());
    assert_eq!(
        wal.read(1..601).unwrap(),
        (1..=600).map(rec).collect::<Vec<_>>()
    );
    wal.append([rec(601)]).unwrap().wait().unwrap();
    assert_eq!(wal.read(601..602).unwrap(), vec![rec(601)]);
}

fn out_of_range_and_limits(env: &dyn Env) {
    let wal = open(env, small());
    wal.append((1..=10).map(rec)).unwrap().wait().unwrap();
    assert!(matches!(wal.read(0..2), Err(Error::OutOfRange { .. })));
    assert!(matches!(wal.read(5..12), Err(Error::OutOfRange { .. })));
    assert!(wal.read(5..5).unwrap().is_empty());
    let big = vec![7u8; (4 << 10) + 1];
    assert!(matches!(
        wal.append([&big]),
        Err(Error::RecordTooLarge { .. })
    ));
    let max = vec![7u8; 4 << 10];
    wal.append([&max]).unwrap().wait().unwrap();
    assert_eq!(wal.read(11..12).unwrap(), vec![max]);
    assert!(matches!(
        wal.truncate_suffix(13),
        Err(Error::OutOfRange { .. })
    ));
    // An empty append completes without a record.
    let t = wal.append(Vec::<Vec<u8>>::new()).unwrap();
    t.wait().unwrap();
    assert_eq!(wal.last_index(), 11);
    let bounded = wal.read_bounded(1..11, 1).unwrap();
    assert_eq!(bounded, vec![rec(1)]);
}

fn truncate_suffix(env: &dyn Env) {
    {
        let wal = open(env, small());
        wal.append((1..=400).map(rec)).unwrap().wait().unwrap();
        // Inside the last segment, then across segments, then back to a segment boundary.
        wal.truncate_suffix(390).unwrap();
        assert_eq!(wal.last_index(), 389);
        wal.truncate_suffix(100).unwrap();
        assert_eq!(wal.last_index(), 99);
        let t = wal.append((100..=150).map(|i| rec(i + 10_000))).unwrap();
        assert_eq!(t.first_index(), 100);
        t.wait().unwrap();
        assert_eq!(wal.read(99..101).unwrap(), vec![rec(99), rec(10_100)]);
        wal.truncate_suffix(151).unwrap(); // no-op at the end
        assert_eq!(wal.last_index(), 150);
    }
    let wal = open(env, small());
    assert_eq!(wal.last_index(), 150);
    let got = wal.read(1..151).unwrap();
    let want: Vec<_> = (1..100)
        .map(rec)
        .chain((100..=150).map(|i| rec(i + 10_000)))
        .collect();
    assert_eq!(got, want);
    wal.truncate_suffix(1).unwrap();
    assert_eq!(wal.last_index(), 0);
    drop(wal);
    let wal = open(env, small());
    assert_eq!((wal.first_index(), wal.last_index()), (1, 0));
    wal.append([rec(5)]).unwrap().wait().unwrap();
    assert_eq!(wal.read(1..2).unwrap(), vec![rec(5)]);
}

fn purge_prefix(env: &dyn Env) {
    {
        let wal = open(env, small());
        wal.append((1..=400).map(rec)).unwrap().wait().unwrap();
        let before = segment_count(env);
        wal.purge_prefix(200).unwrap();
        assert_eq!(wal.first_index(), 201);
        assert!(segment_count(env) < before, "whole segments are deleted");
        assert!(matches!(wal.read(200..201), Err(Error::OutOfRange { .. })));
        assert_eq!(
            wal.read(201..401).unwrap(),
            (201..=400).map(rec).collect::<Vec<_>>()
        );
    }
    {
        let wal = open(env, small());
        assert!(
            wal.first_index() <= 201,
            "purge is segment-granular across restarts"
        );
        assert_eq!(wal.last_index(), 400);
        assert_eq!(
            wal.read(201..401).unwrap(),
            (201..=400).map(rec).collect::<Vec<_>>()
        );
        // Purging past the end restarts the log there (a snapshot install).
        wal.purge_prefix(1000).unwrap();
        assert_eq!((wal.first_index(), wal.last_index()), (1001, 1000));
        wal.append([rec(1001)]).unwrap().wait().unwrap();
    }
    let wal = open(env, small());
    assert_eq!((wal.first_index(), wal.last_index()), (1001, 1001));
    assert_eq!(segment_count(env), 1);
    assert_eq!(wal.read(1001..1002).unwrap(), vec![rec(1001)]);
}

/// What an appender thread appended: `(index, payload)` pairs.
type Appended = Vec<(u64, Vec<u8>)>;

/// Joins appender threads that each return `(index, payload)` for what they appended, and
/// checks the indexes are dense and unique from 1 and the log reads back every payload.
fn join_and_check(wal: &Wal, threads: Vec<std::thread::JoinHandle<Appended>>) -> u64 {
    let mut all: Vec<(u64, Vec<u8>)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    for (k, (index, _)) in all.iter().enumerate() {
        assert_eq!(*index, k as u64 + 1, "indexes are dense and unique");
    }
    let last = all.len() as u64;
    let got = wal.read(1..last + 1).unwrap();
    for (k, (_, payload)) in all.iter().enumerate() {
        assert_eq!(&got[k], payload);
    }
    last
}

fn concurrent_appenders(env: &dyn Env) {
    let wal = Arc::new(open(env, small()));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..200u64 {
                    let payload = format!("t{t}-{i}").into_bytes();
                    let ticket = wal.append([&payload]).unwrap();
                    ticket.wait().unwrap();
                    mine.push((ticket.first_index(), payload));
                }
                mine
            })
        })
        .collect();
    assert_eq!(join_and_check(&wal, threads), 1600);
    let stats = wal.stats();
    assert_eq!(stats.records, 1600);
    assert!(stats.syncs >= 1);
}

/// `append_durable` writes in the calling thread when the log is idle and queues otherwise;
/// mixed with plain appends from other threads, across batch limits and segment rotations,
/// every record gets a unique dense index and is durable when the call returns.
fn append_durable_mixed_with_appends(env: &dyn Env) {
    let opts = WalOptions {
        batch_records_max: 8,
        ..small()
    };
    let wal = Arc::new(open(env, opts));
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..60u64 {
                    let n = 1 + (i * 7 + t) % 20;
                    let payloads: Vec<Vec<u8>> = (0..n)
                        .map(|k| format!("t{t}-{i}-{k}").into_bytes())
                        .collect();
                    let first = if t % 2 == 0 {
                        let range = wal.append_durable(&payloads).unwrap();
                        assert_eq!(range.end - range.start, n);
                        assert!(wal.durable_index() >= range.end - 1);
                        range.start
                    } else {
                        let ticket = wal.append(&payloads).unwrap();
                        ticket.wait().unwrap();
                        ticket.first_index()
                    };
                    for (k, p) in payloads.into_iter().enumerate() {
                        mine.push((first + k as u64, p));
                    }
                }
                mine
            })
        })
        .collect();
    let last = join_and_check(&wal, threads);
    assert_eq!(wal.durable_index(), last);
    assert!(segment_count(env) > 1, "the workload rotates segments");
    // On an idle log the caller's own write and fdatasync make it durable.
    let syncs = wal.stats().syncs;
    let range = wal.append_durable([rec(1)]).unwrap();
    assert_eq!(range, last + 1..last + 2);
    assert_eq!(wal.durable_index(), last + 1);
    assert!(wal.stats().syncs > syncs);
    // An empty append is durable at once and takes no index.
    let empty = wal.append_durable(std::iter::empty::<&[u8]>()).unwrap();
    assert_eq!(empty, last + 2..last + 2);
    drop(wal);
    let wal = open(env, small());
    assert_eq!(wal.last_index(), last + 1);
    assert_eq!(wal.read(last + 1..last + 2).unwrap(), vec![rec(1)]);
}

fn async_tickets_and_pipelining(env: &dyn Env) {
    for depth in [1usize, 2, 3] {
        let opts = WalOptions {
            pipeline_depth: depth,
            commit_delay: std::time::Duration::from_micros(if depth == 3 { 200 } else { 0 }),
            ..small()
        };
        let wal = open(env, opts);
        let base = wal.last_index();
        let tickets: Vec<_> = (0..300u64).map(|i| wal.append([rec(i)]).unwrap()).collect();
        futures::executor::block_on(futures::future::try_join_all(tickets)).unwrap();
        assert_eq!(wal.durable_index(), base + 300);
        assert_eq!(
            wal.read(base + 1..base + 301).unwrap(),
            (0..300).map(rec).collect::<Vec<_>>()
        );
    }
}

fn try_append_backpressure(env: &dyn Env) {
    let opts = WalOptions {
        queued_bytes_max: 8 << 10,
        ..small()
    };
    let wal = open(env, opts);
    let mut full = 0;
    let mut tickets = Vec::new();
    for i in 0..2000u64 {
        match wal.try_append([rec(i)]) {
            Ok(t) => tickets.push(t),
            Err(Error::QueueFull { .. }) => full += 1,
            Err(e) => panic!("{e}"),
        }
    }
    for t in tickets {
        t.wait().unwrap();
    }
    // Whether the queue filled depends on timing; every outcome is either a ticket or a
    // clear QueueFull, and the log stays usable.
    assert!(full < 2000);
    wal.append([rec(1)]).unwrap().wait().unwrap();
}

macro_rules! suite {
    ($name:ident, $env:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn append_read_reopen() {
                super::append_read_reopen(&$env);
            }
            #[test]
            fn out_of_range_and_limits() {
                super::out_of_range_and_limits(&$env);
            }
            #[test]
            fn truncate_suffix() {
                super::truncate_suffix(&$env);
            }
            #[test]
            fn purge_prefix() {
                super::purge_prefix(&$env);
            }
            #[test]
            fn concurrent_appenders() {
                super::concurrent_appenders(&$env);
            }
            #[test]
            fn append_durable_mixed_with_appends() {
                super::append_durable_mixed_with_appends(&$env);
            }
            #[test]
            fn async_tickets_and_pipelining() {
                super::async_tickets_and_pipelining(&$env);
            }
            #[test]
            fn try_append_backpressure() {
                super::try_append_backpressure(&$env);
            }
        }
    };
}

fn real(fs: Arc<dyn FileSystem>) -> RealEnv {
    RealEnv {
        tmp: tempfile::tempdir().unwrap(),
        fs,
    }
}

suite!(pwrite, real(Arc::new(StdFs)));
suite!(uring, real(quorumkv_wal::Backend::Uring.file_system()));
suite!(sim, SimEnv(SimFs::new()));

#[test]
fn uring_backend_is_really_io_uring_here() {
    // The default backend must not silently be pwrite on a kernel that allows io_uring.
    let fs = quorumkv_wal::Backend::Uring.file_system();
    if io_uring_allowed() {
        assert_eq!(fs.name(), "uring");
    }
}

fn io_uring_allowed() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim() == "0")
        .unwrap_or(true)
}
