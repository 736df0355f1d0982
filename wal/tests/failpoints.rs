//! Failpoints on the log's storage path (built with the `failpoints` feature). Each injects a
//! failure at one boundary — before or after a write, before or after fdatasync, at segment
//! rotation, at purge — then reopens the directory and checks the contract: every
//! acknowledged record is there and intact, nothing was acknowledged after the failure, the
//! log refused further appends until reopened, and it accepts appends again afterwards.

use std::path::Path;

use quorumkv_wal::{Backend, Wal, WalOptions};

/// Both sync paths: the writer's own linked write+fdatasync, and the pipelined syncer thread.
fn both_paths() -> [WalOptions; 2] {
    let base = WalOptions {
        segment_bytes: 64 << 10,
        record_bytes_max: 4 << 10,
        batch_bytes_max: 16 << 10,
        ..WalOptions::default()
    };
    [
        WalOptions {
            pipeline_depth: 1,
            ..base.clone()
        },
        WalOptions {
            pipeline_depth: 2,
            pipeline_bytes_min: 0,
            ..base
        },
    ]
}

fn rec(i: u64) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.extend((0..(i % 300)).map(|j| (i ^ j) as u8));
    v
}

/// Appends records one durable append at a time from `from` until one fails (or `to`);
/// returns the last acknowledged index.
fn append_until_failure(wal: &Wal, from: u64, to: u64) -> (u64, bool) {
    let mut acked = from - 1;
    for i in from..to {
        match wal.append([rec(i)]).and_then(|t| t.wait()) {
            Ok(()) => acked = i,
            Err(_) => return (acked, true),
        }
    }
    (acked, false)
}

fn reopen_and_check(dir: &Path, opts: &WalOptions, acked: u64) {
    let wal = Wal::open(dir, opts.clone(), Backend::Pwrite).expect("reopens after the failure");
    assert!(
        wal.last_index() >= acked,
        "acknowledged through {acked}, recovered through {}",
        wal.last_index()
    );
    let first = wal.first_index();
    let got = wal.read(first..wal.last_index() + 1).unwrap();
    for (k, r) in got.iter().enumerate() {
        let i = first + k as u64;
        assert_eq!(r, &rec(i), "record {i} recovered intact");
    }
    let next = wal.last_index() + 1;
    wal.append([rec(next)])
        .unwrap()
        .wait()
        .expect("appends again after reopening");
}

/// Injects `action` at `point` after `warmup` acknowledged records and checks the outcome.
fn fail_at(point: &str, warmup: u64) {
    for opts in both_paths() {
        let scenario = fail::FailScenario::setup();
        let tmp = tempfile::tempdir().unwrap();
        let wal = Wal::open(tmp.path(), opts.clone(), Backend::Pwrite).unwrap();
        let (acked, failed) = append_until_failure(&wal, 1, warmup + 1);
        assert!(!failed && acked == warmup);
        fail::cfg(point, "return").unwrap();
        let (acked, failed) = append_until_failure(&wal, warmup + 1, warmup + 5000);
        assert!(failed, "{point} never fired");
        assert!(wal.is_stopped(), "{point}: the log stops after the failure");
        fail::remove(point);
        assert!(
            wal.append([rec(acked + 100)])
                .and_then(|t| t.wait())
                .is_err(),
            "{point}: a stopped log refuses appends until reopened"
        );
        drop(wal);
        reopen_and_check(tmp.path(), &opts, acked);
        scenario.teardown();
    }
}

#[test]
fn failure_before_the_write_loses_nothing_acknowledged() {
    fail_at("wal::write", 50);
}

#[test]
fn failure_after_the_write_before_fdatasync_acknowledges_nothing() {
    fail_at("wal::after_write", 50);
}

#[test]
fn fdatasync_error_stops_the_log() {
    fail_at("wal::fdatasync", 50);
}

#[test]
fn failure_after_fdatasync_before_the_ack_keeps_the_record_durable() {
    fail_at("wal::after_fdatasync", 50);
}

#[test]
fn failure_at_segment_rotation_loses_nothing_acknowledged() {
    // Rotation happens once the first 64 KiB segment is full, well after the warm-up.
    fail_at("wal::rotate", 10);
}

#[test]
fn failure_during_purge_keeps_the_log_readable_and_a_later_purge_works() {
    let scenario = fail::FailScenario::setup();
    let [opts, _] = both_paths();
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::open(tmp.path(), opts.clone(), Backend::Pwrite).unwrap();
    let (acked, _) = append_until_failure(&wal, 1, 2001);
    assert_eq!(acked, 2000);
    fail::cfg("wal::purge", "return").unwrap();
    assert!(
        wal.purge_prefix(1500).is_err(),
        "the injected failure is reported"
    );
    fail::remove("wal::purge");
    assert!(!wal.is_stopped(), "a failed purge leaves the log writable");
    // Everything above the purge point is still there, and more can be appended.
    assert_eq!(wal.read(1501..2001).unwrap()[0], rec(1501));
    wal.append([rec(2001)]).unwrap().wait().unwrap();
    drop(wal);
    // Segments the purge failed to remove come back on reopen; nothing is lost or corrupt.
    reopen_and_check(tmp.path(), &opts, 2001);
    let wal = Wal::open(tmp.path(), opts.clone(), Backend::Pwrite).unwrap();
    wal.purge_prefix(1500).unwrap();
    assert!(wal.first_index() <= 1501 && wal.first_index() > 1);
    drop(wal);
    reopen_and_check(tmp.path(), &opts, 2002);
    scenario.teardown();
}
