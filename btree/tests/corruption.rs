//! Bit flips in pages and meta slots of a real file are detected: opening fails with a
//! corruption error, a read fails with one, or opening reports that it passed over the newest
//! commit. A flipped value is never returned as data.

use quorumkv_simdisk::Rng;
use std::collections::BTreeMap;
use std::path::Path;

use quorumkv_btree::{BTreeOptions, Db, Error};

fn build(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let db = Db::open(path, BTreeOptions::default()).unwrap();
    let mut model = BTreeMap::new();
    for round in 0..5u32 {
        let mut t = db.begin_write().unwrap();
        for i in 0..800u32 {
            let k = format!("key{:05}", (i * 7 + round * 13) % 3000).into_bytes();
            let len = if i % 97 == 0 {
                9000
            } else {
                40 + (i % 60) as usize
            };
            let v: Vec<u8> = (0..len).map(|j| (j as u32 ^ i ^ round) as u8).collect();
            t.insert(&k, &v).unwrap();
            model.insert(k, v);
        }
        t.commit().unwrap();
    }
    model
}

/// Reads everything; `Err` on a detected corruption.
fn read_all(
    db: &Db,
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, Error> {
    let r = db.begin_read();
    for k in model.keys() {
        r.get(k)?;
    }
    r.iter()
        .map(|x| x.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect()
}

#[test]
fn random_bit_flips_never_return_wrong_data() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean");
    let model = build(&clean);
    let bytes = std::fs::read(&clean).unwrap();
    let page_count = Db::open(&clean, BTreeOptions::default())
        .unwrap()
        .stats()
        .page_count;
    let used = (page_count * 4096) as usize;
    let mut rng = Rng::new(0x9e37_79b9);
    let (mut open_err, mut read_err, mut fell_back, mut harmless) = (0, 0, 0, 0);
    const TRIALS: usize = 300;
    for trial in 0..TRIALS {
        let bit = rng.below(used as u64 * 8) as usize;
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let path = dir.path().join(format!("t{trial}"));
        std::fs::write(&path, &b).unwrap();
        match Db::open(&path, BTreeOptions::default()) {
            Err(Error::Corruption(_)) => open_err += 1,
            Err(e) => panic!("trial {trial}: unexpected error {e}"),
            Ok(db) => match read_all(&db, &model) {
                Err(Error::Corruption(_)) => read_err += 1,
                Err(e) => panic!("trial {trial}: unexpected error {e}"),
                Ok(got) => {
                    if db.open_report().fell_back.is_some() {
                        fell_back += 1;
                    } else {
                        assert_eq!(
                            got, model,
                            "trial {trial}: flip of bit {bit} returned wrong data"
                        );
                        harmless += 1;
                    }
                }
            },
        }
        std::fs::remove_file(&path).unwrap();
    }
    println!(
        "btree bit flips: {TRIALS} trials: {open_err} refused at open, {read_err} refused at read, \
         {fell_back} fell back to the previous commit, {harmless} in free space; 0 wrong values"
    );
    assert!(open_err + read_err > 0);
}

#[test]
fn both_meta_slots_corrupt_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    build(&path);
    let mut b = std::fs::read(&path).unwrap();
    b[20] ^= 1;
    b[4096 + 20] ^= 1;
    std::fs::write(&path, &b).unwrap();
    match Db::open(&path, BTreeOptions::default()) {
        Err(Error::Corruption(m)) => assert!(m.contains("meta"), "{m}"),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_flipped_leaf_fails_the_read_not_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let model = build(&path);
    let db = Db::open(&path, BTreeOptions::default()).unwrap();
    let pages = db.stats().page_count;
    drop(db);
    let mut b = std::fs::read(&path).unwrap();
    // Flip a byte in the middle of every page but the metas: whatever a read touches is bad.
    for p in 2..pages as usize {
        b[p * 4096 + 2000] ^= 0x40;
    }
    std::fs::write(&path, &b).unwrap();
    match Db::open(&path, BTreeOptions::default()) {
        Err(Error::Corruption(_)) => {}
        Ok(db) => {
            let r = db.begin_read();
            let k = model.keys().next().unwrap();
            assert!(matches!(r.get(k), Err(Error::Corruption(_))));
            assert!(r.iter().any(|x| x.is_err()));
        }
        Err(e) => panic!("{e}"),
    }
}
