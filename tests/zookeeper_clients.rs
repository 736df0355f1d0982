//! ZooKeeper clients against members' ZooKeeper ports: kazoo's operations, transactions,
//! ACLs and recipes; ZooKeeper's own Java client and zkCli.sh for what kazoo does not send; a
//! session expiring when its client dies; sessions moving between the members of a cluster
//! on Raft and on ZAB; the four-letter words; the default port; and hostile bytes that close
//! only their own connection.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, serial};
use common::zookeeper::RealZooKeeper;
use common::{OneMember, four_letter, free_port};
use quorumkv_server::zk::jute::{Jute, Reader};
use quorumkv_server::zk::records::*;

/// kazoo's test files run in CI (the rest run with `tests/kazoo_suite/run.py`).
const KAZOO_FILES_IN_CI: &[&str] = &[
    "test_client.py",
    "test_connection.py",
    "test_lock.py",
    "test_watchers.py",
];

/// The super-user's digest for the password `test` (ZooKeeper's documented example).
const SUPER_DIGEST: &str = "super:D/InIHSb7yEEbrWz8b9l71RjZJU=";

/// A member serving ZooKeeper clients on a port of its own, with a half-second tick (so
/// sessions may be as short as a second), containers reaped every 200 ms, and a super-user.
fn start(dir: &Path) -> (OneMember, String) {
    start_with(
        dir,
        &[
            "--zookeeper-tick-ms",
            "500",
            "--zookeeper-container-check-interval-ms",
            "200",
            "--zookeeper-super-digest",
            SUPER_DIGEST,
            "--zookeeper-4lw-commands-whitelist=*",
        ],
    )
}

/// A member serving ZooKeeper clients on a port of its own, with `extra` flags.
fn start_with(dir: &Path, extra: &[&str]) -> (OneMember, String) {
    start_with_env(dir, extra, &[])
}

/// A member serving ZooKeeper clients on a port of its own, with `extra` flags and `env`.
fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (OneMember, String) {
    std::fs::create_dir_all(dir).unwrap();
    let zk = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--listen-zookeeper-urls", zk.as_str()];
    args.extend_from_slice(extra);
    let node = OneMember::start_with_env(
        dir,
        "z1",
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        &args,
        env,
    );
    wait_ruok(&zk);
    (node, zk)
}

