//! A failed fdatasync or write stops the log: later appends are refused with a clear error, no
//! ticket completes after the failure, and everything acknowledged before it is durable.

use std::path::Path;
use std::sync::Arc;

use quorumkv_wal::io::{CrashMode, SimFs};
use quorumkv_wal::{Error, Wal, WalOptions};

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 32 << 10,
        record_bytes_max: 1 << 10,
        batch_bytes_max: 2 << 10,
        // Failures land on the append path, not on a background file that may never be used.
        preallocate: false,
        ..WalOptions::default()
    }
}

fn run(fail: impl Fn(&SimFs), expected_ops: &[&str]) {
    let fs = SimFs::new();
    let wal = Arc::new(Wal::open_with_fs("/sim/wal", opts(), Arc::new(fs.clone())).unwrap());
    fail(&fs);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut refused = 0;
                for i in 0..500u64 {
                    let payload = format!("{t}/{i}").into_bytes();
                    if t % 2 == 0 {
                        // The caller writes and syncs itself whenever the log is idle.
                        match wal.append_durable([&payload]) {
                            Ok(range) => acked.push((range.start, payload)),
                            Err(Error::Stopped { .. }) => refused += 1,
                            Err(e) => panic!("unexpected {e}"),
                        }
                        continue;
                    }
                    match wal.append([&payload]) {
                        Ok(ticket) => match ticket.wait() {
                            Ok(()) => acked.push((ticket.first_index(), payload)),
                            Err(Error::Stopped { .. }) => refused += 1,
                            Err(e) => panic!("unexpected {e}"),
                        },
                        Err(Error::Stopped { .. }) => refused += 1,
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                (acked, refused)
            })
        })
        .collect();
    let mut acked = Vec::new();
    let mut refused = 0;
    for t in threads {
        let (a, r) = t.join().unwrap();
        acked.extend(a);
        refused += r;
    }
    assert!(
        wal.is_stopped(),
        "the log stops after an injected failure: {:?}, failed syncs {}",
        wal.stats(),
        fs.failed_syncs()
    );
    assert!(refused > 0, "appends after the failure are refused");
    match wal.append([b"late"]) {
        Err(Error::Stopped { op, .. }) => assert!(expected_ops.contains(&op), "stopped by {op}"),
        other => panic!("expected Stopped, got {other:?}"),
    }
    // Records acknowledged before the failure stay readable.
    let durable = wal.durable_index();
    assert!(
        acked.iter().all(|(i, _)| *i <= durable),
        "no ticket completes after the failure"
    );
    if durable >= 1 {
        assert_eq!(wal.read(1..durable + 1).unwrap().len() as u64, durable);
    }
    drop(wal);
    // Power loss now: every acknowledged record must be on the durable disk.
    let crashed = fs.crash(CrashMode::DropUnsynced);
    let wal = Wal::open_with_fs(Path::new("/sim/wal"), opts(), Arc::new(crashed)).unwrap();
    for (i, payload) in &acked {
        assert_eq!(
            &wal.read(*i..*i + 1).unwrap()[0],
            payload,
            "acked record {i} lost"
        );
    }
    println!(
        "{} failure: {} acknowledged before it (all durable), {refused} refused after it",
        expected_ops[0],
        acked.len()
    );
}

#[test]
fn fdatasync_error_stops_the_log() {
    for n in [1, 3, 20] {
        run(
            |fs| fs.fail_sync_after(n),
            &["fdatasync", "write+fdatasync", "create segment"],
        );
    }
}

#[test]
fn write_error_stops_the_log() {
    for n in [1, 5, 40] {
        run(
            |fs| fs.fail_write_after(n),
            &["write", "write+fdatasync", "create segment"],
        );
    }
}
