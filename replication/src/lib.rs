//! Pluggable replication for quorumkv: one [`Protocol`] trait, Raft and ZAB behind it as pure
//! state machines, a [`LogStore`] that persists what they hand out (on the write-ahead log or in
//! memory), a deterministic cluster simulator and a linearizability checker.
//!
//! Owns consensus logic only. It performs no IO of its own in the protocols: the driver (in
//! `server/`, or the simulator here) persists what they ask for, carries their messages and
//! feeds them time. It must never let a protocol acknowledge what a crash could make it forget.

pub mod checker;
pub mod codec;
pub mod confs;
pub mod harness;
pub mod log;
pub mod protocol;
pub mod raft;
pub mod reads;
pub mod sim;
mod steady;
pub mod store;
pub mod types;
pub mod zab;

pub use protocol::{Protocol, ProtocolMessage, Ready, Restored};
pub use store::{LogStore, MemStore, StoreError, WalStore};
pub use types::*;
