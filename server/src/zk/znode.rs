//! Where znodes live in the shared key space, and how their Stat is made from what is stored.
//!
//! Every row is under [`PREFIX`] (in the part of the key space etcd's clients never reach):
//! - `PREFIX n <depth u16 be> <path>`: the node record ([`NodeRecord`]): data, ACL, times,
//!   versions, kind. Its key's create revision is the node's czxid; its lease is the owning
//!   session of an ephemeral.
//! - `PREFIX c <depth u16 be> <path>`: the child meta ([`ChildMeta`]): the stored cversion
//!   (a count of child creates) and the number of children. Only child creates and deletes
//!   rewrite it, so its mod revision is the node's pzxid, and a parent's data is not rewritten
//!   per child.
//! - `PREFIX s <session id be>`: a session ([`SessionRecord`]).
//!
//! The depth before the path makes a node's children one contiguous run of keys (those of
//! depth d+1 starting with `path/`), read without its grandchildren.

use prost::Message;

use super::jute::Data;
use super::records::{Acl, Id, Stat};
use crate::member::keyspace::RESERVED_START;

/// The prefix of every ZooKeeper row.
pub const PREFIX: &[u8] = &[0xff, 0xff, b'z', b'k'];

const _: () = assert!(PREFIX[0] == RESERVED_START[0] && PREFIX[1] == RESERVED_START[1]);

/// Node kinds a record keeps.
pub mod kind {
    /// Persistent (and persistent sequential).
    pub const PERSISTENT: i32 = 0;
    /// Ephemeral: removed with its session.
    pub const EPHEMERAL: i32 = 1;
    /// Container: removed once its last child goes.
    pub const CONTAINER: i32 = 2;
    /// Persistent with a TTL: removed once unchanged and childless for that long.
    pub const TTL: i32 = 3;
}

/// One permission entry as stored.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct StoredAcl {
    /// Permission bits.
    #[prost(int32, tag = "1")]
    pub perms: i32,
    /// Scheme.
    #[prost(string, tag = "2")]
    pub scheme: String,
    /// Id within the scheme.
    #[prost(string, tag = "3")]
    pub id: String,
}

/// A znode's record.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct NodeRecord {
    /// The data.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    /// Its ACL.
    #[prost(message, repeated, tag = "2")]
    pub acl: Vec<StoredAcl>,
    /// Created at, ms since the epoch (the leader's clock).
    #[prost(int64, tag = "3")]
    pub ctime: i64,
    /// Data last set at.
    #[prost(int64, tag = "4")]
    pub mtime: i64,
    /// The revision its data was last set at (setACL rewrites the record but not this).
    #[prost(int64, tag = "5")]
    pub mzxid: i64,
    /// Data version.
    #[prost(int32, tag = "6")]
    pub version: i32,
    /// ACL version.
    #[prost(int32, tag = "7")]
    pub aversion: i32,
    /// One of [`kind`].
    #[prost(int32, tag = "8")]
    pub kind: i32,
    /// A TTL node's time to live, in ms.
    #[prost(int64, tag = "9")]
    pub ttl_ms: i64,
    /// The data was set null (shown as null, not as empty; `data` is then empty).
    #[prost(bool, tag = "10")]
    pub data_null: bool,
}

impl NodeRecord {
    /// The data as a client is shown it.
    pub fn shown_data(&self) -> Data {
        Data((!self.data_null).then(|| self.data.clone()))
    }
}

/// A znode's children as counted.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct ChildMeta {
    /// Child creates so far (ZooKeeper's stored cversion; sequential names count from it).
    #[prost(int32, tag = "1")]
    pub cversion: i32,
    /// Children now.
    #[prost(int32, tag = "2")]
    pub num_children: i32,
}

/// A session as stored.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct SessionRecord {
    /// Negotiated timeout, ms.
    #[prost(int32, tag = "1")]
    pub timeout_ms: i32,
    /// The password a reconnect must present.
    #[prost(bytes = "vec", tag = "2")]
    pub password: Vec<u8>,
}

/// The nodes every ZooKeeper shows and no client may change: `/zookeeper` and its children.
pub const SYSTEM: &[&str] = &["/zookeeper", "/zookeeper/config", "/zookeeper/quota"];

/// Whether `path` is one of the [`SYSTEM`] nodes.
pub fn is_system(path: &str) -> bool {
    SYSTEM.contains(&path)
}

