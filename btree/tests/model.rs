//! Model-based property tests: random operations against `std::collections::BTreeMap`,
//! including large (overflow) values, deletes down to empty, scans in both directions, aborted
//! transactions and reopening.

use quorumkv_simdisk::Rng;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use proptest::prelude::*;
use quorumkv_btree::{BTreeOptions, Db, SimStorage};

#[derive(Debug, Clone)]
enum Op {
    Insert(u16, usize),
    Remove(u16),
    RemoveRange(u16, u16),
    Scan(u16, u16, bool),
    Commit,
    Abort,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<u16>(), prop_oneof![9 => 0usize..200, 1 => 1000usize..9000]).prop_map(|(k, l)| Op::Insert(k, l)),
        4 => any::<u16>().prop_map(Op::Remove),
        1 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Op::RemoveRange(a, b)),
        2 => (any::<u16>(), any::<u16>(), any::<bool>()).prop_map(|(a, b, r)| Op::Scan(a, b, r)),
        2 => Just(Op::Commit),
        1 => Just(Op::Abort),
        1 => Just(Op::Reopen),
    ]
}

fn key(k: u16) -> Vec<u8> {
    // Varying lengths and shared prefixes exercise separators.
    let k = k % 600;
    format!("key/{:0width$}", k, width = 3 + (k % 5) as usize).into_bytes()
}

fn value(k: u16, len: usize, salt: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i + k as usize * 7 + salt) as u8)
        .collect()
}

/// Every entry of the last committed state, in key order.
fn entries(db: &Db) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.begin_read()
        .iter()
        .map(|e| e.unwrap())
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

fn opts() -> BTreeOptions {
    BTreeOptions {
        reserved_bytes: 256 << 20,
        grow_bytes_min: 64 << 10,
        ..BTreeOptions::default()
    }
}

