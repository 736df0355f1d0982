//! Pages and meta slots that are wrong yet carry valid checksums — what a hostile or buggy
//! writer could produce. Checksums cannot catch these; the structural checks must: opening,
//! reading every key, scanning and writing again give errors or (wrong but well-formed)
//! data, never a panic or an allocation sized by a corrupt length.

use std::path::Path;

use proptest::prelude::*;
use quorumkv_btree::{BTreeOptions, Db};

const PAGE: usize = 4096;

fn build(path: &Path) -> Vec<Vec<u8>> {
    let db = Db::open(path, BTreeOptions::default()).unwrap();
    let mut keys = Vec::new();
    for round in 0..3u32 {
        let mut t = db.begin_write().unwrap();
        for i in 0..700u32 {
            let k = format!("key{:05}", (i * 7 + round * 13) % 2000).into_bytes();
            let len = if i % 97 == 0 {
                9000
            } else {
                30 + (i % 50) as usize
            };
            t.insert(&k, &vec![(i ^ round) as u8; len]).unwrap();
            keys.push(k);
        }
        t.set_user_value(u64::from(round));
        t.commit().unwrap();
    }
    keys
}

fn reseal_page(b: &mut [u8], page: usize) {
    let p = &mut b[page * PAGE..(page + 1) * PAGE];
    let runs = u32::from_le_bytes(p[28..32].try_into().unwrap());
    if runs == 1 {
        let crc = crc32c::crc32c(&p[4..]);
        p[..4].copy_from_slice(&crc.to_le_bytes());
    }
}

fn reseal_meta(b: &mut [u8], slot: usize) {
    let m = &mut b[slot * PAGE..slot * PAGE + 128];
    let crc = crc32c::crc32c(&m[..124]);
    m[124..128].copy_from_slice(&crc.to_le_bytes());
}

/// Everything a client of the tree does, with any panic caught and reported.
fn exercise(path: &Path, keys: &[Vec<u8>]) -> Result<(), String> {
    let path = path.to_path_buf();
    let keys = keys.to_vec();
    std::panic::catch_unwind(move || {
        let Ok(db) = Db::open(&path, BTreeOptions::default()) else {
            return;
        };
        {
            let r = db.begin_read();
            for k in &keys {
                let _ = r.get(k);
            }
            for item in r.iter().take(10_000) {
                if item.is_err() {
                    break;
                }
            }
        }
        if let Ok(mut t) = db.begin_write() {
            for k in keys.iter().step_by(50) {
                if t.insert(k, b"again").is_err() || t.remove(b"key00003").is_err() {
                    return;
                }
            }
            let _ = t.commit();
        }
    })
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

struct Fixture {
    _dir: tempfile::TempDir,
    clean: Vec<u8>,
    keys: Vec<Vec<u8>>,
    work: std::path::PathBuf,
}

fn fixture() -> &'static std::sync::Mutex<Fixture> {
    static F: std::sync::OnceLock<std::sync::Mutex<Fixture>> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clean");
        let keys = build(&path);
        let clean = std::fs::read(&path).unwrap();
        let work = dir.path().join("work");
        std::sync::Mutex::new(Fixture {
            _dir: dir,
            clean,
            keys,
            work,
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn resealed_page_mutations_never_panic(
        page_pick in any::<usize>(),
        edits in proptest::collection::vec((4usize..PAGE, any::<u8>()), 1..8),
    ) {
        let f = fixture().lock().unwrap();
        let pages = f.clean.len() / PAGE;
        let page = 2 + page_pick % (pages - 2);
        let mut b = f.clean.clone();
        for &(pos, val) in &edits {
            b[page * PAGE + pos] = val;
        }
        reseal_page(&mut b, page);
        std::fs::write(&f.work, &b).unwrap();
        let r = exercise(&f.work, &f.keys);
        prop_assert!(r.is_ok(), "page {} edits {:?}: panic {:?}", page, edits, r);
    }

    #[test]
    fn resealed_meta_mutations_never_panic(
        edits in proptest::collection::vec((0usize..124, any::<u8>()), 1..6),
        slot in 0usize..2,
    ) {
        let f = fixture().lock().unwrap();
        let mut b = f.clean.clone();
        for &(pos, val) in &edits {
            b[slot * PAGE + pos] = val;
        }
        reseal_meta(&mut b, slot);
        std::fs::write(&f.work, &b).unwrap();
        let r = exercise(&f.work, &f.keys);
        prop_assert!(r.is_ok(), "meta slot {} edits {:?}: panic {:?}", slot, edits, r);
    }

    #[test]
    fn random_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3 * PAGE)) {
        let f = fixture().lock().unwrap();
        std::fs::write(&f.work, &bytes).unwrap();
        let r = exercise(&f.work, &f.keys);
        prop_assert!(r.is_ok(), "panic {:?}", r);
    }
}
