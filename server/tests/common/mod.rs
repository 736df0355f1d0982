//! Helpers shared by the server's integration tests.

use quorumkv_btree::{BTreeOptions, Db};
use quorumkv_server::mvcc::{KeyValue, Mvcc, RangeOpts};

/// The key space in the tree file `dir/name` (created if missing).
pub fn open(dir: &std::path::Path, name: &str) -> Mvcc {
    Mvcc::open(Db::open(dir.join(name), BTreeOptions::default()).unwrap()).unwrap()
}

/// Every row of the tree, in order.
pub fn rows(m: &Mvcc) -> Vec<(Vec<u8>, Vec<u8>)> {
    let snap = m.db().begin_read();
    snap.iter()
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
        .collect()
}

/// Every live key's version at `rev` (0: current).
#[allow(dead_code, reason = "not every test binary reads at a revision")]
pub fn live_at(m: &Mvcc, rev: i64) -> Vec<KeyValue> {
    let opts = RangeOpts {
        revision: rev,
        ..RangeOpts::default()
    };
    m.snapshot().range(&[0], &[0], opts).unwrap().kvs
}
