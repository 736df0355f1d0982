//! Applies committed ZooKeeper writes to the znode rows (see [`super::znode`]), inside the
//! apply thread's write transaction: one request, one revision, so the revision is the zxid.
//!
//! Everything is decided from the entry and the rows before it (sequential names from the
//! parent's stored cversion, times from the leader's clock as stamped on the entry, ACLs against the identities the
//! entry carries), so every member reaches the same rows. Checks run in ZooKeeper's order
//! (`PrepRequestProcessor`), so the error that wins when several apply is ZooKeeper's, and a
//! refused write changes nothing. A multi applies all its operations in one revision or, when
//! one fails, none (the transaction goes back to a savepoint). Closing a session deletes its
//! ephemerals and updates their parents in the same revision. Lessor changes and the set of
//! reapable nodes follow a request only once it is applied whole.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;

use super::acl;
use super::codes::{err, event, mode, op, perm};
use super::jute::{Data, JuteError, Reader};
use super::ops::{self, Multi, WriteOp};
use super::reaper::Reapable;
use super::records::{Acl, CheckVersionRequest, SetAclRequest};
use super::txn::{OpResult, ZkAnswer, ZkDone, ZkTxn};
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

fn refuse<T>(code: i32) -> Step<T> {
    Err(Fail::Code(code))
}

/// A change outside the key space, made once its request is applied whole.
enum After {
    Attach(i64, Vec<u8>),
    Detach(i64, Vec<u8>),
    Grant(i64, i64),
    Revoke(i64),
    Reapable(String, bool),
}

/// A znode read inside the transaction.
struct Node {
    kv: KeyValue,
    rec: NodeRecord,
}

/// Applies ZooKeeper's writes to the key space of `core`.
pub struct ZkApplier {
    core: Arc<Core>,
    watches: Arc<Watches>,
    reapable: Arc<Reapable>,
    /// Events of the batch being applied, fired once it is committed.
    events: Vec<Event>,
    /// Changes of the request being applied, made once it is.
    after: Vec<After>,
    /// Sessions closed in the batch being applied, whose connections end once it is
    /// committed.
    ended: Vec<i64>,
}

impl ZkApplier {
    /// An applier over `core`, firing `watches` and keeping `reapable`.
    pub fn new(core: Arc<Core>, watches: Arc<Watches>, reapable: Arc<Reapable>) -> ZkApplier {
        ZkApplier {
            core,
            watches,
            reapable,
            events: Vec::new(),
            after: Vec::new(),
            ended: Vec::new(),
        }
    }

    fn event(&mut self, kind: i32, path: &str, acl: &[znode::StoredAcl]) {
        self.events.push(Event {
            // Stamped once the entry is applied (see `apply`).
            revision: 0,
            kind,
            path: path.to_string(),
            acl: acl.to_vec(),
        });
    }

    /// Grants every stored session its lease, attaches its ephemerals and lists the
    /// containers and TTL nodes (at start and after a snapshot install).
    pub fn load(core: &Core, reapable: &Reapable) -> Result<(), MvccError> {
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
        let nodes = snap.range(&nodes_start, &nodes_end, Default::default())?;
        let mut reap = Vec::new();
        for kv in &nodes.kvs {
            if kv.lease != 0 {
                lessor.attach(kv.lease, &kv.key);
            }
            let rec = NodeRecord::decode(kv.value.as_slice())
                .map_err(|_| MvccError::Corrupt(kv.key.clone()))?;
            if matches!(rec.kind, kind::CONTAINER | kind::TTL)
                && let Some(path) = znode::path_of(&kv.key)
            {
                reap.push(path.to_string());
            }
        }
        reapable.replace(reap);
        Ok(())
    }

