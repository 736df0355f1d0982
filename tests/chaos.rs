//! `quorumkv chaos` end to end: real member processes under kill -9, pauses, partitions,
//! delays, drops, compaction and member replacement, on each protocol. The run checks its own
//! history (linearizable, nothing acknowledged lost, watches ordered and complete, members
//! converged); the test asserts on its exit status and summary line. One run has mutual TLS
//! between the members.

use std::process::Command;

fn chaos(protocol: &str, seed: &str) {
    chaos_with(protocol, seed, "25s", &[]);
}

fn chaos_with(protocol: &str, seed: &str, duration: &str, extra: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .args([
            "chaos",
            "--replication",
            protocol,
            "--nodes",
            "3",
            "--duration",
            duration,
            "--seed",
            seed,
        ])
        .args(extra)
        .output()
        .expect("quorumkv runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        out.status.success(),
        "chaos run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "lost=0",
        "linearizable=true",
        "watch_violations=0",
        "converged=true",
    ] {
        assert!(last.contains(want), "summary lacks {want}: {last}");
    }
    let field = |name: &str| -> u64 {
        last.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("summary lacks {name}: {last}"))
    };
    assert!(field("acked") > 500, "too little load got through: {last}");
    assert!(field("faults") >= 5, "too few faults injected: {last}");
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