/// Waits for the ZooKeeper port to answer `srvr` (the one four-letter word on by default).
fn wait_ruok(zk: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !four_letter(zk, b"srvr").is_some_and(|s| s.starts_with("Zookeeper version")) {
        assert!(
            Instant::now() < deadline,
            "the ZooKeeper port {zk} never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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

fn zkcli(zk: &str, commands: &str) -> String {
    let mut child = Command::new("/usr/share/zookeeper/bin/zkCli.sh")
        .args(["-server", zk])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("zkCli.sh is missing: install Debian's zookeeper (scripts/test.sh does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{commands}\nquit\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    // zkCli.sh says some results ("Created ...") on stderr.
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
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

/// More of zkCli.sh's commands, on a fresh `/more` subtree of the member at `zk`: stat,
/// recursive ls, ephemerals, child counts, conditional deletes, ACL changes, TTL nodes, sync
/// and a data watch.
fn zkcli_reads_stats_acls_and_ttls(zk: &str) {
    let out = zkcli(
        zk,
        "create /more x\ncreate -e /more/e y\nstat /more\nls -R /more\ngetEphemerals /more\n\
         getAllChildrenNumber /more\ndelete -v 5 /more/e\ndelete -v 0 /more/e\n\
         create -t 100000 /more/ttl t\nsetAcl /more world:anyone:r\ngetAcl /more\n\
         set /more z\nsync /more\nget -w /more",
    );
    for want in [
        "Created /more\n",
        "Created /more/e",
        "dataLength = 1\nnumChildren = 1",
        "/more\n/more/e\n",
        "[/more/e]",
        "\n1\n",
        "version No is not valid : /more/e",
        "Created /more/ttl",
        "'world,'anyone\n: r",
        "Insufficient permission : /more",
        "Sync is OK",
        "\nx\n",
    ] {
        assert!(out.contains(want), "zkCli.sh printed no {want:?}:\n{out}");
    }
    let out = zkcli(zk, "ls /more\nstat /more");
    assert!(
        out.contains("[ttl]"),
        "the deleted ephemeral is gone: {out}"
    );
    assert!(
        out.contains("cversion = 3"),
        "two creates and a delete: {out}"
    );
}

/// A connection speaking the protocol by hand, for what no client library sends as is.
struct Raw {
    s: TcpStream,
    xid: i32,
}

impl Raw {
    fn connect(zk: &str) -> Raw {
        Raw::resume(zk, 0, vec![0; 16], 0).0
    }

    /// Connects as session `id` (0: a new one) having seen `zxid`; answers its response.
    fn resume(zk: &str, id: i64, passwd: Vec<u8>, zxid: i64) -> (Raw, ConnectResponse) {
        let mut s = TcpStream::connect(zk).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let hello = ConnectRequest {
            time_out: 10_000,
            session_id: id,
            last_zxid_seen: zxid,
            passwd: quorumkv_server::zk::jute::Buffer(passwd),
            ..ConnectRequest::default()
        };
        let mut body = hello.to_bytes();
        body.push(0);
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        s.write_all(&out).unwrap();
        let mut raw = Raw { s, xid: 0 };
        let resp = Reader::new(&raw.frame()).record().unwrap();
        (raw, resp)
    }

    fn frame(&mut self) -> Vec<u8> {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).unwrap();
        let mut body = vec![0; u32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut body).unwrap();
        body
    }

    /// Sends `kind` with `body` without waiting; answers its xid.
    fn send(&mut self, kind: i32, body: &[u8]) -> i32 {
        self.xid += 1;
        let mut req = RequestHeader {
            xid: self.xid,
            kind,
        }
        .to_bytes();
        req.extend_from_slice(body);
        let mut out = (req.len() as u32).to_be_bytes().to_vec();
        out.extend(req);
        self.s.write_all(&out).unwrap();
        self.xid
    }

    /// The next reply (notifications skipped): its header and body.
    fn reply(&mut self) -> (ReplyHeader, Vec<u8>) {
        loop {
            let f = self.frame();
            let mut r = Reader::new(&f);
            let h: ReplyHeader = r.record().unwrap();
            if h.xid != -1 {
                return (h, f[16..].to_vec());
            }
        }
    }

    /// Sends `kind` with `body`; answers the reply's error code and body.
    fn call(&mut self, kind: i32, body: &[u8]) -> (i32, Vec<u8>) {
        let xid = self.send(kind, body);
        loop {
            let (h, body) = self.reply();
            if h.xid == xid {
                return (h.err, body);
            }
        }
    }
}

/// A session's requests sent all at once, without waiting: answered in the order sent, each
/// read seeing the session's writes before it and none after, sequential names in order.
#[test]
fn a_sessions_pipelined_requests_answer_in_order_and_read_their_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, zk) = start(dir.path());
    let mut c = Raw::connect(&zk);
    let open = vec![Acl {
        perms: 31,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }];
    let create = |path: &str, flags: i32| {
        CreateRequest {
            path: path.into(),
            acl: open.clone(),
            flags,
            ..CreateRequest::default()
        }
        .to_bytes()
    };
    let first = c.send(1, &create("/pipe", 0));
    let rounds = 100;
    for i in 1..=rounds {
        let set = SetDataRequest {
            path: "/pipe".into(),
            data: quorumkv_server::zk::jute::Data::of(format!("v{i}").into_bytes()),
            version: -1,
        };
        c.send(5, &set.to_bytes());
        let get = GetDataRequest {
            path: "/pipe".into(),
            watch: false,
        };
        c.send(4, &get.to_bytes());
        // Persistent sequential.
        c.send(1, &create("/pipe/s-", 2));
    }
    let (h, _) = c.reply();
    assert_eq!((h.xid, h.err), (first, 0));
    let mut last_zxid = h.zxid;
    for i in 1..=rounds {
        let (set, _) = c.reply();
        let (get, data) = c.reply();
        let (seq, name) = c.reply();
        assert_eq!(
            [set.xid, get.xid, seq.xid],
            [first + 3 * i - 2, first + 3 * i - 1, first + 3 * i]
        );
        assert_eq!([set.err, get.err, seq.err], [0, 0, 0]);
        let got: GetDataResponse = Reader::new(&data).record().unwrap();
        assert_eq!(got.data.bytes(), format!("v{i}").as_bytes(), "round {i}");
        assert_eq!(got.stat.version, i);
        let name: CreateResponse = Reader::new(&name).record().unwrap();
        assert_eq!(name.path, format!("/pipe/s-{:010}", i - 1));
        assert!(set.zxid > last_zxid && seq.zxid > set.zxid);
        last_zxid = seq.zxid;
    }
}

#[test]
fn whoami_and_the_servers_own_watch_removal() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, zk) = start(dir.path());
    let mut c = Raw::connect(&zk);
    let auth = AuthPacket {
        kind: 0,
        scheme: "digest".into(),
        auth: quorumkv_server::zk::jute::Buffer(b"super:test".to_vec()),
    };
    // An auth packet carries xid -4; the reply says it back.
    c.xid = -5;
    assert_eq!(c.call(100, &auth.to_bytes()).0, 0);
    c.xid = 0;
    let (code, body) = c.call(107, &[]);
    assert_eq!(code, 0);
    let who: WhoAmIResponse = Reader::new(&body).record().unwrap();
    let schemes: Vec<_> = who
        .client_info
        .iter()
        .map(|i| (i.auth_scheme.as_str(), i.user.as_str()))
        .collect();
    assert_eq!(
        schemes,
        [("ip", "127.0.0.1"), ("super", ""), ("digest", "super")]
    );
    // addWatch, then the server's own checkWatches and removeWatches (types: 3 is Any).
    let path = |p: &str, kind: i32| WatchesRequest {
        path: p.into(),
        kind,
    };
    let add = AddWatchRequest {
        path: "/w".into(),
        mode: 1,
    };
    assert_eq!(c.call(106, &add.to_bytes()), (0, vec![0, 0, 0, 0]));
    assert_eq!(c.call(17, &path("/w", 3).to_bytes()).0, 0);
    assert_eq!(
        c.call(17, &path("/w", 1).to_bytes()).0,
        -121,
        "no child watch"
    );
    assert_eq!(c.call(18, &path("/w", 3).to_bytes()).0, 0);
    assert_eq!(c.call(18, &path("/w", 3).to_bytes()).0, -121, "removed");
    assert_eq!(c.call(17, &path("/w", 9).to_bytes()).0, -8, "no such type");
    // A multi mixing reads and writes is refused whole.
    let mut mixed = MultiHeader {
        kind: 4,
        done: false,
        err: -1,
    }
    .to_bytes();
    mixed.extend(
        GetDataRequest {
            path: "/".into(),
            watch: false,
        }
        .to_bytes(),
    );
    mixed.extend(
        MultiHeader {
            kind: 2,
            done: false,
            err: -1,
        }
        .to_bytes(),
    );
    mixed.extend(
        DeleteRequest {
            path: "/zz".into(),
            version: -1,
        }
        .to_bytes(),
    );
    mixed.extend(
        MultiHeader {
            kind: -1,
            done: true,
            err: -1,
        }
        .to_bytes(),
    );
    assert_eq!(c.call(14, &mixed).0, -5);
    // A scheme not served fails the auth and closes the connection.
    let sasl = AuthPacket {
        kind: 0,
        scheme: "kerberos".into(),
        auth: quorumkv_server::zk::jute::Buffer(b"x".to_vec()),
    };
    c.xid = -5;
    assert_eq!(c.call(100, &sasl.to_bytes()).0, -115);
    let mut buf = [0u8; 1];
    assert!(
        matches!(c.s.read(&mut buf), Ok(0)),
        "closed after a failed auth"
    );
}

