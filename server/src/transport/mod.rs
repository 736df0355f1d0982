//! Peer transport: how protocol messages travel between nodes. This module owns the wire
//! framing (bounded, checksummed frames); the TCP connections and per-peer queues build on it.

pub mod frame;
pub mod tcp;
