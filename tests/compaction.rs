//! Compaction on a real member, with etcdctl: the compacted revision moves at once, the
//! versions it drops are swept a slice at a time after it, and `compact --physical` answers
//! only once the sweep is through, as etcd's waits for its backend.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, etcdctl, metrics_text, ok, serial};

/// Keys put: a few sweep slices' worth.
const KEYS: u64 = 20_000;

/// The member's `quorumkv_mvcc_compaction_sweeping` gauge.
fn sweeping(ep: &str) -> bool {
    let page = metrics_text(ep);
    let line = page
        .lines()
        .find(|l| l.starts_with("quorumkv_mvcc_compaction_sweeping "))
        .unwrap_or_else(|| panic!("no sweeping gauge in /metrics"));
    line.ends_with(" 1")
}

/// The member's current revision.
fn revision(ep: &str) -> i64 {
    let out = ok(&etcdctl(ep, &["endpoint", "status", "-w", "fields"]));
    out.lines()
        .find_map(|l| l.strip_prefix("\"Revision\" : "))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no revision in {out}"))
}

#[test]
fn compact_physical_answers_once_the_sweep_is_through() {
    let _serial = serial();
    // Each slice of a sweep sleeps 100 ms, so sweeping 20,000 keys takes a few tenths of a
    // second: long enough to see.
    let c = Cluster::start_with_env(1, "raft", &[], &[("FAILPOINTS", "mvcc::sweep=sleep(100)")]);
    let ep = c.members[0].client.clone();
    let put = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .args(["bench", "put", "--endpoints", &ep, "--sequential-keys"])
        .args([
            "--total",
            &KEYS.to_string(),
            "--key-space-size",
            &KEYS.to_string(),
        ])
        .args([
            "--clients",
            "100",
            "--conns",
            "10",
            "--key-size",
            "12",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );

    // Without --physical the answer comes while the sweep is still under way.
    let first = revision(&ep);
    ok(&etcdctl(&ep, &["compact", &first.to_string()]));
    assert!(
        sweeping(&ep),
        "the sweep is under way after a plain compact"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while sweeping(&ep) {
        assert!(Instant::now() < deadline, "the sweep never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    let old = etcdctl(&ep, &["get", "k", "--rev", &(first - 1).to_string()]);
    assert!(
        !old.status.success(),
        "a read below the compaction must fail"
    );

    // With --physical it comes after.
    ok(&etcdctl(&ep, &["put", "after", "1"]));
    let second = revision(&ep);
    ok(&etcdctl(
        &ep,
        &["compact", "--physical", &second.to_string()],
    ));
    assert!(
        !sweeping(&ep),
        "compact --physical answered before the sweep was through"
    );
    // The bench's keys are its numbers, zero-padded.
    let count = ok(&etcdctl(
        &ep,
        &["get", "0", "--prefix", "--limit", "1", "-w", "json"],
    ));
    assert!(
        count.contains(&format!("\"count\":{KEYS}")),
        "every key is still there: {count}"
    );
}
