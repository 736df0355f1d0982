//! Lease checkpoints across a leader change, with etcdctl against three real members. A
//! keep-alive answered while a checkpoint taken before it is still on its way to the log must
//! not be undone by that checkpoint: the next leader gives the lease at least what the
//! keep-alive promised, not the older remaining TTL.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, etcdctl, ok, serial};

/// The lease's TTL, in seconds.
const TTL_SECS: u64 = 60;

/// Waits until `log` says a lease checkpoint is being held back.
fn await_held_checkpoint(log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("lease checkpoints held back") {
            return;
        }
        assert!(Instant::now() < deadline, "no checkpoint was held back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The remaining TTL `etcdctl lease timetolive` reports.
fn remaining_secs(ep: &str, id: &str) -> u64 {
    let out = ok(&etcdctl(ep, &["lease", "timetolive", id]));
    out.split("remaining(")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no remaining TTL in {out}"))
}

#[test]
fn a_keep_alive_outlasts_a_checkpoint_taken_before_it() {
    let _serial = serial();
    // Every member, once leading, checkpoints each second; the sixteenth checkpoint (a lease
    // 15 s into its TTL) is held back 2 s before it goes to the log, and later ones are dropped.
    let c = Cluster::start_with_env(
        3,
        "raft",
        &["--experimental-lease-checkpoint-interval", "1s"],
        &[(
            "FAILPOINTS",
            "lease::checkpoint_handover=15*off->1*return(2000)->return",
        )],
    );
    let leader = c.leader();
    let ep = c.members[leader].client.clone();
    let grant = ok(&etcdctl(&ep, &["lease", "grant", &TTL_SECS.to_string()]));
    let id = grant.split_whitespace().nth(1).unwrap().to_string();
    await_held_checkpoint(&c.members[leader].dir.with_extension("log"));
    // The keep-alive renews the lease while the older checkpoint waits.
    let renewed = Instant::now();
    let kept = ok(&etcdctl(&ep, &["lease", "keep-alive", "--once", &id]));
    assert!(kept.contains("keepalived"), "{kept}");
    // Past the hold: the held checkpoint is in the log by now, wherever it went.
    std::thread::sleep(Duration::from_secs(3));
    let next = (leader + 1) % 3;
    c.move_leader(next);
    let left = remaining_secs(&c.members[next].client, &id);
    // What the keep-alive promised, less whole-second rounding.
    let promised = TTL_SECS - renewed.elapsed().as_secs() - 2;
    assert!(
        left >= promised,
        "the new leader gives lease {id} {left}s, the keep-alive promised {promised}s"
    );
}
