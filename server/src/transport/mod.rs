//! Peer transport: how protocol messages travel between nodes. This module owns the wire
//! framing (bounded, checksummed frames); the TCP connections and per-peer queues build on it,
//! and so do the streams that carry state-machine snapshots. Per-peer traffic is counted for
//! the metrics.

pub mod frame;
pub mod snapshot;
pub mod tcp;
pub mod traffic;
