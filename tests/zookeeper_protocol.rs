//! The ZooKeeper protocol on one member, spoken by hand and held to real ZooKeeper: pipelined
//! requests answered in order, notifications before the replies that show their change,
//! setWatches for a returning client, sessions that end or expire, hostile bytes that close
//! only their own connection, the session limit, and random operation streams and quotas
//! answered as a real ZooKeeper 3.8 answers them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::zk_member::*;
use common::zk_raw::{Raw, create};
use common::zookeeper::RealZooKeeper;
use common::{OneMember, four_letter, free_port};
use quorumkv_server::zk::jute::{Jute, Reader};
use quorumkv_server::zk::records::*;

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

/// A change fired while the reply of the read that armed its watch is on its way is told after
/// that reply, not before: ZooKeeper's clients register a read's watcher when its reply comes,
/// so an earlier notification would find none and the change would never be heard. The member
/// holds the reply of each read that arms a watch back half a second
/// (`zk::after_watch_armed`) while another session changes the node.
#[test]
fn a_watch_fired_while_its_read_is_answered_is_told_after_the_reply() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, zk) = start_with_env(
        dir.path(),
        &[],
        &[("FAILPOINTS", "zk::after_watch_armed=return(500)")],
    );
    let mut a = Raw::connect(&zk);
    create(&mut a, "/armed");
    let get = GetDataRequest {
        path: "/armed".into(),
        watch: true,
    };
    let xid = a.send(4, &get.to_bytes());
    std::thread::sleep(Duration::from_millis(100));
    let mut b = Raw::connect(&zk);
    let set = SetDataRequest {
        path: "/armed".into(),
        data: quorumkv_server::zk::jute::Data::of(b"new".to_vec()),
        version: -1,
    };
    assert_eq!(b.call(5, &set.to_bytes()).0, 0);
    let f = a.frame();
    let h: ReplyHeader = Reader::new(&f).record().unwrap();
    assert_eq!(
        h.xid, xid,
        "the notification came before the reply of the read that armed its watch"
    );
    let got: GetDataResponse = Reader::new(&f[16..]).record().unwrap();
    assert_eq!(
        got.stat.version, 0,
        "the read's view is from before the set"
    );
    let f = a.frame();
    let mut r = Reader::new(&f);
    let h: ReplyHeader = r.record().unwrap();
    assert_eq!(h.xid, -1, "a notification follows");
    let e: WatcherEvent = r.record().unwrap();
    assert_eq!((e.kind, e.path.as_str()), (3, "/armed"));
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
