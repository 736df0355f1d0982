//! ZooKeeper clients against three members, on Raft and on ZAB: sessions that move to another
//! member with their ephemerals and watches when theirs is killed (kazoo, Curator's recipes),
//! znode times from the leader's clock, and kazoo's own test suite.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::cluster::{Cluster, serial};
use common::zk_member::*;

/// kazoo's test files run in CI (the rest run with `tests/kazoo_suite/run.py`).
const KAZOO_FILES_IN_CI: &[&str] = &[
    "test_client.py",
    "test_connection.py",
    "test_lock.py",
    "test_watchers.py",
];

/// Kills the member whose ZooKeeper port is `port` (the one `child`, a client program, said
/// it is connected to), tells the program on its stdin the members still alive, and answers
/// its exit status, the lines it printed after, and its stderr.
fn fail_over(
    c: &mut Cluster,
    port: &str,
    mut child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
) -> (std::process::ExitStatus, Vec<String>, String) {
    let victim = c
        .members
        .iter()
        .position(|m| m.zk.ends_with(&format!(":{port}")))
        .expect("connected to a member");
    c.kill(victim);
    let alive = c
        .members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, m)| m.zk.clone())
        .collect::<Vec<_>>()
        .join(",");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{alive}").unwrap();
    drop(stdin);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap(), rest, stderr)
}

/// kazoo's checks, transactions, ACLs and recipes and zkCli.sh against three members; then
/// kills the member a kazoo session is connected to: the session must come back on another
/// member with its ephemeral and watches (see `tests/clients/zk_kazoo_failover.py`).
fn sessions_move_between_members(protocol: &'static str) {
    let _serial = serial();
    let mut c = Cluster::start_with(3, protocol, &["--zookeeper-tick-ms", "500"]);
    for m in &c.members {
        wait_ruok(&m.zk);
    }
    let hosts = c
        .members
        .iter()
        .map(|m| m.zk.clone())
        .collect::<Vec<_>>()
        .join(",");
    // Everything kazoo does, with its sessions spread over the members.
    for script in ["zk_kazoo.py", "zk_kazoo_recipes.py"] {
        let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
        let out = python(&[&path, &hosts]);
        assert_eq!(out.lines().last(), Some("ok"), "{protocol} {script}: {out}");
    }
    // zkCli.sh on a follower: its write goes through the leader, its read is its own.
    let follower = (c.leader() + 1) % c.members.len();
    let out = zkcli(
        &c.members[follower].zk,
        "create /via-follower x\nsync /\nget /via-follower",
    );
    assert!(
        out.contains("Created /via-follower") && out.contains("\nx\n"),
        "{protocol}: {out}"
    );
    zkcli_reads_stats_acls_and_ttls(&c.members[follower].zk);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/zk_kazoo_failover.py"
    );
    let mut child = Command::new("python3")
        .args([script, &hosts])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let port = first
        .strip_prefix("connected ")
        .unwrap_or_else(|| panic!("the script said {first:?}"));
    let (status, rest, stderr) = fail_over(&mut c, port, child, lines);
    assert!(
        status.success() && rest.last().map(String::as_str) == Some("ok"),
        "{protocol}: {rest:?}\n{stderr}"
    );
}

#[test]
fn sessions_move_between_members_on_raft() {
    sessions_move_between_members("raft");
}

#[test]
fn sessions_move_between_members_on_zab() {
    sessions_move_between_members("zab");
}

/// Creates and sets `path` through the member at `zk` with kazoo; returns the znode's ctime
/// and mtime less the real time now, in seconds.
fn stamp_skew_s(zk: &str, path: &str) -> (i64, i64) {
    let script = "import sys, time\n\
        from kazoo.client import KazooClient\n\
        c = KazooClient(hosts=sys.argv[1]); c.start(timeout=15)\n\
        c.create(sys.argv[2], b'x'); c.set(sys.argv[2], b'y')\n\
        st = c.exists(sys.argv[2]); now = int(time.time() * 1000)\n\
        print((st.ctime - now) // 1000, (st.mtime - now) // 1000)\n\
        c.stop()";
    let out = python(&["-c", script, zk, path]);
    let f: Vec<i64> = out.split_whitespace().map(|w| w.parse().unwrap()).collect();
    (f[0], f[1])
}

