//! The applier's unit tests: ZooKeeper's writes on a real tree in a temporary directory,
//! one entry per transaction as the apply thread applies them.
use super::*;
use crate::member::core::CoreLimits;
use crate::zk::jute::Data;
use crate::zk::jute::Jute;
use crate::zk::records::{
    CreateRequest, CreateTtlRequest, DeleteRequest, Id, SetDataRequest, Stat,
};
use crate::zk::watches::Kind;

const SESSION: i64 = 0x0100_0000_0000_0001;

/// A key space on a real tree in a temporary directory, written through the applier one
/// entry per transaction, as the apply thread does.
struct Fixture {
    _dir: tempfile::TempDir,
    core: Arc<Core>,
    applier: ZkApplier,
    index: u64,
}

fn open(dir: &std::path::Path) -> Arc<Core> {
    let db = crate::member::open_db(&dir.join("db")).unwrap();
    let limits = CoreLimits {
        lease_ttl_min_secs: 1,
        watch_ring_bytes: 1 << 20,
        pending_max: 16,
    };
    Arc::new(Core::open(crate::mvcc::Mvcc::open(db).unwrap(), &[], limits).unwrap())
}

fn world() -> Vec<Acl> {
    vec![Acl {
        perms: 31,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let core = open(dir.path());
        let watches = Arc::new(Watches::new(1));
        let reapable = Arc::new(Reapable::default());
        let applier = ZkApplier::new(Arc::clone(&core), watches, reapable);
        Fixture {
            _dir: dir,
            core,
            applier,
            index: 0,
        }
    }

    fn write(&mut self, t: ZkTxn) -> ZkAnswer {
        self.index += 1;
        let envelope = Envelope {
            id: 0,
            time_ms: 1_700_000_000_000 + self.index,
            member_attributes: None,
            zookeeper: Some(t.encode_to_vec()),
        };
        let mut txn = self.core.mvcc.write().unwrap();
        let answer = self.applier.apply(&mut txn, &envelope, &[]).unwrap();
        txn.end_request();
        let (revision, _) = txn.commit_no_sync(self.index).unwrap();
        self.applier.committed(revision);
        *answer.downcast::<ZkAnswer>().unwrap()
    }

    fn op(&mut self, op: i32, body: impl Jute) -> ZkAnswer {
        self.write(ZkTxn {
            session: SESSION,
            op,
            body: body.to_bytes(),
            ..ZkTxn::default()
        })
    }

    fn open_session(&mut self, id: i64) {
        let a = self.write(ZkTxn {
            session: id,
            op: op::CREATE_SESSION,
            timeout_ms: 10_000,
            password: vec![7; 16],
            ..ZkTxn::default()
        });
        assert_eq!(a.result, Ok(ZkDone::Done));
    }

    fn create(&mut self, path: &str, flags: i32) -> Result<ZkDone, i32> {
        let req = CreateRequest {
            path: path.into(),
            data: Data::of(b"d".to_vec()),
            acl: world(),
            flags,
        };
        self.op(op::CREATE2, req).result
    }

    fn created(&mut self, path: &str, flags: i32) -> (String, Stat) {
        match self.create(path, flags) {
            Ok(ZkDone::Created { path, stat }) => (path, stat),
            other => panic!("create {path}: {other:?}"),
        }
    }

    fn stat(&self, path: &str) -> Option<Stat> {
        let txn = self.core.mvcc.write().unwrap();
        let node = ZkApplier::node(&txn, path).ok()??;
        let (meta_row, meta) = ZkApplier::meta(&txn, path).ok()?;
        let row = NodeRow {
            czxid: node.kv.create_revision,
            lease: node.kv.lease,
        };
        Some(znode::stat(row, &node.rec, meta_row, meta))
    }

    fn revision(&self) -> i64 {
        self.core.mvcc.snapshot().revision().unwrap()
    }
}

#[test]
fn creates_count_children_and_stamp_zxids() {
    let mut f = Fixture::new();
    let (_, a) = f.created("/a", mode::PERSISTENT);
    assert_eq!(
        (a.czxid, a.mzxid, a.pzxid, a.version, a.num_children),
        (2, 2, 2, 0, 0)
    );
    let (_, b) = f.created("/a/b", mode::PERSISTENT);
    let parent = f.stat("/a").unwrap();
    assert_eq!(
        (parent.num_children, parent.cversion, parent.pzxid),
        (1, 1, b.czxid)
    );
    // Data is untouched by a child: mzxid stays.
    assert_eq!(parent.mzxid, a.mzxid);
    let root = f.stat("/").unwrap();
    assert_eq!((root.num_children, root.czxid), (1, 0));
}

#[test]
fn sequential_names_count_creates_not_children() {
    let mut f = Fixture::new();
    f.open_session(SESSION);
    f.created("/q", mode::PERSISTENT);
    let (first, _) = f.created("/q/lock-", mode::EPHEMERAL_SEQUENTIAL);
    let (second, s) = f.created("/q/lock-", mode::EPHEMERAL_SEQUENTIAL);
    assert_eq!(
        (first.as_str(), second.as_str()),
        ("/q/lock-0000000000", "/q/lock-0000000001")
    );
    assert_eq!(s.ephemeral_owner, SESSION);
    let del = DeleteRequest {
        path: first,
        version: -1,
    };
    assert_eq!(f.op(op::DELETE, del).result, Ok(ZkDone::Done));
    let (third, _) = f.created("/q/lock-", mode::EPHEMERAL_SEQUENTIAL);
    assert_eq!(third, "/q/lock-0000000002");
    // Three creates and a delete: four changes, two children.
    let q = f.stat("/q").unwrap();
    assert_eq!((q.cversion, q.num_children), (4, 2));
}

#[test]
fn errors_win_in_zookeepers_order() {
    let mut f = Fixture::new();
    f.open_session(SESSION);
    f.created("/a", mode::PERSISTENT);
    f.created("/a/b", mode::PERSISTENT);
    f.created("/e", mode::EPHEMERAL);
    assert_eq!(f.create("/x/y", mode::PERSISTENT), Err(err::NO_NODE));
    assert_eq!(f.create("/a", mode::PERSISTENT), Err(err::NODE_EXISTS));
    assert_eq!(f.create("/", mode::PERSISTENT), Err(err::NODE_EXISTS));
    assert_eq!(
        f.create("/e/c", mode::PERSISTENT),
        Err(err::NO_CHILDREN_FOR_EPHEMERALS)
    );
    assert_eq!(f.create("a", mode::PERSISTENT), Err(err::BAD_ARGUMENTS));
    assert_eq!(f.create("/a/", mode::PERSISTENT), Err(err::BAD_ARGUMENTS));
    assert_eq!(f.create("/c", mode::CONTAINER), Err(err::BAD_ARGUMENTS));
    assert_eq!(
        f.create("/t", mode::PERSISTENT_WITH_TTL),
        Err(err::BAD_ARGUMENTS)
    );
    assert_eq!(f.create("/t", 9), Err(err::BAD_ARGUMENTS));
    // An empty ACL is refused before the missing parent is noticed.
    let no_acl = CreateRequest {
        path: "/x/y".into(),
        ..CreateRequest::default()
    };
    assert_eq!(f.op(op::CREATE, no_acl).result, Err(err::INVALID_ACL));
    // Delete: a missing node, then the version, then the children.
    let del = |path: &str, version| DeleteRequest {
        path: path.into(),
        version,
    };
    assert_eq!(f.op(op::DELETE, del("/zz", 5)).result, Err(err::NO_NODE));
    assert_eq!(f.op(op::DELETE, del("/a", 5)).result, Err(err::BAD_VERSION));
    assert_eq!(f.op(op::DELETE, del("/a", 0)).result, Err(err::NOT_EMPTY));
    let set = SetDataRequest {
        path: "/a".into(),
        data: Data::of(b"x".to_vec()),
        version: 3,
    };
    assert_eq!(f.op(op::SET_DATA, set).result, Err(err::BAD_VERSION));
    // The TTL op itself: a TTL of 0 is refused, a container needs createContainer.
    let ttl = CreateTtlRequest {
        path: "/t".into(),
        acl: world(),
        flags: mode::PERSISTENT_WITH_TTL,
        ttl: 0,
        ..CreateTtlRequest::default()
    };
    assert_eq!(f.op(op::CREATE_TTL, ttl).result, Err(err::BAD_ARGUMENTS));
    let container = CreateRequest {
        path: "/c".into(),
        acl: world(),
        flags: mode::CONTAINER,
        ..CreateRequest::default()
    };
    assert!(matches!(
        f.op(op::CREATE_CONTAINER, container).result,
        Ok(ZkDone::Created { .. })
    ));
    assert_eq!(
        f.op(op::CHECK, PathOnly("/a")).result,
        Err(err::UNIMPLEMENTED)
    );
}

/// A record of only a path, for ops that take one.
struct PathOnly(&'static str);

impl Jute for PathOnly {
    const BYTES_MIN: usize = 4;
    fn read(_: &mut Reader<'_>) -> Result<Self, JuteError> {
        unreachable!("only written")
    }
    fn write(&self, w: &mut crate::zk::jute::Writer) {
        w.ustring(self.0);
    }
}

#[test]
fn a_refused_write_changes_nothing() {
    let mut f = Fixture::new();
    f.created("/a", mode::PERSISTENT);
    let before = (f.revision(), f.stat("/a"), f.stat("/"));
    let answer = f.create("/a", mode::PERSISTENT);
    assert_eq!(answer, Err(err::NODE_EXISTS));
    assert_eq!((f.revision(), f.stat("/a"), f.stat("/")), before);
}

#[test]
fn data_and_acl_versions_move_apart() {
    let mut f = Fixture::new();
    let (_, created) = f.created("/a", mode::PERSISTENT);
    let set = SetDataRequest {
        path: "/a".into(),
        data: Data::of(b"longer".to_vec()),
        version: 0,
    };
    let Ok(ZkDone::Set(s)) = f.op(op::SET_DATA, set).result else {
        panic!("setData failed");
    };
    assert_eq!((s.version, s.data_length, s.czxid), (1, 6, created.czxid));
    assert!(s.mzxid > created.mzxid && s.mtime > created.mtime);
    let acl = SetAclRequest {
        path: "/a".into(),
        acl: world(),
        version: 0,
    };
    let Ok(ZkDone::Set(a)) = f.op(op::SET_ACL, acl).result else {
        panic!("setACL failed");
    };
    // setACL bumps the ACL version only: the data's mzxid and version stay.
    assert_eq!((a.aversion, a.version, a.mzxid), (1, 1, s.mzxid));
    let bad = SetAclRequest {
        path: "/a".into(),
        acl: vec![Acl {
            perms: 31,
            id: Id {
                scheme: "world".into(),
                id: "someone".into(),
            },
        }],
        version: -1,
    };
    assert_eq!(f.op(op::SET_ACL, bad).result, Err(err::INVALID_ACL));
}

#[test]
fn closing_a_session_removes_its_ephemerals_in_one_revision() {
    let mut f = Fixture::new();
    f.open_session(SESSION);
    f.open_session(SESSION + 1);
    f.created("/p", mode::PERSISTENT);
    f.created("/q", mode::PERSISTENT);
    f.created("/p/e1", mode::EPHEMERAL);
    f.created("/p/e2", mode::EPHEMERAL_SEQUENTIAL);
    f.created("/q/e3", mode::EPHEMERAL);
    let other = ZkTxn {
        session: SESSION + 1,
        op: op::CREATE,
        body: CreateRequest {
            path: "/q/theirs".into(),
            acl: world(),
            flags: mode::EPHEMERAL,
            ..CreateRequest::default()
        }
        .to_bytes(),
        ..ZkTxn::default()
    };
    assert!(f.write(other).result.is_ok());
    let before = f.revision();
    let watches = Arc::clone(&f.applier.watches);
    let (conn, notes) = watches.connect(1);
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(async {
            let (mut g, ()) = watches.read(conn, || ((), before)).await;
            assert!(g.watch(Kind::Data, "/p/e1") && g.watch(Kind::Child, "/q"));
        });
    let close = f.write(ZkTxn {
        session: SESSION,
        op: op::CLOSE_SESSION,
        ..ZkTxn::default()
    });
    assert_eq!(close.result, Ok(ZkDone::Done));
    assert_eq!(close.zxid, before + 1, "one revision for the whole close");
    for gone in ["/p/e1", "/p/e20000000001", "/q/e3"] {
        assert_eq!(f.stat(gone), None, "{gone}");
    }
    let (p, q) = (f.stat("/p").unwrap(), f.stat("/q").unwrap());
    assert_eq!((p.num_children, p.pzxid), (0, close.zxid));
    assert_eq!((q.num_children, q.pzxid), (1, close.zxid));
    assert!(f.stat("/q/theirs").is_some());
    assert!(!f.core.lessor.lock().contains(SESSION));
    // Watchers armed before the close heard it once it committed.
    let mut notes = notes;
    let mut heard = Vec::new();
    while let Ok(n) = notes.try_recv() {
        heard.push(n);
    }
    assert_eq!(heard.len(), 2, "a deletion and a parent's children");
    assert!(heard[0].frame.ends_with(b"/p/e1") && heard[1].frame.ends_with(b"/q"));
    assert!(
        heard.iter().all(|n| n.revision == close.zxid),
        "each tells the revision of the close, the zxid its reply carries"
    );
    // A closed session is gone: closing it again, or creating an ephemeral for it, fails.
    let again = f.write(ZkTxn {
        session: SESSION,
        op: op::CLOSE_SESSION,
        ..ZkTxn::default()
    });
    assert_eq!(again.result, Err(err::SESSION_EXPIRED));
    assert_eq!(
        f.create("/p/late", mode::EPHEMERAL),
        Err(err::SESSION_EXPIRED)
    );
}

#[test]
fn sessions_and_their_ephemerals_load_again() {
    let mut f = Fixture::new();
    f.open_session(SESSION);
    f.created("/e", mode::EPHEMERAL);
    // What a restart or a snapshot install starts from: a lessor with nothing.
    let core = Arc::clone(&f.core);
    core.lessor.lock().clear();
    ZkApplier::load(&core, &Reapable::default()).unwrap();
    let (_, _, keys) = core.lessor.lock().time_to_live(SESSION).unwrap();
    assert_eq!(keys, vec![znode::node_key("/e")]);
}

fn multi_body(ops: &[(i32, Vec<u8>)]) -> Vec<u8> {
    use crate::zk::records::MultiHeader;
    let mut body = Vec::new();
    for (kind, rec) in ops {
        body.extend(
            MultiHeader {
                kind: *kind,
                done: false,
                err: -1,
            }
            .to_bytes(),
        );
        body.extend_from_slice(rec);
    }
    body.extend(
        MultiHeader {
            kind: -1,
            done: true,
            err: -1,
        }
        .to_bytes(),
    );
    body
}

fn create_rec(path: &str) -> Vec<u8> {
    CreateRequest {
        path: path.into(),
        acl: world(),
        ..CreateRequest::default()
    }
    .to_bytes()
}

#[test]
fn a_multi_is_one_revision_or_nothing() {
    use crate::zk::records::CheckVersionRequest;
    let mut f = Fixture::new();
    f.created("/a", mode::PERSISTENT);
    let before = f.revision();
    let check = |version| {
        CheckVersionRequest {
            path: "/a".into(),
            version,
        }
        .to_bytes()
    };
    let ok = f.write(ZkTxn {
        op: op::MULTI,
        body: multi_body(&[
            (op::CHECK, check(0)),
            (op::CREATE, create_rec("/a/x")),
            (op::CREATE2, create_rec("/a/y")),
        ]),
        ..ZkTxn::default()
    });
    let Ok(ZkDone::Multi(results)) = ok.result else {
        panic!("{ok:?}")
    };
    assert_eq!(ok.zxid, before + 1, "one revision for the whole multi");
    assert!(results.iter().all(|r| r.result.is_ok()));
    assert_eq!(f.stat("/a").unwrap().num_children, 2);
    // The second op fails: nothing applies, and the results say where.
    let failed = f.write(ZkTxn {
        op: op::MULTI,
        body: multi_body(&[
            (op::CREATE, create_rec("/a/z")),
            (op::CHECK, check(7)),
            (op::CREATE, create_rec("/a/w")),
        ]),
        ..ZkTxn::default()
    });
    let Ok(ZkDone::Multi(results)) = failed.result else {
        panic!("{failed:?}")
    };
    let codes: Vec<_> = results.iter().map(|r| r.result.clone().err()).collect();
    assert_eq!(
        codes,
        [
            Some(err::OK),
            Some(err::BAD_VERSION),
            Some(err::RUNTIME_INCONSISTENCY)
        ]
    );
    assert_eq!(failed.zxid, before + 1, "a failed multi takes no revision");
    assert_eq!(f.stat("/a/z"), None);
    assert_eq!(f.stat("/a").unwrap().num_children, 2);
}

#[test]
fn acls_are_enforced_with_the_entrys_identities() {
    let mut f = Fixture::new();
    let me = crate::zk::acl::authenticate("digest", b"me:pw", None).unwrap();
    let locked = ZkTxn {
        op: op::CREATE,
        body: CreateRequest {
            path: "/mine".into(),
            acl: vec![Acl {
                perms: crate::zk::codes::perm::ALL,
                id: Id {
                    scheme: "auth".into(),
                    id: String::new(),
                },
            }],
            ..CreateRequest::default()
        }
        .to_bytes(),
        auth: me.clone(),
        ..ZkTxn::default()
    };
    assert!(f.write(locked).result.is_ok());
    // Anyone else: no create below it, no set, no delete; an unknown path is NO_NODE first.
    assert_eq!(f.create("/mine/x", mode::PERSISTENT), Err(err::NO_AUTH));
    let set = SetDataRequest {
        path: "/mine".into(),
        data: Data::of(b"x".to_vec()),
        version: 9,
    };
    assert_eq!(f.op(op::SET_DATA, set.clone()).result, Err(err::NO_AUTH));
    assert_eq!(f.create("/mine/x/y", mode::PERSISTENT), Err(err::NO_NODE));
    let mut mine = ZkTxn {
        op: op::SET_DATA,
        body: set.to_bytes(),
        auth: me,
        ..ZkTxn::default()
    };
    assert_eq!(f.write(mine.clone()).result, Err(err::BAD_VERSION));
    mine.body = SetDataRequest { version: -1, ..set }.to_bytes();
    assert!(matches!(f.write(mine).result, Ok(ZkDone::Set(_))));
}

#[test]
fn only_due_containers_and_ttl_nodes_are_reaped() {
    let mut f = Fixture::new();
    let container = CreateRequest {
        path: "/c".into(),
        acl: world(),
        flags: mode::CONTAINER,
        ..CreateRequest::default()
    };
    assert!(f.op(op::CREATE_CONTAINER, container).result.is_ok());
    let ttl = CreateTtlRequest {
        path: "/t".into(),
        acl: world(),
        flags: mode::PERSISTENT_WITH_TTL,
        ttl: 1_000_000,
        ..CreateTtlRequest::default()
    };
    assert!(f.op(op::CREATE_TTL, ttl).result.is_ok());
    assert_eq!(f.applier.reapable.list(), ["/c", "/t"]);
    let reap = |f: &mut Fixture, path: &str| {
        let mut w = crate::zk::jute::Writer::default();
        w.ustring(path);
        f.write(ZkTxn {
            op: op::DELETE_CONTAINER,
            body: w.bytes,
            ..ZkTxn::default()
        })
        .result
    };
    // A container never given a child stays; so does a TTL node within its TTL.
    assert_eq!(reap(&mut f, "/c"), Err(err::BAD_VERSION));
    assert_eq!(reap(&mut f, "/t"), Err(err::BAD_VERSION));
    f.created("/c/child", mode::PERSISTENT);
    assert_eq!(reap(&mut f, "/c"), Err(err::NOT_EMPTY));
    let del = DeleteRequest {
        path: "/c/child".into(),
        version: -1,
    };
    assert!(f.op(op::DELETE, del).result.is_ok());
    assert_eq!(reap(&mut f, "/c"), Ok(ZkDone::Done));
    assert_eq!(f.stat("/c"), None);
    assert_eq!(f.applier.reapable.list(), ["/t"]);
    assert_eq!(reap(&mut f, "/a"), Err(err::NO_NODE));
}
