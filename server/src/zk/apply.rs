//! Applies committed ZooKeeper writes to the znode rows (see [`super::znode`]), inside the
//! apply thread's write transaction: one request, one revision, so the revision is the zxid.
//!
//! Everything is decided from the entry and the rows before it (sequential names from the
//! parent's stored cversion, times from the proposer's clock), so every member reaches the
//! same rows. Checks run in ZooKeeper's order (`PrepRequestProcessor`), so the error that wins
//! when several apply is ZooKeeper's, and a refused write changes nothing. Closing a session
//! deletes its ephemerals and updates their parents in the same revision.
//!
//! Not yet here: ACL enforcement (ACLs are validated and stored), multi, and the reaping of
//! containers and TTL nodes.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;

use super::codes::{err, event, mode, op};
use super::jute::{JuteError, Reader};
use super::records::SetDataRequest;
use super::records::{Acl, CreateRequest, CreateTtlRequest, DeleteRequest, SetAclRequest};
use super::txn::{ZkAnswer, ZkDone, ZkTxn};
use super::watches::{Event, Watches};
use super::znode::{self, ChildMeta, MetaRow, NodeRecord, NodeRow, SessionRecord, kind};
use crate::member::core::Core;
use crate::member::envelope::Envelope;
use crate::member::machine::Applier;
use crate::member::pending::Answer;
use crate::mvcc::{KeyValue, MvccError, MvccTxn};

/// Longest TTL a node may have, ms (ZooKeeper's `EphemeralType.TTL` limit).
pub const TTL_MAX_MS: i64 = (1 << 40) - 1;

/// Why a write stopped: ZooKeeper's error for its client, or a storage failure.
enum Fail {
    Code(i32),
    Storage(MvccError),
}

impl From<MvccError> for Fail {
    fn from(e: MvccError) -> Fail {
        Fail::Storage(e)
    }
}

impl From<JuteError> for Fail {
    fn from(_: JuteError) -> Fail {
        Fail::Code(err::MARSHALLING_ERROR)
    }
}

type Step<T> = Result<T, Fail>;

/// A znode read inside the transaction.
struct Node {
    kv: KeyValue,
    rec: NodeRecord,
}

/// Applies ZooKeeper's writes to the key space of `core`.
pub struct ZkApplier {
    core: Arc<Core>,
    watches: Arc<Watches>,
    /// Events of the batch being applied, fired once it is committed.
    events: Vec<Event>,
}

impl ZkApplier {
    /// An applier over `core`, firing `watches`.
    pub fn new(core: Arc<Core>, watches: Arc<Watches>) -> ZkApplier {
        ZkApplier {
            core,
            watches,
            events: Vec::new(),
        }
    }

    fn event(&mut self, kind: i32, path: &str) {
        self.events.push(Event {
            kind,
            path: path.to_string(),
        });
    }

    /// Grants every stored session its lease and attaches its ephemerals (at start and after
    /// a snapshot install).
    pub fn load(core: &Core) -> Result<(), MvccError> {
        let snap = core.mvcc.snapshot();
        let (start, end) = znode::sessions_range();
        let sessions = snap.range(&start, &end, Default::default())?;
        let mut lessor = core.lessor.lock();
        for kv in sessions.kvs {
            let id = i64::from_be_bytes(
                kv.key[start.len()..]
                    .try_into()
                    .map_err(|_| MvccError::Corrupt(kv.key.clone()))?,
            );
            let s = SessionRecord::decode(kv.value.as_slice())
                .map_err(|_| MvccError::Corrupt(kv.key))?;
            lessor.grant(id, ttl_secs(s.timeout_ms));
        }
        let mut nodes_start = znode::PREFIX.to_vec();
        nodes_start.push(b'n');
        let mut nodes_end = znode::PREFIX.to_vec();
        nodes_end.push(b'n' + 1);
        let nodes = snap.range(
            &nodes_start,
            &nodes_end,
            crate::mvcc::RangeOpts {
                keys_only: true,
                ..Default::default()
            },
        )?;
        for kv in nodes.kvs.iter().filter(|kv| kv.lease != 0) {
            lessor.attach(kv.lease, &kv.key);
        }
        Ok(())
    }