/// Where ZooKeeper's quotas live: `/zookeeper/quota/<path>/zookeeper_limits` (written by
/// clients: zkCli's setquota) and `.../zookeeper_stats` (its data is the server's count).
pub const QUOTA_ROOT: &str = "/zookeeper/quota";

/// For the stats node of a quota (`/zookeeper/quota/<target>/zookeeper_stats`), its target.
pub fn quota_stats_target(path: &str) -> Option<&str> {
    let target = path
        .strip_prefix(QUOTA_ROOT)?
        .strip_suffix("/zookeeper_stats")?;
    (target.len() > 1 && target.starts_with('/')).then_some(target)
}

/// How many `/`-separated names `path` has ("/" has none).
pub fn depth(path: &str) -> u16 {
    if path == "/" {
        0
    } else {
        u16::try_from(path.matches('/').count()).unwrap_or(u16::MAX)
    }
}

fn row(tag: u8, depth: u16, path: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(PREFIX.len() + 3 + path.len());
    k.extend_from_slice(PREFIX);
    k.push(tag);
    k.extend_from_slice(&depth.to_be_bytes());
    k.extend_from_slice(path.as_bytes());
    k
}

/// The key of `path`'s node record.
pub fn node_key(path: &str) -> Vec<u8> {
    row(b'n', depth(path), path)
}

/// The key of `path`'s child meta.
pub fn meta_key(path: &str) -> Vec<u8> {
    row(b'c', depth(path), path)
}

/// The range `[start, end)` holding the node records of `path`'s children.
pub fn children_range(path: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = if path == "/" {
        "/".to_string()
    } else {
        format!("{path}/")
    };
    let start = row(b'n', depth(path) + 1, &dir);
    let mut end = start.clone();
    // `/` + 1 is `0`: the first key past every `dir`-prefixed one.
    *end.last_mut().expect("ends in /") += 1;
    (start, end)
}

/// The path a node record's key names; `None` for another row.
pub fn path_of(key: &[u8]) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?.strip_prefix(b"n")?;
    std::str::from_utf8(rest.get(2..)?).ok()
}

/// The key of session `id`'s row.
pub fn session_key(id: i64) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.push(b's');
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The range holding every session row.
pub fn sessions_range() -> (Vec<u8>, Vec<u8>) {
    let mut start = PREFIX.to_vec();
    start.push(b's');
    let mut end = PREFIX.to_vec();
    end.push(b's' + 1);
    (start, end)
}

/// The parent of `path` ("/" for a top-level node); `None` for "/".
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// The last name of `path`.
pub fn name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// Why a path is not one ZooKeeper takes (`PathUtils.validatePath`); `None` if it is.
pub fn invalid_path(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("path is empty");
    }
    if !path.starts_with('/') {
        return Some("path must start with /");
    }
    if path.len() == 1 {
        return None;
    }
    if path.ends_with('/') {
        return Some("path must not end with /");
    }
    for c in path.chars() {
        match c {
            '\0' => return Some("null character not allowed"),
            '\u{1}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => return Some("invalid character"),
            '\u{e000}'..='\u{f8ff}' | '\u{fff0}'..='\u{ffff}' => {
                return Some("invalid character");
            }
            _ => {}
        }
    }
    for part in path[1..].split('/') {
        match part {
            "" => return Some("empty node name"),
            "." | ".." => return Some("relative paths not allowed"),
            _ => {}
        }
    }
    None
}

/// The root's record before any write: open to everyone, as ZooKeeper's root is.
pub fn root_record() -> NodeRecord {
    NodeRecord {
        acl: vec![StoredAcl {
            perms: super::codes::perm::ALL,
            scheme: "world".into(),
            id: "anyone".into(),
        }],
        ..NodeRecord::default()
    }
}

/// What the ACL vector of a request is, stored.
pub fn store_acl(acl: &[Acl]) -> Vec<StoredAcl> {
    acl.iter()
        .map(|a| StoredAcl {
            perms: a.perms,
            scheme: a.id.scheme.clone(),
            id: a.id.id.clone(),
        })
        .collect()
}

/// A stored ACL as the wire carries it.
pub fn wire_acl(acl: &[StoredAcl]) -> Vec<Acl> {
    acl.iter()
        .map(|a| Acl {
            perms: a.perms,
            id: Id {
                scheme: a.scheme.clone(),
                id: a.id.clone(),
            },
        })
        .collect()
}

