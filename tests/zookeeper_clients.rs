//! ZooKeeper's clients against one member's ZooKeeper port, unchanged: kazoo's operations,
//! transactions, ACLs and recipes; ZooKeeper's own Java client and zkCli.sh for what kazoo
//! does not send; the four-letter words; the default port; znodes through an etcd snapshot's
//! save and restore; and `bench` speaking the protocol. Clusters are in `zookeeper_cluster.rs`,
//! the protocol by hand and against real ZooKeeper in `zookeeper_protocol.rs`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::zk_member::*;
use common::zk_raw::Raw;
use common::{OneMember, four_letter, free_port};
use quorumkv_server::zk::jute::Jute;
use quorumkv_server::zk::records::*;

#[test]
fn kazoo_works_against_the_zookeeper_port() {
    let dir = tempfile::tempdir().unwrap();
    let (node, zk) = start(dir.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/zk_kazoo.py");
    let out = python(&[script, &zk]);
    assert_eq!(out.lines().last(), Some("ok"), "{out}");
    // The four-letter words, with a client connected and watching.
    let mut c = Raw::connect(&zk);
    let exists = ExistsRequest {
        path: "/nobody".into(),
        watch: true,
    };
    assert_eq!(c.call(3, &exists.to_bytes()).0, -101);
    let word = |w: &[u8; 4]| four_letter(&zk, w).unwrap_or_default();
    assert!(word(b"srvr").contains("Mode: leader"), "{}", word(b"srvr"));
    assert!(word(b"stat").contains("Clients:\n /127.0.0.1:"));
    assert!(word(b"conf").contains("tickTime=500\nmaxClientCnxns=60\nminSessionTimeout=1000"));
    let mntr = word(b"mntr");
    for key in [
        "zk_version\t",
        "zk_server_state\tleader",
        "zk_znode_count\t",
        "zk_watch_count\t1",
    ] {
        assert!(mntr.contains(key), "{key} in {mntr}");
    }
    assert_eq!(
        word(b"wchs"),
        "1 connections watching 1 paths\nTotal watches:1\n"
    );
    assert!(
        word(b"cons").contains("recved=1,sent=1,sid=0x"),
        "{}",
        word(b"cons")
    );
    assert_eq!(word(b"envi").lines().next(), Some("Environment:"));
    assert_eq!(word(b"isro"), "rw");
    // Unless allowed, only srvr is answered, as ZooKeeper 3.5.3+ answers by default.
    let dir2 = tempfile::tempdir().unwrap();
    let zk2 = format!("127.0.0.1:{}", free_port());
    let _other = OneMember::start_with(
        dir2.path(),
        "z2",
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        &["--listen-zookeeper-urls", &zk2],
    );
    wait_ruok(&zk2);
    assert_eq!(
        four_letter(&zk2, b"cons").as_deref(),
        Some("cons is not executed because it is not in the whitelist.\n")
    );
    // Sessions are leases underneath, but etcd's clients are not shown them.
    let leases = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", node.client))
        .args(["lease", "list"])
        .output()
        .expect("etcdctl is missing: run ./scripts/test.sh");
    assert_eq!(
        String::from_utf8_lossy(&leases.stdout).trim(),
        "found 0 leases"
    );
}

#[test]
fn kazoo_transactions_acls_and_recipes() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, zk) = start(dir.path());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/zk_kazoo_recipes.py"
    );
    let out = python(&[script, &zk]);
    assert_eq!(out.lines().last(), Some("ok"), "{out}");
}

const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// Compiles `tests/clients/ZkJava.java` against Debian's ZooKeeper client and runs it.
fn java_client(zk: &str) -> std::process::Output {
    assert!(
        Path::new(ZOOKEEPER_JAR).exists(),
        "{ZOOKEEPER_JAR} is missing: install Debian's zookeeper (scripts/test.sh does)"
    );
    let classes = tempfile::tempdir().unwrap();
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/ZkJava.java");
    let javac = Command::new("javac")
        .args(["-nowarn", "-cp", ZOOKEEPER_JAR, "-d"])
        .arg(classes.path())
        .arg(src)
        .output()
        .expect("javac is missing: install a JDK (scripts/test.sh does)");
    assert!(
        javac.status.success(),
        "javac: {}",
        String::from_utf8_lossy(&javac.stderr)
    );
    let classpath = format!("{ZOOKEEPER_JAR}:{}", classes.path().display());
    Command::new("timeout")
        .args(["120", "java", "-cp", &classpath, "ZkJava", zk])
        .output()
        .unwrap()
}

#[test]
fn zookeepers_java_client_multi_acls_watches_and_reaping() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, zk) = start(dir.path());
    let out = java_client(&zk);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().last() == Some("ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Java client's checks bite: a member without the super-user fails the super-user's
/// read, and one that never reaps fails the reaping check.
#[test]
fn the_java_clients_checks_fail_on_a_member_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let zk = format!("127.0.0.1:{}", free_port());
    let _node = OneMember::start_with(
        dir.path(),
        "z1",
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        &["--listen-zookeeper-urls", &zk],
    );
    wait_ruok(&zk);
    let out = java_client(&zk);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "passed without reaping or a super-user"
    );
    assert!(stderr.contains("never reaped"), "{stderr}");
}

