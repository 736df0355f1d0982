//! ZooKeeper clients against a member's ZooKeeper port (`--listen-zookeeper-urls`): kazoo's
//! operations, a session expiring when its client dies without closing it, the four-letter
//! words, and hostile bytes that close only their own connection.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{OneMember, free_port};

/// A member serving ZooKeeper clients on a port of its own, with a half-second tick (so
/// sessions may be as short as a second).
fn start(dir: &std::path::Path) -> (OneMember, String) {
    let zk = format!("127.0.0.1:{}", free_port());
    let node = OneMember::start_with(
        dir,
        "z1",
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        &["--listen-zookeeper-urls", &zk, "--zookeeper-tick-ms", "500"],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while four_letter(&zk, b"ruok").as_deref() != Some("imok") {
        assert!(
            Instant::now() < deadline,
            "the ZooKeeper port never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (node, zk)
}

fn four_letter(addr: &str, word: &[u8; 4]) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(word).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .args(args)
        .output()
        .expect("python3 is missing");
    assert!(
        out.status.success(),
        "python {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kazoo_works_against_the_zookeeper_port() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, zk) = start(dir.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/zk_kazoo.py");
    let out = python(&[script, &zk]);
    assert_eq!(out.lines().last(), Some("ok"), "{out}");
}

#[test]
fn a_dead_clients_session_expires_and_its_ephemerals_go() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, zk) = start(dir.path());
    // A client makes an ephemeral with a 2 s session, then dies without closing it.
    let program = format!(
        "import os\nfrom kazoo.client import KazooClient\n\
         zk = KazooClient(hosts='{zk}', timeout=2)\nzk.start(timeout=15)\n\
         zk.ensure_path('/expiry')\nzk.create('/expiry/e', b'', ephemeral=True)\n\
         print(zk.exists('/expiry').pzxid)\nos._exit(0)\n"
    );
    let before: i64 = python(&["-c", &program]).trim().parse().unwrap();
    let check = format!(
        "import time\nfrom kazoo.client import KazooClient\n\
         zk = KazooClient(hosts='{zk}', timeout=10)\nzk.start(timeout=15)\n\
         deadline = time.time() + 15\n\
         while zk.exists('/expiry/e') is not None:\n    assert time.time() < deadline, 'never expired'\n    time.sleep(0.1)\n\
         s = zk.exists('/expiry')\nprint(s.numChildren, s.pzxid)\nzk.stop()\n"
    );
    let out = python(&["-c", &check]);
    let mut it = out.split_whitespace().map(|v| v.parse::<i64>().unwrap());
    let (children, pzxid) = (it.next().unwrap(), it.next().unwrap());
    assert_eq!(children, 0);
    assert!(pzxid > before, "the parent's pzxid moved with the expiry");
}

#[test]
fn hostile_bytes_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, zk) = start(dir.path());
    // Whether the member closes the connection (after at most a short answer) on `bytes`;
    // a connection still open after 10 s is not closed.
    let closed = |bytes: &[u8]| {
        let mut s = TcpStream::connect(&zk).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        let mut buf = [0u8; 64];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    );
                }
            }
        }
    };
    // A frame of 64 MiB announced.
    assert!(closed(&[0x04, 0, 0, 0, 1, 2, 3]));
    // A connect record cut short, and one with a hostile string length.
    assert!(closed(&[0, 0, 0, 6, 0, 0, 0, 0, 0, 0]));
    assert!(closed(&[0, 0, 0, 8, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]));
    // An unknown session id with a wrong password is told it expired.
    assert!(closed(&[
        0, 0, 0, 44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x27, 0x10, 0, 0, 0, 0, 0, 0, 0, 9,
        0, 0, 0, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16
    ]));
    // The check bites: a well-formed connect is answered and kept open.
    let mut hello = vec![0, 0, 0, 44];
    hello.extend_from_slice(&[0; 12]);
    hello.extend_from_slice(&10_000i32.to_be_bytes());
    hello.extend_from_slice(&[0; 8]);
    hello.extend_from_slice(&16i32.to_be_bytes());
    hello.extend_from_slice(&[0; 16]);
    let mut s = TcpStream::connect(&zk).unwrap();
    s.write_all(&hello).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = [0u8; 41];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(&answer[..4], &37u32.to_be_bytes(), "a connect response");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(s.read(&mut answer).is_err(), "still open");
    // The member goes on serving.
    assert_eq!(four_letter(&zk, b"ruok").as_deref(), Some("imok"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/zk_kazoo.py");
    assert_eq!(python(&[script, &zk]).lines().last(), Some("ok"));
}
