//! The part of every log entry the member core reads: who waits for it, when it was proposed,
//! and the member-level operation it carries, if it is one. Everything else in an entry
//! belongs to the client API that proposed it, opaque to the core.
//!
//! An entry is one protobuf message, so the core and the API each decode the same bytes and
//! skip the fields the other owns. Field numbers are fixed forever (entries stay in logs and
//! snapshots): 1 and 2 are the envelope's, 11 the member attributes, 3–10 and 12–31 etcd's
//! request (these are the fields entries had before the envelope was named, so older logs
//! replay unchanged), 40 ZooKeeper's request; each further client API takes a number of its
//! own after 40.

use std::time::{SystemTime, UNIX_EPOCH};

/// What the core reads of a log entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    /// The proposer's request id (0: nobody waits).
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The proposer's wall-clock time, in milliseconds since the epoch.
    #[prost(uint64, tag = "2")]
    pub time_ms: u64,
    /// A member's name and URLs, recorded by the core itself.
    #[prost(message, optional, tag = "11")]
    pub member_attributes: Option<MemberAttributes>,
    /// A ZooKeeper request, opaque to the core (its applier reads it).
    #[prost(bytes = "vec", optional, tag = "40")]
    pub zookeeper: Option<Vec<u8>>,
}

/// Milliseconds since the Unix epoch by this member's clock: what a proposal is stamped with.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sets an encoded entry's proposal time to `time_ms`, every other field unchanged: protobuf
/// keeps the last value of a scalar field, so appending field 2 overrides the proposer's.
pub fn restamp(entry: &mut Vec<u8>, time_ms: u64) {
    prost::encoding::uint64::encode(2, &time_ms, entry);
}

/// A member's name and URLs as the log records them (also the value of its member row).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MemberAttributes {
    /// The member's id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Its name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// The URLs it serves clients on.
    #[prost(string, repeated, tag = "3")]
    pub client_urls: Vec<String>,
    /// The URLs its peers reach it on (empty: unchanged).
    #[prost(string, repeated, tag = "4")]
    pub peer_urls: Vec<String>,
}

/// The answer to a member-level operation: the key space's revision after it (unchanged by
/// it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberApplied {
    /// The key space's revision.
    pub revision: i64,
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn restamping_replaces_the_time_and_keeps_every_other_field() {
        let env = Envelope {
            id: 3,
            time_ms: 1_000,
            member_attributes: None,
            zookeeper: Some(vec![1, 2, 3]),
        };
        let mut bytes = env.encode_to_vec();
        restamp(&mut bytes, 2_000);
        restamp(&mut bytes, u64::MAX);
        let back = Envelope::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            back,
            Envelope {
                time_ms: u64::MAX,
                ..env
            }
        );
    }
}