fn check_scan(
    db: &Db,
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
    a: u16,
    b: u16,
    rev: bool,
) -> Result<(), TestCaseError> {
    let (mut lo, mut hi) = (key(a), key(b));
    if lo > hi {
        std::mem::swap(&mut lo, &mut hi);
    }
    let r = db.begin_read();
    let bounds = (
        Bound::Included(lo.as_slice()),
        Bound::Excluded(hi.as_slice()),
    );
    let got: Vec<(Vec<u8>, Vec<u8>)> = if rev {
        r.range(bounds)
            .rev()
            .map(|x| {
                let (k, v) = x.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    } else {
        r.range(bounds)
            .map(|x| {
                let (k, v) = x.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    };
    let mut want: Vec<(Vec<u8>, Vec<u8>)> = model
        .range::<Vec<u8>, _>((Bound::Included(&lo), Bound::Excluded(&hi)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if rev {
        want.reverse();
    }
    prop_assert_eq!(got, want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn tree_matches_btreemap(ops in proptest::collection::vec(op(), 1..400)) {
        let storage = Arc::new(SimStorage::new(256 << 20));
        let mut db = Db::open_with_storage(storage.clone(), opts()).unwrap();
        let mut committed: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut working = committed.clone();
        let mut txn = Some(db.begin_write().unwrap());
        for (salt, op) in ops.into_iter().enumerate() {
            match op {
                Op::Insert(k, len) => {
                    let (k, v) = (key(k), value(k, len, salt));
                    txn.as_mut().unwrap().insert(&k, &v).unwrap();
                    working.insert(k, v);
                }
                Op::Remove(k) => {
                    let k = key(k);
                    let had = txn.as_mut().unwrap().remove(&k).unwrap();
                    prop_assert_eq!(had, working.remove(&k).is_some());
                }
                Op::RemoveRange(a, b) => {
                    let (lo, hi) = (a % 600, b % 600);
                    for k in lo.min(hi)..lo.max(hi) {
                        let k = key(k);
                        let had = txn.as_mut().unwrap().remove(&k).unwrap();
                        prop_assert_eq!(had, working.remove(&k).is_some());
                    }
                }
                Op::Scan(a, b, rev) => {
                    // Readers see the committed state, not the open transaction.
                    check_scan(&db, &committed, a, b, rev)?;
                }
                Op::Commit => {
                    let t = txn.take().unwrap();
                    prop_assert_eq!(t.len(), working.len() as u64);
                    t.commit().unwrap();
                    committed = working.clone();
                    txn = Some(db.begin_write().unwrap());
                }
                Op::Abort => {
                    drop(txn.take());
                    working = committed.clone();
                    txn = Some(db.begin_write().unwrap());
                }
                Op::Reopen => {
                    drop(txn.take());
                    working = committed.clone();
                    drop(db);
                    db = Db::open_with_storage(storage.clone(), opts()).unwrap();
                    txn = Some(db.begin_write().unwrap());
                }
            }
            if let Some(t) = &txn {
                // The write transaction's scan sees its own changes.
                let (lo, hi) = (key(salt as u16 % 600), key((salt as u16 % 600) + 40));
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                let got = t.scan(&lo, Some(&hi), 25).unwrap();
                let want: Vec<(Vec<u8>, Vec<u8>)> = working
                    .range::<Vec<u8>, _>((Bound::Included(&lo), Bound::Excluded(&hi)))
                    .take(25)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                prop_assert_eq!(got, want);
                // The greatest key below a bound, as the transaction leaves it.
                for end in [key(salt as u16 % 600), b"key/\xff".to_vec(), b"key/".to_vec()] {
                    let want = working.range::<Vec<u8>, _>(..end.clone()).next_back().map(|(k, _)| k.clone());
                    prop_assert_eq!(t.last_key_before(&end).unwrap(), want);
                }
                // Spot-check reads through the write transaction.
                for k in [0u16, 17, 301, 599] {
                    let k = key(k);
                    prop_assert_eq!(t.get(&k).unwrap(), working.get(&k).cloned());
                }
            }
        }
        txn.take().unwrap().commit().unwrap();
        let r = db.begin_read();
        let all = entries(&db);
        let want: Vec<(Vec<u8>, Vec<u8>)> = working.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        prop_assert_eq!(all, want);
        prop_assert_eq!(r.len(), working.len() as u64);
        for (k, v) in &working {
            prop_assert_eq!(r.get(k).unwrap(), Some(v.as_slice()));
        }
        drop(r);
        // Space: pages in use plus free pages add up to the high-water mark.
        let s = db.stats();
        prop_assert!(s.free_pages + s.pending_pages < s.page_count);
    }
}

#[test]
fn delete_everything_then_reuse() {
    let storage = Arc::new(SimStorage::new(256 << 20));
    let db = Db::open_with_storage(storage, opts()).unwrap();
    let mut t = db.begin_write().unwrap();
    for i in 0..5000u32 {
        t.insert(format!("k{i:06}").as_bytes(), &[1u8; 100])
            .unwrap();
    }
    t.commit().unwrap();
    let grown = db.stats().page_count;
    let mut t = db.begin_write().unwrap();
    for i in 0..5000u32 {
        assert!(t.remove(format!("k{i:06}").as_bytes()).unwrap());
    }
    assert!(t.is_empty());
    t.commit().unwrap();
    assert!(db.begin_read().iter().next().is_none());
    let mut t = db.begin_write().unwrap();
    for i in 0..5000u32 {
        t.insert(format!("k{i:06}").as_bytes(), &[2u8; 100])
            .unwrap();
    }
    t.commit().unwrap();
    // The second fill reuses the pages the deletes freed.
    assert!(
        db.stats().page_count <= grown + grown / 4,
        "{:?} vs {grown}",
        db.stats()
    );
}

#[test]
fn prefix_and_reverse_scans() {
    let storage = Arc::new(SimStorage::new(64 << 20));
    let db = Db::open_with_storage(storage, opts()).unwrap();
    let mut t = db.begin_write().unwrap();
    for p in ["a", "b", "b\u{ff}", "c"] {
        for i in 0..300 {
            t.insert(format!("{p}/{i:04}").as_bytes(), p.as_bytes())
                .unwrap();
        }
    }
    t.commit().unwrap();
    let r = db.begin_read();
    let b: Vec<_> = r.prefix(b"b/").map(|x| x.unwrap().0.to_vec()).collect();
    assert_eq!(b.len(), 300);
    assert!(b.windows(2).all(|w| w[0] < w[1]));
    let back: Vec<_> = r
        .prefix(b"b/")
        .rev()
        .map(|x| x.unwrap().0.to_vec())
        .collect();
    assert_eq!(back.iter().rev().cloned().collect::<Vec<_>>(), b);
    // Meeting in the middle from both ends yields every entry once.
    let mut it = r.iter();
    let mut n = 0;
    loop {
        let f = it.next();
        let bk = it.next_back();
        n += usize::from(f.is_some()) + usize::from(bk.is_some());
        if f.is_none() || bk.is_none() {
            break;
        }
    }
    assert_eq!(n, 1200);
}

#[test]
fn deep_tree_with_long_keys_splits_and_merges() {
    // 600-byte keys leave room for about six entries a page: the tree gets deep quickly and
    // every level splits and merges.
    let storage = Arc::new(SimStorage::new(512 << 20));
    let db = Db::open_with_storage(storage.clone(), opts()).unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut rng = Rng::new(7);
    let long_key = |n: u64| {
        let mut k = format!("{:08}", n % 4000).into_bytes();
        k.resize(600, b'x');
        k
    };
    for round in 0..30 {
        let mut t = db.begin_write().unwrap();
        for _ in 0..300 {
            let n = rng.next_u64();
            let k = long_key(n);
            if round % 3 == 2 || n % 4 == 0 {
                assert_eq!(t.remove(&k).unwrap(), model.remove(&k).is_some());
            } else {
                let v = n.to_le_bytes().repeat((n % 40) as usize);
                t.insert(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
        t.commit().unwrap();
        let r = db.begin_read();
        let got: Vec<Vec<u8>> = r.iter().map(|x| x.unwrap().0.to_vec()).collect();
        let want: Vec<Vec<u8>> = model.keys().cloned().collect();
        assert_eq!(got, want, "round {round}");
        let back: Vec<Vec<u8>> = r.iter().rev().map(|x| x.unwrap().0.to_vec()).collect();
        assert_eq!(back.len(), want.len());
    }
    drop(db);
    let db = Db::open_with_storage(storage, opts()).unwrap();
    let r = db.begin_read();
    for (k, v) in &model {
        assert_eq!(r.get(k).unwrap(), Some(v.as_slice()));
    }
    assert_eq!(r.len(), model.len() as u64);
}

#[test]
fn oversize_keys_and_values_are_refused() {
    let storage = Arc::new(SimStorage::new(64 << 20));
    let o = BTreeOptions {
        value_bytes_max: 1 << 20,
        ..opts()
    };
    let db = Db::open_with_storage(storage, o).unwrap();
    let max = db.key_bytes_max();
    let mut t = db.begin_write().unwrap();
    assert!(matches!(
        t.insert(&vec![1u8; max + 1], b"v"),
        Err(quorumkv_btree::Error::KeySize { .. })
    ));
    assert!(matches!(
        t.insert(b"", b"v"),
        Err(quorumkv_btree::Error::KeySize { .. })
    ));
    assert!(matches!(
        t.insert(b"k", &vec![0u8; (1 << 20) + 1]),
        Err(quorumkv_btree::Error::ValueTooLarge { .. })
    ));
    t.insert(&vec![1u8; max], &vec![9u8; 1 << 20]).unwrap();
    t.commit().unwrap();
    assert_eq!(
        db.begin_read().get(&vec![1u8; max]).unwrap().unwrap().len(),
        1 << 20
    );
}

/// A value stays in the leaf while its entry takes at most half a page, so a split always
/// succeeds; one byte more moves it to an overflow page. Leaves hold one or two entries of
/// exactly half a page, in any insertion order.
#[test]
fn values_stay_inline_up_to_half_a_page() {
    const N: u32 = 500;
    // 4096-byte pages: (4096 - 32) / 2, less the slot and the entry header, for key and value.
    const ENTRY_MAX: usize = 2024;
    let fill = |value_len: usize| {
        let db = Db::open_with_storage(Arc::new(SimStorage::new(64 << 20)), opts()).unwrap();
        let mut t = db.begin_write().unwrap();
        for i in 0..N {
            let k = format!("key-{:019}", (u64::from(i) * 7919) % u64::from(N));
            assert_eq!(
                k.len() + value_len,
                ENTRY_MAX + usize::from(value_len > 2001)
            );
            t.insert(k.as_bytes(), &vec![i as u8; value_len]).unwrap();
        }
        t.commit().unwrap();
        let r = db.begin_read();
        for i in 0..N {
            let k = format!("key-{:019}", (u64::from(i) * 7919) % u64::from(N));
            let v = r.get(k.as_bytes()).unwrap().unwrap();
            assert_eq!(v.len(), value_len);
        }
        assert_eq!(r.iter().count(), N as usize);
        db.stats().page_count
    };
    let inline = fill(2001);
    let overflow = fill(2002);
    assert!(
        inline < u64::from(N) * 3 / 4,
        "inline entries: {inline} pages"
    );
    assert!(overflow > u64::from(N), "overflow values: {overflow} pages");
}

#[test]
fn defragment_gives_freed_space_back_and_keeps_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::open(&path, opts()).unwrap();
    let value = |i: usize| vec![(i % 251) as u8; if i % 50 == 0 { 20_000 } else { 300 }];
    for chunk in 0..8 {
        let mut t = db.begin_write().unwrap();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            t.insert(format!("key{i:06}").as_bytes(), &value(i))
                .unwrap();
        }
        t.set_user_value(77);
        t.commit().unwrap();
    }
    let mut t = db.begin_write().unwrap();
    for i in (0..8000).filter(|i| i % 10 != 3) {
        assert!(t.remove(format!("key{i:06}").as_bytes()).unwrap());
    }
    t.commit().unwrap();
    let full = std::fs::metadata(&path).unwrap().len();
    let kept: Vec<(Vec<u8>, Vec<u8>)> = (0..8000)
        .filter(|i| i % 10 == 3)
        .map(|i| (format!("key{i:06}").into_bytes(), value(i)))
        .collect();
    assert_eq!(entries(&db), kept);

    let after = db.defragment().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), after);
    assert!(
        after * 4 < full,
        "the file went from {full} to {after} bytes with a tenth of the entries"
    );
    assert_eq!(entries(&db), kept);
    assert_eq!(db.begin_read().user_value(), 77, "the user value stays");
    // A damaged newest meta slot: opening falls back to the previous commit, whose pages the
    // shorter file still holds.
    let (txn, ps) = (db.stats().txn, db.stats().page_size as u64);
    drop(db);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[((txn % 2) * ps + 20) as usize] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let db = Db::open(&path, opts()).unwrap();
    assert_eq!(db.stats().txn, txn - 1, "opened at the previous commit");
    assert_eq!(entries(&db), kept);
    // Still a working tree, and one that reopens to the same entries.
    let mut t = db.begin_write().unwrap();
    t.insert(b"zz-after", &[9; 30_000]).unwrap();
    t.commit().unwrap();
    drop(db);
    let db = Db::open(&path, opts()).unwrap();
    let mut expect = kept;
    expect.push((b"zz-after".to_vec(), vec![9; 30_000]));
    assert_eq!(entries(&db), expect);
}