#[test]
fn zkcli_sh_works_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, zk) = start(dir.path());
    let out = zkcli(
        &zk,
        "create /cli hello\ncreate -e -s /cli/e- x\ncreate -c /box\nset /cli world\n\
         get -s /cli\nls /\naddauth digest u:p\nwhoami\ngetAcl /cli\n\
         create /locked x digest:u:Jq7wMyA/w2Vd5WIDAKdu4OIIFEQ=:cdrwa\nget /locked\n\
         deleteall /cli\nls /cli",
    );
    for want in [
        "Created /cli",
        "Created /cli/e-0000000000",
        "Created /box",
        "world\ncZxid = 0x",
        "dataVersion = 1",
        "numChildren = 1",
        "[box, cli, zookeeper]",
        "digest: u",
        "ip: 127.0.0.1",
        "'world,'anyone\n: cdrwa",
        "Node does not exist: /cli",
        "\nx\n",
    ] {
        assert!(out.contains(want), "zkCli.sh printed no {want:?}:\n{out}");
    }
    let out = zkcli(&zk, "get /locked");
    assert!(out.contains("Insufficient permission"), "{out}");
    zkcli_reads_stats_acls_and_ttls(&zk);
}

/// With no flag, ZooKeeper clients are served on 127.0.0.1:2181, or, when that port is taken
/// (a ZooKeeper beside it), etcd clients alone; an address asked for that cannot be bound
/// stops the start.
#[test]
fn the_default_port_steps_aside_and_an_explicit_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:2181");
    for d in ["a", "b", "c"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let member = OneMember::start(&dir.path().join("a"), "d1");
    let health = format!("http://{}/health", member.client);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("curl")
            .args(["-sf", &health])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the member never served etcd clients"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(dir.path().join("a/node.log")).unwrap();
    assert!(
        log.contains("ZooKeeper clients are not served on 127.0.0.1:2181"),
        "{log}"
    );
    drop(member);
    if held.is_ok() {
        let dir_b = dir.path().join("b");
        let mut explicit = OneMember::start_with(
            &dir_b,
            "d2",
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
            &["--listen-zookeeper-urls", "127.0.0.1:2181"],
        );
        let status = explicit.child.wait().unwrap();
        assert!(!status.success(), "started without its ZooKeeper address");
        // Free, the default is served.
        drop(held);
        let dir_c = dir.path().join("c");
        let _member = OneMember::start(&dir_c, "d3");
        wait_ruok("127.0.0.1:2181");
    }
}

/// Znodes live in the key space, so an etcd snapshot carries them: saved with etcdctl from
/// one member, restored with `quorumkv snapshot restore`, served by a new member with their
/// data and Stat.
#[test]
fn znodes_survive_snapshot_save_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let (node, zk) = start(dir.path());
    let program = format!(
        "from kazoo.client import KazooClient\n\
         zk = KazooClient(hosts='{zk}', timeout=10)\nzk.start(timeout=15)\n\
         zk.create('/kept/deep', b'payload', makepath=True)\nzk.set('/kept/deep', b'v2')\n\
         s = zk.exists('/kept/deep')\nprint(s.czxid, s.mzxid, s.version)\nzk.stop()\n"
    );
    let before = python(&["-c", &program]);
    let snap = dir.path().join("backup.db");
    let saved = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", node.client))
        .args(["snapshot", "save"])
        .arg(&snap)
        .output()
        .expect("etcdctl is missing: run ./scripts/test.sh");
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    drop(node);
    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .args(["snapshot", "restore"])
        .arg(&snap)
        .arg("--data-dir")
        .arg(restored.join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_again, zk) = start(&restored);
    let check = format!(
        "from kazoo.client import KazooClient\n\
         zk = KazooClient(hosts='{zk}', timeout=10)\nzk.start(timeout=15)\n\
         data, s = zk.get('/kept/deep')\nassert data == b'v2', data\n\
         print(s.czxid, s.mzxid, s.version)\nzk.stop()\n"
    );
    assert_eq!(python(&["-c", &check]), before);
}

/// `quorumkv bench zk-create|zk-set|zk-get` against a member: every request answered, the
/// created znodes there (zkCli.sh counts them), and failures counted, not hidden: values past
/// the member's jute.maxbuffer fail.
#[test]
fn zk_load_generator_counts_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let zk = format!("127.0.0.1:{}", free_port());
    let _node = OneMember::start_with(
        dir.path(),
        "b1",
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        &[
            "--listen-zookeeper-urls",
            &zk,
            "--zookeeper-max-buffer",
            "4096",
        ],
    );
    wait_ruok(&zk);
    let bench = |workload: &str, extra: &[&str]| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
            .args(["bench", workload, "--endpoints", &zk, "--json"])
            .args(["--conns", "4", "--clients", "20", "--key-space-size", "30"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{workload}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
    };
    let created = bench("zk-create", &["--total", "500"]);
    assert_eq!(
        (created["ok"].as_u64(), created["failed"].as_u64()),
        (Some(500), Some(0))
    );
    let out = zkcli(&zk, "getAllChildrenNumber /quorumkv-bench");
    assert!(
        out.contains("\n501\n"),
        "one run's parent and its 500 znodes: {out}"
    );
    for workload in ["zk-set", "zk-get"] {
        let r = bench(workload, &["--total", "400"]);
        assert_eq!(
            (r["ok"].as_u64(), r["failed"].as_u64()),
            (Some(400), Some(0)),
            "{r}"
        );
    }
    let out = zkcli(&zk, "getAllChildrenNumber /quorumkv-bench");
    assert!(
        out.contains("\n532\n"),
        "and the key space's parent and 30 keys: {out}"
    );
    let refused = bench("zk-create", &["--total", "50", "--val-size", "8192"]);
    assert_eq!(refused["ok"].as_u64(), Some(0), "{refused}");
    assert_eq!(refused["failed"].as_u64(), Some(50), "{refused}");
}
