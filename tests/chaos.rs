//! `quorumkv chaos` end to end: real member processes under kill -9, pauses, partitions,
//! delays, drops, compaction and member replacement, on each protocol. The run checks its own
//! history (linearizable, nothing acknowledged lost, watches ordered and complete, members
//! converged); the test asserts on its exit status and summary line. One run has mutual TLS
//! between the members. The power-cut runs put every member on a lossy FUSE file system
//! (`lossyfs`), and one of them proves the checks catch a member that skips its fsyncs. Five
//! members take two faults at once, clocks are stepped under libfaketime, and disk stalls must
//! start no election.

use std::process::Command;

fn chaos(protocol: &str, seed: &str) {
    chaos_with(protocol, seed, "25s", &[]);
}

/// Flags every member gets in these runs (the chaos command's defaults), plus `more`.
fn serve_flags(more: &str) -> String {
    format!(
        "--serve-flags=--heartbeat-interval 50 --election-timeout 500 --snapshot-count 2000 \
         --experimental-snapshot-catchup-entries 200 --experimental-lease-checkpoint-interval 1s \
         {more}"
    )
}

/// Runs `quorumkv chaos`; returns whether it passed, its output (stdout, then stderr) and its
/// summary line.
fn run(protocol: &str, seed: &str, duration: &str, extra: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quorumkv"));
    cmd.args([
        "chaos",
        "--replication",
        protocol,
        "--duration",
        duration,
        "--seed",
        seed,
    ]);
    if !extra.contains(&"--nodes") {
        cmd.args(["--nodes", "3"]);
    }
    let out = cmd.args(extra).output().expect("quorumkv runs");
    let stdout = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("acked="))
        .unwrap_or_default()
        .to_string();
    (out.status.success(), stdout, last)
}

/// The value of `name=` in a summary line.
fn field(last: &str, name: &str) -> u64 {
    last.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("summary lacks {name}: {last}"))
}

fn chaos_with(protocol: &str, seed: &str, duration: &str, extra: &[&str]) {
    let (ok, stdout, last) = run(protocol, seed, duration, extra);
    assert!(ok, "chaos run failed:\n{stdout}");
    for want in [
        "lost=0",
        "linearizable=true",
        "watch_violations=0",
        "converged=true",
        "lease_violations=0",
        "zk_linearizable=true",
        "zk_violations=0",
    ] {
        assert!(last.contains(want), "summary lacks {want}: {last}");
    }
    assert!(
        field(&last, "acked") > 500,
        "too little load got through: {last}"
    );
    assert!(
        field(&last, "faults") >= 5,
        "too few faults injected: {last}"
    );
    assert!(
        field(&last, "leases") >= 4,
        "too few leases granted: {last}"
    );
    assert!(
        field(&last, "zk_ops") > 100,
        "too little ZooKeeper load got through: {last}"
    );
}

/// One short run with mutual TLS between the members: kills, pauses, partitions and member
/// replacement over TLS connections (the proxies cannot drop messages they cannot read).
#[test]
fn raft_cluster_survives_chaos_with_peer_tls() {
    chaos_with(
        "raft",
        "11",
        "25s",
        &[
            "--peer-tls",
            "--faults",
            "kill,kill-leader,pause,partition,isolate-leader,delay,replace",
        ],
    );
}

#[test]
fn raft_cluster_survives_chaos_without_losing_or_reordering_anything() {
    chaos("raft", "7");
}

#[test]
fn zab_cluster_survives_chaos_without_losing_or_reordering_anything() {
    chaos("zab", "8");
}

/// Five members under two faults at once: network faults on a schedule of their own (one-way
/// cuts among them) beside kills, pauses, crashes inside apply, compaction, defragment,
/// membership changes and snapshot transfer, and disk stalls.
#[test]
fn five_members_survive_two_faults_at_once() {
    chaos_with(
        "raft",
        "31",
        "25s",
        &[
            "--nodes",
            "5",
            "--faults-at-once",
            "2",
            "--faults",
            "kill,pause,crash,slow-disk,replace,partition,one-way,delay,drop",
        ],
    );
}

/// Wall clocks stepped by minutes to hours, forward and back, on members under libfaketime:
/// leases, elections and everything else run on monotonic time, so no check may notice.
#[test]
fn zab_cluster_ignores_wall_clock_steps() {
    chaos_with(
        "zab",
        "32",
        "25s",
        &["--faults", "clock-jump,kill,partition"],
    );
}