    fn node(txn: &MvccTxn, path: &str) -> Step<Option<Node>> {
        let key = znode::node_key(path);
        let Some(kv) = txn.get(&key)? else {
            // The root and the system nodes always exist, as a fresh ZooKeeper has them; their
            // records are never stored.
            return Ok((path == "/" || znode::is_system(path)).then(|| Node {
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

    fn existing(txn: &MvccTxn, path: &str) -> Step<Node> {
        Self::node(txn, path)?.ok_or(Fail::Code(err::NO_NODE))
    }

    fn meta(txn: &MvccTxn, path: &str) -> Step<(MetaRow, ChildMeta)> {
        let key = znode::meta_key(path);
        let Some(kv) = txn.get(&key)? else {
            if path == "/" || znode::is_system(path) {
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

    fn put(&mut self, txn: &mut MvccTxn, key: &[u8], value: &[u8], lease: i64) -> Step<()> {
        txn.put(key, value, lease)?;
        if lease != 0 {
            self.after.push(After::Attach(lease, key.to_vec()));
        }
        Ok(())
    }

    fn delete(&mut self, txn: &mut MvccTxn, key: &[u8]) -> Step<()> {
        for kv in txn.delete_range(key, &[])? {
            if kv.lease != 0 {
                self.after.push(After::Detach(kv.lease, kv.key));
            }
        }
        Ok(())
    }

    /// Makes the changes the applied request left for after it.
    fn settle(&mut self) {
        if self.after.is_empty() {
            return;
        }
        let mut lessor = self.core.lessor.lock();
        for a in self.after.drain(..) {
            match a {
                After::Attach(lease, key) => lessor.attach(lease, &key),
                After::Detach(lease, key) => lessor.detach(lease, &key),
                After::Grant(id, ttl) => lessor.grant(id, ttl),
                After::Revoke(id) => {
                    lessor.revoke(id);
                    self.ended.push(id);
                }
                After::Reapable(path, on) => self.reapable.set(path, on),
            }
        }
    }

    fn apply_txn(&mut self, txn: &mut MvccTxn, time_ms: i64, t: &ZkTxn) -> Step<ZkDone> {
        let mut r = Reader::new(&t.body);
        match t.op {
            op::CREATE_SESSION => self.create_session(txn, t),
            op::CLOSE_SESSION => self.close_session(txn, t.session),
            op::MULTI => match ops::decode(&t.body)? {
                Multi::Write(ops) => self.multi(txn, t, time_ms, ops),
                Multi::Read(_) => refuse(err::MARSHALLING_ERROR),
            },
            op::DELETE_CONTAINER => self.reap(txn, time_ms, &r.ustring()?),
            op::SET_ACL => {
                let req: SetAclRequest = r.record()?;
                self.set_acl(txn, t, &req.path, &req.acl, req.version)
            }
            // A check is a multi's operation only.
            op::CHECK => refuse(err::UNIMPLEMENTED),
            kind => match WriteOp::read(kind, &mut r)? {
                Some(w) => self.write(txn, t, time_ms, w),
                None => refuse(err::UNIMPLEMENTED),
            },
        }
    }

    fn write(&mut self, txn: &mut MvccTxn, t: &ZkTxn, time_ms: i64, w: WriteOp) -> Step<ZkDone> {
        match w {
            WriteOp::Create { op, req } => self.create(
                txn, t, op, time_ms, req.path, req.data, &req.acl, req.flags, 0,
            ),
            WriteOp::CreateTtl(req) => self.create(
                txn,
                t,
                op::CREATE_TTL,
                time_ms,
                req.path,
                req.data,
                &req.acl,
                req.flags,
                req.ttl,
            ),
            WriteOp::Delete(req) => self.delete_node(txn, t, &req.path, req.version),
            WriteOp::SetData(req) => {
                self.set_data(txn, t, time_ms, &req.path, req.data, req.version)
            }
            WriteOp::Check(req) => self.check(txn, t, &req),
        }
    }

    /// Applies `ops` in one revision, or none of them.
    fn multi(
        &mut self,
        txn: &mut MvccTxn,
        t: &ZkTxn,
        time_ms: i64,
        ops: Vec<WriteOp>,
    ) -> Step<ZkDone> {
        let start = txn.savepoint();
        let (events, after) = (self.events.len(), self.after.len());
        let kinds: Vec<i32> = ops.iter().map(WriteOp::op).collect();
        let mut results = Vec::with_capacity(ops.len());
        for w in ops {
            let kind = w.op();
            match self.write(txn, t, time_ms, w) {
                Ok(done) => results.push(OpResult {
                    op: kind,
                    result: Ok(done),
                }),
                Err(Fail::Code(code)) => {
                    txn.rollback_to(start)?;
                    self.events.truncate(events);
                    self.after.truncate(after);
                    let failed = results.len();
                    let results = kinds
                        .iter()
                        .enumerate()
                        .map(|(i, op)| OpResult {
                            op: *op,
                            result: Err(match i.cmp(&failed) {
                                std::cmp::Ordering::Less => err::OK,
                                std::cmp::Ordering::Equal => code,
                                std::cmp::Ordering::Greater => err::RUNTIME_INCONSISTENCY,
                            }),
                        })
                        .collect();
                    return Ok(ZkDone::Multi(results));
                }
                Err(storage) => return Err(storage),
            }
        }
        Ok(ZkDone::Multi(results))
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        txn: &mut MvccTxn,
        t: &ZkTxn,
        create_op: i32,
        time_ms: i64,
        path: String,
        data: Data,
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
            _ => return refuse(err::BAD_ARGUMENTS),
        };
        // The path as given (with a digit for the suffix to come) must be valid.
        let probe = if sequential {
            format!("{path}1")
        } else {
            path.clone()
        };
        if znode::invalid_path(&probe).is_some() {
            return refuse(err::BAD_ARGUMENTS);
        }
        // Containers only through createContainer, TTL nodes only through createTTL.
        let ttl_op = create_op == op::CREATE_TTL;
        if (node_kind == kind::CONTAINER) != (create_op == op::CREATE_CONTAINER)
            || (node_kind == kind::TTL) != ttl_op
            || (ttl_op && !(1..=TTL_MAX_MS).contains(&ttl_ms))
        {
            return refuse(err::BAD_ARGUMENTS);
        }
        let Some(parent_path) = znode::parent(&path).map(str::to_string) else {
            return refuse(err::NODE_EXISTS);
        };
        if znode::is_system(&path) {
            return refuse(err::NODE_EXISTS);
        }
        let parent_path = parent_path.as_str();
        let stored_acl = acl::fixup(acl, &t.auth).map_err(Fail::Code)?;
        let parent = Self::existing(txn, parent_path)?;
        acl::check(&parent.rec.acl, &t.auth, perm::CREATE).map_err(Fail::Code)?;
        let (_, parent_meta) = Self::meta(txn, parent_path)?;
        let path = if sequential {
            format!("{path}{:010}", parent_meta.cversion)
        } else {
            path
        };
        if znode::invalid_path(&path).is_some() {
            return refuse(err::BAD_ARGUMENTS);
        }
        if Self::node(txn, &path)?.is_some() {
            return refuse(err::NODE_EXISTS);
        }
        if parent.rec.kind == kind::EPHEMERAL {
            return refuse(err::NO_CHILDREN_FOR_EPHEMERALS);
        }
        let owner = if node_kind == kind::EPHEMERAL {
            if txn.get(&znode::session_key(t.session))?.is_none() {
                return refuse(err::SESSION_EXPIRED);
            }
            t.session
        } else {
            0
        };
        let zxid = txn.revision();
        let rec = NodeRecord {
            data_null: data.0.is_none(),
            data: data.0.unwrap_or_default(),
            acl: stored_acl,
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
        if matches!(node_kind, kind::CONTAINER | kind::TTL) {
            self.after.push(After::Reapable(path.clone(), true));
        }
        self.event(event::NODE_CREATED, &path, &rec.acl);
        self.event(event::NODE_CHILDREN_CHANGED, parent_path, &parent.rec.acl);
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

    fn delete_node(
        &mut self,
        txn: &mut MvccTxn,
        t: &ZkTxn,
        path: &str,
        version: i32,
    ) -> Step<ZkDone> {
        if znode::invalid_path(path).is_some() || znode::is_system(path) {
            return refuse(err::BAD_ARGUMENTS);
        }
        let Some(parent_path) = znode::parent(path) else {
            return refuse(err::BAD_ARGUMENTS);
        };
        let parent = Self::existing(txn, parent_path)?;
        let node = Self::existing(txn, path)?;
        acl::check(&parent.rec.acl, &t.auth, perm::DELETE).map_err(Fail::Code)?;
        if version != -1 && version != node.rec.version {
            return refuse(err::BAD_VERSION);
        }
        let (_, meta) = Self::meta(txn, path)?;
        if meta.num_children > 0 {
            return refuse(err::NOT_EMPTY);
        }
        let mut parents = BTreeMap::new();
        self.remove(txn, path, &node.rec, &mut parents)?;
        self.write_parents(txn, &parents)?;
        Ok(ZkDone::Done)
    }

    /// Removes an emptied container or an expired TTL node, as the leader's reaper asks; any
    /// other node, or one that changed since, stays.
    fn reap(&mut self, txn: &mut MvccTxn, time_ms: i64, path: &str) -> Step<ZkDone> {
        let node = Self::existing(txn, path)?;
        let (_, meta) = Self::meta(txn, path)?;
        if meta.num_children > 0 {
            return refuse(err::NOT_EMPTY);
        }
        let due = match node.rec.kind {
            kind::CONTAINER => meta.cversion > 0,
            kind::TTL => node.rec.mtime.saturating_add(node.rec.ttl_ms) < time_ms,
            _ => false,
        };
        if !due {
            return refuse(err::BAD_VERSION);
        }
        let mut parents = BTreeMap::new();
        self.remove(txn, path, &node.rec, &mut parents)?;
        self.write_parents(txn, &parents)?;
        Ok(ZkDone::Done)
    }

    /// Deletes `path`'s rows; its parent's child count drops in `parents`, which the caller
    /// writes once per parent ([`ZkApplier::write_parents`]).
    fn remove(
        &mut self,
        txn: &mut MvccTxn,
        path: &str,
        rec: &NodeRecord,
        parents: &mut BTreeMap<String, (ChildMeta, Vec<znode::StoredAcl>)>,
    ) -> Step<()> {
        let parent_path = znode::parent(path).expect("never the root");
        self.delete(txn, &znode::node_key(path))?;
        self.delete(txn, &znode::meta_key(path))?;
        if matches!(rec.kind, kind::CONTAINER | kind::TTL) {
            self.after.push(After::Reapable(path.to_string(), false));
        }
        let (meta, parent_acl) = match parents.remove(parent_path) {
            Some(m) => m,
            None => {
                let acl = Self::node(txn, parent_path)?
                    .map(|n| n.rec.acl)
                    .unwrap_or_default();
                (Self::meta(txn, parent_path)?.1, acl)
            }
        };
        self.event(event::NODE_DELETED, path, &rec.acl);
        self.event(event::NODE_CHILDREN_CHANGED, parent_path, &parent_acl);
        parents.insert(
            parent_path.to_string(),
            (
                ChildMeta {
                    num_children: meta.num_children - 1,
                    ..meta
                },
                parent_acl,
            ),
        );
        Ok(())
    }

    fn write_parents(
        &mut self,
        txn: &mut MvccTxn,
        parents: &BTreeMap<String, (ChildMeta, Vec<znode::StoredAcl>)>,
    ) -> Step<()> {
        for (parent, (meta, _)) in parents {
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
        t: &ZkTxn,
        time_ms: i64,
        path: &str,
        data: Data,
        version: i32,
    ) -> Step<ZkDone> {
        if znode::invalid_path(path).is_some() || znode::is_system(path) {
            return refuse(err::BAD_ARGUMENTS);
        }
        let node = Self::existing(txn, path)?;
        acl::check(&node.rec.acl, &t.auth, perm::WRITE).map_err(Fail::Code)?;
        if version != -1 && version != node.rec.version {
            return refuse(err::BAD_VERSION);
        }
        let rec = NodeRecord {
            data_null: data.0.is_none(),
            data: data.0.unwrap_or_default(),
            mtime: time_ms,
            mzxid: txn.revision(),
            version: node.rec.version.wrapping_add(1),
            ..node.rec
        };
        self.event(event::NODE_DATA_CHANGED, path, &rec.acl);
        self.rewrite(txn, path, &node.kv, rec)
    }

    fn check(&mut self, txn: &mut MvccTxn, t: &ZkTxn, req: &CheckVersionRequest) -> Step<ZkDone> {
        if znode::invalid_path(&req.path).is_some() {
            return refuse(err::BAD_ARGUMENTS);
        }
        let node = Self::existing(txn, &req.path)?;
        acl::check(&node.rec.acl, &t.auth, perm::READ).map_err(Fail::Code)?;
        if req.version != -1 && req.version != node.rec.version {
            return refuse(err::BAD_VERSION);
        }
        Ok(ZkDone::Done)
    }

    fn set_acl(
        &mut self,
        txn: &mut MvccTxn,
        t: &ZkTxn,
        path: &str,
        acl: &[Acl],
        version: i32,
    ) -> Step<ZkDone> {
        if znode::invalid_path(path).is_some() || znode::is_system(path) {
            return refuse(err::BAD_ARGUMENTS);
        }
        let stored = acl::fixup(acl, &t.auth).map_err(Fail::Code)?;
        let node = Self::existing(txn, path)?;
        acl::check(&node.rec.acl, &t.auth, perm::ADMIN).map_err(Fail::Code)?;
        if version != -1 && version != node.rec.aversion {
            return refuse(err::BAD_VERSION);
        }
        let rec = NodeRecord {
            acl: stored,
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
            return refuse(err::SESSION_EXPIRED);
        }
        let rec = SessionRecord {
            timeout_ms: t.timeout_ms,
            password: t.password.clone(),
        };
        self.put(txn, &key, &rec.encode_to_vec(), 0)?;
        self.after
            .push(After::Grant(t.session, ttl_secs(t.timeout_ms)));
        Ok(ZkDone::Done)
    }

    /// Deletes the session and every ephemeral it owns, updating each parent once.
    fn close_session(&mut self, txn: &mut MvccTxn, session: i64) -> Step<ZkDone> {
        let key = znode::session_key(session);
        if txn.get(&key)?.is_none() {
            return refuse(err::SESSION_EXPIRED);
        }
        let owned: Vec<String> = self
            .core
            .lessor
            .lock()
            .keys(session)
            .iter()
            .filter_map(|k| znode::path_of(k).map(str::to_string))
            .collect();
        let mut parents = BTreeMap::new();
        for path in &owned {
            if let Some(node) = Self::node(txn, path)? {
                self.remove(txn, path, &node.rec, &mut parents)?;
            }
        }
        self.write_parents(txn, &parents)?;
        self.delete(txn, &key)?;
        self.after.push(After::Revoke(session));
        Ok(ZkDone::Done)
    }
}

/// A session's lease TTL: its timeout, rounded up to whole seconds.
fn ttl_secs(timeout_ms: i32) -> i64 {
    (i64::from(timeout_ms.max(1)) + 999) / 1000
}

impl Applier for ZkApplier {
    fn apply(
        &mut self,
        txn: &mut MvccTxn,
        envelope: &Envelope,
        _: &[u8],
    ) -> Result<Answer, String> {
        let start = txn.savepoint();
        let events = self.events.len();
        let result = match envelope.zookeeper.as_deref().map(ZkTxn::decode) {
            Some(Ok(t)) => match self.apply_txn(txn, envelope.time_ms as i64, &t) {
                Ok(done) => {
                    // Each event carries the revision its entry made, the zxid its writer's
                    // reply carries.
                    let made = txn.current_revision();
                    for e in &mut self.events[events..] {
                        e.revision = made;
                    }
                    Ok(done)
                }
                Err(Fail::Code(code)) => {
                    // A refused write leaves nothing, whatever step refused it.
                    txn.rollback_to(start).map_err(|e| e.to_string())?;
                    self.events.truncate(events);
                    self.after.clear();
                    Err(code)
                }
                Err(Fail::Storage(e)) => return Err(e.to_string()),
            },
            _ => Err(err::MARSHALLING_ERROR),
        };
        self.settle();
        Ok(Box::new(ZkAnswer {
            result,
            zxid: txn.current_revision(),
        }))
    }

    fn reload(&mut self) -> Result<(), String> {
        // The tree changed under the watches without events for them.
        self.watches.cut_all();
        Self::load(&self.core, &self.reapable).map_err(|e| e.to_string())
    }

    fn committed(&mut self, revision: i64) {
        let events = std::mem::take(&mut self.events);
        assert!(
            events
                .iter()
                .all(|e| 0 < e.revision && e.revision <= revision),
            "every event is stamped with a revision of its batch"
        );
        self.watches.fire(revision, &events);
        if !self.ended.is_empty() {
            self.watches.end_sessions(&std::mem::take(&mut self.ended));
        }
    }
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
