//! The key space's snapshot file: a written snapshot restores to an identical tree, and a
//! damaged or foreign file is refused with the tree left as it was.

use proptest::prelude::*;
mod common;

use common::{open, rows};
use quorumkv_server::member::snapshot_file;
use quorumkv_server::mvcc::Mvcc;

fn filled(dir: &std::path::Path, name: &str, n: usize, applied: u64) -> Mvcc {
    let m = open(dir, name);
    let mut t = m.write().unwrap();
    for i in 0..n {
        t.put(
            format!("key/{i:04}").as_bytes(),
            &vec![i as u8; i % 3000],
            0,
        )
        .unwrap();
        t.end_request();
    }
    t.delete_range(b"key/0001", b"key/0010").unwrap();
    t.commit(applied).unwrap();
    m
}

#[test]
fn a_snapshot_restores_to_the_same_tree_and_replaces_what_was_there() {
    let dir = tempfile::tempdir().unwrap();
    let src = filled(dir.path(), "src", 500, 777);
    let dst = filled(dir.path(), "dst", 50, 3);
    let path = dir.path().join("snap");
    let (applied, size) = snapshot_file::write(&src, &path).unwrap();
    assert_eq!(applied, 777);
    assert_eq!(size, std::fs::metadata(&path).unwrap().len());
    assert_eq!(snapshot_file::restore(&dst, &path).unwrap(), 777);
    assert_eq!(rows(&dst), rows(&src));
    assert_eq!(dst.snapshot().applied_index(), 777);
    assert_eq!(
        dst.snapshot().revision().unwrap(),
        src.snapshot().revision().unwrap()
    );
}

#[test]
fn damaged_snapshots_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = filled(dir.path(), "src", 200, 50);
    let dst = filled(dir.path(), "dst", 20, 9);
    let before = rows(&dst);
    let path = dir.path().join("snap");
    snapshot_file::write(&src, &path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad");
    let mut cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        good[..good.len() - 1].to_vec(),
        good[..good.len() / 2].to_vec(),
        vec![0u8; 4096],
    ];
    for at in [0, 9, good.len() / 3, good.len() - 40, good.len() - 1] {
        let mut b = good.clone();
        b[at] ^= 0x40;
        cases.push(b);
    }
    for case in cases {
        std::fs::write(&bad, &case).unwrap();
        assert!(snapshot_file::restore(&dst, &bad).is_err());
        assert_eq!(rows(&dst), before);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// A file with a valid digest but hostile content (any bytes after the magic) is refused
    /// or restored, never a panic or a huge allocation.
    #[test]
    fn hostile_content_with_a_valid_digest_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..3000),
    ) {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let dst = open(dir.path(), "dst");
        let mut b = snapshot_file::SNAPSHOT_MAGIC.to_vec();
        b.extend_from_slice(&body);
        b.resize(b.len().div_ceil(512) * 512, 0);
        let digest = Sha256::digest(&b);
        b.extend_from_slice(&digest);
        let path = dir.path().join("snap");
        std::fs::write(&path, &b).unwrap();
        let _ = snapshot_file::restore(&dst, &path);
    }
}
