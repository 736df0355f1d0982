//! etcd's clients never see, write, delete, compare or watch the part of the key space other
//! client APIs keep (from `\xff\xff` up): a row put there below the API is invisible through
//! etcdctl, survives a delete of every key, and a put there is refused.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::OneMember;
use quorumkv_server::member::keyspace::RESERVED_START;

fn etcdctl(ep: &str, args: &[&[u8]]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ep}"))
        .arg("--command-timeout=10s")
        .args(args.iter().map(|a| OsStr::from_bytes(a)))
        .output()
        .expect("etcdctl is missing (scripts/test.sh installs it)")
}

fn stdout(o: &Output) -> Vec<u8> {
    assert!(
        o.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout.clone()
}

fn wait_serving(ep: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !etcdctl(ep, &[b"put", b"ready", b"1"]).status.success() {
        assert!(Instant::now() < deadline, "member at {ep} never served");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The reserved row `key` with `value`, read below the API from the member's tree.
fn reserved_row(db: &std::path::Path, key: &[u8]) -> Option<Vec<u8>> {
    let mvcc =
        quorumkv_server::mvcc::Mvcc::open(quorumkv_server::member::open_db(db).unwrap()).unwrap();
    let kvs = mvcc
        .snapshot()
        .range(key, &[], quorumkv_server::mvcc::RangeOpts::default())
        .unwrap()
        .kvs;
    kvs.into_iter().next().map(|kv| kv.value)
}

#[test]
fn etcd_clients_never_reach_the_reserved_key_space() {
    let dir = tempfile::tempdir().unwrap();
    let node = OneMember::start(dir.path(), "r1");
    let (client, peer) = (node.client.clone(), node.peer.clone());
    wait_serving(&client);
    stdout(&etcdctl(&client, &[b"put", b"a", b"1"]));
    drop(node);

    // A row of another API, put below etcd's view while the member is down.
    let mut zk_key = RESERVED_START.to_vec();
    zk_key.extend_from_slice(b"zk/n/node");
    let db = dir.path().join("data/member/db");
    {
        let mvcc =
            quorumkv_server::mvcc::Mvcc::open(quorumkv_server::member::open_db(&db).unwrap())
                .unwrap();
        let applied = mvcc.snapshot().applied_index();
        let mut txn = mvcc.write().unwrap();
        txn.put(&zk_key, b"znode", 0).unwrap();
        txn.end_request();
        txn.commit(applied).unwrap();
    }
    assert_eq!(reserved_row(&db, &zk_key).as_deref(), Some(&b"znode"[..]));

    let node = OneMember::start_on(dir.path(), "r1", client.clone(), peer);
    wait_serving(&client);
    // Every key from the smallest on: etcd's keys only.
    let all = stdout(&etcdctl(
        &client,
        &[b"get", b"", b"--from-key", b"--keys-only"],
    ));
    assert_eq!(
        String::from_utf8_lossy(&all)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["a", "ready"]
    );
    assert!(stdout(&etcdctl(&client, &[b"get", &zk_key])).is_empty());
    assert!(stdout(&etcdctl(&client, &[b"get", &[0xff], b"--prefix"])).is_empty());
    // A compare on the reserved key sees no key there.
    let txn = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={client}"))
        .args(["txn"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            let mut input = b"version(\"".to_vec();
            input.extend_from_slice(&zk_key);
            input.extend_from_slice(b"\") = \"0\"\n\nput seen absent\n\nput seen present\n\n");
            c.stdin.take().unwrap().write_all(&input)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        txn.status.success(),
        "{}",
        String::from_utf8_lossy(&txn.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&stdout(&etcdctl(
            &client,
            &[b"get", b"seen", b"--print-value-only"]
        )))
        .trim(),
        "absent"
    );
    // A put there is refused, by name.
    let put = etcdctl(&client, &[b"put", &zk_key, b"x"]);
    assert!(!put.status.success());
    assert!(
        String::from_utf8_lossy(&put.stderr).contains("reserved"),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    // A delete of every key deletes etcd's only.
    let deleted = stdout(&etcdctl(&client, &[b"del", b"", b"--from-key"]));
    assert_eq!(String::from_utf8_lossy(&deleted).trim(), "3");
    std::thread::sleep(Duration::from_millis(500));
    drop(node);
    assert_eq!(reserved_row(&db, &zk_key).as_deref(), Some(&b"znode"[..]));
}