fn create(c: &mut Raw, path: &str) -> i64 {
    let req = CreateRequest {
        path: path.into(),
        acl: vec![Acl {
            perms: 31,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }],
        ..CreateRequest::default()
    };
    let (code, body) = c.call(15, &req.to_bytes());
    assert_eq!(code, 0, "create {path}");
    Reader::new(&body)
        .record::<Create2Response>()
        .unwrap()
        .stat
        .czxid
}

/// A reply that shows a change goes out after the change's notification, though a read that
/// arms no watch can see a write before its events are fired: the member pauses 1 s between
/// making each batch readable and firing its events (`apply::before_fire`), and a session
/// that watches a node reads it again in that gap.
#[test]
fn a_read_that_shows_a_change_comes_after_its_notification() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, zk) = start_with_env(
        dir.path(),
        &[],
        &[("FAILPOINTS", "apply::before_fire=sleep(1000)")],
    );
    let mut a = Raw::connect(&zk);
    create(&mut a, "/fire");
    let get = |watch| {
        GetDataRequest {
            path: "/fire".into(),
            watch,
        }
        .to_bytes()
    };
    assert_eq!(a.call(4, &get(true)).0, 0);
    let mut b = Raw::connect(&zk);
    let set = SetDataRequest {
        path: "/fire".into(),
        data: quorumkv_server::zk::jute::Data::of(b"new".to_vec()),
        version: -1,
    };
    b.send(5, &set.to_bytes());
    // The set is readable well before its events are fired.
    std::thread::sleep(Duration::from_millis(300));
    let xid = a.send(4, &get(false));
    let mut notified = false;
    loop {
        let f = a.frame();
        let mut r = Reader::new(&f);
        let h: ReplyHeader = r.record().unwrap();
        if h.xid == -1 {
            let e: WatcherEvent = r.record().unwrap();
            assert_eq!((e.kind, e.path.as_str()), (3, "/fire"), "data changed");
            notified = true;
            continue;
        }
        assert_eq!(h.xid, xid);
        let got: GetDataResponse = Reader::new(&f[16..]).record().unwrap();
        assert_eq!(got.stat.version, 1, "the read sees the set");
        assert!(
            notified,
            "the reply showing the set came before its notification"
        );
        break;
    }
}

