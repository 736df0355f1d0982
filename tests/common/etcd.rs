//! Helpers the etcd client tests share: the client suites (etcdctl, python-etcd3, the
//! Node.js etcd3 client), probes of a member's state, and a one-member `serve` of its own.

use super::cluster::*;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `tests/clients/<script>` with `args`; it must succeed and print `done`.
pub fn python_client(script: &str, args: &[&str], done: &str) {
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

pub fn python_suite(endpoints: &[&str]) {
    python_client("etcd3_suite.py", endpoints, "etcd3 suite OK");
}

/// The Node.js etcd3 client's suite (`tests/clients/etcd3_suite.js`); every member's endpoint.
pub fn node_suite(endpoints: &[String]) {
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

pub fn etcdctl_suite(c: &Cluster, ep: &str) {
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
pub fn lease_with_key(ep: &str, key: &str, ttl: u32) -> String {
    let grant = ok(&etcdctl(ep, &["lease", "grant", &ttl.to_string()]));
    let id = grant.split_whitespace().nth(1).unwrap().to_string();
    ok(&etcdctl(ep, &["put", key, "x", "--lease", &id]));
    id
}

/// The store revision a member reports.
pub fn header_revision(ep: &str) -> i64 {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&etcdctl(ep, &["get", "none", "-w", "json"]))).unwrap();
    v["header"]["revision"].as_i64().unwrap()
}

/// Whether `ep` answers `etcdctl endpoint health` within about 15 s.
/// Asserts that the member at `ep` serves, showing its log (at `log`) when it does not.
pub fn assert_serves(ep: &str, log: &Path) {
    assert!(
        serves(ep),
        "the member never served: {:?}",
        std::fs::read_to_string(log)
    );
}

pub fn serves(ep: &str) -> bool {
    (0..150).any(|_| {
        let healthy = etcdctl(ep, &["endpoint", "health"]).status.success();
        if !healthy {
            std::thread::sleep(Duration::from_millis(100));
        }
        healthy
    })
}

/// A single-threaded runtime for a test's own gRPC calls.
pub fn test_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A gRPC channel to the member serving clients at `ep`.
pub async fn channel_to(ep: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{ep}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub fn hashes(c: &Cluster) -> Vec<String> {
    let out = ok(&etcdctl(&c.endpoints(), &["endpoint", "hashkv"]));
    let mut hs: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(", ").nth(1).map(str::to_string))
        .collect();
    hs.dedup();
    hs
}

/// What etcdctl printed on a failure it was expected to report.
pub fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "etcdctl succeeded where it should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts a one-member `quorumkv serve` on `client`/`peer` with `args`, its stderr to `log`.
pub fn serve_one(client: u16, peer: u16, args: &[std::ffi::OsString], log: &Path) -> Child {
    serve_one_cmd(client, peer, args, log).spawn().unwrap()
}

/// The command [`serve_one`] runs, for callers that set its environment or wait for it.
pub fn serve_one_cmd(client: u16, peer: u16, args: &[std::ffi::OsString], log: &Path) -> Command {
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
pub fn exits(child: &mut Child) -> Option<bool> {
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
