//! Crash consistency: a random workload runs on the simulated storage with a trace of every
//! write, grow and sync. For every prefix of the trace the disk is crashed (unsynced writes
//! dropped; or a random prefix of them kept with the next one torn), reopened, and the tree
//! must equal the last durable transaction whose sync completed — or, when the crash hit after
//! all of the next one's writes happened to land, that next one. Two of every three
//! transactions commit without sync: a crash loses them, never the durable one before them. A
//! further commit must work.

use quorumkv_simdisk::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

use quorumkv_btree::sim::SimOp;
use quorumkv_btree::{BTreeOptions, CrashMode, Db, SimStorage};

const RESERVED: usize = 64 << 20;

fn opts() -> BTreeOptions {
    BTreeOptions {
        reserved_bytes: RESERVED as u64,
        grow_bytes_min: 16 << 10,
        ..BTreeOptions::default()
    }
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn contents(db: &Db) -> Model {
    db.begin_read()
        .iter()
        .map(|x| {
            let (k, v) = x.expect("no corrupt page after recovery");
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

#[test]
fn every_crash_point_recovers_a_committed_state() {
    let storage = Arc::new(SimStorage::new(RESERVED));
    storage.record_trace();
    let db = Db::open_with_storage(storage.clone(), opts()).unwrap();
    let mut rng = Rng::new(99);
    let mut model = Model::new();
    // states[j] is the tree after transaction j; syncs[j] the trace position of its sync.
    let mut states = vec![model.clone()];
    let mut syncs = vec![storage.ops() - 1];
    for round in 0..90 {
        let mut t = db.begin_write().unwrap();
        for _ in 0..40 {
            let n = rng.next_u64();
            let k = format!("key{:05}", n % 3000).into_bytes();
            if n % 5 == 0 {
                t.remove(&k).unwrap();
                model.remove(&k);
            } else {
                let len = if n % 17 == 0 {
                    5000 + (n % 3000) as usize
                } else {
                    (n % 150) as usize
                };
                let v: Vec<u8> = (0..len).map(|i| (i as u64 ^ n) as u8).collect();
                t.insert(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
        t.set_user_value(states.len() as u64);
        if round % 3 == 2 {
            if round % 6 == 5 {
                // Every other durable commit gives the free tail back (lowers the page count).
                t.shrink_file();
            }
            t.commit().unwrap();
            states.push(model.clone());
            syncs.push(storage.ops() - 1);
        } else {
            // Readers see it at once; durability waits for the next durable commit.
            t.commit_no_sync().unwrap();
            assert_eq!(contents(&db), model);
        }
    }
    drop(db);
    let trace = storage.trace();
    assert!(matches!(trace[syncs[1]], SimOp::Sync));
    let mut replay = SimStorage::replay();
    let mut explored = 0;
    for k in 0..=trace.len() {
        if k > 0 {
            replay.apply(&trace[k - 1]);
        }
        // The newest transaction whose sync is inside the first k operations.
        let committed = syncs.iter().rposition(|&s| s < k);
        for (mode, name) in [
            (CrashMode::DropUnsynced, "drop unsynced"),
            (CrashMode::TornTail { seed: k as u64 }, "torn tail"),
        ] {
            let disk = Arc::new(replay.crash(mode, RESERVED));
            let db = match Db::open_with_storage(disk, opts()) {
                Ok(db) => db,
                Err(e) if committed.is_none() => {
                    // Crashed while creating the file: nothing was ever committed.
                    let _ = e;
                    continue;
                }
                Err(e) => panic!("crash point {k} ({name}): open failed: {e}"),
            };
            let got = contents(&db);
            let j = committed.unwrap_or(0);
            let user = db.begin_read().user_value();
            if got == states[j] {
                assert_eq!(user, j as u64, "crash point {k} ({name}): user value");
            } else {
                assert!(
                    j + 1 < states.len() && got == states[j + 1],
                    "crash point {k} ({name}): tree is neither txn {j} nor txn {}",
                    j + 1
                );
                assert!(matches!(mode, CrashMode::TornTail { .. }));
            }
            // The recovered database takes new commits.
            let mut t = db.begin_write().unwrap();
            t.insert(b"after-crash", b"ok").unwrap();
            t.commit().unwrap();
            assert_eq!(
                db.begin_read().get(b"after-crash").unwrap(),
                Some(&b"ok"[..])
            );
            explored += 1;
        }
    }
    println!(
        "btree crash points explored: {explored} ({} trace operations x 2 modes, 90 transactions, 30 durable)",
        trace.len() + 1
    );
    assert!(explored > 200);
}

/// A durable commit that changes nothing still makes the no-sync commits before it durable
/// (the server's checkpoint after a quiet spell is exactly that).
#[test]
fn an_empty_durable_commit_makes_earlier_no_sync_commits_durable() {
    let storage = Arc::new(SimStorage::new(RESERVED));
    storage.record_trace();
    let db = Db::open_with_storage(storage.clone(), opts()).unwrap();
    let mut t = db.begin_write().unwrap();
    t.insert(b"k", b"v").unwrap();
    t.set_user_value(7);
    t.commit_no_sync().unwrap();
    let mut t = db.begin_write().unwrap();
    t.set_user_value(7);
    t.commit().unwrap();
    // Nothing new and already durable: a further empty commit is a no-op.
    let ops = storage.ops();
    assert!(ops > 0, "the trace records");
    let mut t = db.begin_write().unwrap();
    t.set_user_value(7);
    t.commit().unwrap();
    assert_eq!(
        storage.ops(),
        ops,
        "an empty commit over a durable state writes nothing"
    );
    drop(db);
    let disk = Arc::new(storage.crash(CrashMode::DropUnsynced));
    let db = Db::open_with_storage(disk, opts()).unwrap();
    assert_eq!(db.begin_read().user_value(), 7);
    assert_eq!(db.begin_read().get(b"k").unwrap(), Some(&b"v"[..]));
}
