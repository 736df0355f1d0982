//! `quorumkv snapshot restore`: builds a member's key space from an etcd snapshot file (one
//! saved from etcd, or from quorumkv, which streams the same format) in a new data directory.
//! Every stored version, the current and compacted revisions, leases, users, roles and the
//! auth switch carry over; membership does not (it comes from the flags the member starts
//! with, as after etcd's restore). The restored tree records applied index 0, so a cluster
//! whose members all restore the same file starts its log on identical key spaces.
//!
//! The file is hostile: its SHA-256 trailer is checked (unless skipped), the bbolt structure
//! is checked by the reader, and every record must decode and fit the tree's limits.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use prost::Message;
use quorumkv_btree::{Db, WriteTxn};
use sha2::{Digest, Sha256};

use super::apply::lease_row;
use super::backup::LeaseRecord;
use super::bolt_reader::{BoltReader, BucketRoot};
use super::rbac::AuthState;
use crate::mvcc::{KeyValue, keys, kv};
use crate::pb::{authpb, mvccpb};

/// Rows written per intermediate commit, bounding the dirty pages held in memory.
const BATCH_ROWS: usize = 20_000;

/// Receives each key and value of a bucket.
type Visit<'v> = dyn FnMut(&[u8], &[u8]) -> Result<(), String> + 'v;

/// What a restore wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Current revision of the restored key space.
    pub revision: i64,
    /// Its compacted revision (0: none).
    pub compact_revision: i64,
    /// Stored versions (deletions included).
    pub versions: u64,
    /// Live keys.
    pub keys: u64,
    /// Leases.
    pub leases: u64,
    /// Users.
    pub users: u64,
    /// Roles.
    pub roles: u64,
}

/// Inserts rows through a write transaction committed every [`BATCH_ROWS`] rows.
struct Loader<'a> {
    db: &'a Db,
    txn: Option<WriteTxn>,
    rows: usize,
}

impl Loader<'_> {
    fn put(&mut self, k: &[u8], v: &[u8]) -> Result<(), String> {
        if self.txn.is_none() {
            self.txn = Some(self.db.begin_write().map_err(|e| e.to_string())?);
        }
        let txn = self.txn.as_mut().expect("opened above");
        txn.insert(k, v).map_err(|e| {
            format!(
                "key {:?}: {e}",
                String::from_utf8_lossy(&k[..k.len().min(64)])
            )
        })?;
        self.rows += 1;
        if self.rows % BATCH_ROWS == 0 {
            let txn = self.txn.take().expect("open");
            txn.commit_no_sync().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Commits the rest durably (an empty transaction still makes the file durable).
    fn finish(mut self) -> Result<(), String> {
        let txn = match self.txn.take() {
            Some(t) => t,
            None => self.db.begin_write().map_err(|e| e.to_string())?,
        };
        txn.commit().map_err(|e| e.to_string())
    }
}

/// Parses etcd's revision key: (main, sub, deletion).
fn parse_revision_key(k: &[u8]) -> Option<(u64, u64, bool)> {
    let tomb = match k.len() {
        17 => false,
        18 if k[17] == b't' => true,
        _ => return None,
    };
    if k[8] != b'_' {
        return None;
    }
    let main = u64::from_be_bytes(k[..8].try_into().ok()?);
    let sub = u64::from_be_bytes(k[9..17].try_into().ok()?);
    Some((main, sub, tomb))
}

/// Decodes a user or role row, whose key must be the record's own name.
fn named<M: Message + Default>(k: &[u8], v: &[u8], name: fn(&M) -> &Vec<u8>) -> Result<M, String> {
    let m = M::decode(v).map_err(|e| format!("{:?}: {e}", String::from_utf8_lossy(k)))?;
    if name(&m).as_slice() != k {
        return Err(format!(
            "the row {:?} holds another name",
            String::from_utf8_lossy(k)
        ));
    }
    Ok(m)
}

/// The database bytes of a snapshot file, after checking its SHA-256 trailer. etcd's files
/// (and quorumkv's) end with one: the length is then 32 past a multiple of 512.
pub fn database_bytes(file: &[u8], skip_hash_check: bool) -> Result<&[u8], String> {
    let has_hash = file.len() % 512 == 32;
    if !has_hash {
        if skip_hash_check {
            return Ok(file);
        }
        return Err("snapshot missing hash but --skip-hash-check=false".into());
    }
    let (db, trailer) = file.split_at(file.len() - 32);
    if !skip_hash_check && Sha256::digest(db).as_slice() != trailer {
        return Err("expected sha256 does not match the snapshot's contents".into());
    }
    Ok(db)
}

/// Restores `snapshot` into a new data directory `data_dir`.
pub fn restore(
    snapshot: &Path,
    data_dir: &Path,
    skip_hash_check: bool,
) -> Result<RestoreReport, String> {
    if data_dir.exists()
        && std::fs::read_dir(data_dir)
            .map_err(|e| format!("{}: {e}", data_dir.display()))?
            .next()
            .is_some()
    {
        return Err(format!(
            "data dir {} exists and is not empty",
            data_dir.display()
        ));
    }
    let file = std::fs::File::open(snapshot).map_err(|e| format!("{}: {e}", snapshot.display()))?;
    // SAFETY: a private read-only mapping of a file this process does not change; a file
    // changed underneath by someone else fails the hash check or the structure checks.
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("{}: {e}", snapshot.display()))?;
    let db_bytes = database_bytes(&map, skip_hash_check)?;
    let bolt = BoltReader::open(db_bytes)?;
    let buckets: HashMap<&[u8], BucketRoot<'_>> = bolt.buckets()?.into_iter().collect();
    let member = data_dir.join("member");
    std::fs::create_dir_all(&member).map_err(|e| format!("{}: {e}", member.display()))?;
    let loaded = load_tree(&bolt, &buckets, &member.join("db"));
    if loaded.is_err() {
        // The directory was empty or absent: what is there now is this restore's own.
        let _ = std::fs::remove_dir_all(&member);
    }
    loaded
}

