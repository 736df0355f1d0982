//! Failpoints on snapshot install (built with the `failpoints` feature): a failure after every
//! row was replaced but before the commit, and one inside the tree's commit itself. Either
//! way the install reports the error, the reopened tree holds exactly what it held before,
//! and a retried install then succeeds.

mod common;

use common::{open, rows};
use quorumkv_server::member::snapshot_file;
use quorumkv_server::mvcc::Mvcc;

fn filled(dir: &std::path::Path, name: &str, n: usize, applied: u64) -> Mvcc {
    let m = open(dir, name);
    let mut t = m.write().unwrap();
    for i in 0..n {
        t.put(format!("key/{i:04}").as_bytes(), &vec![i as u8; i % 900], 0)
            .unwrap();
        t.end_request();
    }
    t.commit(applied).unwrap();
    m
}

fn install_fails_at(point: &str) {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let src = filled(dir.path(), "src", 400, 900);
    let dst = filled(dir.path(), "dst", 60, 7);
    let before = rows(&dst);
    let path = dir.path().join("snap");
    snapshot_file::write(&src, &path).unwrap();
    fail::cfg(point, "return").unwrap();
    assert!(
        snapshot_file::restore(&dst, &path).is_err(),
        "{point}: reported"
    );
    fail::remove(point);
    drop(dst);
    let dst = open(dir.path(), "dst");
    assert_eq!(rows(&dst), before, "{point}: the tree is as it was");
    assert_eq!(dst.snapshot().applied_index(), 7);
    assert_eq!(snapshot_file::restore(&dst, &path).unwrap(), 900);
    assert_eq!(rows(&dst), rows(&src));
    scenario.teardown();
}

#[test]
fn failure_before_the_install_commits_leaves_the_tree_unchanged() {
    install_fails_at("kv::snapshot_restore");
}

#[test]
fn failure_inside_the_install_commit_leaves_the_tree_unchanged() {
    install_fails_at("btree::write_meta");
}