    fn node(txn: &MvccTxn, path: &str) -> Step<Option<Node>> {
        let key = znode::node_key(path);
        let Some(kv) = txn.get(&key)? else {
            // The root always exists: until a write gives it rows, as a fresh ZooKeeper has it.
            return Ok((path == "/").then(|| Node {
                kv: KeyValue {
                    key,
                    ..KeyValue::default()
                },
                rec: znode::root_record(),
            }));
        };
        let rec = NodeRecord::decode(kv.value.as_slice())
            .map_err(|_| MvccError::Corrupt(kv.key.clone()))?;
        Ok(Some(Node { kv, rec }))
    }

    fn meta(txn: &MvccTxn, path: &str) -> Step<(MetaRow, ChildMeta)> {
        let key = znode::meta_key(path);
        let Some(kv) = txn.get(&key)? else {
            if path == "/" {
                return Ok((MetaRow { pzxid: 0 }, ChildMeta::default()));
            }
            return Err(MvccError::Corrupt(key).into());
        };
        let meta = ChildMeta::decode(kv.value.as_slice()).map_err(|_| MvccError::Corrupt(key))?;
        Ok((
            MetaRow {
                pzxid: kv.mod_revision,
            },
            meta,
        ))
    }

    fn put(&self, txn: &mut MvccTxn, key: &[u8], value: &[u8], lease: i64) -> Step<()> {
        txn.put(key, value, lease)?;
        if lease != 0 {
            self.core.lessor.lock().attach(lease, key);
        }
        Ok(())
    }

    fn delete(&self, txn: &mut MvccTxn, key: &[u8]) -> Step<()> {
        for kv in txn.delete_range(key, &[])? {
            self.core.lessor.lock().detach(kv.lease, &kv.key);
        }
        Ok(())
    }

