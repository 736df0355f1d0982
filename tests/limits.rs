//! Bounded memory under floods, with etcdctl against one member: a Range whose response would
//! pass `--max-range-response-bytes` is refused with an error naming the flag, a watch past
//! `--max-watchers` is canceled at creation, and a connection past `--max-client-connections`
//! is closed, while what stays within each limit is served.

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
