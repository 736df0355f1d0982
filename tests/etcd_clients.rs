//! Real clients against real `quorumkv serve` processes on loopback: etcdctl (Debian's
//! `etcd-client`), python-etcd3 and the Node.js etcd3 client on one member, Raft and ZAB;
//! backups that cross between quorumkv and real etcd; auth; watch progress; the quota;
//! requests at the edges of etcd's API. `./scripts/test.sh` installs the clients.

mod common;
use common::cluster::*;
use common::etcd::*;
use common::free_port;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
