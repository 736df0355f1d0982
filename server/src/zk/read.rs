//! ZooKeeper's reads, served from one snapshot of the key space: a node's data and Stat, its
//! children, its ACL. The root always exists; `/zookeeper`, `/zookeeper/quota` and
//! `/zookeeper/config` are shown as a real server shows them, empty, their records never
//! stored (their children are). A quota's stats node shows its target's count and bytes at
//! the snapshot read, as ZooKeeper keeps them current without changing the node's Stat.
//!
//! A read never writes and never waits: the caller picks the snapshot.

use prost::Message;

use super::records::Stat;
use super::znode::{self, ChildMeta, MetaRow, NodeRecord, NodeRow};
use crate::mvcc::{MvccError, RangeOpts, Snapshot};

/// A node as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its record.
    pub record: NodeRecord,
    /// Its Stat.
    pub stat: Stat,
}

fn one(snap: &Snapshot, key: &[u8]) -> Result<Option<crate::mvcc::KeyValue>, MvccError> {
    Ok(snap
        .range(key, &[], RangeOpts::default())?
        .kvs
        .into_iter()
        .next())
}

/// `path`'s record and Stat at `snap`, if it exists.
pub fn node(snap: &Snapshot, path: &str) -> Result<Option<Found>, MvccError> {
    let kv = one(snap, &znode::node_key(path))?;
    let (row, mut record) = match kv {
        Some(kv) => {
            let record = NodeRecord::decode(kv.value.as_slice())
                .map_err(|_| MvccError::Corrupt(kv.key.clone()))?;
            let row = NodeRow {
                czxid: kv.create_revision,
                lease: kv.lease,
            };
            (row, record)
        }
        None if path == "/" || znode::is_system(path) => {
            (NodeRow { czxid: 0, lease: 0 }, znode::root_record())
        }
        None => return Ok(None),
    };
    if let Some(target) = znode::quota_stats_target(path) {
        let (count, bytes) = usage(snap, target)?;
        record.data = format!("count={count},bytes={bytes}").into_bytes();
        record.data_null = false;
    }
    let (meta_row, mut meta) = match one(snap, &znode::meta_key(path))? {
        Some(kv) => (
            MetaRow {
                pzxid: kv.mod_revision,
            },
            ChildMeta::decode(kv.value.as_slice()).map_err(|_| MvccError::Corrupt(kv.key))?,
        ),
        None => (MetaRow { pzxid: 0 }, ChildMeta::default()),
    };
    // Shown children a real server adds without counting a create: its root shows a
    // cversion of -1.
    meta.num_children += system_children(path).len() as i32;
    let stat = znode::stat(row, &record, meta_row, meta);
    Ok(Some(Found { record, stat }))
}

/// The shown-but-not-stored children of `path`.
fn system_children(path: &str) -> &'static [&'static str] {
    match path {
        "/" => &["zookeeper"],
        "/zookeeper" => &["config", "quota"],
        _ => &[],
    }
}

/// The names of `path`'s children at `snap`, in key order.
pub fn children(snap: &Snapshot, path: &str) -> Result<Vec<String>, MvccError> {
    let (start, end) = znode::children_range(path);
    let opts = RangeOpts {
        keys_only: true,
        ..RangeOpts::default()
    };
    let mut names: Vec<String> = snap
        .range(&start, &end, opts)?
        .kvs
        .iter()
        .filter_map(|kv| znode::path_of(&kv.key).map(|p| znode::name(p).to_string()))
        .collect();
    let shown = system_children(path);
    if !shown.is_empty() {
        names.extend(shown.iter().map(|n| n.to_string()));
        names.sort_unstable();
    }
    Ok(names)
}

/// How many nodes `path` and everything below it hold, and their data's bytes (0 and 0 when it
/// does not exist).
fn usage(snap: &Snapshot, path: &str) -> Result<(i64, i64), MvccError> {
    let Some(kv) = one(snap, &znode::node_key(path))? else {
        return Ok((0, 0));
    };
    let bytes_of = |kv: &crate::mvcc::KeyValue| {
        NodeRecord::decode(kv.value.as_slice())
            .map(|r| r.data.len() as i64)
            .map_err(|_| MvccError::Corrupt(kv.key.clone()))
    };
    let (mut count, mut bytes) = (1, bytes_of(&kv)?);
    let mut todo = vec![path.to_string()];
    while let Some(p) = todo.pop() {
        let (start, end) = znode::children_range(&p);
        for kv in snap.range(&start, &end, RangeOpts::default())?.kvs {
            count += 1;
            bytes += bytes_of(&kv)?;
            if let Some(child) = znode::path_of(&kv.key) {
                todo.push(child.to_string());
            }
        }
    }
    Ok((count, bytes))
}

/// How many nodes lie below `path`, at any depth.
pub fn descendants(snap: &Snapshot, path: &str) -> Result<i64, MvccError> {
    let mut total = 0;
    let mut todo = vec![path.to_string()];
    while let Some(p) = todo.pop() {
        for name in children(snap, &p)? {
            total += 1;
            todo.push(if p == "/" {
                format!("/{name}")
            } else {
                format!("{p}/{name}")
            });
        }
    }
    Ok(total)
}
