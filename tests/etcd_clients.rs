//! Real clients against real `quorumkv serve` processes on loopback: etcdctl (Debian's
//! `etcd-client`) and python-etcd3, on one node and on three, Raft and ZAB, including a leader
//! killed with SIGKILL during an etcdctl write loop. `./scripts/test.sh` installs both clients.

mod common;

use common::cluster::*;
use common::free_port;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `tests/clients/<script>` with `args`; it must succeed and print `done`.
fn python_client(script: &str, args: &[&str], done: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let out = Command::new("python3")
        .arg(path)
        .args(args)
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        .output()
        .expect("python3 not found");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(done),
        "{script} failed (./scripts/test.sh installs python-etcd3):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn python_suite(endpoints: &[&str]) {
    python_client("etcd3_suite.py", endpoints, "etcd3 suite OK");
}

/// The Node.js etcd3 client's suite (`tests/clients/etcd3_suite.js`); every member's endpoint.
fn node_suite(endpoints: &[String]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("node")
        .arg(root.join("tests/clients/etcd3_suite.js"))
        .args(endpoints.iter().map(|e| e.trim_start_matches("http://")))
        .env("NODE_PATH", root.join("target/node-clients/node_modules"))
        .output()
        .expect("node not found (./scripts/test.sh installs it)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("etcd3 js suite OK"),
        "etcd3_suite.js failed (./scripts/test.sh installs npm etcd3 under target/node-clients):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn etcdctl_suite(c: &Cluster, ep: &str) {
    // KV
    assert_eq!(ok(&etcdctl(ep, &["put", "a", "1"])).trim(), "OK");
    assert_eq!(ok(&etcdctl(ep, &["get", "a"])), "a\n1\n");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&etcdctl(ep, &["get", "a", "-w", "json"]))).unwrap();
    let rev = json["kvs"][0]["mod_revision"].as_i64().unwrap();
    assert!(rev > 1 && json["header"]["revision"].as_i64().unwrap() >= rev);
    assert!(ok(&etcdctl(ep, &["put", "a", "2", "--prev-kv"])).contains("1"));
    ok(&etcdctl(ep, &["put", "b", "3"]));
    assert_eq!(
        ok(&etcdctl(ep, &["get", "a", "c", "--keys-only"])),
        "a\n\nb\n\n"
    );
    // `--ignore-lease` keeps the lease and takes the new value; `--ignore-value` keeps the
    // value and, without `--lease`, leaves the key without one: what etcd does.
    let newest = |key: &str| -> serde_json::Value {
        let out = ok(&etcdctl(ep, &["get", key, "-w", "json"]));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["kvs"][0].clone()
    };
    let id = lease_with_key(ep, "ilk", 600);
    ok(&etcdctl(ep, &["put", "ilk", "v2", "--ignore-lease"]));
    let kv = newest("ilk");
    assert_eq!(
        (kv["value"].as_str(), kv["version"].as_i64()),
        (Some("djI="), Some(2))
    );
    let lease = u64::from_str_radix(&id, 16).unwrap();
    assert_eq!(kv["lease"].as_u64(), Some(lease), "{kv} {id}");
    let out = ok(&etcdctl(ep, &["put", "ilk", "--ignore-value", "--prev-kv"]));
    assert_eq!(out, "OK\nilk\nv2\n");
    let kv = newest("ilk");
    assert_eq!(
        (kv["value"].as_str(), kv["version"].as_i64()),
        (Some("djI="), Some(3))
    );
    assert!(kv.get("lease").is_none(), "{kv}");
    let ttl = ok(&etcdctl(ep, &["lease", "timetolive", &id, "--keys"]));
    assert!(ttl.contains("attached keys([])"), "{ttl}");
    let err = refused(&etcdctl(ep, &["put", "nokey", "x", "--ignore-lease"]));
    assert!(err.contains("etcdserver: key not found"), "{err}");
    ok(&etcdctl(ep, &["lease", "revoke", &id]));
    assert_eq!(ok(&etcdctl(ep, &["del", "ilk"])).trim(), "1");
    assert_eq!(
        ok(&etcdctl(
            ep,
            &["get", "", "--prefix", "--limit=1", "--order=DESCEND"]
        )),
        "b\n3\n"
    );
    assert_eq!(
        ok(&etcdctl(ep, &["get", "a", "--rev", &rev.to_string()])),
        "a\n1\n"
    );
    assert_eq!(ok(&etcdctl(ep, &["del", "b"])).trim(), "1");
    // Txn from stdin (etcdctl's interactive form).
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([&format!("--endpoints={ep}"), "txn", "-w", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"value(\"a\") = \"2\"\n\nget a\nput t yes\nget t\n\nput t no\n\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let txn: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(txn["succeeded"], true, "{txn}");
    // Each op's header holds the revision it saw, as etcd fills it.
    let after = txn["header"]["revision"].as_i64().unwrap();
    let seen: Vec<i64> = ["ResponseRange", "ResponsePut", "ResponseRange"]
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            txn["responses"][i]["Response"][kind]["header"]["revision"]
                .as_i64()
                .unwrap_or_else(|| panic!("op {i} has no revision: {txn}"))
        })
        .collect();
    assert_eq!(seen, [after - 1, after, after], "{txn}");
    assert_eq!(
        ok(&etcdctl(ep, &["get", "t", "--print-value-only"])),
        "yes\n"
    );
    // Watch from a past revision sees history in order.
    // `watch` never exits by itself: bound it.
    let out = Command::new("timeout")
        .args(["3", "etcdctl", &format!("--endpoints={ep}"), "watch", "a"])
        .args(["--rev", &rev.to_string()])
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "PUT\na\n1\nPUT\na\n2\n"
    );
    // Events with the versions they replace (`--prev-kv`), printed as etcd prints them: live
    // once the watch is up, replayed from history if it starts late (same output either way).
    ok(&etcdctl(ep, &["put", "pk", "v0"]));
    let from = header_revision(ep) + 1;
    let watch = Command::new("timeout")
        .args(["4", "etcdctl", &format!("--endpoints={ep}"), "watch", "pk"])
        .args(["--prev-kv", "--rev", &from.to_string()])
        .env("ETCDCTL_API", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    ok(&etcdctl(ep, &["put", "pk", "v1"]));
    ok(&etcdctl(ep, &["put", "pk", "v2"]));
    ok(&etcdctl(ep, &["del", "pk"]));
    ok(&etcdctl(ep, &["put", "pk", "v3"]));
    let out = watch.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "PUT\npk\nv0\npk\nv1\nPUT\npk\nv1\npk\nv2\nDELETE\npk\nv2\npk\n\nPUT\npk\nv3\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("etcdctl suite: leases");
    let grant = ok(&etcdctl(ep, &["lease", "grant", "30"]));
    let id = grant.split_whitespace().nth(1).unwrap().to_string();
    ok(&etcdctl(ep, &["put", "leased", "x", "--lease", &id]));
    assert!(ok(&etcdctl(ep, &["lease", "keep-alive", "--once", &id])).contains("keepalived"));
    assert!(ok(&etcdctl(ep, &["lease", "timetolive", &id, "--keys"])).contains("leased"));
    assert!(ok(&etcdctl(ep, &["lease", "list"])).contains(&id));
    ok(&etcdctl(ep, &["lease", "revoke", &id]));
    assert_eq!(ok(&etcdctl(ep, &["get", "leased"])), "");
    eprintln!("etcdctl suite: recipes");
    assert_eq!(
        ok(&etcdctl(ep, &["lock", "mutex", "--", "echo", "held"])).trim(),
        "held"
    );
    let mut elect = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([&format!("--endpoints={ep}"), "elect", "election", "p1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // `elect -l` observes until killed: bound it.
        let out = Command::new("timeout")
            .args([
                "2",
                "etcdctl",
                &format!("--endpoints={ep}"),
                "elect",
                "-l",
                "election",
            ])
            .env("ETCDCTL_API", "3")
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("p1") {
            break;
        }
        assert!(Instant::now() < deadline, "elect never won");
        std::thread::sleep(Duration::from_millis(100));
    }
    elect.kill().unwrap();
    let _ = elect.wait();
    eprintln!("etcdctl suite: maintenance");
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap.db");
    ok(&etcdctl(ep, &["snapshot", "save", snap.to_str().unwrap()]));
    assert!(std::fs::metadata(&snap).unwrap().len() > 32);
    let status = ok(&etcdctl(&c.endpoints(), &["endpoint", "status"]));
    assert_eq!(
        status.lines().count(),
        c.members.iter().filter(|m| m.child.is_some()).count()
    );
    ok(&etcdctl(&c.endpoints(), &["endpoint", "health"]));
    // Endpoints written as URLs, and every member found through --cluster: etcdctl then dials
    // each one with the URL as its HTTP/2 authority.
    let urls: Vec<String> = c
        .endpoints()
        .split(',')
        .map(|e| format!("http://{e}"))
        .collect();
    let status = ok(&etcdctl(&urls.join(","), &["endpoint", "status"]));
    assert_eq!(status.lines().count(), urls.len(), "{status}");
    let status = ok(&etcdctl(ep, &["endpoint", "status", "--cluster"]));
    assert_eq!(
        status.lines().count(),
        c.members.iter().filter(|m| m.child.is_some()).count(),
        "{status}"
    );
    ok(&etcdctl(&urls[0], &["endpoint", "hashkv"]));
    let members = ok(&etcdctl(ep, &["member", "list"]));
    assert_eq!(members.lines().count(), c.members.len());
    assert!(members.contains("started"));
    ok(&etcdctl(ep, &["alarm", "list"]));
    ok(&etcdctl(ep, &["defrag"]));
    ok(&etcdctl(ep, &["compact", &rev.to_string()]));
    let old = etcdctl(ep, &["get", "a", "--rev", &(rev - 1).to_string()]);
    assert!(!old.status.success());
    assert!(String::from_utf8_lossy(&old.stderr).contains("required revision has been compacted"));
    // A watch from before the compaction is cancelled with it, even for events still in memory.
    let watch = Command::new("timeout")
        .args([
            "20",
            "etcdctl",
            &format!("--endpoints={ep}"),
            "watch",
            "a",
            "--rev=1",
        ])
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&watch.stderr);
    assert!(
        said.contains(
            "watch was canceled (etcdserver: mvcc: required revision has been compacted)"
        ),
        "watch from a compacted revision: {said}"
    );
    // An oversized request is refused; the server keeps serving.
    // (Over --max-request-bytes, 1.5 MiB, but under etcdctl's own 2 MiB send limit.)
    let big = vec![b'x'; 1_700_000];
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([&format!("--endpoints={ep}"), "put", "big"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&big).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("etcdserver: request is too large"), "{err}");
    assert_eq!(ok(&etcdctl(ep, &["put", "after", "ok"])).trim(), "OK");
    let hashes = ok(&etcdctl(&c.endpoints(), &["endpoint", "hashkv"]));
    let distinct: std::collections::BTreeSet<&str> = hashes
        .lines()
        .map(|l| l.rsplit(", ").next().unwrap())
        .collect();
    assert_eq!(distinct.len(), 1, "replicas disagree: {hashes}");
}

