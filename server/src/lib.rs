//! The quorumkv node: drives a replication protocol with real IO and serves client APIs.
//!
//! Owns the state machine above the replicated log: an MVCC key space with etcd's semantics,
//! stored in the B+tree ([`mvcc`]). The IO driver, peer transport and etcd v3 API build on it.

pub mod api;
pub mod cluster;
pub mod duration_histogram;
pub mod kv;
pub mod metrics;
pub mod mvcc;
pub mod node;
pub mod pb;
pub mod process_stats;
pub mod serve;
pub mod transport;

/// Whether this build has the storage-path failpoints compiled in (feature `failpoints`).
pub const FAILPOINTS_COMPILED: bool = cfg!(feature = "failpoints");