    fn apply_txn(&mut self, txn: &mut MvccTxn, time_ms: i64, t: &ZkTxn) -> Step<ZkDone> {
        let mut r = Reader::new(&t.body);
        // The system nodes are shown, never stored: no write reaches them.
        if matches!(t.op, op::DELETE | op::SET_DATA | op::SET_ACL)
            && znode::is_system(&Reader::new(&t.body).ustring()?)
        {
            return Err(Fail::Code(err::BAD_ARGUMENTS));
        }
        match t.op {
            op::CREATE | op::CREATE2 | op::CREATE_CONTAINER => {
                let req: CreateRequest = r.record()?;
                self.create(
                    txn, t, time_ms, req.path, req.data.0, &req.acl, req.flags, 0,
                )
            }
            op::CREATE_TTL => {
                let req: CreateTtlRequest = r.record()?;
                self.create(
                    txn, t, time_ms, req.path, req.data.0, &req.acl, req.flags, req.ttl,
                )
            }
            op::DELETE => {
                let req: DeleteRequest = r.record()?;
                self.delete_node(txn, &req.path, req.version)
            }
            op::SET_DATA => {
                let req: SetDataRequest = r.record()?;
                self.set_data(txn, time_ms, &req.path, req.data.0, req.version)
            }
            op::SET_ACL => {
                let req: SetAclRequest = r.record()?;
                self.set_acl(txn, &req.path, &req.acl, req.version)
            }
            op::CREATE_SESSION => self.create_session(txn, t),
            op::CLOSE_SESSION => self.close_session(txn, t.session),
            _ => Err(Fail::Code(err::UNIMPLEMENTED)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        txn: &mut MvccTxn,
        t: &ZkTxn,
        time_ms: i64,
        path: String,
        data: Vec<u8>,
        acl: &[Acl],
        flags: i32,
        ttl_ms: i64,
    ) -> Step<ZkDone> {
        let sequential = matches!(
            flags,
            mode::PERSISTENT_SEQUENTIAL
                | mode::EPHEMERAL_SEQUENTIAL
                | mode::PERSISTENT_SEQUENTIAL_WITH_TTL
        );
        let node_kind = match flags {
            mode::PERSISTENT | mode::PERSISTENT_SEQUENTIAL => kind::PERSISTENT,
            mode::EPHEMERAL | mode::EPHEMERAL_SEQUENTIAL => kind::EPHEMERAL,
            mode::CONTAINER => kind::CONTAINER,
            mode::PERSISTENT_WITH_TTL | mode::PERSISTENT_SEQUENTIAL_WITH_TTL => kind::TTL,
            _ => return Err(Fail::Code(err::BAD_ARGUMENTS)),
        };
        // The path as given (with a digit for the suffix to come) must be valid.
        let probe = if sequential {
            format!("{path}1")
        } else {
            path.clone()
        };
        if znode::invalid_path(&probe).is_some() {
            return Err(Fail::Code(err::BAD_ARGUMENTS));
        }
        // Containers only through createContainer, TTL nodes only through createTTL.
        let ttl_op = t.op == op::CREATE_TTL;
        if (node_kind == kind::CONTAINER) != (t.op == op::CREATE_CONTAINER)
            || (node_kind == kind::TTL) != ttl_op
            || (ttl_op && !(1..=TTL_MAX_MS).contains(&ttl_ms))
        {
            return Err(Fail::Code(err::BAD_ARGUMENTS));
        }
        let Some(parent_path) = znode::parent(&path).map(str::to_string) else {
            return Err(Fail::Code(err::NODE_EXISTS));
        };
        if znode::is_system(&path) {
            return Err(Fail::Code(err::NODE_EXISTS));
        }
        let parent_path = parent_path.as_str();
        if !valid_acl(acl) {
            return Err(Fail::Code(err::INVALID_ACL));
        }
        let Some(parent) = Self::node(txn, parent_path)? else {
            return Err(Fail::Code(err::NO_NODE));
        };
        let (_, parent_meta) = Self::meta(txn, parent_path)?;
        let path = if sequential {
            format!("{path}{:010}", parent_meta.cversion)
        } else {
            path
        };
        if znode::invalid_path(&path).is_some() {
            return Err(Fail::Code(err::BAD_ARGUMENTS));
        }
        if Self::node(txn, &path)?.is_some() {
            return Err(Fail::Code(err::NODE_EXISTS));
        }
        if parent.rec.kind == kind::EPHEMERAL {
            return Err(Fail::Code(err::NO_CHILDREN_FOR_EPHEMERALS));
        }
        let owner = if node_kind == kind::EPHEMERAL {
            if txn.get(&znode::session_key(t.session))?.is_none() {
                return Err(Fail::Code(err::SESSION_EXPIRED));
            }
            t.session
        } else {
            0
        };
        let zxid = txn.revision();
        let rec = NodeRecord {
            data,
            acl: znode::store_acl(acl),
            ctime: time_ms,
            mtime: time_ms,
            mzxid: zxid,
            version: 0,
            aversion: 0,
            kind: node_kind,
            ttl_ms: if node_kind == kind::TTL { ttl_ms } else { 0 },
        };
        let meta = ChildMeta::default();
        self.put(txn, &znode::node_key(&path), &rec.encode_to_vec(), owner)?;
        self.put(txn, &znode::meta_key(&path), &meta.encode_to_vec(), 0)?;
        let parent_meta = ChildMeta {
            cversion: parent_meta.cversion.wrapping_add(1),
            num_children: parent_meta.num_children + 1,
        };
        self.put(
            txn,
            &znode::meta_key(parent_path),
            &parent_meta.encode_to_vec(),
            0,
        )?;
        self.event(event::NODE_CREATED, &path);
        self.event(event::NODE_CHILDREN_CHANGED, parent_path);
        let stat = znode::stat(
            NodeRow {
                czxid: zxid,
                lease: owner,
            },
            &rec,
            MetaRow { pzxid: zxid },
            meta,
        );
        Ok(ZkDone::Created { path, stat })
    }

    fn delete_node(&mut self, txn: &mut MvccTxn, path: &str, version: i32) -> Step<ZkDone> {
        if znode::invalid_path(path).is_some() {
            return Err(Fail::Code(err::BAD_ARGUMENTS));
        }
        if znode::parent(path).is_none() {
            return Err(Fail::Code(err::BAD_ARGUMENTS));
        }
        let Some(node) = Self::node(txn, path)? else {
            return Err(Fail::Code(err::NO_NODE));
        };
        if version != -1 && version != node.rec.version {
            return Err(Fail::Code(err::BAD_VERSION));
        }
        let (_, meta) = Self::meta(txn, path)?;
        if meta.num_children > 0 {
            return Err(Fail::Code(err::NOT_EMPTY));
        }
        let mut parents = BTreeMap::new();
        self.remove(txn, path, &mut parents)?;
        self.write_parents(txn, &parents)?;
        Ok(ZkDone::Done)
    }

    /// Deletes `path`'s rows; its parent's child count drops in `parents`, which the caller
    /// writes once per parent ([`ZkApplier::write_parents`]).
    fn remove(
        &mut self,
        txn: &mut MvccTxn,
        path: &str,
        parents: &mut BTreeMap<String, ChildMeta>,
    ) -> Step<()> {
        let parent_path = znode::parent(path).expect("never the root");
        self.delete(txn, &znode::node_key(path))?;
        self.delete(txn, &znode::meta_key(path))?;
        self.event(event::NODE_DELETED, path);
        self.event(event::NODE_CHILDREN_CHANGED, parent_path);
        let meta = match parents.get(parent_path) {
            Some(m) => *m,
            None => Self::meta(txn, parent_path)?.1,
        };
        parents.insert(
            parent_path.to_string(),
            ChildMeta {
                num_children: meta.num_children - 1,
                ..meta
            },
        );
        Ok(())
    }

    fn write_parents(
        &mut self,
        txn: &mut MvccTxn,
        parents: &BTreeMap<String, ChildMeta>,
    ) -> Step<()> {
        for (parent, meta) in parents {
            // A parent deleted in the same request keeps no meta.
            if Self::node(txn, parent)?.is_some() {
                self.put(txn, &znode::meta_key(parent), &meta.encode_to_vec(), 0)?;
            }
        }
        Ok(())
    }

    fn set_data(
        &mut self,
        txn: &mut MvccTxn,
        time_ms: i64,
        path: &str,
        data: Vec<u8>,
        version: i32,
    ) -> Step<ZkDone> {
        if znode::invalid_path(path).is_some() {
            return Err(Fail::Code(err::BAD_ARGUMENTS));
        }
        let Some(node) = Self::node(txn, path)? else {
            return Err(Fail::Code(err::NO_NODE));
        };
        if version != -1 && version != node.rec.version {
            return Err(Fail::Code(err::BAD_VERSION));
        }
        let rec = NodeRecord {
            data,
            mtime: time_ms,
            mzxid: txn.revision(),
            version: node.rec.version.wrapping_add(1),
            ..node.rec
        };
        self.event(event::NODE_DATA_CHANGED, path);
        self.rewrite(txn, path, &node.kv, rec)
    }

    fn set_acl(
        &mut self,
        txn: &mut MvccTxn,
        path: &str,
        acl: &[Acl],
        version: i32,
    ) -> Step<ZkDone> {
        if znode::invalid_path(path).is_some() {
            return Err(Fail::Code(err::BAD_ARGUMENTS));
        }
        if !valid_acl(acl) {
            return Err(Fail::Code(err::INVALID_ACL));
        }
        let Some(node) = Self::node(txn, path)? else {
            return Err(Fail::Code(err::NO_NODE));
        };
        if version != -1 && version != node.rec.aversion {
            return Err(Fail::Code(err::BAD_VERSION));
        }
        let rec = NodeRecord {
            acl: znode::store_acl(acl),
            aversion: node.rec.aversion.wrapping_add(1),
            ..node.rec
        };
        self.rewrite(txn, path, &node.kv, rec)
    }

    /// Writes `path`'s new record, keeping its owner, and answers its Stat.
    fn rewrite(
        &mut self,
        txn: &mut MvccTxn,
        path: &str,
        kv: &KeyValue,
        rec: NodeRecord,
    ) -> Step<ZkDone> {
        self.put(txn, &kv.key, &rec.encode_to_vec(), kv.lease)?;
        let (meta_row, meta) = Self::meta(txn, path)?;
        Ok(ZkDone::Set(znode::stat(
            NodeRow {
                czxid: kv.create_revision,
                lease: kv.lease,
            },
            &rec,
            meta_row,
            meta,
        )))
    }

    fn create_session(&mut self, txn: &mut MvccTxn, t: &ZkTxn) -> Step<ZkDone> {
        let key = znode::session_key(t.session);
        // An id taken by a session or by an etcd lease is refused; the proposer picks another.
        if t.session <= 0 || txn.get(&key)?.is_some() || self.core.lessor.lock().contains(t.session)
        {
            return Err(Fail::Code(err::SESSION_EXPIRED));
        }
        let rec = SessionRecord {
            timeout_ms: t.timeout_ms,
            password: t.password.clone(),
        };
        self.put(txn, &key, &rec.encode_to_vec(), 0)?;
        self.core
            .lessor
            .lock()
            .grant(t.session, ttl_secs(t.timeout_ms));
        Ok(ZkDone::Done)
    }

    /// Deletes the session and every ephemeral it owns, updating each parent once.
    fn close_session(&mut self, txn: &mut MvccTxn, session: i64) -> Step<ZkDone> {
        let key = znode::session_key(session);
        if txn.get(&key)?.is_none() {
            return Err(Fail::Code(err::SESSION_EXPIRED));
        }
        let owned: Vec<String> = self
            .core
            .lessor
            .lock()
            .time_to_live(session)
            .map(|(_, _, keys)| keys)
            .unwrap_or_default()
            .iter()
            .filter_map(|k| znode::path_of(k).map(str::to_string))
            .collect();
        let mut parents = BTreeMap::new();
        for path in &owned {
            self.remove(txn, path, &mut parents)?;
        }
        self.write_parents(txn, &parents)?;
        self.delete(txn, &key)?;
        self.core.lessor.lock().revoke(session);
        Ok(ZkDone::Done)
    }
}

/// A session's lease TTL: its timeout, rounded up to whole seconds.
fn ttl_secs(timeout_ms: i32) -> i64 {
    (i64::from(timeout_ms.max(1)) + 999) / 1000
}

/// Whether `acl` is one ZooKeeper stores (`fixupACL`): not empty, every scheme known and every
/// id well formed for it. `auth` entries need the session's identities, which are not kept
/// yet, so they are refused as ZooKeeper refuses them for a session without any.
fn valid_acl(acl: &[Acl]) -> bool {
    !acl.is_empty()
        && acl.iter().all(|a| match a.id.scheme.as_str() {
            "world" => a.id.id == "anyone",
            "digest" => {
                a.id.id
                    .split_once(':')
                    .is_some_and(|(u, h)| !u.is_empty() && !h.is_empty())
            }
            "ip" => valid_ip(&a.id.id),
            _ => false,
        })
}

/// An `ip` ACL id: an address, or an address and a prefix length.
fn valid_ip(id: &str) -> bool {
    let (addr, bits) = match id.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (id, None),
    };
    let Ok(addr) = addr.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    bits.is_none_or(|b| b.parse::<u32>().is_ok_and(|b| b <= max))
}

impl Applier for ZkApplier {
    fn apply(
        &mut self,
        txn: &mut MvccTxn,
        envelope: &Envelope,
        _: &[u8],
    ) -> Result<Answer, String> {
        let result = match envelope.zookeeper.as_deref().map(ZkTxn::decode) {
            Some(Ok(t)) => match self.apply_txn(txn, envelope.time_ms as i64, &t) {
                Ok(done) => Ok(done),
                Err(Fail::Code(code)) => Err(code),
                Err(Fail::Storage(e)) => return Err(e.to_string()),
            },
            _ => Err(err::MARSHALLING_ERROR),
        };
        Ok(Box::new(ZkAnswer {
            result,
            zxid: txn.current_revision(),
        }))
    }

