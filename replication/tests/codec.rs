//! Peer message decoding treats its input as hostile: random bytes and mutated valid messages
//! give errors, never panics or huge allocations, and valid messages round-trip.

use proptest::prelude::*;
use quorumkv_replication::raft::{RaftBody, RaftMessage};
use quorumkv_replication::{Conf, Entry, EntryKind, ProtocolMessage, SnapshotMeta};

fn samples() -> Vec<RaftMessage> {
    let m = |body| RaftMessage {
        from: 1,
        to: 2,
        term: 7,
        body,
    };
    vec![
        m(RaftBody::PreVote {
            last_index: 3,
            last_term: 2,
        }),
        m(RaftBody::PreVoteResp { reject: true }),
        m(RaftBody::Vote {
            last_index: 3,
            last_term: 2,
            transfer: true,
        }),
        m(RaftBody::VoteResp { reject: false }),
        m(RaftBody::Append {
            prev_index: 9,
            prev_term: 6,
            entries: vec![
                Entry {
                    term: 7,
                    index: 10,
                    kind: EntryKind::Normal,
                    data: b"hello".to_vec(),
                },
                Entry {
                    term: 7,
                    index: 11,
                    kind: EntryKind::ConfChange,
                    data: vec![1, 4, 0, 0, 0, 0, 0, 0, 0],
                },
            ],
            commit: 8,
        }),
        m(RaftBody::AppendResp {
            reject: true,
            index: 9,
            hint: 4,
        }),
        m(RaftBody::Heartbeat { commit: 8, ctx: 77 }),
        m(RaftBody::HeartbeatResp { ctx: 77 }),
        m(RaftBody::Snapshot {
            meta: SnapshotMeta {
                index: 50,
                term: 6,
                conf: Conf::new([1, 2, 3]),
            },
            data: vec![9; 100],
        }),
        m(RaftBody::TimeoutNow),
        m(RaftBody::ReadIndex { ctx: 5 }),
        m(RaftBody::ReadIndexResp { ctx: 5, index: 40 }),
    ]
}

#[test]
fn every_message_round_trips() {
    for m in samples() {
        let mut b = Vec::new();
        m.encode(&mut b);
        assert_eq!(RaftMessage::decode(&b).unwrap(), m);
        // Every strict prefix is an error, not a panic.
        for cut in 0..b.len() {
            assert!(RaftMessage::decode(&b[..cut]).is_err());
        }
    }
}

#[test]
fn a_huge_declared_length_does_not_allocate() {
    let mut b = Vec::new();
    RaftMessage {
        from: 1,
        to: 2,
        term: 1,
        body: RaftBody::Snapshot {
            meta: SnapshotMeta::default(),
            data: vec![],
        },
    }
    .encode(&mut b);
    // Overwrite the data length (last 8 bytes) with 2^62.
    let n = b.len();
    b[n - 8..].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(RaftMessage::decode(&b).is_err());
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = RaftMessage::decode(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(which in 0usize..12, pos in any::<usize>(), val in any::<u8>()) {
        let mut b = Vec::new();
        samples()[which].encode(&mut b);
        let at = pos % b.len();
        b[at] = val;
        if let Ok(m) = RaftMessage::decode(&b) {
            // Whatever decodes, re-encodes to the same bytes.
            let mut again = Vec::new();
            m.encode(&mut again);
            prop_assert_eq!(again, b);
        }
    }
}
