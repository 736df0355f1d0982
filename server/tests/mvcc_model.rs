//! MVCC semantics against a model (proptest): puts, deletes, multi-operation transactions,
//! ranges at past revisions, compaction, reopen.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use quorumkv_btree::{BTreeOptions, Db, SimStorage};
use quorumkv_server::mvcc::{Event, KeyValue, Mvcc, MvccError, RangeOpts};

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Delete(u8),
    DeleteRange(u8, u8),
    Txn(Vec<(u8, Option<u8>)>),
    Compact(u8),
    Range(u8, u8, u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..8, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u8..8).prop_map(Op::Delete),
        1 => (0u8..8, 0u8..9).prop_map(|(a, b)| Op::DeleteRange(a, b)),
        2 => proptest::collection::vec((0u8..8, proptest::option::of(any::<u8>())), 1..4).prop_map(Op::Txn),
        1 => any::<u8>().prop_map(Op::Compact),
        3 => (0u8..8, 0u8..9, any::<u8>()).prop_map(|(a, b, r)| Op::Range(a, b, r)),
        1 => Just(Op::Reopen),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("key{k}").into_bytes()
}

type State = BTreeMap<Vec<u8>, KeyValue>;

struct Model {
    /// State after each revision (index = revision).
    states: Vec<State>,
    compacted: i64,
}

impl Model {
    fn rev(&self) -> i64 {
        self.states.len() as i64 - 1
    }
    fn apply(&mut self, ops: &[(Vec<u8>, Option<Vec<u8>>)]) {
        let mut s = self.states.last().expect("state").clone();
        let rev = self.rev() + 1;
        let mut changed = false;
        for (k, v) in ops {
            match v {
                Some(v) => {
                    let prev = s.get(k).cloned();
                    s.insert(
                        k.clone(),
                        KeyValue {
                            key: k.clone(),
                            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                            mod_revision: rev,
                            version: prev.as_ref().map_or(1, |p| p.version + 1),
                            value: v.clone(),
                            lease: 0,
                        },
                    );
                    changed = true;
                }
                None => changed |= s.remove(k).is_some(),
            }
        }
        if changed {
            self.states.push(s);
        }
    }
}