/// What the node row of a znode holds besides its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRow {
    /// The revision that created it.
    pub czxid: i64,
    /// Its lease: the owning session of an ephemeral, else 0.
    pub lease: i64,
}

/// What the child meta row holds besides its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaRow {
    /// The revision of the last child create or delete (or of the node's create).
    pub pzxid: i64,
}

/// A znode's Stat as ZooKeeper shows it (`DataNode.copyStat`): the visible cversion counts
/// child changes (a create and a delete each), from the stored count of creates.
pub fn stat(row: NodeRow, rec: &NodeRecord, meta_row: MetaRow, meta: ChildMeta) -> Stat {
    Stat {
        czxid: row.czxid,
        mzxid: rec.mzxid,
        ctime: rec.ctime,
        mtime: rec.mtime,
        version: rec.version,
        cversion: meta
            .cversion
            .wrapping_mul(2)
            .wrapping_sub(meta.num_children),
        aversion: rec.aversion,
        // Containers and TTL nodes show no owner.
        ephemeral_owner: if rec.kind == kind::EPHEMERAL {
            row.lease
        } else {
            0
        },
        data_length: i32::try_from(rec.data.len()).unwrap_or(i32::MAX),
        num_children: meta.num_children,
        pzxid: meta_row.pzxid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_stats_node_names_its_target() {
        let target = |p| quota_stats_target(p);
        assert_eq!(target("/zookeeper/quota/a/zookeeper_stats"), Some("/a"));
        assert_eq!(target("/zookeeper/quota/a/b/zookeeper_stats"), Some("/a/b"));
        for not in [
            "/zookeeper/quota/zookeeper_stats",
            "/zookeeper/quota//zookeeper_stats",
            "/zookeeper/quota/a/zookeeper_limits",
            "/zookeeper/quotax/zookeeper_stats",
            "/a/zookeeper_stats",
        ] {
            assert_eq!(target(not), None, "{not}");
        }
    }

    #[test]
    fn children_are_one_run_of_keys_without_grandchildren() {
        let (start, end) = children_range("/a");
        for child in ["/a/b", "/a/zz", "/a/0"] {
            let k = node_key(child);
            assert!(k >= start && k < end, "{child}");
        }
        for other in ["/a", "/a/b/c", "/ab", "/a0", "/b/c"] {
            let k = node_key(other);
            assert!(!(k >= start && k < end), "{other}");
        }
        let (start, end) = children_range("/");
        assert!(node_key("/a") >= start && node_key("/a") < end);
        assert!(!(node_key("/a/b") >= start && node_key("/a/b") < end));
        assert_eq!(path_of(&node_key("/a/b")), Some("/a/b"));
        assert_eq!(path_of(&meta_key("/a/b")), None);
    }

    #[test]
    fn paths_as_zookeeper_checks_them() {
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert_eq!(name("/a/lock-0000000001"), "lock-0000000001");
        for ok in ["/", "/a", "/a/b", "/zookeeper", "/a b/ü"] {
            assert_eq!(invalid_path(ok), None, "{ok}");
        }
        for bad in [
            "", "a", "/a/", "//a", "/a//b", "/a/./b", "/..", "/a\0", "/\u{1}",
        ] {
            assert!(invalid_path(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn stat_shows_cversion_as_changes_not_creates() {
        // Three children created, one deleted since: four changes, two children.
        let rec = NodeRecord {
            data: b"abc".to_vec(),
            kind: kind::EPHEMERAL,
            mzxid: 7,
            ..NodeRecord::default()
        };
        let meta = ChildMeta {
            cversion: 3,
            num_children: 2,
        };
        let s = stat(
            NodeRow {
                czxid: 5,
                lease: 0x100,
            },
            &rec,
            MetaRow { pzxid: 9 },
            meta,
        );
        assert_eq!((s.cversion, s.num_children, s.pzxid), (4, 2, 9));
        assert_eq!(
            (s.czxid, s.mzxid, s.data_length, s.ephemeral_owner),
            (5, 7, 3, 0x100)
        );
        let container = NodeRecord {
            kind: kind::CONTAINER,
            ..rec
        };
        let s = stat(
            NodeRow {
                czxid: 5,
                lease: 0x100,
            },
            &container,
            MetaRow { pzxid: 9 },
            meta,
        );
        assert_eq!(s.ephemeral_owner, 0);
    }
}
