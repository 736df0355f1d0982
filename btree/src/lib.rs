//! The persistent copy-on-write B+tree of quorumkv.
//!
//! Owns the page file, the tree and its one-fsync commits. It never talks to the network and
//! never depends on the write-ahead log: the server checkpoints the log into it.
