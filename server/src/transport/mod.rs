//! Peer transport: how protocol messages travel between nodes. This module owns the wire
//! framing (bounded, checksummed frames) and who may open a connection (TLS, and a proof of
//! membership on every connection); the TCP connections and per-peer queues build on it,
//! and so do the streams that carry state-machine snapshots. Per-peer traffic is counted for
//! the metrics.

pub mod frame;
pub mod peer_auth;
pub mod peer_stream;
pub mod security;
pub mod snapshot;
pub mod tcp;
pub mod traffic;