/// Grants a lease of `ttl` seconds with `key` attached; returns its hex id.
fn lease_with_key(ep: &str, key: &str, ttl: u32) -> String {
    let grant = ok(&etcdctl(ep, &["lease", "grant", &ttl.to_string()]));
    let id = grant.split_whitespace().nth(1).unwrap().to_string();
    ok(&etcdctl(ep, &["put", key, "x", "--lease", &id]));
    id
}

/// The store revision a member reports.
fn header_revision(ep: &str) -> i64 {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&etcdctl(ep, &["get", "none", "-w", "json"]))).unwrap();
    v["header"]["revision"].as_i64().unwrap()
}

/// Whether `ep` answers `etcdctl endpoint health` within about 15 s.
/// Asserts that the member at `ep` serves, showing its log (at `log`) when it does not.
fn assert_serves(ep: &str, log: &Path) {
    assert!(
        serves(ep),
        "the member never served: {:?}",
        std::fs::read_to_string(log)
    );
}

fn serves(ep: &str) -> bool {
    (0..150).any(|_| {
        let healthy = etcdctl(ep, &["endpoint", "health"]).status.success();
        if !healthy {
            std::thread::sleep(Duration::from_millis(100));
        }
        healthy
    })
}

/// A single-member etcd or quorumkv serving a restored data directory on fresh loopback
/// ports; killed when dropped.
struct Restored {
    child: Child,
    endpoint: String,
}

