//! Pluggable replication for quorumkv: the `Protocol` trait and its Raft and ZAB state machines.
//!
//! Owns consensus logic only. It performs no IO of its own: the driver in `server/` persists
//! what it asks for and carries its messages.
