//! The quorumkv node: drives a replication protocol with real IO and serves client APIs.
//!
//! Owns the runtime (tokio), peer transport, the MVCC state machine and the etcd v3 API.