/// A session closed elsewhere (here: from a second connection that resumed it) ends its other
/// connections, as a ZooKeeper server closes the connection of a session it closes: the first
/// connection is closed, not left serving a session whose ephemerals are gone.
#[test]
fn a_closed_session_ends_its_other_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, zk) = start(dir.path());
    let (mut first, hello) = Raw::resume(&zk, 0, vec![0; 16], 0);
    let eph = CreateRequest {
        path: "/closing-eph".into(),
        acl: vec![Acl {
            perms: 31,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }],
        flags: 1,
        ..CreateRequest::default()
    };
    assert_eq!(first.call(1, &eph.to_bytes()).0, 0);
    let (mut second, resumed) = Raw::resume(&zk, hello.session_id, hello.passwd.0.clone(), 0);
    assert_eq!(resumed.session_id, hello.session_id, "resumed");
    assert_eq!(second.call(-11, &[]).0, 0, "closeSession answered");
    // The first connection is closed by the member: it reads the end of the stream (a
    // request sent meanwhile may go unanswered, never answered from the closed session).
    let exists = ExistsRequest {
        path: "/closing-eph".into(),
        watch: false,
    };
    let _ = first.s.write_all(&{
        let mut req = RequestHeader { xid: 99, kind: 3 }.to_bytes();
        req.extend(exists.to_bytes());
        let mut out = (req.len() as u32).to_be_bytes().to_vec();
        out.extend(req);
        out
    });
    let mut buf = [0u8; 64];
    let read = first.s.read(&mut buf);
    assert!(
        matches!(&read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the session's other connection still serves: {read:?}"
    );
}

