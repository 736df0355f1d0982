//! Applies committed ZooKeeper writes to the znode rows (see [`super::znode`]), inside the
//! apply thread's write transaction: one request, one revision, so the revision is the zxid.
//!
//! Everything is decided from the entry and the rows before it (sequential names from the
//! parent's stored cversion, times from the proposer's clock, ACLs against the identities the
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
use super::jute::{JuteError, Reader};
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
        }
    }

    fn event(&mut self, kind: i32, path: &str, acl: &[znode::StoredAcl]) {
        self.events.push(Event {
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

    fn existing(txn: &MvccTxn, path: &str) -> Step<Node> {
        Self::node(txn, path)?.ok_or(Fail::Code(err::NO_NODE))
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
                txn, t, op, time_ms, req.path, req.data.0, &req.acl, req.flags, 0,
            ),
            WriteOp::CreateTtl(req) => self.create(
                txn,
                t,
                op::CREATE_TTL,
                time_ms,
                req.path,
                req.data.0,
                &req.acl,
                req.flags,
                req.ttl,
            ),
            WriteOp::Delete(req) => self.delete_node(txn, t, &req.path, req.version),
            WriteOp::SetData(req) => {
                self.set_data(txn, t, time_ms, &req.path, req.data.0, req.version)
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
            data,
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
        data: Vec<u8>,
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
            data,
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
            .time_to_live(session)
            .map(|(_, _, keys)| keys)
            .unwrap_or_default()
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
                Ok(done) => Ok(done),
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
        Self::load(&self.core, &self.reapable).map_err(|e| e.to_string())
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
    use crate::zk::records::{
        CreateRequest, CreateTtlRequest, DeleteRequest, Id, SetDataRequest, Stat,
    };
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
            let reapable = Arc::new(Reapable::default());
            let applier = ZkApplier::new(Arc::clone(&core), watches, reapable);
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
                let (mut g, ()) = watches.read(conn, || ((), before)).await;
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
        ZkApplier::load(&core, &Reapable::default()).unwrap();
        let (_, _, keys) = core.lessor.lock().time_to_live(SESSION).unwrap();
        assert_eq!(keys, vec![znode::node_key("/e")]);
    }

    fn multi_body(ops: &[(i32, Vec<u8>)]) -> Vec<u8> {
        use crate::zk::records::MultiHeader;
        let mut body = Vec::new();
        for (kind, rec) in ops {
            body.extend(
                MultiHeader {
                    kind: *kind,
                    done: false,
                    err: -1,
                }
                .to_bytes(),
            );
            body.extend_from_slice(rec);
        }
        body.extend(
            MultiHeader {
                kind: -1,
                done: true,
                err: -1,
            }
            .to_bytes(),
        );
        body
    }

    fn create_rec(path: &str) -> Vec<u8> {
        CreateRequest {
            path: path.into(),
            acl: world(),
            ..CreateRequest::default()
        }
        .to_bytes()
    }

    #[test]
    fn a_multi_is_one_revision_or_nothing() {
        use crate::zk::records::CheckVersionRequest;
        let mut f = Fixture::new();
        f.created("/a", mode::PERSISTENT);
        let before = f.revision();
        let check = |version| {
            CheckVersionRequest {
                path: "/a".into(),
                version,
            }
            .to_bytes()
        };
        let ok = f.write(ZkTxn {
            op: op::MULTI,
            body: multi_body(&[
                (op::CHECK, check(0)),
                (op::CREATE, create_rec("/a/x")),
                (op::CREATE2, create_rec("/a/y")),
            ]),
            ..ZkTxn::default()
        });
        let Ok(ZkDone::Multi(results)) = ok.result else {
            panic!("{ok:?}")
        };
        assert_eq!(ok.zxid, before + 1, "one revision for the whole multi");
        assert!(results.iter().all(|r| r.result.is_ok()));
        assert_eq!(f.stat("/a").unwrap().num_children, 2);
        // The second op fails: nothing applies, and the results say where.
        let failed = f.write(ZkTxn {
            op: op::MULTI,
            body: multi_body(&[
                (op::CREATE, create_rec("/a/z")),
                (op::CHECK, check(7)),
                (op::CREATE, create_rec("/a/w")),
            ]),
            ..ZkTxn::default()
        });
        let Ok(ZkDone::Multi(results)) = failed.result else {
            panic!("{failed:?}")
        };
        let codes: Vec<_> = results.iter().map(|r| r.result.clone().err()).collect();
        assert_eq!(
            codes,
            [
                Some(err::OK),
                Some(err::BAD_VERSION),
                Some(err::RUNTIME_INCONSISTENCY)
            ]
        );
        assert_eq!(failed.zxid, before + 1, "a failed multi takes no revision");
        assert_eq!(f.stat("/a/z"), None);
        assert_eq!(f.stat("/a").unwrap().num_children, 2);
    }

    #[test]
    fn acls_are_enforced_with_the_entrys_identities() {
        let mut f = Fixture::new();
        let me = crate::zk::acl::authenticate("digest", b"me:pw", None).unwrap();
        let locked = ZkTxn {
            op: op::CREATE,
            body: CreateRequest {
                path: "/mine".into(),
                acl: vec![Acl {
                    perms: crate::zk::codes::perm::ALL,
                    id: Id {
                        scheme: "auth".into(),
                        id: String::new(),
                    },
                }],
                ..CreateRequest::default()
            }
            .to_bytes(),
            auth: me.clone(),
            ..ZkTxn::default()
        };
        assert!(f.write(locked).result.is_ok());
        // Anyone else: no create below it, no set, no delete; an unknown path is NO_NODE first.
        assert_eq!(f.create("/mine/x", mode::PERSISTENT), Err(err::NO_AUTH));
        let set = SetDataRequest {
            path: "/mine".into(),
            data: Buffer(b"x".to_vec()),
            version: 9,
        };
        assert_eq!(f.op(op::SET_DATA, set.clone()).result, Err(err::NO_AUTH));
        assert_eq!(f.create("/mine/x/y", mode::PERSISTENT), Err(err::NO_NODE));
        let mut mine = ZkTxn {
            op: op::SET_DATA,
            body: set.to_bytes(),
            auth: me,
            ..ZkTxn::default()
        };
        assert_eq!(f.write(mine.clone()).result, Err(err::BAD_VERSION));
        mine.body = SetDataRequest { version: -1, ..set }.to_bytes();
        assert!(matches!(f.write(mine).result, Ok(ZkDone::Set(_))));
    }

    #[test]
    fn only_due_containers_and_ttl_nodes_are_reaped() {
        let mut f = Fixture::new();
        let container = CreateRequest {
            path: "/c".into(),
            acl: world(),
            flags: mode::CONTAINER,
            ..CreateRequest::default()
        };
        assert!(f.op(op::CREATE_CONTAINER, container).result.is_ok());
        let ttl = CreateTtlRequest {
            path: "/t".into(),
            acl: world(),
            flags: mode::PERSISTENT_WITH_TTL,
            ttl: 1_000_000,
            ..CreateTtlRequest::default()
        };
        assert!(f.op(op::CREATE_TTL, ttl).result.is_ok());
        assert_eq!(f.applier.reapable.list(), ["/c", "/t"]);
        let reap = |f: &mut Fixture, path: &str| {
            let mut w = crate::zk::jute::Writer::default();
            w.ustring(path);
            f.write(ZkTxn {
                op: op::DELETE_CONTAINER,
                body: w.bytes,
                ..ZkTxn::default()
            })
            .result
        };
        // A container never given a child stays; so does a TTL node within its TTL.
        assert_eq!(reap(&mut f, "/c"), Err(err::BAD_VERSION));
        assert_eq!(reap(&mut f, "/t"), Err(err::BAD_VERSION));
        f.created("/c/child", mode::PERSISTENT);
        assert_eq!(reap(&mut f, "/c"), Err(err::NOT_EMPTY));
        let del = DeleteRequest {
            path: "/c/child".into(),
            version: -1,
        };
        assert!(f.op(op::DELETE, del).result.is_ok());
        assert_eq!(reap(&mut f, "/c"), Ok(ZkDone::Done));
        assert_eq!(f.stat("/c"), None);
        assert_eq!(f.applier.reapable.list(), ["/t"]);
        assert_eq!(reap(&mut f, "/a"), Err(err::NO_NODE));
    }
}
