//! Failpoints in the log store's snapshot paths (built with the `failpoints` feature): a
//! failure after the snapshot point is recorded but before the log is reset (installing a
//! snapshot) or purged (compacting). The reopened store must be consistent: the snapshot point
//! survives, the entries after it are dense, and the store takes appends again.

mod common;

use common::small;
use quorumkv_replication::{Conf, Entry, EntryKind, HardState, LogStore, SnapshotMeta, WalStore};
use quorumkv_wal::Backend;

fn e(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: index.to_le_bytes().repeat(40),
    }
}

fn filled(dir: &std::path::Path) -> WalStore {
    let mut s = WalStore::open(dir, small(), Backend::Pwrite).unwrap();
    let hs = HardState {
        term: 2,
        vote: 1,
        current_epoch: 0,
    };
    let entries: Vec<Entry> = (1..=600).map(|i| e(i, 2)).collect();
    s.save(Some(hs), None, &entries).unwrap();
    s.sync().unwrap();
    s
}

fn snapshot_at(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term: 2,
        conf: Conf::new([1, 2, 3]),
    }
}

fn check_reopened(dir: &std::path::Path, snap: &SnapshotMeta, last: u64) {
    let mut s = WalStore::open(dir, small(), Backend::Pwrite).unwrap();
    let r = s.load().unwrap();
    assert_eq!(&r.snapshot, snap, "the recorded snapshot point survives");
    if let Some(first) = r.entries.first() {
        assert_eq!(
            first.index,
            snap.index + 1,
            "the log continues right after it"
        );
    }
    for (k, en) in r.entries.iter().enumerate() {
        assert_eq!(
            *en,
            e(snap.index + 1 + k as u64, 2),
            "entries dense and intact"
        );
    }
    assert!(snap.index + r.entries.len() as u64 <= last);
    let next = snap.index + r.entries.len() as u64 + 1;
    s.save(None, None, &[e(next, 2)]).unwrap();
    s.sync().expect("the store takes appends again");
}

/// Fills a store, makes `op` fail at `point`, and checks the reopened store continues after
/// `snap` with entries through at most `last`.
fn fails_at(
    point: &str,
    op: impl FnOnce(&mut WalStore) -> Result<(), quorumkv_replication::StoreError>,
    snap: u64,
    last: u64,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut s = filled(dir.path());
    fail::cfg(point, "return").unwrap();
    assert!(op(&mut s).is_err(), "{point}: the failure is reported");
    fail::remove(point);
    drop(s);
    check_reopened(dir.path(), &snapshot_at(snap), last);
    dir
}

#[test]
fn failure_between_recording_a_compaction_and_purging_the_log() {
    let scenario = fail::FailScenario::setup();
    let dir = fails_at("store::compact", |s| s.compact(&snapshot_at(400)), 400, 600);
    // Compaction drops nothing the log still needs: every entry after the point remains.
    let r = WalStore::open(dir.path(), small(), Backend::Pwrite)
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(r.entries.len(), 200 + 1);
    scenario.teardown();
}

#[test]
fn failure_between_recording_an_installed_snapshot_and_resetting_the_log() {
    let scenario = fail::FailScenario::setup();
    let point = "store::install_snapshot";
    // A snapshot beyond the log (the follower was far behind)...
    fails_at(point, |s| s.install_snapshot(&snapshot_at(900)), 900, 900);
    // ...and one inside it, whose stale suffix the failure left behind.
    fails_at(point, |s| s.install_snapshot(&snapshot_at(300)), 300, 600);
    scenario.teardown();
}

#[test]
fn failure_purging_wal_segments_under_compaction_is_reported_and_harmless() {
    let scenario = fail::FailScenario::setup();
    fails_at("wal::purge", |s| s.compact(&snapshot_at(500)), 500, 600);
    scenario.teardown();
}
