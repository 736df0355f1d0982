//! The quorumkv node: drives a replication protocol with real IO and serves client APIs.
//!
//! Layers, each importing only those below it:
//! - [`etcd`]: the etcd v3 personality (gRPC services, JSON gateway, RBAC, etcd's errors,
//!   backups, corruption checks, compactor, metrics) and the member that serves it;
//! - [`zk`]: the ZooKeeper personality (its wire format, znodes, sessions and client port);
//! - [`member`]: the API-neutral core every client API shares (proposing and waiting, the
//!   apply thread, snapshots, watch hub, lessor, roster, the key space's partition);
//! - [`node`] and [`transport`]: the protocol driver, its storage thread and the peers;
//! - [`mvcc`]: revisions and history over the B+tree.

pub mod duration_histogram;
pub mod etcd;
pub mod member;
pub mod mvcc;
pub mod node;
pub mod pb;
pub mod process_stats;
pub mod serve;
pub mod tls;
pub mod transport;
pub mod zk;

/// Whether this build has the storage-path failpoints compiled in (feature `failpoints`).
pub const FAILPOINTS_COMPILED: bool = cfg!(feature = "failpoints");