fn open(storage: &Arc<SimStorage>) -> Mvcc {
    Mvcc::open(
        Db::open_with_storage(
            storage.clone(),
            BTreeOptions {
                reserved_bytes: 64 << 20,
                grow_bytes_min: 1 << 16,
                ..BTreeOptions::default()
            },
        )
        .unwrap(),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn mvcc_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        let storage = Arc::new(SimStorage::new(64 << 20));
        let mut store = open(&storage);
        let mut model = Model { states: vec![State::new(), State::new()], compacted: 0 };
        let mut applied = 0u64;
        let mut committed_applied = 0u64;
        // Events of puts, with the version each replaced, to read back through `prev`.
        let mut puts: Vec<(Event, Option<KeyValue>)> = Vec::new();
        for op in ops {
            applied += 1;
            let before = store.snapshot().applied_index();
            match op {
                Op::Put(k, v) => {
                    let mut t = store.write().unwrap();
                    let prev = t.put(&key(k), &[v], 0).unwrap();
                    prop_assert_eq!(prev.as_ref(), model.states.last().unwrap().get(&key(k)));
                    let (rev, events) = t.commit(applied).unwrap();
                    model.apply(&[(key(k), Some(vec![v]))]);
                    prop_assert_eq!(rev, model.rev());
                    prop_assert_eq!(events.len(), 1);
                    puts.extend(events.into_iter().map(|e| (e, prev.clone())));
                }
                Op::Delete(k) => {
                    let mut t = store.write().unwrap();
                    let gone = t.delete_range(&key(k), b"").unwrap();
                    prop_assert_eq!(gone.len(), usize::from(model.states.last().unwrap().contains_key(&key(k))));
                    t.commit(applied).unwrap();
                    model.apply(&[(key(k), None)]);
                }
                Op::DeleteRange(a, b) => {
                    let (lo, hi) = (key(a.min(b)), if a.max(b) == 8 { vec![0] } else { key(a.max(b)) });
                    let mut t = store.write().unwrap();
                    let gone = t.delete_range(&lo, &hi).unwrap();
                    let victims: Vec<Vec<u8>> = model.states.last().unwrap().keys().filter(|k| **k >= lo && (hi == [0] || **k < hi)).cloned().collect();
                    prop_assert_eq!(gone.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(), victims.clone());
                    let (rev, _) = t.commit(applied).unwrap();
                    model.apply(&victims.into_iter().map(|k| (k, None)).collect::<Vec<_>>());
                    prop_assert_eq!(rev, model.rev());
                }
                Op::Txn(parts) => {
                    let mut t = store.write().unwrap();
                    let mut mops = Vec::new();
                    for (k, v) in parts {
                        match v {
                            Some(v) => {
                                t.put(&key(k), &[v], 0).unwrap();
                                mops.push((key(k), Some(vec![v])));
                            }
                            None => {
                                t.delete_range(&key(k), b"").unwrap();
                                mops.push((key(k), None));
                            }
                        }
                    }
                    let (rev, _) = t.commit(applied).unwrap();
                    model.apply(&mops);
                    prop_assert_eq!(rev, model.rev(), "one revision per transaction");
                }
                Op::Compact(r) => {
                    let target = (i64::from(r) % (model.rev() + 1)).max(1);
                    let mut t = store.write().unwrap();
                    match t.compact(target) {
                        Ok(()) => {
                            t.commit(applied).unwrap();
                            prop_assert!(target > model.compacted);
                            model.compacted = target;
                        }
                        Err(MvccError::Compacted) => prop_assert!(target <= model.compacted),
                        Err(e) => panic!("{e}"),
                    }
                }
                Op::Range(a, b, r) => {
                    let (lo, hi) = (key(a.min(b)), if a.max(b) == 8 { vec![0] } else { key(a.max(b)) });
                    let rev = i64::from(r) % (model.rev() + 2);
                    let snap = store.snapshot();
                    let got = snap.range(&lo, &hi, RangeOpts { revision: rev, ..RangeOpts::default() });
                    let at = if rev == 0 { model.rev() } else { rev };
                    if at > model.rev() {
                        prop_assert!(matches!(got, Err(MvccError::FutureRevision)));
                    } else if at < model.compacted {
                        prop_assert!(matches!(got, Err(MvccError::Compacted)));
                    } else {
                        let want: Vec<KeyValue> = model.states[at as usize].values().filter(|kv| kv.key >= lo && (hi == [0] || kv.key < hi)).cloned().collect();
                        let got = got.unwrap();
                        prop_assert_eq!(got.count, want.len());
                        prop_assert_eq!(got.kvs, want);
                    }
                    prop_assert_eq!(snap.revision().unwrap(), model.rev());
                    // A put's previous version reads back until compaction reaches the put.
                    for (e, prev) in &puts {
                        match snap.prev(e) {
                            Ok(got) => {
                                prop_assert!(prev.is_none() || e.kv.mod_revision > model.compacted);
                                prop_assert_eq!(&got, prev);
                            }
                            Err(MvccError::Compacted) => {
                                prop_assert!(e.kv.mod_revision <= model.compacted);
                                prop_assert!(prev.is_some());
                            }
                            Err(err) => panic!("{err}"),
                        }
                    }
                }
                Op::Reopen => {
                    drop(store);
                    store = open(&storage);
                    prop_assert_eq!(store.snapshot().applied_index(), committed_applied);
                    prop_assert_eq!(store.snapshot().revision().unwrap(), model.rev());
                }
            }
            let after = store.snapshot().applied_index();
            if after != before {
                prop_assert_eq!(after, applied, "the applied index commits with the transaction");
                committed_applied = after;
            }
        }
        // Limits, keys-only and count-only on the final state.
        let snap = store.snapshot();
        let all = snap.range(b"key", b"kez", RangeOpts { limit: 2, keys_only: true, ..RangeOpts::default() }).unwrap();
        let n = model.states.last().unwrap().len();
        prop_assert_eq!(all.count, n);
        prop_assert_eq!(all.more, n > 2);
        prop_assert!(all.kvs.iter().all(|kv| kv.value.is_empty()));
        let c = snap.range(b"key", b"kez", RangeOpts { count_only: true, ..RangeOpts::default() }).unwrap();
        prop_assert_eq!((c.count, c.kvs.len()), (n, 0));
    }
}

