//! Clusters of real `quorumkv serve` processes under faults, driven by etcdctl and
//! python-etcd3: a leader killed during a write loop, a lost quorum, a follower behind the
//! compacted log, membership changes, failing storage, leadership handed over on
//! shutdown, auto compaction, corruption checks, and the whole cluster killed at once.

mod common;
use common::cluster::*;
use common::etcd::*;
use common::free_port;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Writes through every member while the leader is killed with SIGKILL and restarted; no
/// acknowledged write is lost and the replicas end identical.
fn three_nodes(protocol: &'static str) {
    let _serial = serial();
    let mut c = Cluster::start(3, protocol);
    let follower = (c.leader() + 1) % 3;
    let f_ep = c.members[follower].client.clone();
    etcdctl_suite(&c, &f_ep);
    let eps: Vec<String> = c.members.iter().map(|m| m.client.clone()).collect();
    eprintln!("{protocol}: python suite");
    python_suite(&[&eps[follower], &eps[c.leader()]]);
    eprintln!("{protocol}: node.js suite");
    node_suite(&eps);
    // The leader has sent to and heard from both followers, as etcd's peer metrics say.
    let metrics = metrics_text(&eps[c.leader()]);
    for name in [
        "etcd_network_peer_sent_bytes_total{To=",
        "etcd_network_peer_received_bytes_total{From=",
    ] {
        let busy = metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter(|l| l.rsplit(' ').next().is_some_and(|v| v != "0"))
            .count();
        assert_eq!(busy, 2, "{name}: {metrics}");
    }

    eprintln!("{protocol}: write loop with the leader killed");
    let leader = c.leader();
    // A lease kept alive through a follower must outlive the leader; one left alone must
    // expire under the next leader (which restarts TTLs rather than expiring them early).
    let follower_ep = c.members[(leader + 1) % 3].client.clone();
    let kept = lease_with_key(&follower_ep, "kept", 4);
    let dropped = lease_with_key(&follower_ep, "dropped", 4);
    let mut keepalive = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            &format!("--endpoints={follower_ep}"),
            "lease",
            "keep-alive",
            &kept,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start_rev = header_revision(&follower_ep) + 1;
    let mut acked = Vec::new();
    for i in 0..60 {
        if i == 20 {
            c.kill(leader);
        }
        let out = etcdctl(
            &c.endpoints(),
            &["put", &format!("loop/{i:03}"), &i.to_string()],
        );
        if out.status.success() {
            acked.push(i);
        } else {
            eprintln!(
                "put {i} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
        }
    }
    assert!(acked.len() >= 40, "too few writes succeeded: {acked:?}");
    // Past the TTL since the kill: the kept lease lives, the other one expired.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        ok(&etcdctl(
            &follower_ep,
            &["get", "kept", "--print-value-only"]
        )),
        "x\n"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok(&etcdctl(&follower_ep, &["get", "dropped"])).is_empty() {
        assert!(Instant::now() < deadline, "lease {dropped} never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    keepalive.kill().unwrap();
    let _ = keepalive.wait();
    eprintln!("{protocol}: restarting the old leader");
    c.spawn(leader);
    c.wait_healthy();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hashes = ok(&etcdctl(&c.endpoints(), &["endpoint", "hashkv"]));
        let distinct: std::collections::BTreeSet<&str> = hashes
            .lines()
            .map(|l| l.rsplit(", ").next().unwrap())
            .collect();
        if distinct.len() == 1 && hashes.lines().count() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never converged: {hashes}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A watch from before the kill, opened on the restarted member, replays every write
    // exactly once and in order.
    let out = Command::new("timeout")
        .args([
            "3",
            "etcdctl",
            &format!("--endpoints={}", c.members[leader].client),
        ])
        .args([
            "watch",
            "loop/",
            "--prefix",
            "--rev",
            &start_rev.to_string(),
        ])
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let seen: Vec<&str> = text.lines().filter(|l| l.starts_with("loop/")).collect();
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "watch events out of order or repeated");
    for i in &acked {
        assert!(
            seen.contains(&format!("loop/{i:03}").as_str()),
            "watch missed {i}"
        );
    }
    for m in &c.members {
        let got = ok(&etcdctl(
            &m.client,
            &["get", "loop/", "--prefix", "--keys-only", "--consistency=s"],
        ));
        let keys: Vec<&str> = got.lines().filter(|l| !l.is_empty()).collect();
        for i in &acked {
            assert!(
                keys.contains(&format!("loop/{i:03}").as_str()),
                "acknowledged write {i} lost on {}",
                m.name
            );
        }
    }
}

