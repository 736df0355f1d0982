//! Snapshot isolation and space reuse on a real file.

use quorumkv_btree::{BTreeOptions, Db};
use quorumkv_simdisk::Rng;

#[test]
fn a_reader_keeps_its_snapshot_across_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), BTreeOptions::default()).unwrap();
    let mut t = db.begin_write().unwrap();
    for i in 0..2000u32 {
        t.insert(format!("k{i:05}").as_bytes(), b"old").unwrap();
    }
    t.set_user_value(1);
    t.commit().unwrap();
    let old = db.begin_read();
    for round in 0..20 {
        let mut t = db.begin_write().unwrap();
        for i in 0..2000u32 {
            if i % 2 == 0 {
                t.insert(
                    format!("k{i:05}").as_bytes(),
                    format!("new{round}").as_bytes(),
                )
                .unwrap();
            } else {
                t.remove(format!("k{i:05}").as_bytes()).unwrap();
            }
        }
        t.set_user_value(2 + round);
        t.commit().unwrap();
    }
    // Twenty commits later the old snapshot still reads every old value: none of its pages
    // were reused.
    assert_eq!(old.user_value(), 1);
    assert_eq!(old.len(), 2000);
    for i in 0..2000u32 {
        assert_eq!(
            old.get(format!("k{i:05}").as_bytes()).unwrap(),
            Some(&b"old"[..])
        );
    }
    assert_eq!(old.iter().count(), 2000);
    let new = db.begin_read();
    assert_eq!(new.len(), 1000);
    assert_eq!(new.user_value(), 21);
    assert!(
        db.stats().pending_pages > 0,
        "pages the old reader sees wait for it"
    );
    drop(old);
    // The next write transaction reclaims them.
    let t = db.begin_write().unwrap();
    drop(t);
    assert_eq!(db.stats().pending_pages, 0);
}

#[test]
fn readers_on_other_threads_see_stable_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), BTreeOptions::default()).unwrap();
    let mut t = db.begin_write().unwrap();
    for i in 0..500u32 {
        t.insert(format!("k{i:05}").as_bytes(), &0u64.to_le_bytes())
            .unwrap();
    }
    t.commit().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut checks = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = db.begin_read();
                    // Every key of one snapshot carries the same generation.
                    let gens: Vec<u64> = r
                        .iter()
                        .map(|x| u64::from_le_bytes(x.unwrap().1.try_into().unwrap()))
                        .collect();
                    assert_eq!(gens.len(), 500);
                    assert!(gens.iter().all(|&g| g == gens[0]), "torn snapshot");
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    for g in 1..=50u64 {
        let mut t = db.begin_write().unwrap();
        for i in 0..500u32 {
            t.insert(format!("k{i:05}").as_bytes(), &g.to_le_bytes())
                .unwrap();
        }
        t.commit().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}

#[test]
fn steady_updates_keep_the_file_bounded() {
    // 1,000,000 updates over 10,000 keys, 1,000 updates per commit.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::open(&path, BTreeOptions::default()).unwrap();
    let value = |i: u64, r: u64| -> Vec<u8> { (i ^ r).to_le_bytes().repeat(8) };
    let mut rng = Rng::new(1);
    let live_bytes = 10_000u64 * (8 + 64);
    for round in 0..1000u64 {
        let mut t = db.begin_write().unwrap();
        for _ in 0..1000 {
            let k = rng.below(10_000);
            t.insert(format!("{k:08}").as_bytes(), &value(k, round))
                .unwrap();
        }
        t.commit().unwrap();
    }
    let s = db.stats();
    let file = std::fs::metadata(&path).unwrap().len();
    println!(
        "space: {} keys, live data {} KiB, pages in use {} ({} KiB), file {} KiB, free {}",
        s.entries,
        live_bytes / 1024,
        s.page_count,
        s.page_count * 4,
        file / 1024,
        s.free_pages
    );
    assert!(
        s.page_count * 4096 < live_bytes * 4,
        "pages {} for {live_bytes} live bytes",
        s.page_count
    );
    assert!(
        file < live_bytes * 4 + (8 << 20),
        "file {file} for {live_bytes} live bytes"
    );
}

#[test]
fn space_accounting_does_not_wait_for_the_write_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), BTreeOptions::default()).unwrap();
    let before = db.stats();
    let mut t = db.begin_write().unwrap();
    for i in 0..5000u32 {
        t.insert(format!("k{i:05}").as_bytes(), &[7u8; 100])
            .unwrap();
    }
    // Asked while the transaction is open (on this thread, which holds the writer): the
    // counts of the last commit, at once.
    let during = std::thread::scope(|s| s.spawn(|| db.stats()).join().unwrap());
    assert_eq!(during, db.stats());
    assert_eq!(during.page_count, before.page_count);
    assert_eq!(during.file_bytes, before.file_bytes);
    t.commit().unwrap();
    let after = db.stats();
    assert!(after.page_count > before.page_count);
    assert!(after.file_bytes >= after.page_count * after.page_size as u64);
    assert_eq!(after.entries, 5000);
}