/// A client back after missing changes re-arms its watches with setWatches and hears at once
/// of what changed since the zxid it last saw (ZooKeeper's `DataTree.setWatches`), before the
/// reply; what did not change stays armed.
#[test]
fn set_watches_tells_what_a_returning_client_missed() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, zk) = start(dir.path());
    let (mut a, hello) = Raw::resume(&zk, 0, vec![0; 16], 0);
    for p in ["/sw", "/sw/data", "/sw/gone", "/sw/kids", "/sw/still"] {
        create(&mut a, p);
    }
    let seen = create(&mut a, "/sw/kids/first");
    drop(a);
    // While it is away: a set, a delete, a create, a new child.
    let mut b = Raw::connect(&zk);
    let set = SetDataRequest {
        path: "/sw/data".into(),
        data: quorumkv_server::zk::jute::Data::of(b"x".to_vec()),
        version: -1,
    };
    assert_eq!(b.call(5, &set.to_bytes()).0, 0);
    let del = DeleteRequest {
        path: "/sw/gone".into(),
        version: -1,
    };
    assert_eq!(b.call(2, &del.to_bytes()).0, 0);
    create(&mut b, "/sw/born");
    create(&mut b, "/sw/kids/second");
    let (mut a, back) = Raw::resume(&zk, hello.session_id, hello.passwd.0.clone(), seen);
    assert_eq!(back.session_id, hello.session_id);
    let watches = SetWatches {
        relative_zxid: seen,
        data_watches: vec!["/sw/data".into(), "/sw/gone".into(), "/sw/still".into()],
        exist_watches: vec!["/sw/born".into(), "/sw/unborn".into()],
        child_watches: vec!["/sw/kids".into()],
    };
    let mut req = RequestHeader { xid: -8, kind: 101 }.to_bytes();
    req.extend(watches.to_bytes());
    let mut out = (req.len() as u32).to_be_bytes().to_vec();
    out.extend(req);
    a.s.write_all(&out).unwrap();
    let mut told = Vec::new();
    loop {
        let f = a.frame();
        let mut r = Reader::new(&f);
        let h: ReplyHeader = r.record().unwrap();
        if h.xid == -8 {
            assert_eq!(h.err, 0);
            break;
        }
        let e: WatcherEvent = r.record().unwrap();
        told.push((e.kind, e.path));
    }
    told.sort();
    let want = [
        (1, "/sw/born".to_string()),
        (2, "/sw/gone".to_string()),
        (3, "/sw/data".to_string()),
        (4, "/sw/kids".to_string()),
    ];
    assert_eq!(told, want);
    // What did not change stays armed: a later set of it is heard.
    let still = SetDataRequest {
        path: "/sw/still".into(),
        ..set
    };
    assert_eq!(b.call(5, &still.to_bytes()).0, 0);
    let f = a.frame();
    let mut r = Reader::new(&f);
    let h: ReplyHeader = r.record().unwrap();
    let e: WatcherEvent = r.record().unwrap();
    assert_eq!((h.xid, e.kind, e.path.as_str()), (-1, 3, "/sw/still"));
    // The session is refused to a wrong password, and to a client that has seen a zxid this
    // member has not reached (it must look for another member).
    let mut wrong = hello.passwd.0.clone();
    wrong[0] ^= 1;
    let (_, refused) = Raw::resume(&zk, hello.session_id, wrong, seen);
    assert_eq!(refused.session_id, 0, "a wrong password takes no session");
    let mut ahead = TcpStream::connect(&zk).unwrap();
    ahead
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let hello_ahead = ConnectRequest {
        time_out: 10_000,
        session_id: hello.session_id,
        last_zxid_seen: 1 << 40,
        passwd: hello.passwd.clone(),
        ..ConnectRequest::default()
    }
    .to_bytes();
    let mut out = ((hello_ahead.len() + 1) as u32).to_be_bytes().to_vec();
    out.extend(hello_ahead);
    out.push(0);
    ahead.write_all(&out).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(ahead.read(&mut buf), Ok(0)),
        "closed without a session"
    );
    // The session itself is untouched by both.
    assert!(
        b.call(
            3,
            &ExistsRequest {
                path: "/sw".into(),
                watch: false
            }
            .to_bytes()
        )
        .0 == 0
    );
    let (_, again) = Raw::resume(&zk, hello.session_id, hello.passwd.0.clone(), seen);
    assert_eq!(again.session_id, hello.session_id);
}

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