/// A member that lost its quorum says so at once ("no leader") rather than holding requests
/// until clients give up, so they move on to another member; serializable reads still answer
/// from its own state; once the others are back, writes go on and nothing was lost.
fn quorum_lost(protocol: &'static str) {
    let _serial = serial();
    let mut c = Cluster::start(3, protocol);
    let ep = c.members[0].client.clone();
    assert_eq!(
        ok(&etcdctl(&c.endpoints(), &["put", "kept", "1"])).trim(),
        "OK"
    );
    let local = || {
        etcdctl(
            &ep,
            &["get", "kept", "--consistency=s", "--print-value-only"],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while String::from_utf8_lossy(&local().stdout).trim() != "1" {
        assert!(
            Instant::now() < deadline,
            "the write never reached member 0"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // etcdctl's watches ask for a leader (clientv3's WithRequireLeader).
    let mut watch = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([&format!("--endpoints={ep}"), "watch", "kept"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    c.kill(1);
    c.kill(2);
    // Within a few election timeouts (500 ms here) the survivor gives up waiting for one.
    std::thread::sleep(Duration::from_secs(4));
    // (etcdctl retries what it deems repeatable, lease grants and reads, until its timeout.)
    for args in [&["put", "lost", "x"][..], &["del", "kept"][..]] {
        let asked = Instant::now();
        let out = etcdctl(&ep, args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} without a quorum");
        assert!(said.contains("etcdserver: no leader"), "{args:?}: {said}");
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{args:?} refused at once, not after {:?}",
            asked.elapsed()
        );
    }
    assert_eq!(String::from_utf8_lossy(&local().stdout).trim(), "1");
    // A call that asks for a leader (clientv3's WithRequireLeader) is refused even when it
    // could be served locally, as etcd refuses it.
    let asked_for_leader = Command::new("python3")
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        .args([
            "-c",
            "import sys, grpc, etcd3.etcdrpc as rpc\n\
             kv = rpc.KVStub(grpc.insecure_channel(sys.argv[1]))\n\
             req = rpc.RangeRequest(key=b'kept', serializable=True)\n\
             print(len(kv.Range(req, timeout=5).kvs))\n\
             try:\n    kv.Range(req, metadata=[('hasleader', 'true')], timeout=5)\n\
             except grpc.RpcError as e:\n    print(e.code(), e.details())\n",
            &ep,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&asked_for_leader.stdout),
        "1\nStatusCode.UNAVAILABLE etcdserver: no leader\n",
        "{}",
        String::from_utf8_lossy(&asked_for_leader.stderr)
    );
    // ... and the watch ends with "no leader", so a client can watch through another member.
    let deadline = Instant::now() + Duration::from_secs(10);
    while watch.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = watch.kill();
            panic!("the watch on a member without a leader went on");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let watch = watch.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&watch.stderr);
    assert!(
        said.contains("watch was canceled (etcdserver: no leader)"),
        "{said}"
    );
    c.spawn(1);
    c.spawn(2);
    c.wait_healthy();
    assert_eq!(
        ok(&etcdctl(&c.endpoints(), &["put", "after", "2"])).trim(),
        "OK"
    );
    let all = ok(&etcdctl(&ep, &["get", "", "--prefix", "--keys-only"]));
    let keys: Vec<&str> = all.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(keys, ["after", "kept"], "nothing refused got in");
}

#[test]
fn raft_member_without_quorum_says_no_leader_at_once() {
    quorum_lost("raft");
}

#[test]
fn zab_member_without_quorum_says_no_leader_at_once() {
    quorum_lost("zab");
}

#[test]
fn three_nodes_raft_survive_a_killed_leader() {
    three_nodes("raft");
}

#[test]
fn three_nodes_zab_survive_a_killed_leader() {
    three_nodes("zab");
}

/// Puts `n` keys `{prefix}{i:05}` through python-etcd3, one request each.
fn python_puts(ep: &str, prefix: &str, n: usize) {
    let (host, port) = ep.split_once(':').unwrap();
    let program = format!(
        "import etcd3\nc = etcd3.client(host='{host}', port={port})\n\
         for i in range({n}):\n    c.put('{prefix}%05d' % i, 'v' * 100)\n"
    );
    let out = Command::new("python3")
        .args(["-c", &program])
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        .output()
        .expect("python3 not found");
    assert!(
        out.status.success(),
        "python puts failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The revision a member serves locally (serializable).
fn local_revision(ep: &str) -> Option<i64> {
    let out = etcdctl(ep, &["get", "none", "--consistency=s", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["header"]["revision"].as_i64()
}

/// A follower down while the others write far past its log and compact theirs comes back,
/// gets a snapshot (the log it needs is gone), and converges; it then restarts from the
/// installed snapshot.
fn follower_behind_compacted_log(protocol: &'static str) {
    let _serial = serial();
    let mut c = Cluster::start_with(
        3,
        protocol,
        &[
            "--snapshot-count",
            "300",
            "--experimental-snapshot-catchup-entries",
            "20",
        ],
    );
    let leader = c.leader();
    let behind = (leader + 1) % 3;
    c.kill(behind);
    let leader_ep = c.members[leader].client.clone();
    python_puts(&leader_ep, "snap/", 1500);
    ok(&etcdctl(&leader_ep, &["del", "snap/000", "--prefix"]));
    let want = header_revision(&leader_ep);
    c.spawn(behind);
    let ep = c.members[behind].client.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while local_revision(&ep) != Some(want) {
        assert!(
            Instant::now() < deadline,
            "{protocol}: the follower never caught up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The machine serves the snapshot's state before the log is reset after it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(c.members[behind].dir.with_extension("log")).unwrap();
        if log.contains("snapshot installed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{protocol}: caught up without a snapshot, so the log was not compacted:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        hashes(&c).len(),
        1,
        "{protocol}: members differ after the snapshot"
    );
    let count = |ep: &str| {
        ok(&etcdctl(
            ep,
            &["get", "snap/", "--prefix", "--keys-only", "--consistency=s"],
        ))
        .lines()
        .filter(|l| !l.is_empty())
        .count()
    };
    assert_eq!(count(&ep), 1400);

    // Restart from the installed snapshot, then keep writing through it.
    c.kill(behind);
    c.spawn(behind);
    c.wait_healthy();
    ok(&etcdctl(&ep, &["put", "snap/after", "x"]));
    let want = header_revision(&leader_ep);
    let deadline = Instant::now() + Duration::from_secs(30);
    while local_revision(&ep) != Some(want) {
        assert!(
            Instant::now() < deadline,
            "{protocol}: no progress after restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(count(&ep), 1401);
    assert_eq!(
        hashes(&c).len(),
        1,
        "{protocol}: members differ after restart"
    );
}

#[test]
fn raft_follower_behind_the_compacted_log_catches_up_by_snapshot() {
    follower_behind_compacted_log("raft");
}

#[test]
fn zab_follower_behind_the_compacted_log_catches_up_by_snapshot() {
    follower_behind_compacted_log("zab");
}

/// Runtime membership through etcdctl: a member added as a learner joins the running cluster
/// and catches up, is promoted, and a voter is removed (its process stops by itself); the
/// cluster keeps serving and the remaining members agree.
fn membership_changes(protocol: &'static str) {
    let _serial = serial();
    let mut c = Cluster::start(3, protocol);
    let leader = c.leader();
    let follower = (leader + 1) % 3;
    let f_ep = c.members[follower].client.clone();
    for i in 0..20 {
        ok(&etcdctl(&f_ep, &["put", &format!("mem/{i:02}"), "v"]));
    }
    let (new, id) = c.add_member(&f_ep, true);
    let new_ep = c.members[new].client.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = etcdctl(&new_ep, &["get", "mem/19", "--consistency=s"]);
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("mem/19") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{protocol}: the new member never caught up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // It publishes its name through the log once it is running.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = member_rows(&f_ep);
        if rows.iter().any(|(i, n, l)| *i == id && n == "m4" && *l) {
            break;
        }
        assert!(Instant::now() < deadline, "{protocol}: {rows:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A learner that never started is not promoted (it has not caught up), and goes away.
    let ghost_url = format!("http://127.0.0.1:{}", free_port());
    let out = ok(&etcdctl(
        &f_ep,
        &[
            "member",
            "add",
            "ghost",
            "--learner",
            "--peer-urls",
            &ghost_url,
        ],
    ));
    let ghost = out.split_whitespace().nth(1).unwrap().to_string();
    let refused = etcdctl(&f_ep, &["member", "promote", &ghost]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("can only promote a learner member which is in sync with leader"),
        "{protocol}: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    ok(&etcdctl(&f_ep, &["member", "remove", &ghost]));
    ok(&etcdctl(&new_ep, &["member", "promote", &id]));
    assert!(member_rows(&f_ep).iter().all(|(_, _, l)| !l));

    // Remove a voter that does not lead; it notices and stops.
    let leader = c.leader();
    let gone = (0..3).find(|&i| i != leader).unwrap();
    let gone_id = member_rows(&new_ep)
        .into_iter()
        .find(|(_, n, _)| *n == c.members[gone].name)
        .unwrap()
        .0;
    ok(&etcdctl(&new_ep, &["member", "remove", &gone_id]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = c.members[gone].child.as_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "{protocol}: the removed member kept running"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!status.success());
    c.members[gone].child = None;
    let rows = member_rows(&new_ep);
    assert_eq!(rows.len(), 3, "{protocol}: {rows:?}");
    assert!(rows.iter().all(|(i, _, _)| *i != gone_id));
    ok(&etcdctl(&new_ep, &["put", "mem/after", "x"]));
    let ep = c.endpoints();
    let deadline = Instant::now() + Duration::from_secs(15);
    while hashes(&c).len() != 1 {
        assert!(
            Instant::now() < deadline,
            "{protocol}: members differ: {ep}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Strict reconfiguration: with a voter down, adding another voter is refused as etcd
    // refuses it (the new quorum would need the unreachable member).
    let leader = c.leader();
    let down = (0..c.members.len())
        .find(|&i| i != leader && c.members[i].child.is_some())
        .unwrap();
    c.kill(down);
    std::thread::sleep(Duration::from_secs(6));
    let leader_ep = c.members[leader].client.clone();
    let url = format!("http://127.0.0.1:{}", free_port());
    let refused = etcdctl(&leader_ep, &["member", "add", "late", "--peer-urls", &url]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("etcdserver: unhealthy cluster"),
        "{protocol}: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(
        member_rows(&leader_ep).len(),
        3,
        "{protocol}: nothing was added"
    );
}

/// A leader whose storage fails (`failpoints`: its log's fdatasync, its tree's checkpoint or
/// its background flush) stops acknowledging and falls silent, as a crashed one would, so
/// the others elect a new leader and go on; nothing acknowledged is lost.
fn leader_storage_failure(failpoints: &str) {
    let _serial = serial();
    let mut c = Cluster::start(3, "raft");
    let first = c.leader();
    let doomed = (first + 1) % 3;
    // Restart a follower whose fdatasync fails after a few dozen syncs, and hand it the lead.
    c.kill(doomed);
    c.members[doomed].env = vec![("FAILPOINTS".into(), failpoints.into())];
    c.spawn(doomed);
    c.wait_healthy();
    let doomed_id = c.move_leader(doomed);
    let others: Vec<String> = (0..3)
        .filter(|&i| i != doomed)
        .map(|i| c.members[i].client.clone())
        .collect();
    let eps = others.join(",");
    // The others notice and elect. Writes they had handed to the silent leader are proposed
    // again once the new leader's first entry shows that they were lost, so most clients
    // never see the failure; any refused write is retried here. Every one gets through.
    let started = Instant::now();
    let mut refused = 0;
    for i in 0..150 {
        loop {
            let out = etcdctl(&eps, &["put", &format!("fs/{i:03}"), "v"]);
            if out.status.success() {
                break;
            }
            refused += 1;
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "writes never resumed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eprintln!("{failpoints}: {refused} writes refused during the failover");
    let acked = 150;
    let log = std::fs::read_to_string(c.members[doomed].dir.with_extension("log")).unwrap();
    assert!(log.contains("injected failure"), "the failpoint fired");
    // The others lead now, and hold every acknowledged write.
    let st = ok(&etcdctl(&others[0], &["endpoint", "status", "-w", "json"]));
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_ne!(
        v[0]["Status"]["leader"].as_u64(),
        u64::from_str_radix(&doomed_id, 16).ok(),
        "a member that can persist leads"
    );
    let keys = ok(&etcdctl(&eps, &["get", "fs/", "--prefix", "--keys-only"]));
    let n = keys.lines().filter(|l| l.starts_with("fs/")).count();
    assert_eq!(n, acked, "every acknowledged write is there");
    // The failed member refuses writes rather than pretending.
    let refused = etcdctl(&c.members[doomed].client, &["put", "fs/late", "x"]);
    assert!(!refused.status.success());
    // Nor does it hold a linearizable read until the client gives up: it can serve none.
    let asked = Instant::now();
    let read = etcdctl(&c.members[doomed].client, &["get", "fs/000"]);
    assert!(!read.status.success());
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "refused at once, not after {:?}: {}",
        asked.elapsed(),
        String::from_utf8_lossy(&read.stderr)
    );
}

#[test]
fn raft_leader_whose_fdatasync_fails_falls_silent_and_the_others_go_on() {
    leader_storage_failure("wal::fdatasync=30*off->return");
}

#[test]
fn raft_leader_whose_tree_checkpoint_fails_falls_silent_and_the_others_go_on() {
    leader_storage_failure("btree::sync=3*off->return");
}

#[test]
fn raft_leader_whose_page_flush_fails_falls_silent_and_the_others_go_on() {
    leader_storage_failure("btree::flush=2*off->return");
}

#[test]
fn raft_membership_changes_through_etcdctl() {
    membership_changes("raft");
}

#[test]
fn zab_membership_changes_through_etcdctl() {
    membership_changes("zab");
}

/// etcd's leadership transfer on shutdown: a Raft leader stopped with SIGTERM hands
/// leadership to a follower before it exits, and that follower leads afterwards.
#[test]
fn raft_leader_hands_over_leadership_when_stopped() {
    let _s = serial();
    let mut c = Cluster::start(3, "raft");
    let l = c.leader();
    ok(&etcdctl(&c.endpoints(), &["put", "before", "1"]));
    c.stop(l);
    let log = std::fs::read_to_string(c.members[l].dir.with_extension("log")).unwrap();
    let line = log
        .lines()
        .find(|x| x.contains("transferred leadership on shutdown"))
        .unwrap_or_else(|| panic!("no hand-over logged: {log}"));
    let hex = line.trim_end();
    let to = u64::from_str_radix(&hex[hex.len() - 16..], 16).unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    for &i in &others {
        let v: serde_json::Value = serde_json::from_str(&ok(&etcdctl(
            &c.members[i].client,
            &["endpoint", "status", "-w", "json"],
        )))
        .unwrap();
        assert_eq!(v[0]["Status"]["leader"].as_u64(), Some(to), "{v}");
    }
    ok(&etcdctl(&c.endpoints(), &["put", "after", "2"]));
    assert_eq!(
        ok(&etcdctl(
            &c.endpoints(),
            &["get", "before", "--print-value-only"]
        ))
        .trim(),
        "1"
    );
}

/// The raft term `ep` reports.
fn raft_term(ep: &str) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&etcdctl(ep, &["endpoint", "status", "-w", "json"]))).unwrap();
    v[0]["Status"]["header"]["raft_term"].as_u64().unwrap()
}

/// `--auto-compaction-retention=2s`: the leader compacts history older than two seconds
/// through the log, so every member refuses reads of the old revisions and still serves the
/// recent ones; the followers leave it to the leader.
fn periodic_auto_compaction(protocol: &'static str) {
    let _s = serial();
    let c = Cluster::start_with(3, protocol, &["--auto-compaction-retention", "2s"]);
    let ep = c.members[0].client.clone();
    let term = raft_term(&ep);
    ok(&etcdctl(&ep, &["put", "k", "first"]));
    let first = header_revision(&ep);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        i += 1;
        ok(&etcdctl(&ep, &["put", "k", &format!("v{i}")]));
        let gone = c.members.iter().all(|m| {
            let out = etcdctl(
                &m.client,
                &[
                    "get",
                    "k",
                    "--consistency",
                    "s",
                    "--rev",
                    &first.to_string(),
                ],
            );
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr)
                    .contains("required revision has been compacted")
        });
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "revision {first} was never compacted on every member"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The newest history is kept: the revision before the last put still reads.
    let now = header_revision(&ep);
    let out = ok(&etcdctl(
        &ep,
        &["get", "k", "--rev", &(now - 1).to_string()],
    ));
    assert_eq!(out, format!("k\nv{}\n", i - 1));
    let logs: Vec<String> = c
        .members
        .iter()
        .map(|m| std::fs::read_to_string(m.dir.with_extension("log")).unwrap())
        .collect();
    let compacting = logs
        .iter()
        .filter(|l| l.contains("starting auto compaction"))
        .count();
    assert!(
        logs.iter().any(|l| l.contains("completed auto compaction")),
        "no member logged a compaction: {logs:?}"
    );
    if raft_term(&ep) == term {
        assert_eq!(compacting, 1, "only the one leader compacts: {logs:?}");
    }
}

#[test]
fn raft_periodic_auto_compaction_drops_old_history_on_every_member() {
    periodic_auto_compaction("raft");
}

#[test]
fn zab_periodic_auto_compaction_drops_old_history_on_every_member() {
    periodic_auto_compaction("zab");
}

/// `grpc.health.v1.Health`, which etcd registers for gRPC health probes (Kubernetes' gRPC
/// probes, grpc_health_probe): the overall status ("") is SERVING, other service names are
/// unknown, and once the member's storage fails (fdatasync errors, so it stops taking writes)
/// the status turns NOT_SERVING while the process stays up to say so.
#[test]
fn grpc_health_service_reports_serving_until_storage_fails() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let ep = format!("127.0.0.1:{client}");
    let log = tmp.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .args(["serve", "--data-dir"])
        .arg(tmp.path().join("data"))
        .args(["--listen-client-urls", &format!("http://{ep}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .env("FAILPOINTS", "wal::fdatasync=60*off->return")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert_serves(&ep, &log);
    let rt = test_runtime();
    let check = |service: &str| -> Result<i32, tonic::Code> {
        rt.block_on(async {
            let channel = channel_to(&ep).await;
            let mut c = HealthClient::new(channel);
            c.check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .map_err(|s| s.code())
        })
    };
    assert_eq!(check(""), Ok(ServingStatus::Serving as i32));
    assert_eq!(check("etcdserverpb.KV"), Err(tonic::Code::NotFound));

    // Writes until the failpoint fails an fdatasync and the member stops taking them.
    let refused = (0..200).any(|i| {
        !etcdctl(&ep, &["put", &format!("k{i}"), "v"])
            .status
            .success()
    });
    assert!(refused, "the failpoint never fired");
    let deadline = Instant::now() + Duration::from_secs(10);
    while check("") != Ok(ServingStatus::NotServing as i32) {
        assert!(
            Instant::now() < deadline,
            "still {:?} after the storage failed",
            check("")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(child.try_wait().unwrap().is_none(), "the member exited");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// etcd's `--experimental-initial-corrupt-check`: a member started with it compares its key
/// space's hash with its peers' before serving clients. A healthy member passes and serves; a
/// member whose stored data was altered (one version's value changed on disk while it was
/// down) refuses to start, naming the inconsistency, and starts again without the check.
#[test]
fn initial_corrupt_check_refuses_a_member_whose_data_differs() {
    let _s = serial();
    let mut c = Cluster::start(3, "raft");
    for i in 0..20 {
        ok(&etcdctl(
            &c.endpoints(),
            &["put", &format!("c{i:02}"), &format!("value-{i}")],
        ));
    }
    let l = c.leader();
    let f = (0..3).find(|&i| i != l).unwrap();
    let log = c.members[f].dir.with_extension("log");

    // Healthy: the check passes and the member serves.
    c.extra.push("--experimental-initial-corrupt-check".into());
    c.stop(f);
    c.spawn(f);
    c.wait_healthy();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("initial corruption checking passed"),
        "{text}"
    );

    // One stored version's value altered on disk while the member is down.
    c.stop(f);
    alter_stored_value(&c.members[f].dir, b"value-7");
    c.spawn(f);
    let child = c.members[f].child.as_mut().unwrap();
    assert_eq!(exits(child), Some(false), "the altered member started");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("found data inconsistency with peers")
            && text.contains("found different hash values from remote peer"),
        "{text}"
    );
    c.members[f].child = None;

    // Without the check it starts (etcd's behaviour: the check is what refuses).
    c.extra.pop();
    c.spawn(f);
    c.wait_healthy();
}

/// Changes the last byte of the stored version whose value ends with `suffix`, in the tree of
/// the (stopped) member whose data directory is `dir`: corruption that no checksum catches.
fn alter_stored_value(dir: &Path, suffix: &[u8]) {
    use quorumkv_server::etcd::open_db;
    let db = open_db(&dir.join("member/db")).unwrap();
    let (key, mut value) = {
        let view = db.begin_read();
        let (k, v) = view
            .prefix(b"r")
            .map(|item| item.unwrap())
            .find(|(_, v)| v.ends_with(suffix))
            .expect("a stored version with that value");
        (k.to_vec(), v.to_vec())
    };
    *value.last_mut().unwrap() ^= 1;
    let mut w = db.begin_write().unwrap();
    w.insert(&key, &value).unwrap();
    w.commit().unwrap();
}

/// etcd's `--experimental-corrupt-check-time`: the leader compares the members' key spaces
/// every interval. Under a write load no alarm is raised; once a follower's stored data is
/// altered, the leader raises a CORRUPT alarm naming it, and every member then refuses reads
/// and writes with "etcdserver: corrupt cluster" while still answering maintenance calls.
#[test]
fn periodic_corrupt_check_raises_a_corrupt_alarm() {
    let _s = serial();
    let mut c = Cluster::start_with(3, "raft", &["--experimental-corrupt-check-time", "500ms"]);
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(3) {
        ok(&etcdctl(
            &c.endpoints(),
            &["put", &format!("p{i:03}"), &format!("value-{i}")],
        ));
        i += 1;
    }
    assert_eq!(
        ok(&etcdctl(&c.endpoints(), &["alarm", "list"])).trim(),
        "",
        "an alarm under a healthy write load"
    );
    let l = c.leader();
    let f = (0..3).find(|&i| i != l).unwrap();
    let status: serde_json::Value = serde_json::from_str(&ok(&etcdctl(
        &c.members[f].client,
        &["endpoint", "status", "-w", "json"],
    )))
    .unwrap();
    let id = status[0]["Status"]["header"]["member_id"].as_u64().unwrap();
    c.stop(f);
    alter_stored_value(&c.members[f].dir, b"value-3");
    // Not waited on for health: the alarm may be raised before a health check would pass,
    // and `endpoint health` reads, which a CORRUPT alarm refuses.
    c.spawn(f);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alarms = ok(&etcdctl(&c.endpoints(), &["alarm", "list"]));
        if alarms.contains("alarm:CORRUPT") {
            assert!(alarms.contains(&format!("memberID:{id} ")), "{alarms}");
            break;
        }
        assert!(Instant::now() < deadline, "no CORRUPT alarm: {alarms:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for m in &c.members {
        for args in [&["put", "x", "1"][..], &["get", "p001"][..]] {
            let out = etcdctl(&m.client, args);
            assert!(
                !out.status.success(),
                "{args:?} served on a corrupt cluster"
            );
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("etcdserver: corrupt cluster"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    ok(&etcdctl(&c.endpoints(), &["endpoint", "status"]));
}

/// Every member killed at once (SIGKILL) while clients write through all of them, then all
/// restarted: every acknowledged write is there and the members agree.
fn whole_cluster_killed_at_once(protocol: &'static str) {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(3, protocol);
    let acked_file = tmp.path().join("acked.txt");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/acked_writes.py");
    let writers = Command::new("python3")
        .arg(script)
        .arg(c.endpoints())
        .arg("5")
        .arg(&acked_file)
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..3 {
        c.kill(i);
    }
    let out = writers.wait_with_output().unwrap();
    assert!(out.status.success(), "the writers failed");
    let acked = std::fs::read_to_string(&acked_file).unwrap();
    let acked: Vec<&str> = acked.lines().collect();
    assert!(
        acked.len() > 100,
        "too few writes before the kill: {}",
        acked.len()
    );
    for i in 0..3 {
        c.spawn(i);
    }
    c.wait_healthy();
    let present = ok(&etcdctl(
        &c.endpoints(),
        &["get", "acked/", "--prefix", "--keys-only"],
    ));
    let present: std::collections::HashSet<&str> =
        present.lines().filter(|l| !l.is_empty()).collect();
    let lost: Vec<&&str> = acked.iter().filter(|k| !present.contains(*k)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while hashes(&c).len() != 1 {
        assert!(
            Instant::now() < deadline,
            "members differ: {:?}",
            hashes(&c)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn raft_whole_cluster_killed_at_once_loses_no_acknowledged_write() {
    whole_cluster_killed_at_once("raft");
}

#[test]
fn zab_whole_cluster_killed_at_once_loses_no_acknowledged_write() {
    whole_cluster_killed_at_once("zab");
}