/// Writes the key space of an opened snapshot into a new tree at `db_path`.
fn load_tree(
    bolt: &BoltReader<'_>,
    buckets: &HashMap<&[u8], BucketRoot<'_>>,
    db_path: &Path,
) -> Result<RestoreReport, String> {
    let db = crate::member::open_db(db_path).map_err(|e| e.to_string())?;
    let mut load = Loader {
        db: &db,
        txn: None,
        rows: 0,
    };
    let mut report = RestoreReport::default();
    let each = |name: &[u8], f: &mut Visit<'_>| match buckets.get(name) {
        Some(root) => bolt.for_each(*root, &mut |k, v| f(k, v)),
        None => Ok(()),
    };

    let mut compacted = 0u64;
    each(b"meta", &mut |k, v| {
        if k == b"finishedCompactRev" {
            compacted = parse_revision_key(v)
                .filter(|r| !r.2)
                .ok_or("corrupt finishedCompactRev")?
                .0;
        }
        Ok(())
    })?;

    // Every version in revision order, as etcd stores them; which keys are live at the end
    // is counted for the report.
    let mut live: HashSet<Vec<u8>> = HashSet::new();
    let mut revision = 0u64;
    each(b"key", &mut |k, v| {
        let (main, sub, dead) = parse_revision_key(k).ok_or("corrupt revision key")?;
        let pb = mvccpb::KeyValue::decode(v).map_err(|e| format!("revision {main}: {e}"))?;
        if pb.key.is_empty() {
            return Err(format!("revision {main} has no key"));
        }
        let version = if dead {
            KeyValue {
                key: pb.key,
                mod_revision: main as i64,
                ..KeyValue::default()
            }
        } else {
            KeyValue {
                key: pb.key,
                create_revision: pb.create_revision,
                mod_revision: main as i64,
                version: pb.version,
                value: pb.value,
                lease: pb.lease,
            }
        };
        load.put(
            &keys::revision(main, sub),
            &kv::encode_record(&version, dead),
        )?;
        if dead {
            live.remove(&version.key);
        } else {
            live.insert(version.key);
        }
        revision = main;
        report.versions += 1;
        Ok(())
    })?;
    if compacted > revision.max(1) {
        return Err(format!(
            "compacted revision {compacted} is past the last revision {revision}"
        ));
    }
    report.keys = live.len() as u64;
    if revision > 0 {
        load.put(keys::META_REV, &revision.to_le_bytes())?;
    }
    if compacted > 0 {
        load.put(keys::META_COMPACT, &compacted.to_le_bytes())?;
    }

    each(b"lease", &mut |k, v| {
        let id = <[u8; 8]>::try_from(k)
            .map(i64::from_be_bytes)
            .map_err(|_| "corrupt lease id")?;
        let lease = LeaseRecord::decode(v).map_err(|e| format!("lease {id:x}: {e}"))?;
        if lease.id != id || id <= 0 {
            return Err(format!("lease {id:x} holds another id"));
        }
        report.leases += 1;
        load.put(&lease_row(id), &lease.ttl.max(1).to_le_bytes())
    })?;

    let (mut enabled, mut auth_revision) = (false, 1u64);
    each(b"auth", &mut |k, v| {
        match k {
            b"authEnabled" => enabled = v == [1],
            b"authRevision" => {
                auth_revision = <[u8; 8]>::try_from(v)
                    .map(u64::from_be_bytes)
                    .map_err(|_| "corrupt authRevision")?;
            }
            _ => {}
        }
        Ok(())
    })?;
    let mut users = Vec::new();
    each(b"authUsers", &mut |k, v| {
        users.push(named::<authpb::User>(k, v, |u| &u.name)?);
        Ok(())
    })?;
    let mut roles = Vec::new();
    each(b"authRoles", &mut |k, v| {
        roles.push(named::<authpb::Role>(k, v, |r| &r.name)?);
        Ok(())
    })?;
    report.users = users.len() as u64;
    report.roles = roles.len() as u64;
    let auth = AuthState::from_parts(enabled, auth_revision, users, roles)
        .map_err(|_| "user or role names are not UTF-8".to_string())?;
    for (k, v) in auth.rows() {
        load.put(&k, &v)?;
    }
    load.finish()?;
    report.revision = revision.max(1) as i64;
    report.compact_revision = compacted as i64;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_keys_parse_with_and_without_the_deletion_mark() {
        let mut k = 5u64.to_be_bytes().to_vec();
        k.push(b'_');
        k.extend_from_slice(&2u64.to_be_bytes());
        assert_eq!(parse_revision_key(&k), Some((5, 2, false)));
        k.push(b't');
        assert_eq!(parse_revision_key(&k), Some((5, 2, true)));
        k[17] = b'x';
        assert_eq!(parse_revision_key(&k), None);
        assert_eq!(parse_revision_key(b"short"), None);
    }

    #[test]
    fn the_trailer_must_match_unless_skipped() {
        let db = vec![7u8; 4096];
        let mut file = db.clone();
        file.extend_from_slice(&Sha256::digest(&db));
        assert_eq!(database_bytes(&file, false).unwrap(), &db[..]);
        let last = file.len() - 1;
        file[last] ^= 1;
        assert!(database_bytes(&file, false).is_err());
        assert_eq!(database_bytes(&file, true).unwrap(), &db[..]);
        assert!(database_bytes(&db, false).is_err());
        assert_eq!(database_bytes(&db, true).unwrap(), &db[..]);
    }
}