/// zkCli.sh's setquota, listquota and delquota answer on a member as on a real ZooKeeper 3.8:
/// the limits as written, the stats node counting its target's nodes and bytes as they
/// change, and `/zookeeper/quota`'s children and counters. Zxids and times are left out.
#[test]
fn quotas_answer_as_real_zookeepers_do() {
    let dir = tempfile::tempdir().unwrap();
    let real = RealZooKeeper::start(dir.path());
    let (_member, zk) = start(dir.path());
    let script = "create /q x\ncreate /q/a yy\nsetquota -n 10 /q\nlistquota /q\n\
        create /q/b zzz\nlistquota /q\nget /zookeeper/quota/q/zookeeper_stats\n\
        stat /zookeeper/quota/q/zookeeper_stats\nls /zookeeper/quota\nls /zookeeper/quota/q\n\
        setquota -B 100 /q\nlistquota /q\ndelete /q/b\nset /q/a yyyy\nlistquota /q\n\
        delquota -n /q\nlistquota /q\ndelquota /q\nlistquota /q\nls /zookeeper/quota\n\
        stat /zookeeper/quota\ncreate /zookeeper/own x\nls /zookeeper\nls /";
    // What both say that is theirs to decide: quota lines, node data, children, counters.
    let shown = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| {
                [
                    "Output ",
                    "quota for",
                    "[",
                    "count=",
                    "Created",
                    "dataLength",
                    "numChildren",
                ]
                .iter()
                .any(|p| l.starts_with(p))
                    || l.starts_with("cversion")
                    || l.starts_with("dataVersion")
            })
            .map(str::to_string)
            .collect()
    };
    let want = shown(&zkcli(&real.addr, script));
    let got = shown(&zkcli(&zk, script));
    assert!(
        want.iter()
            .any(|l| l == "Output stat for /q count=3,bytes=6"),
        "real ZooKeeper: {want:#?}"
    );
    assert_eq!(got, want);
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

/// Runs `tests/clients/zk_diff.py` between a real ZooKeeper and the member at `member`.
fn zk_diff(real: &str, member: &str, seed: u32, ops: u32) -> (bool, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/zk_diff.py");
    let out = Command::new("python3")
        .args([script, "--a", real, "--b", member])
        .args(["--seed", &seed.to_string(), "--ops", &ops.to_string()])
        .output()
        .expect("python3 is missing");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Seeded random streams of operations (creates of every mode, sets, deletes, reads with
/// watches, transactions, sessions closed) answer alike on a real ZooKeeper 3.8 and on a
/// member; a member whose frame limit refuses some of them is caught at its first difference.
#[test]
fn random_operation_streams_answer_as_real_zookeeper_does() {
    let dir = tempfile::tempdir().unwrap();
    let real = RealZooKeeper::start(dir.path());
    let (_member, zk) = start_with(&dir.path().join("member"), &[]);
    for seed in 1..=3 {
        let (same, text) = zk_diff(&real.addr, &zk, seed, 300);
        assert!(same && text.contains("same (300 operations"), "{text}");
    }
    // The checker bites: a member refusing frames over 80 bytes differs, and says where.
    let (_small, small) = start_with(&dir.path().join("small"), &["--zookeeper-max-buffer", "80"]);
    let (same, text) = zk_diff(&real.addr, &small, 4, 300);
    assert!(
        !same && text.contains("step ") && text.contains("replay: "),
        "{text}"
    );
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

/// Sessions are bounded in the cluster: past `--zookeeper-max-sessions`, a new one is refused
/// (its connection closes) while the ones held go on.
#[test]
fn sessions_past_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let zk = format!("127.0.0.1:{}", free_port());
    let _node = OneMember::start_with(
        dir.path(),
        "z1",
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        &[
            "--listen-zookeeper-urls",
            &zk,
            "--zookeeper-max-sessions",
            "2",
        ],
    );
    wait_ruok(&zk);
    let (mut first, _) = Raw::resume(&zk, 0, vec![0; 16], 0);
    let (_second, _) = Raw::resume(&zk, 0, vec![0; 16], 0);
    let mut third = TcpStream::connect(&zk).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut hello = ConnectRequest {
        time_out: 10_000,
        passwd: quorumkv_server::zk::jute::Buffer(vec![0; 16]),
        ..ConnectRequest::default()
    }
    .to_bytes();
    hello.push(0);
    let mut out = (hello.len() as u32).to_be_bytes().to_vec();
    out.extend(hello);
    third.write_all(&out).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(third.read(&mut buf), Ok(0)),
        "a third session was made"
    );
    let exists = ExistsRequest {
        path: "/".into(),
        watch: false,
    };
    assert_eq!(
        first.call(3, &exists.to_bytes()).0,
        0,
        "the held ones go on"
    );
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
