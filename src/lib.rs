//! quorumkv: a storage engine with pluggable replication.
//!
//! This facade re-exports the member crates so a program can link one crate: the write-ahead
//! log ([`wal`]), the copy-on-write B+tree ([`btree`]), the replication protocols
//! ([`replication`]) and the node ([`server`]).

pub use quorumkv_btree as btree;
pub use quorumkv_replication as replication;
pub use quorumkv_server as server;
pub use quorumkv_wal as wal;

pub mod bench;