fn churn(compact: bool) -> u64 {
    let storage = Arc::new(SimStorage::new(256 << 20));
    let store = open(&storage);
    let value = vec![7u8; 200];
    for round in 0..50u64 {
        let mut t = store.write().unwrap();
        for k in 0..200u32 {
            t.put(format!("k{k}").as_bytes(), &value, 0).unwrap();
        }
        t.commit(round).unwrap();
        if compact && round % 10 == 9 {
            let mut t = store.write().unwrap();
            let rev = t.current_revision();
            t.compact(rev).unwrap();
            t.commit(round).unwrap();
        }
    }
    let snap = store.snapshot();
    assert_eq!(
        snap.range(b"k", b"l", RangeOpts::default()).unwrap().count,
        200
    );
    if compact {
        // Only the newest version of each key is left before the compaction point.
        let old = snap
            .range(
                b"k",
                b"l",
                RangeOpts {
                    revision: snap.compact_revision().unwrap(),
                    ..RangeOpts::default()
                },
            )
            .unwrap();
        assert_eq!(old.count, 200);
    }
    store.db().stats().page_count
}

#[test]
fn compaction_frees_space_for_reuse() {
    let (kept, compacted) = (churn(false), churn(true));
    println!(
        "mvcc: 10,000 versions of 200 keys: {kept} pages without compaction, {compacted} with"
    );
    assert!(
        compacted * 2 < kept,
        "compaction should at least halve the pages: {compacted} vs {kept}"
    );
}

/// The current revision comes from the newest revision row; a put writes no other row, and a
/// compaction that removes the newest row (a tombstone) records the revision instead. Both
/// survive commits without sync followed by a durable one, and a reopen.
#[test]
fn the_revision_survives_compacting_its_own_tombstone() {
    let storage = Arc::new(SimStorage::new(64 << 20));
    let store = open(&storage);
    let mut t = store.write().unwrap();
    t.put(b"a", b"1", 0).unwrap();
    t.commit_no_sync(1).unwrap();
    let mut t = store.write().unwrap();
    t.put(b"b", b"2", 0).unwrap();
    assert_eq!(t.commit_no_sync(2).unwrap().0, 3);
    assert_eq!(
        store.db().begin_read().get(b"mrev").unwrap(),
        None,
        "puts record no revision row"
    );
    let mut t = store.write().unwrap();
    t.delete_range(b"b", b"").unwrap();
    assert_eq!(t.commit_no_sync(3).unwrap().0, 4);
    let mut t = store.write().unwrap();
    t.compact(4).unwrap();
    t.commit(4).unwrap();
    // The tombstone at 4 is gone; the newest row left is the put at 2.
    assert_eq!(store.snapshot().revision().unwrap(), 4);
    drop(store);
    let store = open(&storage);
    let snap = store.snapshot();
    assert_eq!(snap.revision().unwrap(), 4);
    assert_eq!(snap.compact_revision().unwrap(), 4);
    let mut t = store.write().unwrap();
    t.put(b"c", b"3", 0).unwrap();
    assert_eq!(
        t.commit(5).unwrap().0,
        5,
        "the next put takes the revision after it"
    );
    drop(snap);
    drop(store);
    assert_eq!(open(&storage).snapshot().revision().unwrap(), 5);
}

/// A request rolled back to a savepoint keeps what it did before it and nothing after: no
/// version, no row, no event, and the revision it would have taken stays free.
#[test]
fn a_savepoint_takes_back_only_what_followed_it() {
    let storage = Arc::new(SimStorage::new(64 << 20));
    let store = open(&storage);
    let mut t = store.write().unwrap();
    t.put(b"a", b"1", 0).unwrap();
    t.end_request();
    t.put(b"kept", b"k", 0).unwrap();
    let sp = t.savepoint();
    t.put(b"a", b"2", 0).unwrap();
    t.put(b"gone", b"g", 0).unwrap();
    t.delete_range(b"kept", b"").unwrap();
    t.rollback_to(sp).unwrap();
    assert_eq!(t.get(b"a").unwrap().unwrap().value, b"1");
    assert!(t.get(b"gone").unwrap().is_none());
    assert_eq!(t.get(b"kept").unwrap().unwrap().value, b"k");
    // Going back to the start of the request leaves it empty: it takes no revision.
    let start = {
        t.end_request();
        t.savepoint()
    };
    t.put(b"late", b"l", 0).unwrap();
    t.rollback_to(start).unwrap();
    let events = t.take_events();
    assert_eq!(events.len(), 2, "the put of a, and kept");
    assert_eq!(t.commit(1).unwrap().0, 3);
    drop(store);
    let store = open(&storage);
    let snap = store.snapshot();
    assert_eq!(snap.revision().unwrap(), 3);
    let all = snap.range(b"a", b"z", Default::default()).unwrap().kvs;
    let keys: Vec<&[u8]> = all.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"a"[..], b"kept"]);
}

