//! quorumkv: a storage engine with pluggable replication.
//!
//! This facade re-exports the member crates so a program can link one crate: the write-ahead
//! log ([`wal`]), the copy-on-write B+tree ([`btree`]), the replication protocols
//! ([`replication`]) and the node ([`server`]).
//!
//! A durable replicated log, embedded: a one-node cluster here (a real one lists every peer),
//! on Raft (or `ProtocolKind::Zab`):
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//! use quorumkv::server::node::{Node, NodeConfig};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let peers = BTreeMap::from([(1, listener.local_addr().unwrap())]);
//! let mut cfg = NodeConfig::new(1, peers, dir.path().join("log"));
//! cfg.tick = Duration::from_millis(10);
//! let node = Node::start(cfg, listener).unwrap();
//! // Retry until the node has elected itself.
//! let index = loop {
//!     match node.append_blocking(b"hello".to_vec()) {
//!         Ok(i) => break i,
//!         Err(_) => std::thread::sleep(Duration::from_millis(10)),
//!     }
//! };
//! let entries = node.committed(index, index);
//! assert_eq!(entries[0].data, b"hello");
//! ```
//!
//! The replicated key space on top, embedded: a member of etcd's model (revisions, leases,
//! watches, transactions) called in-process through [`server::etcd::local::LocalClient`], with
//! the same validation and linearizable reads as the served etcd API:
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//! use quorumkv::server::etcd::local::LocalClient;
//! use quorumkv::server::etcd::{KvConfig, KvServer};
//! use quorumkv::server::node::NodeConfig;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let peers = BTreeMap::from([(1, listener.local_addr().unwrap())]);
//! let mut node = NodeConfig::new(1, peers, dir.path().join("member"));
//! node.tick = Duration::from_millis(10);
//! let server = KvServer::start(KvConfig::new(node, "m1".into()), listener).unwrap();
//! let kv = LocalClient::new(server.clone());
//! server.node().handle().block_on(async {
//!     // A write waits for the member to elect itself, then for commit and apply.
//!     let rev = kv.put("config/a", "1").await.unwrap();
//!     kv.put("config/b", "2").await.unwrap();
//!     let got = kv.get("config/a").await.unwrap().unwrap();
//!     assert_eq!((got.value.as_slice(), got.mod_revision), (&b"1"[..], rev));
//!     assert_eq!(kv.get_prefix("config/").await.unwrap().len(), 2);
//!     assert_eq!(kv.delete("config/a").await.unwrap(), 1);
//! });
//! ```

pub use quorumkv_btree as btree;
pub use quorumkv_replication as replication;
pub use quorumkv_server as server;
pub use quorumkv_wal as wal;