/// fdatasync stalls of 1–5 s on the leader or a follower: the peers still hear heartbeats
/// (the log syncs off the protocol's thread), so no election may start while the disk stalls.
#[test]
fn disk_stalls_start_no_election() {
    let flags = serve_flags("").replace("--election-timeout 500", "--election-timeout 1500");
    let (ok, stdout, last) = run("raft", "33", "20s", &["--faults", "slow-disk", &flags]);
    assert!(ok, "chaos run failed:\n{stdout}");
    assert!(field(&last, "stalls") >= 2, "too few stalls: {last}");
    assert_eq!(
        field(&last, "stall_elections"),
        0,
        "elections during disk stalls:\n{stdout}"
    );
}

/// Power cuts of one member and of all at once, among partitions and pauses: whatever no
/// fsync covered is gone when a member comes back, and nothing acknowledged may be.
#[test]
fn raft_cluster_loses_nothing_acknowledged_to_power_cuts() {
    chaos_with(
        "raft",
        "21",
        "25s",
        &["--faults", "power-loss,power-loss-all,partition,pause"],
    );
}

#[test]
fn zab_cluster_loses_nothing_acknowledged_to_power_cuts() {
    chaos_with(
        "zab",
        "22",
        "25s",
        &["--faults", "power-loss,power-loss-all,partition,pause"],
    );
}

/// The same cuts on members that skip every fsync (`--unsafe-no-fsync`): the checks must
/// catch acknowledged writes lost, or the runs above prove nothing.
#[test]
fn power_cuts_catch_members_that_skip_fsync() {
    let flags = serve_flags("--unsafe-no-fsync");
    let (ok, stdout, last) = run("raft", "23", "12s", &["--faults", "power-loss-all", &flags]);
    assert!(!ok, "a run without fsync passed:\n{stdout}");
    assert!(
        field(&last, "lost") > 0,
        "no acknowledged write was reported lost: {last}"
    );
    // A failed run keeps its directory; the members' logs there carry the warning.
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("member logs kept in ")?.split(';').next())
        .unwrap_or_else(|| panic!("no kept directory named:\n{stdout}"))
        .to_string();
    let log = std::fs::read_to_string(std::path::Path::new(&dir).join("n0.log")).unwrap();
    assert!(
        log.contains("--unsafe-no-fsync: acknowledged writes are not durable"),
        "the member did not warn:\n{log}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Members whose keep-alives answer without renewing (a failpoint): the lease checks must see
/// keys deleted while their leases were being kept alive.
#[test]
fn lease_checks_catch_a_renewal_that_does_not_renew() {
    let (ok, stdout, last) = run(
        "raft",
        "24",
        "12s",
        &[
            "--faults",
            "compact",
            "--member-failpoints",
            "lease::renew=return",
            "--lease-clients",
            "4",
        ],
    );
    assert!(!ok, "a run with broken renewals passed:\n{stdout}");
    assert!(
        field(&last, "lease_violations") > 0,
        "no lease violation reported: {last}"
    );
    assert!(
        stdout.contains("before its last keep-alive's deadline"),
        "{stdout}"
    );
    if let Some(dir) = stdout
        .lines()
        .find_map(|l| l.strip_prefix("member logs kept in ")?.split(';').next())
    {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The ZooKeeper clients' checks bite: members that drop half their batches of watch
/// notifications (`zk::fire` failpoint) must fail the run with ZooKeeper violations.
#[test]
fn zookeeper_checks_catch_a_member_that_drops_notifications() {
    let (ok, stdout, last) = run(
        "raft",
        "34",
        "12s",
        &[
            "--faults",
            "pause",
            "--member-failpoints",
            "zk::fire=50%return",
        ],
    );
    assert!(!ok, "a run with dropped notifications passed:\n{stdout}");
    assert!(field(&last, "zk_violations") > 0, "{stdout}");
    assert!(stdout.contains("was not notified first"), "{stdout}");
}

#[test]
fn chaos_refuses_unknown_faults() {
    let out = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .args(["chaos", "--faults", "kill,meteor"])
        .output()
        .expect("quorumkv runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown fault \"meteor\""), "{err}");
}
