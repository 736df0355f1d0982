//! etcd's snapshot format, both ways: a key space written as etcd's snapshot and restored
//! into a new data directory holds the same versions, revisions, compaction point and leases;
//! damaged files are refused with an error (never a panic) and leave no data directory behind,
//! and an occupied data directory is left alone.

mod common;

use common::{live_at, open, rows};
use quorumkv_server::etcd::{backup as etcd_snapshot, open_db, restore as etcd_restore};
use quorumkv_server::mvcc::Mvcc;

fn filled(dir: &std::path::Path) -> Mvcc {
    let m = open(dir, "src");
    let mut t = m.write().unwrap();
    for i in 0..600usize {
        t.put(
            format!("key/{:04}", i % 400).as_bytes(),
            &vec![i as u8; (i * 37) % 5000],
            0,
        )
        .unwrap();
        t.end_request();
    }
    t.delete_range(b"key/0001", b"key/0010").unwrap();
    t.end_request();
    t.compact(300).unwrap();
    t.put(b"after", b"compaction", 0).unwrap();
    t.commit(99).unwrap();
    m
}

/// A key, its value, and its create and mod revisions and version.
type Version = (Vec<u8>, Vec<u8>, i64, i64, i64);

/// Every live key's version at `rev` (0: current).
fn state(m: &Mvcc, rev: i64) -> Vec<Version> {
    live_at(m, rev)
        .into_iter()
        .map(|kv| {
            (
                kv.key,
                kv.value,
                kv.create_revision,
                kv.mod_revision,
                kv.version,
            )
        })
        .collect()
}

#[test]
fn a_restored_snapshot_serves_the_same_versions() {
    let dir = tempfile::tempdir().unwrap();
    let src = filled(dir.path());
    let file = dir.path().join("snap.db");
    let size = etcd_snapshot::write(&src, &[], &file).unwrap();
    assert_eq!(size, std::fs::metadata(&file).unwrap().len());
    let target = dir.path().join("restored");
    let report = etcd_restore::restore(&file, &target, false).unwrap();
    let s = src.snapshot();
    assert_eq!(report.revision, s.revision().unwrap());
    assert_eq!(report.compact_revision, 300);
    let dst = Mvcc::open(open_db(&target.join("member/db")).unwrap()).unwrap();
    let d = dst.snapshot();
    assert_eq!(d.revision().unwrap(), s.revision().unwrap());
    assert_eq!(d.compact_revision().unwrap(), 300);
    assert_eq!(d.applied_index(), 0, "the restored log starts from scratch");
    // Row for row the same key space; the restore also records the (default) auth state.
    let restored: Vec<_> = rows(&dst)
        .into_iter()
        .filter(|(k, _)| k[0] != b'A')
        .collect();
    assert_eq!(restored, rows(&src));
    for rev in [0, 300, 450, 601] {
        assert_eq!(state(&dst, rev), state(&src, rev), "at revision {rev}");
    }
    assert_eq!(report.keys as usize, state(&src, 0).len());
    // Watchers resuming after the compaction see the same events.
    assert_eq!(
        d.events(300, 700, usize::MAX).unwrap(),
        s.events(300, 700, usize::MAX).unwrap()
    );
    // A second restore into the same directory is refused.
    let again = etcd_restore::restore(&file, &target, false).unwrap_err();
    assert!(again.contains("exists"), "{again}");
}

#[test]
fn damaged_snapshots_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let src = filled(dir.path());
    let file = dir.path().join("snap.db");
    etcd_snapshot::write(&src, &[], &file).unwrap();
    let good = std::fs::read(&file).unwrap();
    let bad = dir.path().join("bad.db");
    let mut n = 0;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for case in 0..60 {
        let mut b = good.clone();
        match case {
            0 => b.truncate(b.len() / 2),
            1 => b = vec![0u8; 3 * 4096 + 32],
            _ => {
                for _ in 0..1 + case % 4 {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let at = (rng % (b.len() as u64 - 32)) as usize;
                    b[at] ^= 1 << (rng >> 61);
                }
            }
        }
        std::fs::write(&bad, &b).unwrap();
        // The trailer catches every change...
        let target = dir.path().join(format!("checked-{case}"));
        assert!(etcd_restore::restore(&bad, &target, false).is_err());
        // ...and without it the structure checks refuse or the restore completes.
        let target = dir.path().join(format!("unchecked-{case}"));
        if etcd_restore::restore(&bad, &target, true).is_ok() {
            n += 1;
        } else {
            assert!(
                !target.join("member").exists(),
                "a failed restore leaves nothing behind"
            );
        }
    }
    assert!(n < 60, "some damage must be noticed without the trailer");
}
