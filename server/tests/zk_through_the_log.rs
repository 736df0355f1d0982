//! A ZooKeeper write travels the member's real path: proposed with envelope field 40, agreed
//! by the node, applied by the ZooKeeper applier (not etcd's), and answered to its proposer;
//! the znode stays out of etcd's view.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use quorumkv_server::etcd::local::LocalClient;
use quorumkv_server::etcd::{KvConfig, KvServer};
use quorumkv_server::member::envelope::Envelope;
use quorumkv_server::member::proposer::Failed;
use quorumkv_server::node::NodeConfig;
use quorumkv_server::pb::etcdserverpb::RangeRequest;
use quorumkv_server::zk::codes::{err, mode, op};
use quorumkv_server::zk::jute::{Data, Jute};
use quorumkv_server::zk::records::{Acl, CreateRequest, Id};
use quorumkv_server::zk::txn::{ZkAnswer, ZkDone, ZkTxn};

const SESSION: i64 = 0x0100_0000_0000_0042;

fn start(dir: &std::path::Path) -> Arc<KvServer> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peers = BTreeMap::from([(1, listener.local_addr().unwrap())]);
    let mut node = NodeConfig::new(1, peers, dir.join("member"));
    node.tick = Duration::from_millis(10);
    KvServer::start(KvConfig::new(node, "m1".into()), listener).unwrap()
}

/// Proposes `t` until a leader takes it, and returns the ZooKeeper applier's answer.
async fn write(server: &KvServer, t: ZkTxn) -> ZkAnswer {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = server.proposer();
        let id = p.fresh_id();
        let entry = Envelope {
            id,
            time_ms: 1_700_000_000_000,
            member_attributes: None,
            zookeeper: Some(t.encode_to_vec()),
        }
        .encode_to_vec();
        match p.propose(id, entry).await {
            Ok(answer) => {
                return *answer
                    .downcast::<ZkAnswer>()
                    .expect("the ZooKeeper applier's");
            }
            Err(Failed {
                never_applied: true,
                ..
            }) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(f) => panic!("proposal failed: {f:?}"),
        }
    }
}

fn create(path: &str, flags: i32) -> ZkTxn {
    ZkTxn {
        session: SESSION,
        op: op::CREATE,
        body: CreateRequest {
            path: path.into(),
            data: Data::of(b"v".to_vec()),
            acl: vec![Acl {
                perms: 31,
                id: Id {
                    scheme: "world".into(),
                    id: "anyone".into(),
                },
            }],
            flags,
        }
        .to_bytes(),
        ..ZkTxn::default()
    }
}

#[test]
fn a_zookeeper_write_is_agreed_applied_and_answered() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let kv = LocalClient::new(server.clone());
    server.node().handle().block_on(async {
        let session = ZkTxn {
            session: SESSION,
            op: op::CREATE_SESSION,
            timeout_ms: 30_000,
            password: vec![1; 16],
            ..ZkTxn::default()
        };
        assert_eq!(write(&server, session).await.result, Ok(ZkDone::Done));
        let a = write(&server, create("/app", mode::PERSISTENT)).await;
        let Ok(ZkDone::Created { path, stat }) = a.result else {
            panic!("create /app: {a:?}");
        };
        assert_eq!((path.as_str(), stat.czxid), ("/app", a.zxid));
        let e = write(&server, create("/app/e-", mode::EPHEMERAL_SEQUENTIAL)).await;
        assert!(
            matches!(&e.result, Ok(ZkDone::Created { path, .. }) if path == "/app/e-0000000000"),
            "{e:?}"
        );
        let again = write(&server, create("/app", mode::PERSISTENT)).await;
        assert_eq!(again.result, Err(err::NODE_EXISTS));
        // etcd's view of every key holds none of it.
        kv.put("etcd-key", "1").await.unwrap();
        let all = kv
            .range(RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..RangeRequest::default()
            })
            .await
            .unwrap();
        assert_eq!(all.count, 1, "{all:?}");
    });
    // The session is a lease, with its ephemeral attached.
    let (_, _, keys) = server
        .shared()
        .core
        .lessor
        .lock()
        .time_to_live(SESSION)
        .expect("the session's lease");
    assert_eq!(keys.len(), 1);
}