/// ctime and mtime are the leader's clock, whichever member the client writes through: a
/// follower whose clock is a day behind (libfaketime) stamps nothing, until it leads.
fn znode_times_come_from_the_leaders_clock(protocol: &'static str) {
    const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        Path::new(FAKETIME).exists(),
        "libfaketime is missing: install Debian's faketime (scripts/test.sh does)"
    );
    let _serial = serial();
    let mut c = Cluster::start(3, protocol);
    let skewed = (c.leader() + 1) % 3;
    c.kill(skewed);
    c.members[skewed].env = vec![
        ("LD_PRELOAD".into(), FAKETIME.into()),
        ("FAKETIME".into(), "-1d".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ];
    c.spawn(skewed);
    c.wait_healthy();
    wait_ruok(&c.members[skewed].zk);
    let (ctime, mtime) = stamp_skew_s(&c.members[skewed].zk, "/through-follower");
    assert!(
        ctime.abs() < 60 && mtime.abs() < 60,
        "{protocol}: {ctime} s, {mtime} s"
    );
    // Led by the skewed member, its clock is the cluster's: the day shows, so the clock shift
    // bites. (ZAB, as ZooKeeper, has no leadership transfer to make it lead.)
    if protocol == "zab" {
        return;
    }
    c.move_leader(skewed);
    let (ctime, mtime) = stamp_skew_s(&c.members[(skewed + 1) % 3].zk, "/led-by-it");
    let day = 86_400;
    assert!(
        (ctime + day).abs() < 60 && (mtime + day).abs() < 60,
        "{ctime} s, {mtime} s"
    );
}

#[test]
fn znode_times_come_from_the_leaders_clock_on_raft() {
    znode_times_come_from_the_leaders_clock("raft");
}

#[test]
fn znode_times_come_from_the_leaders_clock_on_zab() {
    znode_times_come_from_the_leaders_clock("zab");
}

/// Apache Curator's recipes (Debian's `libcurator-*-java`) against three members: a
/// LeaderLatch, an InterProcessMutex, containers reaped once emptied, and a CuratorCache over
/// a subtree that stays equal to the tree when its member is killed and it moves to another
/// (`tests/clients/CuratorRecipes.java`).
#[test]
fn curator_recipes_hold_across_a_member_kill() {
    const RECIPES_JAR: &str = "/usr/share/java/curator-recipes.jar";
    assert!(
        Path::new(RECIPES_JAR).exists(),
        "{RECIPES_JAR} is missing: install Debian's libcurator-recipes-java (scripts/test.sh does)"
    );
    let _serial = serial();
    let mut c = Cluster::start_with(
        3,
        "raft",
        &[
            "--zookeeper-tick-ms",
            "500",
            "--zookeeper-container-check-interval-ms",
            "200",
        ],
    );
    for m in &c.members {
        wait_ruok(&m.zk);
    }
    let classes = tempfile::tempdir().unwrap();
    let src = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/CuratorRecipes.java"
    );
    let javac = Command::new("javac")
        .args(["-nowarn", "-cp", "/usr/share/java/*", "-d"])
        .arg(classes.path())
        .arg(src)
        .output()
        .expect("javac is missing: install a JDK (scripts/test.sh does)");
    assert!(
        javac.status.success(),
        "javac: {}",
        String::from_utf8_lossy(&javac.stderr)
    );
    let hosts = c
        .members
        .iter()
        .map(|m| m.zk.clone())
        .collect::<Vec<_>>()
        .join(",");
    let classpath = format!("/usr/share/java/*:{}", classes.path().display());
    let mut child = Command::new("timeout")
        .args(["180", "java", "-cp", &classpath, "CuratorRecipes", &hosts])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    let port = loop {
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        if let Some(port) = line.strip_prefix("connected ") {
            break port.to_string();
        }
        assert!(!line.is_empty(), "the program stopped after {said:?}");
        said.push(line);
    };
    assert_eq!(said, ["latch ok", "mutex ok", "containers ok"]);
    let (status, rest, stderr) = fail_over(&mut c, &port, child, lines);
    assert!(
        status.success() && rest == ["cache ok", "ok"],
        "{rest:?}\n{stderr}"
    );
}

/// kazoo's own test suite (shipped in the kazoo package, run through its harness with
/// quorumkv members in place of ZooKeeper) against three members: the files that fit in CI.
/// `tests/kazoo_suite/run.py` runs every file against real ZooKeeper and quorumkv side by side.
#[test]
fn kazoos_own_tests_pass_against_three_members() {
    let _serial = serial();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kazoo_suite/run.py");
    let out = Command::new("python3")
        .args([
            script,
            "--target",
            "quorumkv",
            "--members",
            "3",
            "--bin",
            env!("CARGO_BIN_EXE_quorumkv"),
            "--files",
        ])
        .args(KAZOO_FILES_IN_CI)
        .output()
        .expect("python3 is missing");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("quorumkv passes every test"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