/// How many revision rows the tree holds.
fn rows(store: &Mvcc) -> usize {
    store.db().begin_read().prefix(b"r").count()
}

/// A compaction of many keys sweeps a slice per transaction: the compaction's own commit
/// leaves the work to later ones, which first drop versions from the index and then remove
/// their rows in revision order; until the last slice every read and the hash are what they
/// are after it, on the store that swept and on one reopened in the middle of the sweep. The
/// first round writes the keys in an order unlike their names, so that removing rows key by
/// key would rewrite each leaf again and again: the whole sweep writes less than the tree holds.
#[test]
fn a_compaction_sweeps_in_slices_and_no_read_or_hash_can_tell() {
    let storage = Arc::new(SimStorage::new(256 << 20));
    let store = open(&storage);
    let keys = 30_000u32;
    for round in 0..2u64 {
        let mut t = store.write().unwrap();
        for i in 0..keys {
            let k = if round == 0 { i * 7_919 % keys } else { i };
            t.put(format!("k{k:05}").as_bytes(), &[round as u8; 16], 0)
                .unwrap();
            t.end_request();
        }
        t.commit(round).unwrap();
    }
    let full = rows(&store);
    assert_eq!(full, 2 * keys as usize);
    let used_bytes = {
        let st = store.db().stats();
        (st.page_count - st.free_pages - st.pending_pages) * st.page_size as u64
    };
    let mut t = store.write().unwrap();
    let at = t.current_revision();
    t.compact(at).unwrap();
    t.commit(2).unwrap();
    assert!(
        store.sweeping(),
        "one commit sweeps a slice, not the whole key space"
    );
    storage.record_trace();
    let mut commits = 0;
    while rows(&store) == full {
        store.write().unwrap().commit(3).unwrap();
        commits += 1;
        assert!(commits < 100, "the sweep never removed a row");
    }
    assert!(
        commits > 1,
        "the index's pass took one slice: the test tests none"
    );
    let left = rows(&store);
    assert!(
        left > keys as usize && left < full,
        "{left} rows after the first slice of rows"
    );
    let hash_mid = store.snapshot().hash(0).unwrap();
    let read = |s: &Mvcc| {
        s.snapshot()
            .range(
                b"k",
                b"l",
                RangeOpts {
                    revision: at,
                    ..RangeOpts::default()
                },
            )
            .unwrap()
            .kvs
    };
    let reads_mid = read(&store);
    assert_eq!(reads_mid.len(), keys as usize);
    assert!(reads_mid.iter().all(|kv| kv.value == [1u8; 16]));

    // Reopened mid-sweep: the rebuilt index knows a sweep is owed.
    drop(store);
    let store = open(&storage);
    assert!(store.sweeping());
    assert_eq!(rows(&store), left);
    assert_eq!(store.snapshot().hash(0).unwrap(), hash_mid);
    while store.sweeping() {
        store.write().unwrap().commit_no_sync(3).unwrap();
        commits += 1;
        assert!(commits < 100, "the sweep ends");
    }
    store.write().unwrap().commit(4).unwrap();
    let written_bytes: usize = storage
        .trace()
        .iter()
        .map(|op| match op {
            quorumkv_btree::SimOp::Write(_, data) => data.len(),
            _ => 0,
        })
        .sum();
    assert!(
        (written_bytes as u64) < used_bytes,
        "the sweep wrote {written_bytes} bytes, the tree holds {used_bytes}"
    );
    assert_eq!(
        rows(&store),
        keys as usize,
        "one version of each key is left"
    );
    assert_eq!(store.snapshot().hash(0).unwrap(), hash_mid);
    assert_eq!(read(&store), reads_mid);
    assert!(matches!(
        store.snapshot().range(
            b"k",
            b"l",
            RangeOpts {
                revision: at - 1,
                ..RangeOpts::default()
            }
        ),
        Err(MvccError::Compacted)
    ));
}