    fn reload(&mut self) -> Result<(), String> {
        Self::load(&self.core).map_err(|e| e.to_string())
    }

    fn committed(&mut self, revision: i64) {
        let events = std::mem::take(&mut self.events);
        self.watches.fire(revision, &events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::core::CoreLimits;
    use crate::zk::jute::Buffer;
    use crate::zk::jute::Jute;
    use crate::zk::records::{Id, Stat};
    use crate::zk::watches::Kind;

    const SESSION: i64 = 0x0100_0000_0000_0001;

    /// A key space on a real tree in a temporary directory, written through the applier one
    /// entry per transaction, as the apply thread does.
    struct Fixture {
        _dir: tempfile::TempDir,
        core: Arc<Core>,
        applier: ZkApplier,
        index: u64,
    }

    fn open(dir: &std::path::Path) -> Arc<Core> {
        let db = crate::member::open_db(&dir.join("db")).unwrap();
        let limits = CoreLimits {
            lease_ttl_min_secs: 1,
            watch_ring_bytes: 1 << 20,
            pending_max: 16,
        };
        Arc::new(Core::open(crate::mvcc::Mvcc::open(db).unwrap(), &[], limits).unwrap())
    }

    fn world() -> Vec<Acl> {
        vec![Acl {
            perms: 31,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }]
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let core = open(dir.path());
            let watches = Arc::new(Watches::new(1));
            let applier = ZkApplier::new(Arc::clone(&core), watches);
            Fixture {
                _dir: dir,
                core,
                applier,
                index: 0,
            }
        }

        fn write(&mut self, t: ZkTxn) -> ZkAnswer {
            self.index += 1;
            let envelope = Envelope {
                id: 0,
                time_ms: 1_700_000_000_000 + self.index,
                member_attributes: None,
                zookeeper: Some(t.encode_to_vec()),
            };
            let mut txn = self.core.mvcc.write().unwrap();
            let answer = self.applier.apply(&mut txn, &envelope, &[]).unwrap();
            txn.end_request();
            let (revision, _) = txn.commit_no_sync(self.index).unwrap();
            self.applier.committed(revision);
            *answer.downcast::<ZkAnswer>().unwrap()
        }

        fn op(&mut self, op: i32, body: impl Jute) -> ZkAnswer {
            self.write(ZkTxn {
                session: SESSION,
                op,
                body: body.to_bytes(),
                ..ZkTxn::default()
            })
        }

        fn open_session(&mut self, id: i64) {
            let a = self.write(ZkTxn {
                session: id,
                op: op::CREATE_SESSION,
                timeout_ms: 10_000,
                password: vec![7; 16],
                ..ZkTxn::default()
            });
            assert_eq!(a.result, Ok(ZkDone::Done));
        }

        fn create(&mut self, path: &str, flags: i32) -> Result<ZkDone, i32> {
            let req = CreateRequest {
                path: path.into(),
                data: Buffer(b"d".to_vec()),
                acl: world(),
                flags,
            };
            self.op(op::CREATE2, req).result
        }

        fn created(&mut self, path: &str, flags: i32) -> (String, Stat) {
            match self.create(path, flags) {
                Ok(ZkDone::Created { path, stat }) => (path, stat),
                other => panic!("create {path}: {other:?}"),
            }
        }

        fn stat(&self, path: &str) -> Option<Stat> {
            let txn = self.core.mvcc.write().unwrap();
            let node = ZkApplier::node(&txn, path).ok()??;
            let (meta_row, meta) = ZkApplier::meta(&txn, path).ok()?;
            let row = NodeRow {
                czxid: node.kv.create_revision,
                lease: node.kv.lease,
            };
            Some(znode::stat(row, &node.rec, meta_row, meta))
        }

        fn revision(&self) -> i64 {
            self.core.mvcc.snapshot().revision().unwrap()
        }
    }

    #[test]
    fn creates_count_children_and_stamp_zxids() {
        let mut f = Fixture::new();
        let (_, a) = f.created("/a", mode::PERSISTENT);
        assert_eq!(
            (a.czxid, a.mzxid, a.pzxid, a.version, a.num_children),
            (2, 2, 2, 0, 0)
        );
        let (_, b) = f.created("/a/b", mode::PERSISTENT);
        let parent = f.stat("/a").unwrap();
        assert_eq!(
            (parent.num_children, parent.cversion, parent.pzxid),
            (1, 1, b.czxid)
        );
        // Data is untouched by a child: mzxid stays.
        assert_eq!(parent.mzxid, a.mzxid);
        let root = f.stat("/").unwrap();
        assert_eq!((root.num_children, root.czxid), (1, 0));
    }

    #[test]
    fn sequential_names_count_creates_not_children() {
        let mut f = Fixture::new();
        f.open_session(SESSION);
        f.created("/q", mode::PERSISTENT);
        let (first, _) = f.created("/q/lock-", mode::EPHEMERAL_SEQUENTIAL);
        let (second, s) = f.created("/q/lock-", mode::EPHEMERAL_SEQUENTIAL);
        assert_eq!(
            (first.as_str(), second.as_str()),
            ("/q/lock-0000000000", "/q/lock-0000000001")
        );
        assert_eq!(s.ephemeral_owner, SESSION);
        let del = DeleteRequest {
            path: first,
            version: -1,
        };
        assert_eq!(f.op(op::DELETE, del).result, Ok(ZkDone::Done));
        let (third, _) = f.created("/q/lock-", mode::EPHEMERAL_SEQUENTIAL);
        assert_eq!(third, "/q/lock-0000000002");
        // Three creates and a delete: four changes, two children.
        let q = f.stat("/q").unwrap();
        assert_eq!((q.cversion, q.num_children), (4, 2));
    }

    #[test]
    fn errors_win_in_zookeepers_order() {
        let mut f = Fixture::new();
        f.open_session(SESSION);
        f.created("/a", mode::PERSISTENT);
        f.created("/a/b", mode::PERSISTENT);
        f.created("/e", mode::EPHEMERAL);
        assert_eq!(f.create("/x/y", mode::PERSISTENT), Err(err::NO_NODE));
        assert_eq!(f.create("/a", mode::PERSISTENT), Err(err::NODE_EXISTS));
        assert_eq!(f.create("/", mode::PERSISTENT), Err(err::NODE_EXISTS));
        assert_eq!(
            f.create("/e/c", mode::PERSISTENT),
            Err(err::NO_CHILDREN_FOR_EPHEMERALS)
        );
        assert_eq!(f.create("a", mode::PERSISTENT), Err(err::BAD_ARGUMENTS));
        assert_eq!(f.create("/a/", mode::PERSISTENT), Err(err::BAD_ARGUMENTS));
        assert_eq!(f.create("/c", mode::CONTAINER), Err(err::BAD_ARGUMENTS));
        assert_eq!(
            f.create("/t", mode::PERSISTENT_WITH_TTL),
            Err(err::BAD_ARGUMENTS)
        );
        assert_eq!(f.create("/t", 9), Err(err::BAD_ARGUMENTS));
        // An empty ACL is refused before the missing parent is noticed.
        let no_acl = CreateRequest {
            path: "/x/y".into(),
            ..CreateRequest::default()
        };
        assert_eq!(f.op(op::CREATE, no_acl).result, Err(err::INVALID_ACL));
        // Delete: a missing node, then the version, then the children.
        let del = |path: &str, version| DeleteRequest {
            path: path.into(),
            version,
        };
        assert_eq!(f.op(op::DELETE, del("/zz", 5)).result, Err(err::NO_NODE));
        assert_eq!(f.op(op::DELETE, del("/a", 5)).result, Err(err::BAD_VERSION));
        assert_eq!(f.op(op::DELETE, del("/a", 0)).result, Err(err::NOT_EMPTY));
        let set = SetDataRequest {
            path: "/a".into(),
            data: Buffer(b"x".to_vec()),
            version: 3,
        };
        assert_eq!(f.op(op::SET_DATA, set).result, Err(err::BAD_VERSION));
        // The TTL op itself: a TTL of 0 is refused, a container needs createContainer.
        let ttl = CreateTtlRequest {
            path: "/t".into(),
            acl: world(),
            flags: mode::PERSISTENT_WITH_TTL,
            ttl: 0,
            ..CreateTtlRequest::default()
        };
        assert_eq!(f.op(op::CREATE_TTL, ttl).result, Err(err::BAD_ARGUMENTS));
        let container = CreateRequest {
            path: "/c".into(),
            acl: world(),
            flags: mode::CONTAINER,
            ..CreateRequest::default()
        };
        assert!(matches!(
            f.op(op::CREATE_CONTAINER, container).result,
            Ok(ZkDone::Created { .. })
        ));
        assert_eq!(
            f.op(op::CHECK, PathOnly("/a")).result,
            Err(err::UNIMPLEMENTED)
        );
    }

    /// A record of only a path, for ops that take one.
    struct PathOnly(&'static str);

    impl Jute for PathOnly {
        const BYTES_MIN: usize = 4;
        fn read(_: &mut Reader<'_>) -> Result<Self, JuteError> {
            unreachable!("only written")
        }
        fn write(&self, w: &mut crate::zk::jute::Writer) {
            w.ustring(self.0);
        }
    }

    #[test]
    fn a_refused_write_changes_nothing() {
        let mut f = Fixture::new();
        f.created("/a", mode::PERSISTENT);
        let before = (f.revision(), f.stat("/a"), f.stat("/"));
        let answer = f.create("/a", mode::PERSISTENT);
        assert_eq!(answer, Err(err::NODE_EXISTS));
        assert_eq!((f.revision(), f.stat("/a"), f.stat("/")), before);
    }

    #[test]
    fn data_and_acl_versions_move_apart() {
        let mut f = Fixture::new();
        let (_, created) = f.created("/a", mode::PERSISTENT);
        let set = SetDataRequest {
            path: "/a".into(),
            data: Buffer(b"longer".to_vec()),
            version: 0,
        };
        let Ok(ZkDone::Set(s)) = f.op(op::SET_DATA, set).result else {
            panic!("setData failed");
        };
        assert_eq!((s.version, s.data_length, s.czxid), (1, 6, created.czxid));
        assert!(s.mzxid > created.mzxid && s.mtime > created.mtime);
        let acl = SetAclRequest {
            path: "/a".into(),
            acl: world(),
            version: 0,
        };
        let Ok(ZkDone::Set(a)) = f.op(op::SET_ACL, acl).result else {
            panic!("setACL failed");
        };
        // setACL bumps the ACL version only: the data's mzxid and version stay.
        assert_eq!((a.aversion, a.version, a.mzxid), (1, 1, s.mzxid));
        let bad = SetAclRequest {
            path: "/a".into(),
            acl: vec![Acl {
                perms: 31,
                id: Id {
                    scheme: "world".into(),
                    id: "someone".into(),
                },
            }],
            version: -1,
        };
        assert_eq!(f.op(op::SET_ACL, bad).result, Err(err::INVALID_ACL));
    }

    #[test]
    fn closing_a_session_removes_its_ephemerals_in_one_revision() {
        let mut f = Fixture::new();
        f.open_session(SESSION);
        f.open_session(SESSION + 1);
        f.created("/p", mode::PERSISTENT);
        f.created("/q", mode::PERSISTENT);
        f.created("/p/e1", mode::EPHEMERAL);
        f.created("/p/e2", mode::EPHEMERAL_SEQUENTIAL);
        f.created("/q/e3", mode::EPHEMERAL);
        let other = ZkTxn {
            session: SESSION + 1,
            op: op::CREATE,
            body: CreateRequest {
                path: "/q/theirs".into(),
                acl: world(),
                flags: mode::EPHEMERAL,
                ..CreateRequest::default()
            }
            .to_bytes(),
            ..ZkTxn::default()
        };
        assert!(f.write(other).result.is_ok());
        let before = f.revision();
        let watches = Arc::clone(&f.applier.watches);
        let (conn, notes) = watches.connect();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                let mut g = watches.read_at(conn, before).await;
                assert!(g.watch(Kind::Data, "/p/e1") && g.watch(Kind::Child, "/q"));
            });
        let close = f.write(ZkTxn {
            session: SESSION,
            op: op::CLOSE_SESSION,
            ..ZkTxn::default()
        });
        assert_eq!(close.result, Ok(ZkDone::Done));
        assert_eq!(close.zxid, before + 1, "one revision for the whole close");
        for gone in ["/p/e1", "/p/e20000000001", "/q/e3"] {
            assert_eq!(f.stat(gone), None, "{gone}");
        }
        let (p, q) = (f.stat("/p").unwrap(), f.stat("/q").unwrap());
        assert_eq!((p.num_children, p.pzxid), (0, close.zxid));
        assert_eq!((q.num_children, q.pzxid), (1, close.zxid));
        assert!(f.stat("/q/theirs").is_some());
        assert!(!f.core.lessor.lock().contains(SESSION));
        // Watchers armed before the close heard it once it committed.
        let mut notes = notes;
        let mut heard = Vec::new();
        while let Ok(n) = notes.try_recv() {
            heard.push(n);
        }
        assert_eq!(heard.len(), 2, "a deletion and a parent's children");
        assert!(heard[0].ends_with(b"/p/e1") && heard[1].ends_with(b"/q"));
        // A closed session is gone: closing it again, or creating an ephemeral for it, fails.
        let again = f.write(ZkTxn {
            session: SESSION,
            op: op::CLOSE_SESSION,
            ..ZkTxn::default()
        });
        assert_eq!(again.result, Err(err::SESSION_EXPIRED));
        assert_eq!(
            f.create("/p/late", mode::EPHEMERAL),
            Err(err::SESSION_EXPIRED)
        );
    }

    #[test]
    fn sessions_and_their_ephemerals_load_again() {
        let mut f = Fixture::new();
        f.open_session(SESSION);
        f.created("/e", mode::EPHEMERAL);
        // What a restart or a snapshot install starts from: a lessor with nothing.
        let core = Arc::clone(&f.core);
        core.lessor.lock().clear();
        ZkApplier::load(&core).unwrap();
        let (_, _, keys) = core.lessor.lock().time_to_live(SESSION).unwrap();
        assert_eq!(keys, vec![znode::node_key("/e")]);
    }
}
