//! The key space as etcd's snapshot file: a bbolt database in etcd's backend schema followed
//! by the SHA-256 of everything before it. This is what `Maintenance.Snapshot` streams, so
//! `etcdctl snapshot status` reads the file and `etcdctl snapshot restore` turns it into an
//! etcd data directory.
//!
//! Buckets written (etcd's names and encodings):
//! - `key`: every stored version, keyed by its revision (`main` big-endian, `_`, `sub`
//!   big-endian; a trailing `t` marks a deletion), valued by the `mvccpb.KeyValue` (only the
//!   key for a deletion);
//! - `lease`: each lease's id (big-endian) → `leasepb.Lease{ID, TTL}`;
//! - `members`: member id in hex → etcd's JSON member record;
//! - `meta`: `consistent_index` (the applied log index) and, after a compaction,
//!   `scheduledCompactRev` and `finishedCompactRev`;
//! - `auth`, `authUsers`, `authRoles`: the enabled flag, the auth revision, users (with
//!   their bcrypt hashes) and roles.

use std::io::{BufWriter, Read, Write};
use std::path::Path;

use prost::Message;
use sha2::{Digest, Sha256};

use super::apply::{LEASE_PREFIX, parse_lease_row};
use super::bolt_writer::BoltWriter;
use super::rbac::{AUTH_PREFIX, AuthState};
use crate::member::identity::Member;
use crate::mvcc::{Mvcc, keys, kv};
use crate::pb::mvccpb;

/// etcd's `leasepb.Lease`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct LeaseRecord {
    #[prost(int64, tag = "1")]
    pub(crate) id: i64,
    #[prost(int64, tag = "2")]
    pub(crate) ttl: i64,
}

/// etcd's 17-byte revision key (18 with the deletion mark).
pub(crate) fn revision_key(main: u64, sub: u64, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(&main.to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&sub.to_be_bytes());
    if tombstone {
        k.push(b't');
    }
    k
}

fn corrupt(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("corrupt {what} row"),
    )
}

fn tree(e: quorumkv_btree::Error) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Adds the version stored in revision row `rk` to the `key` bucket.
fn put_version<W: Write + std::io::Seek>(
    w: &mut BoltWriter<W>,
    rk: &[u8],
    row: &[u8],
) -> std::io::Result<()> {
    let (main, sub) = keys::parse_revision(rk).ok_or_else(|| corrupt("revision"))?;
    let (v, dead) = kv::decode_record(row).ok_or_else(|| corrupt("revision"))?;
    let value = if dead {
        mvccpb::KeyValue {
            key: v.key,
            ..mvccpb::KeyValue::default()
        }
    } else {
        mvccpb::KeyValue {
            key: v.key,
            create_revision: v.create_revision,
            mod_revision: v.mod_revision,
            version: v.version,
            value: v.value,
            lease: v.lease,
        }
    };
    w.put(&revision_key(main, sub, dead), &value.encode_to_vec())
}

/// Writes the snapshot of `mvcc` (with `members`) to `path` and syncs it; returns its size
/// in bytes, trailer included.
pub fn write(mvcc: &Mvcc, members: &[Member], path: &Path) -> std::io::Result<u64> {
    let snap = mvcc.snapshot();
    let txn = snap.txn();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let mut w = BoltWriter::new(BufWriter::with_capacity(1 << 20, file))?;
    let auth_rows = txn
        .prefix(&[AUTH_PREFIX])
        .collect::<Result<Vec<_>, _>>()
        .map_err(tree)?;
    let auth = AuthState::load(auth_rows).map_err(|_| corrupt("auth"))?;
    // Bucket names in byte order: auth, authRoles, authUsers, key, lease, members, meta.
    w.bucket(b"auth")?;
    w.put(b"authEnabled", &[u8::from(auth.enabled())])?;
    w.put(b"authRevision", &auth.revision().to_be_bytes())?;
    w.bucket(b"authRoles")?;
    for name in auth.role_names() {
        if let Some(r) = auth.role(&name) {
            w.put(name.as_bytes(), &r.encode_to_vec())?;
        }
    }
    w.bucket(b"authUsers")?;
    for name in auth.user_names() {
        if let Some(u) = auth.user(&name) {
            w.put(name.as_bytes(), &u.encode_to_vec())?;
        }
    }
    w.bucket(b"key")?;
    let compacted = snap.compact_revision().map_err(|_| corrupt("meta"))?.max(0) as u64;
    // Both stores key versions by revision: every stored version, in order.
    for item in txn.prefix(&[keys::REVISIONS]) {
        let (rk, row) = item.map_err(tree)?;
        put_version(&mut w, rk, row)?;
    }
    w.bucket(b"lease")?;
    for item in txn.prefix(&[LEASE_PREFIX]) {
        let (k, v) = item.map_err(tree)?;
        let (id, ttl) = parse_lease_row(k, v).ok_or_else(|| corrupt("lease"))?;
        w.put(&id.to_be_bytes(), &LeaseRecord { id, ttl }.encode_to_vec())?;
    }
    w.bucket(b"members")?;
    let mut by_name: Vec<(String, &Member)> =
        members.iter().map(|m| (format!("{:x}", m.id), m)).collect();
    by_name.sort_by(|a, b| a.0.cmp(&b.0));
    for (id_hex, m) in by_name {
        let mut record = serde_json::json!({ "id": m.id, "peerURLs": m.peer_urls });
        if m.is_learner {
            record["isLearner"] = true.into();
        }
        if !m.name.is_empty() {
            record["name"] = m.name.clone().into();
        }
        if !m.client_urls.is_empty() {
            record["clientURLs"] = m.client_urls.clone().into();
        }
        w.put(id_hex.as_bytes(), record.to_string().as_bytes())?;
    }
    w.bucket(b"meta")?;
    w.put(b"consistent_index", &snap.applied_index().to_be_bytes())?;
    if compacted > 0 {
        let rev = revision_key(compacted, 0, false);
        w.put(b"finishedCompactRev", &rev)?;
        w.put(b"scheduledCompactRev", &rev)?;
    }
    let (out, db_bytes) = w.finish()?;
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    // The trailer etcd's tools check: SHA-256 of the database bytes.
    let mut h = Sha256::new();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = db_bytes;
    while left > 0 {
        let n = reader.read(&mut buf[..(left.min(1 << 20)) as usize])?;
        if n == 0 {
            return Err(std::io::Error::other("snapshot file shrank while hashing"));
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
    file.write_all(&h.finalize())?;
    file.sync_all()?;
    Ok(db_bytes + 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_keys_sort_as_revisions() {
        let a = revision_key(2, 0, false);
        let b = revision_key(2, 1, true);
        let c = revision_key(10, 0, false);
        assert_eq!(a.len(), 17);
        assert_eq!(b.len(), 18);
        assert!(a < b && b < c);
        assert_eq!(a[8], b'_');
    }
}
