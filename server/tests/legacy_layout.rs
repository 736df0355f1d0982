//! A tree written in the key space's legacy layout (versions under their user key, a current
//! row per live key, revision rows holding only the key) is converted to revision rows when
//! it opens, and then serves the same versions at every revision, the same events and the
//! same compaction point; opening it again changes nothing. Rows outside the revision rows
//! move from an older prefix to a newer one (`Mvcc::move_prefix`) durably and at most once.

mod common;

use common::{live_at, open, rows};
use quorumkv_server::mvcc::{KeyValue, Mvcc, RangeOpts, keys, kv};

fn version(key: &[u8], value: &[u8], create: i64, rev: i64, ver: i64) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        create_revision: create,
        mod_revision: rev,
        version: ver,
        value: value.to_vec(),
        lease: 0,
    }
}

/// Writes, in the legacy layout: `a` put at 2 and 3, `b` put at 4 and deleted at 5, `c` put
/// at 6, compacted at 3 (so `a`'s version of 2 and the revision rows below 3 are gone).
fn write_legacy(m: &Mvcc) {
    let mut w = m.db().begin_write().unwrap();
    let mut put = |v: &KeyValue, dead: bool| {
        let main = v.mod_revision as u64;
        w.insert(&keys::history(&v.key, main, 0), &kv::encode(v, dead))
            .unwrap();
        w.insert(&keys::revision(main, 0), &v.key).unwrap();
    };
    put(&version(b"a", b"a3", 2, 3, 2), false);
    put(&version(b"b", b"b4", 4, 4, 1), false);
    put(&version(b"b", b"", 0, 5, 0), true);
    put(&version(b"c", b"c6", 6, 6, 1), false);
    for key in [&b"a"[..], b"c"] {
        let mut row = vec![keys::CURRENT];
        row.extend_from_slice(key);
        w.insert(&row, b"legacy current row").unwrap();
    }
    w.insert(keys::META_REV, &6u64.to_le_bytes()).unwrap();
    w.insert(keys::META_COMPACT, &3u64.to_le_bytes()).unwrap();
    w.set_user_value(17);
    w.commit().unwrap();
}

fn live(m: &Mvcc, rev: i64) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    live_at(m, rev)
        .into_iter()
        .map(|kv| (kv.key, kv.value, kv.version))
        .collect()
}

#[test]
fn a_legacy_tree_is_converted_on_open() {
    let dir = tempfile::tempdir().unwrap();
    write_legacy(&open(dir.path(), "db"));
    let m = open(dir.path(), "db");
    let t = |k: &[u8], v: &[u8], ver: i64| (k.to_vec(), v.to_vec(), ver);
    assert_eq!(live(&m, 0), vec![t(b"a", b"a3", 2), t(b"c", b"c6", 1)]);
    assert_eq!(live(&m, 4), vec![t(b"a", b"a3", 2), t(b"b", b"b4", 1)]);
    assert_eq!(live(&m, 5), vec![t(b"a", b"a3", 2)]);
    let snap = m.snapshot();
    assert_eq!(snap.applied_index(), 17);
    assert_eq!(snap.compact_revision().unwrap(), 3);
    assert!(
        snap.range(
            b"a",
            b"",
            RangeOpts {
                revision: 2,
                ..RangeOpts::default()
            }
        )
        .is_err()
    );
    let events = snap.events(4, 6, 100).unwrap();
    let summary: Vec<(bool, Vec<u8>, Option<Vec<u8>>)> = events
        .into_iter()
        .map(|e| (e.delete, e.kv.key, e.prev.map(|p| p.value)))
        .collect();
    assert_eq!(
        summary,
        vec![
            (false, b"b".to_vec(), None),
            (true, b"b".to_vec(), Some(b"b4".to_vec())),
            (false, b"c".to_vec(), None),
        ]
    );
    let hash = snap.hash(0).unwrap();
    drop(snap);
    // Only revision rows and the meta rows are left; a second open changes nothing.
    let after = rows(&m);
    assert!(
        after
            .iter()
            .all(|(k, _)| k[0] == keys::REVISIONS || k[0] == b'm'),
        "{after:?}"
    );
    assert_eq!(after.len(), 4 + 2);
    drop(m);
    let m = open(dir.path(), "db");
    assert_eq!(rows(&m), after);
    assert_eq!(m.snapshot().hash(0).unwrap(), hash);
    // And it takes writes on top.
    let mut w = m.write().unwrap();
    assert_eq!(w.put(b"a", b"a7", 0).unwrap().map(|p| p.version), Some(2));
    w.commit(18).unwrap();
    assert_eq!(live(&m, 0), vec![t(b"a", b"a7", 3), t(b"c", b"c6", 1)]);
}

/// `move_prefix` renames rows under one prefix byte to another in one durable transaction,
/// leaves every other row and the applied index alone, and does nothing when there is
/// nothing to move.
#[test]
fn rows_move_from_one_prefix_to_another_durably() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path(), "db");
    let mut w = m.write().unwrap();
    w.put(b"k", b"v", 0).unwrap();
    w.commit(5).unwrap();
    let mut w = m.db().begin_write().unwrap();
    w.insert(b"u\x00\x01", b"one").unwrap();
    w.insert(b"u\x00\x02", b"two").unwrap();
    w.insert(b"t", b"untouched").unwrap();
    w.commit().unwrap();
    let before = rows(&m);
    assert_eq!(m.move_prefix(b'u', b'M').unwrap(), 2);
    assert_eq!(m.move_prefix(b'u', b'M').unwrap(), 0);
    drop(m);
    let m = open(dir.path(), "db");
    let expected: Vec<_> = before
        .into_iter()
        .map(|(mut k, v)| {
            if k[0] == b'u' {
                k[0] = b'M';
            }
            (k, v)
        })
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(rows(&m), expected);
    assert_eq!(m.snapshot().applied_index(), 5);
    assert_eq!(live(&m, 0), vec![(b"k".to_vec(), b"v".to_vec(), 1)]);
}
