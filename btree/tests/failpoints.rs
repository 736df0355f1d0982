//! Failpoints on the tree's commit path (built with the `failpoints` feature): a failure
//! before the pages are written, between the pages and the meta slot, before the sync and
//! after it. Each time the commit reports the error, the tree refuses writes until reopened,
//! and the reopened file holds exactly the last acknowledged commit or — only when the
//! failure came after the sync — the failed one, whole; never a mix.

use std::collections::BTreeMap;
use std::path::Path;

use quorumkv_btree::{BTreeOptions, Db};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn contents(db: &Db) -> (u64, Model) {
    let r = db.begin_read();
    let rows = r
        .iter()
        .map(|item| {
            let (k, v) = item.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect();
    (r.user_value(), rows)
}

/// Commit `round` rewrites a third of the keys, removes some and adds new ones.
fn apply(db: &Db, model: &mut Model, round: u64) -> quorumkv_btree::Result<()> {
    let mut next = model.clone();
    let mut t = db.begin_write()?;
    for i in 0..3000u64 {
        let k = format!("key{i:06}").into_bytes();
        match (i + round) % 3 {
            0 => {
                let v = format!("v{round}-{i}")
                    .repeat(1 + (i % 7) as usize)
                    .into_bytes();
                t.insert(&k, &v)?;
                next.insert(k, v);
            }
            1 if round % 2 == 1 => {
                t.remove(&k)?;
                next.remove(&k);
            }
            _ => {}
        }
    }
    t.set_user_value(round);
    t.commit()?;
    *model = next;
    Ok(())
}

fn fail_at(point: &str, may_survive: bool) {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::open(&path, BTreeOptions::default()).unwrap();
    let mut model = Model::new();
    for round in 1..=3 {
        apply(&db, &mut model, round).unwrap();
    }
    let acked = model.clone();
    fail::cfg(point, "return").unwrap();
    let mut attempted = model.clone();
    let err = apply(&db, &mut attempted, 4);
    fail::remove(point);
    assert!(err.is_err(), "{point}: the failure is reported");
    assert!(
        apply(&db, &mut attempted.clone(), 5).is_err(),
        "{point}: the tree refuses writes until reopened"
    );
    drop(db);
    check_reopened(&path, &acked, may_survive, point);
    scenario.teardown();
}

fn check_reopened(path: &Path, acked: &Model, may_survive: bool, point: &str) {
    let db = Db::open(path, BTreeOptions::default()).unwrap();
    let (round, rows) = contents(&db);
    if round == 3 {
        assert_eq!(
            &rows, acked,
            "{point}: the last acknowledged commit, exactly"
        );
    } else {
        assert!(
            may_survive,
            "{point}: commit {round} should not have survived"
        );
        let mut failed = acked.clone();
        let probe = Db::open(path.with_extension("probe"), BTreeOptions::default()).unwrap();
        apply(&probe, &mut failed, 4).unwrap();
        assert_eq!(round, 4);
        assert_eq!(rows, failed, "{point}: the failed commit survived whole");
    }
    // And the tree takes commits again.
    let mut model = rows;
    apply(&db, &mut model, 6).unwrap();
    assert_eq!(contents(&db).1, model);
}

#[test]
fn failure_before_the_pages_are_written_keeps_the_last_commit() {
    fail_at("btree::write_pages", false);
}

#[test]
fn failure_between_pages_and_meta_keeps_the_last_commit() {
    fail_at("btree::write_meta", false);
}

#[test]
fn failure_before_the_sync_leaves_one_whole_commit() {
    // The meta slot was written (to the page cache): the process may see either commit.
    fail_at("btree::sync", true);
}

#[test]
fn failure_after_the_sync_leaves_one_whole_commit() {
    fail_at("btree::after_sync", true);
}
