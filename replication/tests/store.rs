//! One conformance suite for both log stores: the in-memory one and the one on the WAL.

mod common;

use common::small;
use quorumkv_replication::{
    Conf, Entry, EntryKind, HardState, LogStore, MemStore, SnapshotMeta, WalStore,
};
use quorumkv_wal::Backend;

fn e(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        kind: if index % 5 == 0 {
            EntryKind::Noop
        } else {
            EntryKind::Normal
        },
        data: vec![index as u8; (index % 7) as usize],
    }
}

/// Runs the suite; `reopen` turns a store into what a restart would find.
fn suite<S: LogStore>(mut store: S, reopen: impl Fn(S) -> S) {
    let r = store.load().unwrap();
    assert!(r.entries.is_empty() && r.snapshot.index == 0 && r.hard_state == HardState::default());
    let hs = HardState {
        term: 3,
        vote: 2,
        current_epoch: 1,
    };
    store
        .save(
            Some(hs),
            None,
            &(1..=50).map(|i| e(i, 1)).collect::<Vec<_>>(),
        )
        .unwrap();
    store.sync().unwrap();
    // A conflicting suffix replaces entries from 41 on.
    store
        .save(
            None,
            Some(41),
            &(41..=45).map(|i| e(i, 3)).collect::<Vec<_>>(),
        )
        .unwrap();
    store.sync().unwrap();
    let mut store = reopen(store);
    let r = store.load().unwrap();
    assert_eq!(r.hard_state, hs);
    assert_eq!(r.entries.len(), 45);
    assert_eq!(r.entries[40], e(41, 3));
    assert_eq!(r.entries.last().unwrap(), &e(45, 3));
    // Entries replaced by a save that starts inside the log.
    store
        .save(None, None, &[e(44, 4), e(45, 4), e(46, 4)])
        .unwrap();
    store.sync().unwrap();
    let r = store.load().unwrap();
    assert_eq!(r.entries.last().unwrap(), &e(46, 4));
    assert_eq!(r.entries[42], e(43, 3));
    // Several saves before one sync (a group commit): a later save may replace entries of an
    // earlier one not yet synced, or reach back into the synced log.
    store
        .save(None, None, &[e(47, 4), e(48, 4), e(49, 4)])
        .unwrap();
    store.save(None, Some(49), &[e(49, 5), e(50, 5)]).unwrap();
    store.save(None, None, &[e(51, 5)]).unwrap();
    store.sync().unwrap();
    let r = store.load().unwrap();
    assert_eq!(r.entries.len(), 51);
    assert_eq!(r.entries[47], e(48, 4));
    assert_eq!(r.entries[48], e(49, 5));
    assert_eq!(r.entries.last().unwrap(), &e(51, 5));
    store.save(None, None, &[e(52, 5), e(53, 5)]).unwrap();
    store.save(None, None, &[e(50, 6)]).unwrap();
    store.sync().unwrap();
    let r = store.load().unwrap();
    assert_eq!(r.entries.len(), 50);
    assert_eq!(r.entries[48], e(49, 5));
    assert_eq!(r.entries.last().unwrap(), &e(50, 6));
    // Compaction keeps what follows the snapshot, also when it comes between a save and its
    // sync.
    let snap = SnapshotMeta {
        index: 30,
        term: 1,
        conf: Conf::new([1, 2, 3]),
    };
    store.save(None, None, &[e(51, 6)]).unwrap();
    store.compact(&snap).unwrap();
    store.sync().unwrap();
    let mut store = reopen(store);
    let r = store.load().unwrap();
    assert_eq!(r.snapshot, snap);
    assert_eq!(r.entries.first().unwrap().index, 31);
    assert_eq!(r.entries.last().unwrap(), &e(51, 6));
    assert_eq!(r.applied, 30);
    // Installing a snapshot past the end restarts the log after it.
    let snap2 = SnapshotMeta {
        index: 100,
        term: 7,
        conf: Conf::new([1, 2]),
    };
    store.install_snapshot(&snap2).unwrap();
    store
        .save(
            Some(HardState {
                term: 7,
                vote: 0,
                current_epoch: 0,
            }),
            None,
            &[e(101, 7)],
        )
        .unwrap();
    store.sync().unwrap();
    let store = reopen(store);
    let r = store.load().unwrap();
    assert_eq!(r.snapshot, snap2);
    assert_eq!(r.entries, vec![e(101, 7)]);
    assert_eq!(r.hard_state.term, 7);
}

#[test]
fn mem_store_conformance() {
    suite(MemStore::new(), |mut s| {
        s.crash();
        s
    });
}

#[test]
fn wal_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let open = move || WalStore::open(&path, small(), Backend::Pwrite).unwrap();
    let first = open();
    suite(first, |s| {
        drop(s);
        open()
    });
}

#[test]
fn mem_store_loses_unsynced_writes_on_crash() {
    let mut s = MemStore::new();
    s.save(None, None, &[e(1, 1)]).unwrap();
    s.sync().unwrap();
    s.save(
        Some(HardState {
            term: 9,
            vote: 1,
            current_epoch: 0,
        }),
        None,
        &[e(2, 1)],
    )
    .unwrap();
    s.crash();
    let r = s.load().unwrap();
    assert_eq!(r.entries, vec![e(1, 1)]);
    assert_eq!(r.hard_state.term, 0);
}
