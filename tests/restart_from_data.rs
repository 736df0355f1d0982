//! Members restart from their data directories, whatever `--initial-cluster-state` says. A
//! cluster whose every founding member has been replaced by members that joined it
//! (`--initial-cluster-state existing`) is stopped whole, and every member starts again with
//! the flags it joined with: each takes its identity and first membership from its data
//! directory instead of asking the others (none of which is up) to let it join, and the
//! acknowledged keys are all there.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, etcdctl, member_rows, ok, serial};

/// Waits until the member at `ep` has published its name `name` (it counts as started).
fn started(ep: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if member_rows(ep).iter().any(|(_, n, _)| n == name) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never started");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn members_that_joined_restart_after_a_whole_cluster_stop(protocol: &'static str) {
    let _serial = serial();
    let mut c = Cluster::start(1, protocol);
    let founder = c.members[0].client.clone();
    ok(&etcdctl(&founder, &["put", "before", "1"]));
    // One member cannot take a second voter before it runs: the second joins as a learner.
    let (a, id) = c.add_member(&founder, true);
    started(&founder, "m2");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !etcdctl(&founder, &["member", "promote", &id])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "{protocol}: m2 was never promoted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (b, _) = c.add_member(&founder, false);
    started(&founder, "m3");
    // The founder leaves: only members that joined are left.
    let founder_id = member_rows(&founder)
        .into_iter()
        .find(|(_, name, _)| name == "m1")
        .expect("the founder is listed")
        .0;
    let via = c.members[a].client.clone();
    ok(&etcdctl(&via, &["member", "remove", &founder_id]));
    c.kill(0);
    c.wait_healthy();
    for i in 0..20 {
        ok(&etcdctl(&via, &["put", &format!("k{i:02}"), "v"]));
    }
    // A whole-cluster outage, then every member back with its original flags.
    c.kill(a);
    c.kill(b);
    c.spawn(a);
    c.spawn(b);
    let deadline = Instant::now() + Duration::from_secs(30);
    let keys = loop {
        let out = etcdctl(
            &c.members[b].client,
            &["get", "", "--prefix", "--keys-only"],
        );
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{protocol}: the members never served again: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(c.members[b].dir.with_extension("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(keys.split_whitespace().count(), 21, "{protocol}: {keys}");
    let log = std::fs::read_to_string(c.members[a].dir.with_extension("log")).unwrap();
    assert!(
        log.contains("restarting from the data directory"),
        "{protocol}: {log}"
    );
    let rows = member_rows(&c.members[a].client);
    assert_eq!(rows.len(), 2, "{protocol}: {rows:?}");
}

#[test]
fn raft_members_that_joined_restart_after_a_whole_cluster_stop() {
    members_that_joined_restart_after_a_whole_cluster_stop("raft");
}

#[test]
fn zab_members_that_joined_restart_after_a_whole_cluster_stop() {
    members_that_joined_restart_after_a_whole_cluster_stop("zab");
}
