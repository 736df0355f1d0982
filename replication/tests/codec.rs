//! Peer message decoding treats its input as hostile: random bytes and mutated valid messages
//! give errors, never panics or huge allocations, and valid messages round-trip.

use proptest::prelude::*;
use quorumkv_replication::raft::{RaftBody, RaftMessage};
use quorumkv_replication::zab::{History, PeerState, Vote, ZabBody, ZabMessage};
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

fn zab_samples() -> Vec<ZabMessage> {
    let m = |body| ZabMessage {
        from: 3,
        to: 1,
        epoch: 4,
        body,
    };
    let h = History {
        accepted_epoch: 4,
        current_epoch: 3,
        last_index: 20,
        last_term: 3,
        snapshot_index: 5,
        boundaries: vec![(1, 8), (3, 20)],
    };
    vec![
        m(ZabBody::Notification {
            round: 9,
            state: PeerState::Looking,
            vote: Vote {
                epoch: 3,
                last_term: 3,
                last_index: 20,
                leader: 3,
            },
        }),
        m(ZabBody::FollowerInfo(h.clone())),
        m(ZabBody::NewEpoch),
        m(ZabBody::AckEpoch {
            fresh: true,
            history: h,
        }),
        m(ZabBody::Sync {
            truncate_from: Some(7),
            snapshot: Some((
                SnapshotMeta {
                    index: 6,
                    term: 2,
                    conf: Conf::new([1, 2, 3]),
                },
                vec![1, 2, 3],
            )),
            entries: vec![Entry {
                term: 4,
                index: 7,
                kind: EntryKind::Normal,
                data: b"z".to_vec(),
            }],
        }),
        m(ZabBody::AckNewLeader { last_index: 7 }),
        m(ZabBody::UpToDate { commit: 7 }),
        m(ZabBody::Proposal {
            entries: vec![Entry {
                term: 4,
                index: 8,
                kind: EntryKind::Noop,
                data: vec![],
            }],
            commit: 7,
        }),
        m(ZabBody::Ack { index: 8 }),
        m(ZabBody::Commit { index: 8 }),
        m(ZabBody::Ping { commit: 8, ctx: 2 }),
        m(ZabBody::PingResp { ctx: 2 }),
        m(ZabBody::ReadIndex { ctx: 1 }),
        m(ZabBody::ReadIndexResp { ctx: 1, index: 8 }),
    ]
}

#[test]
fn every_zab_message_round_trips() {
    for m in zab_samples() {
        let mut b = Vec::new();
        m.encode(&mut b);
        assert_eq!(ZabMessage::decode(&b).unwrap(), m);
        for cut in 0..b.len() {
            assert!(ZabMessage::decode(&b[..cut]).is_err());
        }
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic_zab(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ZabMessage::decode(&bytes);
    }

    #[test]
    fn mutated_zab_messages_never_panic(which in 0usize..14, pos in any::<usize>(), val in any::<u8>()) {
        let mut b = Vec::new();
        zab_samples()[which].encode(&mut b);
        let at = pos % b.len();
        b[at] = val;
        if let Ok(m) = ZabMessage::decode(&b) {
            let mut again = Vec::new();
            m.encode(&mut again);
            prop_assert_eq!(again, b);
        }
    }
}