impl Restored {
    fn start(program: &str, data: &Path) -> Restored {
        let (client, peer) = (free_port(), free_port());
        let peer_url = format!("http://127.0.0.1:{peer}");
        let client_url = format!("http://127.0.0.1:{client}");
        let mut cmd = if program == "etcd" {
            let mut c = Command::new("etcd");
            c.args([
                "--name",
                "r1",
                "--initial-cluster",
                &format!("r1={peer_url}"),
            ]);
            c.args(["--advertise-client-urls", &client_url]);
            c
        } else {
            let mut c = Command::new(env!("CARGO_BIN_EXE_quorumkv"));
            c.arg("serve");
            c
        };
        let child = cmd
            .arg("--data-dir")
            .arg(data)
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--listen-client-urls", &client_url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd not found: run ./scripts/test.sh, which installs Debian's etcd-server");
        let r = Restored {
            child,
            endpoint: format!("127.0.0.1:{client}"),
        };
        assert!(
            serves(&r.endpoint),
            "{program} did not start on the restored {}",
            data.display()
        );
        r
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a restored member must serve: the keys listed, the newest values, an older revision
/// of `snap/a`, no `snap/gone`, the multi-page value, the revision and the lease.
struct Expected {
    keys: String,
    old_rev: i64,
    rev: i64,
    lease: String,
    big: String,
}

impl Expected {
    fn check(&self, ep: &str) {
        let get = |args: &[&str]| ok(&etcdctl(ep, args));
        assert_eq!(get(&["get", "", "--prefix", "--keys-only"]), self.keys);
        assert_eq!(get(&["get", "snap/a", "--print-value-only"]).trim(), "2");
        let then = self.old_rev.to_string();
        let at_then = get(&["get", "snap/a", "--rev", &then, "--print-value-only"]);
        assert_eq!(at_then.trim(), "1");
        assert_eq!(get(&["get", "snap/gone"]), "");
        assert_eq!(
            get(&["get", "snap/big", "--print-value-only"]).trim(),
            self.big
        );
        assert_eq!(header_revision(ep), self.rev);
        assert!(get(&["lease", "list"]).contains(&self.lease));
        // The key stays attached: a member rebuilds attachments when it loads the data.
        let ttl = get(&["lease", "timetolive", &self.lease, "--keys"]);
        assert!(ttl.contains("snap/leased"), "{ttl}");
    }
}

fn restore_with_quorumkv(file: &Path, data: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .args(["snapshot", "restore"])
        .arg(file)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Backups cross in both directions. `etcdctl snapshot save` from quorumkv is read by
/// `snapshot status`, turned by `etcdctl snapshot restore` into a directory real etcd serves,
/// and by `quorumkv snapshot restore` into one quorumkv serves; a snapshot saved from that
/// etcd restores into quorumkv too. Each keeps current values, an older revision, a deletion,
/// a lease and a multi-page value.
fn snapshots_cross_between_quorumkv_and_etcd(ep: &str) {
    let big = "z".repeat(9000);
    ok(&etcdctl(ep, &["put", "snap/a", "1"]));
    let old_rev = header_revision(ep);
    ok(&etcdctl(ep, &["put", "snap/a", "2"]));
    ok(&etcdctl(ep, &["put", "snap/gone", "x"]));
    ok(&etcdctl(ep, &["del", "snap/gone"]));
    let lease = lease_with_key(ep, "snap/leased", 600);
    ok(&etcdctl(ep, &["put", "snap/big", &big]));
    let mut want = Expected {
        keys: ok(&etcdctl(ep, &["get", "", "--prefix", "--keys-only"])),
        old_rev,
        rev: header_revision(ep),
        lease,
        big,
    };
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("quorumkv.db");
    let file_arg = file.to_str().unwrap();
    ok(&etcdctl(ep, &["snapshot", "save", file_arg]));
    let status: serde_json::Value = serde_json::from_str(&ok(&etcdctl(
        ep,
        &["snapshot", "status", file_arg, "-w", "json"],
    )))
    .unwrap();
    assert_eq!(status["revision"].as_i64(), Some(want.rev), "{status}");
    assert!(status["totalKey"].as_i64().unwrap() > 6, "{status}");

    let q = tmp.path().join("quorumkv-restored");
    restore_with_quorumkv(&file, &q);
    want.check(&Restored::start("quorumkv", &q).endpoint);

    let e = tmp.path().join("etcd-restored");
    let peer = format!("http://127.0.0.1:{}", free_port());
    ok(&etcdctl(
        ep,
        &[
            "snapshot",
            "restore",
            file_arg,
            "--data-dir",
            e.to_str().unwrap(),
            "--name",
            "r1",
            "--initial-cluster",
            &format!("r1={peer}"),
            "--initial-advertise-peer-urls",
            &peer,
        ],
    ));
    let etcd = Restored::start("etcd", &e);
    want.check(&etcd.endpoint);
    assert_eq!(
        ok(&etcdctl(&etcd.endpoint, &["put", "snap/after", "ok"])).trim(),
        "OK"
    );
    want.keys = ok(&etcdctl(
        &etcd.endpoint,
        &["get", "", "--prefix", "--keys-only"],
    ));
    want.rev += 1;
    let from_etcd = tmp.path().join("etcd.db");
    ok(&etcdctl(
        &etcd.endpoint,
        &["snapshot", "save", from_etcd.to_str().unwrap()],
    ));
    drop(etcd);
    let q2 = tmp.path().join("quorumkv-from-etcd");
    restore_with_quorumkv(&from_etcd, &q2);
    want.check(&Restored::start("quorumkv", &q2).endpoint);
}

/// The member's file size, as `endpoint status` reports it.
fn db_size(ep: &str) -> i64 {
    let status: serde_json::Value =
        serde_json::from_str(&ok(&etcdctl(ep, &["endpoint", "status", "-w", "json"]))).unwrap();
    status[0]["Status"]["dbSize"].as_i64().unwrap()
}

/// etcd's way to get space back: compact the history, then defragment; the file shrinks.
fn defragment_gives_space_back(ep: &str) {
    let big = "v".repeat(100_000);
    for i in 0..40 {
        ok(&etcdctl(ep, &["put", &format!("defrag/{}", i % 4), &big]));
    }
    let before = db_size(ep);
    let rev = header_revision(ep);
    ok(&etcdctl(ep, &["compact", &rev.to_string()]));
    ok(&etcdctl(ep, &["defrag"]));
    let after = db_size(ep);
    assert!(
        after * 2 < before,
        "the file went from {before} to {after} bytes"
    );
    let values = ok(&etcdctl(
        ep,
        &["get", "defrag/", "--prefix", "--print-value-only"],
    ));
    assert_eq!(values, format!("{big}\n").repeat(4), "the live values stay");
}

fn one_node(protocol: &'static str) {
    let _serial = serial();
    let c = Cluster::start(1, protocol);
    let ep = c.members[0].client.clone();
    etcdctl_suite(&c, &ep);
    python_suite(&[&ep]);
    node_suite(std::slice::from_ref(&ep));
    if protocol == "raft" {
        // Reads process_resident_memory_bytes from /metrics around 10,000 puts of 1 KiB.
        let out = ok(&etcdctl(&ep, &["check", "datascale", "--load=s"]));
        assert!(
            out.contains("PASS: Approximate system memory used"),
            "{out}"
        );
        snapshots_cross_between_quorumkv_and_etcd(&ep);
    }
    python_client("grpc_metrics.py", &[&ep], "grpc metrics OK");
    // It turns authentication on and off again.
    python_client("gateway.py", &[&ep], "gateway OK");
    // Last: it compacts everything.
    defragment_gives_space_back(&ep);
}

#[test]
fn one_node_raft_serves_etcdctl_and_python_etcd3() {
    one_node("raft");
}

#[test]
fn one_node_zab_serves_etcdctl_and_python_etcd3() {
    one_node("zab");
}

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

/// A single-threaded runtime for a test's own gRPC calls.
fn test_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A gRPC channel to the member serving clients at `ep`.
async fn channel_to(ep: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{ep}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
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

fn hashes(c: &Cluster) -> Vec<String> {
    let out = ok(&etcdctl(&c.endpoints(), &["endpoint", "hashkv"]));
    let mut hs: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(", ").nth(1).map(str::to_string))
        .collect();
    hs.dedup();
    hs
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

/// Runs `quorumkv bench ARGS --json` and parses its last line.
/// What etcdctl printed on a failure it was expected to report.
fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "etcdctl succeeded where it should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// etcd's auth workflow through etcdctl and python-etcd3 against one member (a follower when
/// there are several, so tokens and passwords travel to the leader): enabling, users, roles,
/// key-range permissions, password changes, admin-only calls, the root guards, persistence
/// across a restart, and disabling.
fn auth(protocol: &'static str, n: usize) {
    let _serial = serial();
    let mut c = Cluster::start(n, protocol);
    let at = if n > 1 { (c.leader() + 1) % n } else { 0 };
    let ep = c.members[at].client.clone();
    let run = |user: &str, args: &[&str]| {
        let u = format!("--user={user}");
        let mut all = vec![u.as_str()];
        all.extend_from_slice(args);
        etcdctl(&ep, &all)
    };
    ok(&etcdctl(&ep, &["put", "/app/x", "1"]));
    ok(&etcdctl(&ep, &["user", "add", "root:rootpw"]));
    // etcd refuses while root lacks the root role; etcdctl then adds the role and grants it.
    assert!(ok(&etcdctl(&ep, &["auth", "enable"])).contains("Authentication Enabled"));
    assert!(refused(&etcdctl(&ep, &["get", "/app/x"])).contains("user name is empty"));
    assert!(refused(&run("root:nope", &["get", "/app/x"])).contains("authentication failed"));
    assert_eq!(ok(&run("root:rootpw", &["get", "/app/x"])), "/app/x\n1\n");

    let root = |args: &[&str]| ok(&run("root:rootpw", args));
    root(&["role", "add", "app"]);
    root(&[
        "role",
        "grant-permission",
        "app",
        "readwrite",
        "/app/",
        "--prefix=true",
    ]);
    root(&[
        "role",
        "grant-permission",
        "app",
        "read",
        "/shared/",
        "--prefix=true",
    ]);
    root(&["user", "add", "alice:apw"]);
    root(&["user", "grant-role", "alice", "app"]);
    assert!(root(&["role", "get", "app"]).contains("(prefix /app/)"));
    assert!(root(&["user", "get", "alice"]).contains("Roles: app"));
    assert_eq!(root(&["user", "list"]), "alice\nroot\n");
    assert_eq!(root(&["role", "list"]), "app\nroot\n");

    let alice = |args: &[&str]| run("alice:apw", args);
    assert_eq!(ok(&alice(&["put", "/app/y", "2"])).trim(), "OK");
    assert_eq!(
        ok(&alice(&["get", "/app/", "--prefix", "--keys-only"])),
        "/app/x\n\n/app/y\n\n"
    );
    ok(&alice(&["get", "/shared/a"]));
    assert!(refused(&alice(&["put", "/shared/a", "1"])).contains("permission denied"));
    assert!(refused(&alice(&["get", "", "--prefix"])).contains("permission denied"));
    assert!(refused(&alice(&["del", "/other"])).contains("permission denied"));
    assert!(refused(&alice(&["user", "list"])).contains("permission denied"));
    assert!(refused(&alice(&["snapshot", "save", "/dev/null"])).contains("permission denied"));
    assert!(ok(&alice(&["user", "get", "alice"])).contains("app"));
    let leader = c.members[c.leader()].client.clone();
    python_client(
        "etcd3_auth.py",
        &[&ep, "alice", "apw", &leader],
        "etcd3 auth OK",
    );

    // The administrator cannot lock itself out.
    for args in [
        &["user", "delete", "root"][..],
        &["role", "delete", "root"],
        &["user", "revoke-role", "root", "root"],
    ] {
        assert!(refused(&run("root:rootpw", args)).contains("invalid auth management"));
    }
    assert!(
        refused(&run(
            "root:rootpw",
            &["role", "revoke-permission", "app", "/nope"]
        ))
        .contains("permission is not granted to the role")
    );
    assert!(
        refused(&run(
            "root:rootpw",
            &["user", "grant-role", "alice", "ghost"]
        ))
        .contains("role name not found")
    );

    // Revoking a permission and changing a password take effect at once.
    root(&[
        "role",
        "revoke-permission",
        "app",
        "/shared/",
        "--prefix=true",
    ]);
    assert!(refused(&alice(&["get", "/shared/a"])).contains("permission denied"));
    let mut passwd = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            &format!("--endpoints={ep}"),
            "--user=root:rootpw",
            "user",
            "passwd",
            "alice",
            "--interactive=false",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    passwd.stdin.take().unwrap().write_all(b"apw2\n").unwrap();
    ok(&passwd.wait_with_output().unwrap());
    assert!(refused(&alice(&["get", "/app/x"])).contains("authentication failed"));
    assert_eq!(
        ok(&run("alice:apw2", &["get", "/app/x", "--print-value-only"])),
        "1\n"
    );

    // Users, roles and the enabled flag survive a restart.
    c.kill(at);
    c.spawn(at);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run("alice:apw2", &["get", "/app/x"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "restarted member never served alice"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(refused(&etcdctl(&ep, &["get", "/app/x"])).contains("user name is empty"));
    assert!(refused(&run("alice:apw2", &["put", "/other", "1"])).contains("permission denied"));

    assert!(ok(&run("root:rootpw", &["auth", "disable"])).contains("Authentication Disabled"));
    assert_eq!(
        ok(&etcdctl(&ep, &["get", "/app/y", "--print-value-only"])),
        "2\n"
    );
    assert!(refused(&etcdctl(&ep, &["user", "add", "root:again"])).contains("already exists"));
}

#[test]
fn raft_three_nodes_enforce_etcd_auth_through_a_follower() {
    auth("raft", 3);
}

#[test]
fn zab_one_node_enforces_etcd_auth() {
    auth("zab", 1);
}

fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("bench {args:?}: {e}: {stdout}"))
}

/// The load generator against one member: every request is accounted for, successes and
/// failures apart.
#[test]
fn bench_load_generator_counts_add_up() {
    let _serial = serial();
    let c = Cluster::start(1, "raft");
    let ep = c.members[0].client.as_str();
    let common = ["--endpoints", ep, "--conns", "2", "--clients", "8"];
    let run = |workload: &str, extra: &[&str]| {
        let mut args = vec![workload];
        args.extend_from_slice(&common);
        args.extend_from_slice(extra);
        bench_json(&args)
    };
    let put = run(
        "put",
        &[
            "--total",
            "2000",
            "--key-space-size",
            "500",
            "--sequential-keys",
        ],
    );
    assert_eq!(
        (put["ok"].as_u64(), put["failed"].as_u64()),
        (Some(2000), Some(0))
    );
    assert!(put["throughput_per_s"].as_f64().unwrap() > 0.0);
    assert!(put["latency"]["p99_us"].as_f64().unwrap() > 0.0);
    let keys = ok(&etcdctl(ep, &["get", "00000", "--prefix", "--keys-only"]));
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 500);
    for consistency in ["l", "s"] {
        let r = run(
            "range",
            &[
                "--total",
                "1000",
                "--key-space-size",
                "500",
                "--consistency",
                consistency,
            ],
        );
        assert_eq!(
            (r["ok"].as_u64(), r["failed"].as_u64()),
            (Some(1000), Some(0))
        );
    }
    let t = run(
        "txn",
        &[
            "--total",
            "200",
            "--txn-ops",
            "3",
            "--read-percent",
            "50",
            "--key-space-size",
            "500",
        ],
    );
    assert_eq!(
        (t["ok"].as_u64(), t["failed"].as_u64()),
        (Some(200), Some(0))
    );
    let w = run("watch", &["--total", "100", "--watchers", "3"]);
    assert_eq!(w["ok"].as_u64(), Some(100));
    assert_eq!(w["events_expected"].as_u64(), Some(300));
    assert_eq!(w["events_delivered"].as_u64(), Some(300));
    let timed = run("put", &["--duration", "1s", "--rate", "200"]);
    let n = timed["ok"].as_u64().unwrap();
    assert!((50..=260).contains(&n), "rate-limited run did {n} puts");
    // Requests the server refuses are counted as failures, by code, not dropped.
    let big = run("put", &["--total", "5", "--val-size", "2000000"]);
    assert_eq!(
        (big["ok"].as_u64(), big["failed"].as_u64()),
        (Some(0), Some(5))
    );
    assert_eq!(big["errors"]["InvalidArgument"].as_u64(), Some(5));
}

/// The load generator rides out a member's restart: requests meanwhile fail and are counted,
/// and once the member is back the clients dial it again and their puts land.
#[test]
fn bench_load_generator_reconnects_after_a_restart() {
    let _serial = serial();
    let mut c = Cluster::start(1, "raft");
    let ep = c.members[0].client.clone();
    let bench = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .args(["bench", "put", "--endpoints", &ep, "--conns", "2"])
        .args(["--clients", "4", "--duration", "8s", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let before_kill = header_revision(&ep);
    c.kill(0);
    std::thread::sleep(Duration::from_millis(1000));
    c.spawn(0);
    c.wait_healthy();
    let restarted = header_revision(&ep);
    assert!(restarted >= before_kill, "{restarted} < {before_kill}");
    let out = bench.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let ended = header_revision(&ep);
    assert!(
        ended > restarted + 100,
        "no puts after the restart: revision {restarted} then {ended}: {stdout}"
    );
    let (ok, failed) = (r["ok"].as_u64().unwrap(), r["failed"].as_u64().unwrap());
    // Every acknowledged put is in the member's history (revision 1 is the empty store).
    assert!(
        ok > 0 && (ok as i64) < ended,
        "{ok} acknowledged, revision {ended}"
    );
    assert!(failed > 0, "the restart cost no request: {stdout}");
    assert!(
        r["errors"]["Unavailable"].as_u64().unwrap_or(0) > 0,
        "{stdout}"
    );
}

/// A data directory written by a version that kept member rows after the revision rows (so
/// every put landed in the leaf holding them and split it in the middle) opens with them
/// moved in front: the member keeps its attributes, and puts fill leaves again.
#[test]
fn member_rows_of_the_older_layout_move_in_front_of_the_revisions() {
    use quorumkv_server::etcd::open_db;
    use quorumkv_server::member::roster::{MEMBER_PREFIX, OLD_MEMBER_PREFIX};
    use quorumkv_server::mvcc::Mvcc;
    let _serial = serial();
    let mut c = Cluster::start(1, "raft");
    let ep = c.members[0].client.clone();
    ok(&etcdctl(&ep, &["put", "a", "1"]));
    // A quiet member checkpoints its tree after 100 ms; the rows are in it then.
    std::thread::sleep(Duration::from_millis(500));
    c.stop(0);
    let db = c.members[0].dir.join("member/db");
    let older = Mvcc::open(open_db(&db).unwrap()).unwrap();
    assert_eq!(
        older.move_prefix(MEMBER_PREFIX, OLD_MEMBER_PREFIX).unwrap(),
        1
    );
    drop(older);
    c.spawn(0);
    c.wait_healthy();
    let members = ok(&etcdctl(&ep, &["member", "list"]));
    assert!(
        members.contains("m1") && members.contains(&format!("http://{ep}")),
        "{members}"
    );
    assert!(ok(&etcdctl(&ep, &["get", "a"])).contains('1'));
    // etcdctl check perf's shape: 256-byte keys, 1 KiB values, at random.
    let puts = 1200;
    let bench = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .args([
            "bench",
            "put",
            "--endpoints",
            &ep,
            "--conns",
            "4",
            "--clients",
            "32",
        ])
        .args([
            "--total",
            &puts.to_string(),
            "--key-size",
            "256",
            "--val-size",
            "1024",
        ])
        .args(["--key-space-size", "1000000000", "--json"])
        .output()
        .unwrap();
    assert!(bench.status.success());
    std::thread::sleep(Duration::from_millis(500));
    c.stop(0);
    let m = Mvcc::open(open_db(&db).unwrap()).unwrap();
    let view = m.db().begin_read();
    assert!(view.prefix(b"r").count() as u64 > puts);
    assert!(view.prefix(&[OLD_MEMBER_PREFIX]).next().is_none());
    assert_eq!(view.prefix(&[MEMBER_PREFIX]).count(), 1);
    let s = m.db().stats();
    let in_use_bytes = (s.page_count - s.free_pages - s.pending_pages) * s.page_size as u64;
    // A stored version takes 1,340 bytes with its slot; six fit in an 8 KiB leaf, four when
    // every leaf split in the middle.
    let versions_bytes = puts * 1340;
    assert!(
        in_use_bytes * 4 < versions_bytes * 5,
        "{in_use_bytes} bytes of pages in use for {versions_bytes} bytes of versions"
    );
}

/// Runs `benches/compare.sh ARGS --out OUT` with this build and returns the table it wrote.
/// Starts a one-member `quorumkv serve` on `client`/`peer` with `args`, its stderr to `log`.
fn serve_one(client: u16, peer: u16, args: &[std::ffi::OsString], log: &Path) -> Child {
    serve_one_cmd(client, peer, args, log).spawn().unwrap()
}

/// The command [`serve_one`] runs, for callers that set its environment or wait for it.
fn serve_one_cmd(client: u16, peer: u16, args: &[std::ffi::OsString], log: &Path) -> Command {
    let log = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quorumkv"));
    cmd.arg("serve")
        .args(args)
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .stdout(Stdio::null())
        .stderr(log);
    cmd
}

/// Waits up to 20 s for `child` to exit and returns whether it succeeded.
fn exits(child: &mut Child) -> Option<bool> {
    for _ in 0..200 {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st.success());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// `--wal-dir`: the log and its hard state live in their own directory, writes in it survive
/// a kill, and a member refuses a log directory that is not the one its data was written
/// with.
#[test]
fn a_dedicated_wal_dir_holds_the_log() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (client, peer) = (free_port(), free_port());
    let ep = format!("127.0.0.1:{client}");
    let log = tmp.path().join("serve.log");
    let with = |wal: &Path| -> Vec<std::ffi::OsString> {
        vec![
            "--data-dir".into(),
            data.clone().into(),
            "--wal-dir".into(),
            wal.into(),
        ]
    };
    let wait_up = || assert_serves(&ep, &log);
    let wal = tmp.path().join("wal");
    let mut child = serve_one(client, peer, &with(&wal), &log);
    wait_up();
    for i in 0..20 {
        ok(&etcdctl(
            &ep,
            &["put", &format!("w{i:02}"), &format!("v{i}")],
        ));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let segments = std::fs::read_dir(wal.join("wal")).unwrap().count();
    assert!(segments > 0, "no log segments in --wal-dir");
    assert!(wal.join("identity").exists());
    assert!(
        !data.join("member/wal").exists(),
        "the log went into the data dir"
    );

    let mut child = serve_one(client, peer, &with(&wal), &log);
    wait_up();
    let keys = ok(&etcdctl(&ep, &["get", "w", "--prefix", "--keys-only"]));
    assert_eq!(keys.split_whitespace().count(), 20, "{keys}");
    assert_eq!(
        ok(&etcdctl(&ep, &["get", "w19", "--print-value-only"])).trim(),
        "v19"
    );
    // SIGTERM: a clean stop, with the tree's applied index made durable.
    sigterm(&child);
    assert_eq!(exits(&mut child), Some(true));

    // An empty log directory under a tree that applied entries: refused.
    let mut child = serve_one(client, peer, &with(&tmp.path().join("empty")), &log);
    assert_eq!(
        exits(&mut child),
        Some(false),
        "an empty --wal-dir was taken"
    );
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.contains("applied index"), "{err}");

    // Another member's log directory: refused before anything is opened.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("identity"),
        "cluster=0000000000000001 member=0000000000000002\n",
    )
    .unwrap();
    let mut child = serve_one(client, peer, &with(&other), &log);
    assert_eq!(
        exits(&mut child),
        Some(false),
        "a foreign --wal-dir was taken"
    );
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(
        err.contains("--wal-dir") && err.contains("another cluster"),
        "{err}"
    );
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

fn compare_script(args: &[&str], out: &Path) -> String {
    bench_script("compare.sh", args, out)
}

/// Runs `benches/<script>` with `args`, writing to `out`, on this build; returns `out`.
fn bench_script(script: &str, args: &[&str], out: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches")
        .join(script);
    let run = Command::new("bash")
        .arg(path)
        .args(args)
        .args(["--out", out.to_str().unwrap()])
        .env("QUORUMKV_BIN", env!("CARGO_BIN_EXE_quorumkv"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{script} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read_to_string(out).unwrap()
}

/// `benches/compare.sh --quick`: etcd and quorumkv (Raft, ZAB) side by side with the same
/// workloads, a markdown table and charts out, every request answered.
#[test]
fn benchmark_comparison_quick_mode_runs() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let table = compare_script(&["--quick"], &dir.path().join("quick.md"));
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| put") || l.starts_with("| range"))
        .collect();
    assert_eq!(rows.len(), 4, "{table}");
    for r in rows {
        assert!(!r.contains("failed") && !r.contains("| - |"), "{r}");
        assert!(r.contains('×'), "no ratio to etcd: {r}");
    }
    for chart in ["throughput_vs_clients.png", "latency_percentiles.png"] {
        let png = std::fs::read(dir.path().join("quick-plots").join(chart)).unwrap();
        assert_eq!(&png[..4], b"\x89PNG", "{chart}");
        assert!(
            table.contains(&format!("quick-plots/{chart}")),
            "{chart} not linked: {table}"
        );
    }
    let results = std::fs::read_to_string(dir.path().join("quick-plots/results.jsonl")).unwrap();
    assert_eq!(
        results.lines().count(),
        3 * 5,
        "three systems, five workloads"
    );
}

/// `benches/compare.sh --knobs --quick`: WAL flags swept on Raft and ZAB, a row per setting
/// with its ratio to the defaults and the puts each of the leader's fdatasyncs carried.
/// `benches/scale.sh` in a quick mode, one size, quorumkv and etcd: a row each, with every
/// figure measured (nothing failed, the database file found, a restart timed).
#[test]
fn scale_script_quick_mode_runs() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let table = bench_script(
        "scale.sh",
        &["--quick", "--sizes", "3000", "--systems", "raft1 etcd1"],
        &dir.path().join("scale.md"),
    );
    let raw = std::fs::read_to_string(dir.path().join("scale.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{raw}");
    for r in &rows {
        assert_eq!(r["keys"], 3000, "{r}");
        assert_eq!(r["put_failed"], 0, "{r}");
        for figure in [
            "put_per_s",
            "db_bytes",
            "rss_bytes",
            "restart_s",
            "pause_ms",
        ] {
            assert!(r[figure].as_f64().unwrap() > 0.0, "{figure}: {r}");
        }
    }
    assert!(
        table.contains("| raft1 | 3,000 |") && table.contains("| etcd1 | 3,000 |"),
        "{table}"
    );
}

#[test]
fn knob_sweep_quick_mode_runs() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let table = compare_script(&["--knobs", "--quick"], &dir.path().join("knobs.md"));
    let mut heading = "";
    let mut rows = 0;
    for line in table.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            heading = h;
            continue;
        }
        if !(line.starts_with("| defaults") || line.starts_with("| commit delay")) {
            continue;
        }
        rows += 1;
        let cells: Vec<&str> = line
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells.len(),
            7,
            "a setting and three cells per system: {line}"
        );
        assert!(!line.contains("failed"), "{line}");
        if line.starts_with("| commit delay") {
            assert!(line.contains("`--wal-commit-delay-us 200`"), "{line}");
            assert!(line.contains('×'), "no ratio to the defaults: {line}");
        }
        for per_sync in [cells[3], cells[6]] {
            let v: f64 = per_sync.parse().unwrap();
            if heading.starts_with("put 1 client") {
                // One client waits for each put: one fdatasync apiece.
                assert!((0.5..=1.5).contains(&v), "{heading}: {line}");
            } else {
                assert!(v > 1.0, "100 clients share fdatasyncs: {heading}: {line}");
            }
        }
    }
    assert_eq!(rows, 4, "two settings in each of two tables: {table}");
}

#[test]
fn startup_errors_are_clear() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap();
    let used = port.local_addr().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_quorumkv"))
            .arg("serve")
            .args(["--data-dir", tmp.path().join("d").to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--listen-client-urls", &format!("http://{used}")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen for clients"));
    let out = run(&["--no-such-flag"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    let out = run(&["--auth-token", "jwt,pub-key=x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only \"simple\" tokens"));
    let out = run(&["--auto-compaction-retention", "1d"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown unit \"d\""));
    let out = run(&[
        "--auto-compaction-mode",
        "revision",
        "--auto-compaction-retention",
        "10m",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be a revision count"));
    let p = free_port();
    let out = run(&[
        "--initial-cluster",
        &format!("default=http://127.0.0.1:{p}"),
        "--initial-advertise-peer-urls",
        &format!("http://127.0.0.1:{p}"),
        "--listen-peer-urls",
        &format!("http://127.0.0.1:{p}"),
        "--listen-client-urls",
        &format!("http://127.0.0.1:{}", free_port()),
        "--initial-cluster-token",
        "one",
        "--election-timeout",
        "10",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--election-timeout"));
    // A data dir made for one cluster is refused by another.
    std::fs::create_dir_all(tmp.path().join("d")).unwrap();
    std::fs::write(
        tmp.path().join("d/identity"),
        "cluster=0000000000000001 member=0000000000000002\n",
    )
    .unwrap();
    let out = run(&[
        "--listen-client-urls",
        &format!("http://127.0.0.1:{}", free_port()),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to another cluster"));
}

/// The member serves clients on `TOKIO_WORKER_THREADS` threads when that is set (as etcd
/// takes `GOMAXPROCS`), and refuses to start on a value that is not a positive number.
#[test]
fn tokio_worker_threads_sets_the_client_serving_threads() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("serve.log");
    let (client, peer) = (free_port(), free_port());
    let ep = format!("127.0.0.1:{client}");
    let args: Vec<std::ffi::OsString> = vec!["--data-dir".into(), tmp.path().join("d").into()];
    let serve = |workers: &str| {
        let mut cmd = serve_one_cmd(client, peer, &args, &log_path);
        cmd.env("TOKIO_WORKER_THREADS", workers);
        cmd
    };
    let out = serve("none").output().unwrap();
    assert!(!out.status.success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("TOKIO_WORKER_THREADS must be a positive number"),
        "{text}"
    );
    let mut child = serve("3").spawn().unwrap();
    assert_serves(&ep, &log_path);
    let workers = std::fs::read_dir(format!("/proc/{}/task", child.id()))
        .unwrap()
        .filter(|t| {
            let comm = std::fs::read_to_string(t.as_ref().unwrap().path().join("comm"));
            comm.is_ok_and(|c| c.starts_with("node-"))
        })
        .count();
    assert_eq!(workers, 3, "threads named node-*");
    sigterm(&child);
    assert_eq!(exits(&mut child), Some(true));
}

/// `serve` takes etcd's `ETCD_<FLAG>` environment variables and etcd's YAML `--config-file`,
/// as deployments written for etcd configure it: a member set up either way serves under the
/// name and URLs it was given, a flag given both on the command line and in the environment
/// is refused, and a config file overrides both.
#[test]
fn serve_takes_etcd_environment_variables_and_config_files() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let ep = format!("127.0.0.1:{client}");
    let log_path = tmp.path().join("serve.log");
    let spawn = |args: &[&str], env: &[(&str, String)]| -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quorumkv"));
        cmd.arg("serve").args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap()
    };
    let log = || std::fs::read_to_string(&log_path).unwrap();
    let member_name = || {
        let v: serde_json::Value =
            serde_json::from_str(&ok(&etcdctl(&ep, &["member", "list", "-w", "json"]))).unwrap();
        v["members"][0]["name"].as_str().unwrap().to_string()
    };
    let peer_url = format!("http://127.0.0.1:{peer}");

    // Environment variables only.
    let env = [
        ("ETCD_NAME", "from-env".to_string()),
        (
            "ETCD_DATA_DIR",
            tmp.path().join("env").display().to_string(),
        ),
        ("ETCD_LISTEN_CLIENT_URLS", format!("http://{ep}")),
        ("ETCD_LISTEN_PEER_URLS", peer_url.clone()),
        ("ETCD_INITIAL_CLUSTER", format!("from-env={peer_url}")),
        ("ETCD_REPLICATION", "zab".to_string()),
        ("ETCD_NOT_A_FLAG", "1".to_string()),
    ];
    let mut child = spawn(&[], &env);
    assert_serves(&ep, &log_path);
    assert_eq!(member_name(), "from-env");
    ok(&etcdctl(&ep, &["put", "k", "v"]));
    assert_eq!(
        ok(&etcdctl(&ep, &["get", "k", "--print-value-only"])).trim(),
        "v"
    );
    sigterm(&child);
    assert_eq!(exits(&mut child), Some(true));
    let text = log();
    assert!(
        text.contains("recognized and used environment variable ETCD_NAME=from-env"),
        "{text}"
    );
    assert!(
        text.contains("Zab"),
        "ETCD_REPLICATION was not used: {text}"
    );
    assert!(
        text.contains("unrecognized environment variable ETCD_NOT_A_FLAG=1"),
        "{text}"
    );

    // The same flag both ways: refused before anything starts, as etcd refuses it.
    let mut child = spawn(&["--name", "from-flag"], &env);
    assert_eq!(exits(&mut child), Some(false));
    assert!(
        log().contains("conflicting environment variable \"ETCD_NAME\""),
        "{}",
        log()
    );
    // A bad value names its variable.
    let mut child = spawn(&[], &[("ETCD_HEARTBEAT_INTERVAL", "soon".to_string())]);
    assert_eq!(exits(&mut child), Some(false));
    assert!(
        log().contains("invalid value \"soon\" for ETCD_HEARTBEAT_INTERVAL"),
        "{}",
        log()
    );

    // A config file is the whole configuration: flags and variables are ignored.
    let config = tmp.path().join("etcd.yml");
    std::fs::write(
        &config,
        format!(
            "name: 'from-file'\n\
             data-dir: {}\n\
             listen-client-urls: http://{ep}\n\
             listen-peer-urls: {peer_url}\n\
             initial-cluster: from-file={peer_url}\n\
             heartbeat-interval: 100\n\
             election-timeout: 1000\n\
             wal-dir:\n\
             logger: zap\n\
             enable-v2: true\n\
             proxy: 'off'\n",
            tmp.path().join("file").display()
        ),
    )
    .unwrap();
    let mut child = spawn(
        &[
            "--config-file",
            config.to_str().unwrap(),
            "--name",
            "ignored",
        ],
        &[("ETCD_DATA_DIR", "/nonexistent/ignored".to_string())],
    );
    assert_serves(&ep, &log_path);
    assert_eq!(member_name(), "from-file");
    sigterm(&child);
    assert_eq!(exits(&mut child), Some(true));
    let text = log();
    assert!(text.contains("loading server configuration from"), "{text}");
    assert!(
        text.contains("config file setting \"proxy\" is not used"),
        "{text}"
    );
    assert!(tmp.path().join("file").exists());
}

/// etcd's `--experimental-watch-progress-notify-interval`: watchers that asked for progress
/// notifications (python-etcd3's `progress_notify=True`) get one per interval while idle,
/// carrying the current revision; others get none.
#[test]
fn idle_watchers_get_progress_notifications_at_the_configured_interval() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let ep = format!("127.0.0.1:{client}");
    let log = tmp.path().join("serve.log");
    let args: Vec<std::ffi::OsString> = vec![
        "--data-dir".into(),
        tmp.path().join("data").into(),
        "--experimental-watch-progress-notify-interval".into(),
        "500ms".into(),
    ];
    let mut child = serve_one(client, peer, &args, &log);
    assert_serves(&ep, &log);
    python_client("progress_notify.py", &[&ep], "progress notify OK");
    sigterm(&child);
    assert_eq!(exits(&mut child), Some(true));
}

/// etcd's deployment flags: a member started as orchestrators start etcd (`--logger=zap`,
/// `--log-outputs` to a file, `--metrics=extensive`, gRPC keepalive and stream limits) serves,
/// logs where it was told, and pings an idle connection at `--grpc-keepalive-interval` and
/// closes it when `--grpc-keepalive-timeout` passes without an answer. TLS, which is not
/// served, is refused at start with the flag named.
#[test]
fn etcd_deployment_flags_are_honoured_or_refused_by_name() {
    use std::io::Read;
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let ep = format!("127.0.0.1:{client}");
    let stderr = tmp.path().join("stderr.log");
    let log_file = tmp.path().join("etcd.log");
    let args: Vec<std::ffi::OsString> = vec![
        "--data-dir".into(),
        tmp.path().join("data").into(),
        "--logger=zap".into(),
        format!("--log-outputs={}", log_file.display()).into(),
        "--metrics=extensive".into(),
        "--grpc-keepalive-interval=1s".into(),
        "--grpc-keepalive-timeout=1s".into(),
        "--max-concurrent-streams=100".into(),
        "--enable-v2=false".into(),
    ];
    let mut child = serve_one(client, peer, &args, &stderr);
    assert_serves(&ep, &stderr);
    ok(&etcdctl(&ep, &["put", "k", "v"]));
    let logged = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        logged.contains("quorumkv") && !logged.contains("\u{1b}["),
        "the log file holds no plain log lines: {logged:?}"
    );

    // An HTTP/2 connection that never answers pings: pinged after 1 s, closed 1 s later.
    let mut conn = std::net::TcpStream::connect(&ep).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the unanswering connection was not closed: {e}"),
        }
    }
    let closed_after = started.elapsed();
    let mut pinged = false;
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        pinged |= bytes[at + 3] == 0x6 && bytes[at + 4] & 0x1 == 0;
        at += 9 + len;
    }
    assert!(pinged, "no PING before the close: {bytes:?}");
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(8),
        "closed after {closed_after:?}"
    );
    ok(&etcdctl(&ep, &["get", "k"]));
    sigterm(&child);
    assert_eq!(exits(&mut child), Some(true));

    // Refused at start, naming the flag.
    for (flag, says) in [
        (
            "--cert-file=/etc/etcd/server.crt",
            "--cert-file and --key-file go together",
        ),
        (
            "--peer-client-cert-auth",
            "--peer-client-cert-auth and --peer-trusted-ca-file need --peer-cert-file",
        ),
        (
            "--peer-cert-file=/etc/etcd/peer.crt",
            "--peer-cert-file and --peer-key-file go together",
        ),
        ("--log-outputs=stderr,stdout", "one output is supported"),
    ] {
        let mut args: Vec<_> = args
            .iter()
            .filter(|a| a.to_string_lossy().split('=').next() != flag.split('=').next())
            .cloned()
            .collect();
        args.push(flag.into());
        let mut child = serve_one(client, peer, &args, &stderr);
        assert_eq!(exits(&mut child), Some(false), "{flag} was taken");
        let err = std::fs::read_to_string(&stderr).unwrap();
        assert!(err.contains(says), "{flag}: {err}");
    }
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

/// etcd's `--quota-backend-bytes`: once the key space outgrows the quota, writes are refused
/// with "database space exceeded" and a NOSPACE alarm is raised, while reads go on. Deleting,
/// compacting and defragmenting gives the space back; `etcdctl alarm disarm` then prints the
/// alarm it disarmed, as against etcd, and writes are taken again.
#[test]
fn the_backend_quota_raises_nospace_until_space_is_freed_and_disarmed() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let ep = format!("127.0.0.1:{client}");
    let log = tmp.path().join("serve.log");
    let args: Vec<std::ffi::OsString> = vec![
        "--data-dir".into(),
        tmp.path().join("data").into(),
        "--quota-backend-bytes".into(),
        "6000000".into(),
    ];
    let mut child = serve_one(client, peer, &args, &log);
    assert_serves(&ep, &log);
    let value = tmp.path().join("value");
    std::fs::write(&value, vec![b'x'; 500_000]).unwrap();
    // etcdctl reads a put's value from stdin when the command line gives none.
    let put_big = |key: &str| {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([&format!("--endpoints={ep}"), "put", key])
            .stdin(std::fs::File::open(&value).unwrap())
            .output()
            .unwrap()
    };
    let refused = (0..40).find_map(|i| {
        let out = put_big(&format!("big{i:02}"));
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
    });
    let refused = refused.expect("40 puts of 500 KB fit a 6 MB quota");
    assert!(
        refused.contains("etcdserver: mvcc: database space exceeded"),
        "{refused}"
    );
    let alarms = ok(&etcdctl(&ep, &["alarm", "list"]));
    assert!(alarms.contains("alarm:NOSPACE"), "{alarms}");
    assert_eq!(
        ok(&etcdctl(&ep, &["get", "big00", "--print-value-only"]))
            .trim()
            .len(),
        500_000
    );
    ok(&etcdctl(&ep, &["del", "big", "--prefix"]));
    let rev = header_revision(&ep);
    ok(&etcdctl(&ep, &["compaction", &rev.to_string()]));
    ok(&etcdctl(&ep, &["defrag"]));
    let disarmed = ok(&etcdctl(&ep, &["alarm", "disarm"]));
    assert_eq!(
        disarmed.trim(),
        alarms.trim(),
        "disarm prints what it disarmed"
    );
    ok(&etcdctl(&ep, &["put", "after", "1"]));
    assert_eq!(ok(&etcdctl(&ep, &["alarm", "list"])).trim(), "");
    sigterm(&child);
    assert_eq!(exits(&mut child), Some(true));
}

/// Requests at the edges of etcd's rules get etcd 3.4's answers (each compared against a real
/// etcd 3.4 member): watch creation (an empty key is the key "\0"; an empty range, a
/// duplicate id or a refusal by authentication cancel the watch with id -1 and etcd's
/// reason), transaction checks through nested transactions, compares with unusual operands,
/// an alarm raised for any member id, and member URLs refused with etcd's words.
#[test]
fn requests_at_the_edges_get_etcds_answers() {
    use quorumkv_server::pb::etcdserverpb::{
        self as pb, auth_client::AuthClient, cluster_client::ClusterClient, compare,
        kv_client::KvClient, maintenance_client::MaintenanceClient, request_op,
        watch_client::WatchClient, watch_request::RequestUnion,
    };
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let ep = format!("127.0.0.1:{client}");
    let log = tmp.path().join("serve.log");
    let args: Vec<std::ffi::OsString> = vec!["--data-dir".into(), tmp.path().join("data").into()];
    let mut child = serve_one(client, peer, &args, &log);
    assert_serves(&ep, &log);
    let rt = test_runtime();
    rt.block_on(async {
        let channel = channel_to(&ep).await;
        let mut kv = KvClient::new(channel.clone());
        let put = |k: &[u8]| pb::RequestOp {
            request: Some(request_op::Request::RequestPut(pb::PutRequest {
                key: k.to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        };
        for v in [&b"v1"[..], b"v2"] {
            kv.put(pb::PutRequest {
                key: b"k".to_vec(),
                value: v.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        }

        // Each watch request on a stream of its own; the first `n` answers.
        let watch = |token: Option<String>, reqs: Vec<pb::WatchCreateRequest>, n: usize| {
            let channel = channel.clone();
            async move {
                let mut w = WatchClient::new(channel);
                let reqs: Vec<pb::WatchRequest> = reqs
                    .into_iter()
                    .map(|c| pb::WatchRequest {
                        request_union: Some(RequestUnion::CreateRequest(c)),
                    })
                    .collect();
                let mut req =
                    tonic::Request::new(tokio_stream::iter(reqs).chain(tokio_stream::pending()));
                if let Some(t) = token {
                    req.metadata_mut().insert("token", t.parse().unwrap());
                }
                let mut answers = w.watch(req).await.unwrap().into_inner();
                let mut out = Vec::new();
                while out.len() < n {
                    let r = tokio::time::timeout(Duration::from_secs(10), answers.message())
                        .await
                        .expect("a watch answer")
                        .unwrap()
                        .expect("the stream open");
                    out.push((r.watch_id, r.canceled, r.cancel_reason, r.events.len()));
                }
                out
            }
        };
        use tokio_stream::StreamExt;
        let create = |key: &[u8], end: &[u8], id: i64| pb::WatchCreateRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            watch_id: id,
            start_revision: 1,
            ..Default::default()
        };
        // An empty key with "\0" as its end watches every key.
        let all = watch(None, vec![create(b"", b"\0", 0)], 2).await;
        assert_eq!(all[0], (0, false, String::new(), 0));
        assert_eq!(all[1].3, 2, "{all:?}");
        let empty = watch(None, vec![create(b"z", b"a", 0)], 1).await;
        assert_eq!(
            empty[0],
            (-1, true, "mvcc: watcher range is empty".into(), 0)
        );
        // Ids: an explicit one leaves the automatic ones where they were; a duplicate is
        // refused.
        let ids = watch(
            None,
            vec![
                create(b"k", b"", 1),
                create(b"k", b"", 1),
                create(b"k", b"", 0),
            ],
            5,
        )
        .await;
        let created: Vec<(i64, bool)> = ids
            .iter()
            .filter(|a| a.3 == 0)
            .map(|a| (a.0, a.1))
            .collect();
        assert_eq!(created, vec![(1, false), (-1, true), (0, false)], "{ids:?}");

        // Transactions are checked through their nested transactions, as etcd checks them.
        let nested = |ops: Vec<pb::RequestOp>| pb::RequestOp {
            request: Some(request_op::Request::RequestTxn(pb::TxnRequest {
                success: ops,
                ..Default::default()
            })),
        };
        let txn = |success: Vec<pb::RequestOp>| pb::TxnRequest {
            success,
            ..Default::default()
        };
        let invalid = |r: Result<tonic::Response<pb::TxnResponse>, tonic::Status>, why: &str| {
            let e = r.unwrap_err();
            assert_eq!((e.code(), e.message()), (tonic::Code::InvalidArgument, why));
        };
        let dup = kv.txn(txn(vec![put(b"a"), nested(vec![put(b"a")])])).await;
        invalid(dup, "etcdserver: duplicate key given in txn request");
        let empty = kv.txn(txn(vec![pb::RequestOp { request: None }])).await;
        invalid(empty, "etcdserver: key not found");
        // A compare's operand of another kind counts as zero; an unknown target as equal.
        let compare = |target: i32, union: compare::TargetUnion| pb::Compare {
            key: b"k".to_vec(),
            target,
            result: compare::CompareResult::Greater as i32,
            target_union: Some(union),
            ..Default::default()
        };
        let mismatched = compare(
            compare::CompareTarget::Version as i32,
            compare::TargetUnion::Value(b"x".to_vec()),
        );
        let unknown = pb::Compare {
            result: compare::CompareResult::Equal as i32,
            ..compare(9, compare::TargetUnion::Version(100))
        };
        for c in [mismatched, unknown] {
            let r = kv
                .txn(pb::TxnRequest {
                    compare: vec![c.clone()],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(r.succeeded, "{c:?}");
        }

        // An alarm raised for member 0 stops writes until it is cleared.
        let mut m = MaintenanceClient::new(channel.clone());
        let alarm = |action: pb::alarm_request::AlarmAction| pb::AlarmRequest {
            action: action as i32,
            member_id: 0,
            alarm: pb::AlarmType::Nospace as i32,
        };
        let raised = m
            .alarm(alarm(pb::alarm_request::AlarmAction::Activate))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(raised.alarms.len(), 1, "{raised:?}");
        let e = kv
            .put(pb::PutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.message(), "etcdserver: mvcc: database space exceeded");
        m.alarm(alarm(pb::alarm_request::AlarmAction::Deactivate))
            .await
            .unwrap();
        kv.put(pb::PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();

        let mut c = ClusterClient::new(channel.clone());
        for urls in [vec![], vec!["notaurl".to_string()]] {
            let e = c
                .member_add(pb::MemberAddRequest {
                    peer_ur_ls: urls,
                    ..Default::default()
                })
                .await
                .unwrap_err();
            let why = "etcdserver: given member URLs are invalid";
            assert_eq!((e.code(), e.message()), (tonic::Code::InvalidArgument, why));
        }

        // With authentication on, a refused watch says why in the words of the gRPC error.
        let mut a = AuthClient::new(channel.clone());
        for (name, role) in [("root", Some("root")), ("u", None)] {
            a.user_add(pb::AuthUserAddRequest {
                name: name.into(),
                password: "pw".into(),
                ..Default::default()
            })
            .await
            .unwrap();
            if let Some(role) = role {
                a.user_grant_role(pb::AuthUserGrantRoleRequest {
                    user: name.into(),
                    role: role.into(),
                })
                .await
                .unwrap();
            }
        }
        a.auth_enable(pb::AuthEnableRequest {}).await.unwrap();
        let token = |name: &str| {
            let mut a = a.clone();
            let name = name.to_string();
            async move {
                a.authenticate(pb::AuthenticateRequest {
                    name,
                    password: "pw".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .token
            }
        };
        let (user, root) = (token("u").await, token("root").await);
        for (t, reason) in [
            (
                None,
                "rpc error: code = InvalidArgument desc = etcdserver: user name is empty",
            ),
            (
                Some("garbage".to_string()),
                "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token",
            ),
            (
                Some(user),
                "rpc error: code = PermissionDenied desc = etcdserver: permission denied",
            ),
        ] {
            let answer = watch(t, vec![create(b"k", b"", 0)], 1).await;
            assert_eq!(answer[0], (-1, true, reason.to_string(), 0));
        }
        // A range with no key is refused for that before the caller is checked.
        let e = kv.range(pb::RangeRequest::default()).await.unwrap_err();
        assert_eq!(e.message(), "etcdserver: key is not provided");
        let mut off = tonic::Request::new(pb::AuthDisableRequest {});
        off.metadata_mut().insert("token", root.parse().unwrap());
        a.auth_disable(off).await.unwrap();
    });
    sigterm(&child);
    assert_eq!(exits(&mut child), Some(true));
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
