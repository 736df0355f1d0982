//! Bounded memory under floods, with etcdctl against one member: a Range whose response would
//! pass `--max-range-response-bytes` is refused with an error naming the flag, a watch past
//! `--max-watchers` is canceled at creation, and a connection past `--max-client-connections`
//! is closed, while what stays within each limit is served. A data directory on a small tmpfs
//! meets NOSPACE before the disk fills (needs root to mount), for etcd and ZooKeeper clients.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{OneMember, free_port};

fn etcdctl(ep: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ep}"))
        .args(["--command-timeout=5s", "--dial-timeout=2s"])
        .args(args)
        .output()
        .expect("etcdctl is missing (scripts/test.sh installs it)")
}

fn member(dir: &std::path::Path, extra: &[&str]) -> OneMember {
    let m = OneMember::start_with(
        dir,
        "l1",
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        extra,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !etcdctl(&m.client, &["put", "ready", "1"]).status.success() {
        assert!(Instant::now() < deadline, "the member never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    m
}

/// An `etcdctl watch` of `key`, printing what it sees.
fn watch(ep: &str, key: &str) -> Child {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([&format!("--endpoints={ep}"), "watch", key])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn range_responses_and_watchers_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let m = member(
        dir.path(),
        &[
            "--listen-zookeeper-urls=",
            "--max-range-response-bytes",
            "1000",
            "--max-watchers",
            "2",
        ],
    );
    let ep = &m.client;
    let value = "v".repeat(100);
    for i in 0..20 {
        assert!(
            etcdctl(ep, &["put", &format!("k{i:02}"), &value])
                .status
                .success()
        );
    }
    let big = etcdctl(ep, &["get", "--prefix", "k"]);
    let e = String::from_utf8_lossy(&big.stderr);
    assert!(
        !big.status.success() && e.contains("--max-range-response-bytes (1000 bytes)"),
        "{e}"
    );
    let small = etcdctl(ep, &["get", "--prefix", "k", "--limit", "5"]);
    assert!(small.status.success());
    let keys = etcdctl(ep, &["get", "--prefix", "k", "--keys-only"]);
    assert!(keys.status.success(), "keys alone fit");
    // Two watchers fit; a third is canceled with the limit named, and the two go on.
    let mut w1 = watch(ep, "a");
    let mut w2 = watch(ep, "b");
    std::thread::sleep(Duration::from_millis(500));
    let third = Command::new("timeout")
        .args(["10", "etcdctl", &format!("--endpoints={ep}"), "watch", "c"])
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&third.stdout),
        String::from_utf8_lossy(&third.stderr)
    );
    assert!(said.contains("--max-watchers 2"), "{said}");
    assert!(etcdctl(ep, &["put", "a", "1"]).status.success());
    let mut out = BufReader::new(w1.stdout.take().unwrap()).lines();
    assert_eq!(out.next().and_then(Result::ok).as_deref(), Some("PUT"));
    w1.kill().unwrap();
    w1.wait().unwrap();
    w2.kill().unwrap();
    w2.wait().unwrap();
    // Their slots come back.
    std::thread::sleep(Duration::from_millis(500));
    let mut w3 = watch(ep, "c");
    std::thread::sleep(Duration::from_millis(500));
    assert!(etcdctl(ep, &["put", "c", "1"]).status.success());
    let mut out = BufReader::new(w3.stdout.take().unwrap()).lines();
    assert_eq!(out.next().and_then(Result::ok).as_deref(), Some("PUT"));
    w3.kill().unwrap();
    w3.wait().unwrap();
}

#[test]
fn client_connections_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let m = member(
        dir.path(),
        &["--listen-zookeeper-urls=", "--max-client-connections", "2"],
    );
    let ep = m.client.clone();
    // Two idle connections take both slots: etcdctl's is closed.
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&ep).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !etcdctl(&ep, &["get", "ready"]).status.success(),
        "a third connection was served"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !etcdctl(&ep, &["get", "ready"]).status.success() {
        assert!(Instant::now() < deadline, "slots never came back");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Unmounts a tmpfs when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(ok.success(), "mounting a tmpfs needs root");
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `etcdctl put key` with the value on standard input (too large for an argument).
fn put_large(ep: &str, key: &str, value: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ep}"))
        .args(["--command-timeout=5s", "--dial-timeout=2s", "put", key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(value).unwrap();
    child.wait_with_output().unwrap()
}

/// A data directory on a small file system: before the disk fills, the member raises NOSPACE
/// and refuses new data with etcd's error while reads go on; everything acknowledged stays;
/// once space is freed and the alarm disarmed, writes are taken again.
#[test]
fn a_filling_disk_stops_new_data_with_nospace_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk");
    let _fs = Tmpfs::mount(&disk, "256m");
    let zk = format!("127.0.0.1:{}", free_port());
    let mut m = member(&disk, &["--listen-zookeeper-urls", &zk]);
    assert_eq!(kazoo(&zk, "before"), "created\n");
    let filler = disk.join("filler");
    std::fs::write(&filler, vec![1u8; 30 << 20]).unwrap();

    let value = vec![b'v'; 512 << 10];
    let mut acked = Vec::new();
    let refusal = loop {
        assert!(acked.len() < 300, "no refusal after {} puts", acked.len());
        let key = format!("big/{}", acked.len());
        let out = put_large(&m.client, &key, &value);
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).to_string();
        }
        acked.push(key);
    };
    assert!(
        refusal.contains("etcdserver: mvcc: database space exceeded"),
        "{refusal}"
    );
    assert!(!acked.is_empty());
    let alarms = etcdctl(&m.client, &["alarm", "list"]);
    assert!(
        String::from_utf8_lossy(&alarms.stdout).contains("alarm:NOSPACE"),
        "{alarms:?}"
    );
    // Reads and deletes go on; nothing acknowledged is missing.
    for key in &acked {
        let got = etcdctl(&m.client, &["get", key, "--print-value-only"]);
        assert!(got.status.success(), "{got:?}");
        assert_eq!(got.stdout.len(), value.len() + 1, "{key}");
    }
    assert!(etcdctl(&m.client, &["del", "ready"]).status.success());
    // ZooKeeper clients meet the same refusal, as ZooKeeper's quota error; reads and deletes
    // go on for them too.
    assert_eq!(
        kazoo(&zk, "full"),
        "create refused: QuotaExceededError\nset refused: QuotaExceededError\nread x\ndeleted\n"
    );
    assert!(m.child.try_wait().unwrap().is_none(), "the member exited");

    std::fs::remove_file(&filler).unwrap();
    let disarmed = etcdctl(&m.client, &["alarm", "disarm"]);
    assert!(disarmed.status.success(), "{disarmed:?}");
    let again = put_large(&m.client, "big/after", &value);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(kazoo(&zk, "after"), "created\n");
}

/// Runs a kazoo step against the ZooKeeper port `zk` (`before`: create a node; `full`: try to
/// create and set, then read and delete; `after`: create again); returns what it printed.
fn kazoo(zk: &str, step: &str) -> String {
    let program = r#"
import sys
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
zk = KazooClient(hosts=sys.argv[1], timeout=10)
zk.start(timeout=20)
step = sys.argv[2]
if step in ("before", "after"):
    zk.create("/zk-" + step, b"x")
    print("created")
else:
    for name, call in [("create", lambda: zk.create("/zk-full", b"y")),
                       ("set", lambda: zk.set("/zk-before", b"y"))]:
        try:
            call()
            print(name, "taken")
        except KazooException as e:
            print(name, "refused:", type(e).__name__)
    print("read", zk.get("/zk-before")[0].decode())
    zk.delete("/zk-before")
    print("deleted")
zk.stop()
"#;
    let out = Command::new("python3")
        .args(["-c", program, zk, step])
        .output()
        .unwrap();
    assert!(out.status.success(), "kazoo {step}: {out:?}");
    String::from_utf8_lossy(&out.stdout).to_string()
}
