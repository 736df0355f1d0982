//! Applies committed log entries of the key space: client writes, transactions, compaction,
//! leases, alarms and member attributes, many entries per B+tree transaction.
//!
//! Apply is deterministic: everything it decides depends only on the entry and the state
//! before it (lease ids are chosen by the proposer, times come in the entry), so every replica
//! reaches the same revision and hash. A request that fails validation (a missing lease, say)
//! changes nothing and its error goes back to the waiting client.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;
use quorumkv_replication::{Entry, EntryKind};

use super::error::KvError;
use super::range;
use super::rbac::{AUTH_PREFIX, AuthState};
use super::{Applied, Shared};
use crate::member::identity::Member;
use crate::member::machine::Applier;
use crate::mvcc::keys::{META_COMPACT, META_REV, REVISIONS};
use crate::mvcc::{Event, KeyValue, MvccTxn, RangeOpts};
use crate::pb::etcdserverpb::{
    self as pb, Compare, DeleteRangeResponse, PutResponse, RequestOp, ResponseOp, TxnRequest,
    TxnResponse, compare, request_op, response_op,
};
use crate::pb::quorumkv::{InternalRequest, MemberAttributes, internal_request::Request};

/// Prefix of lease rows (`l <id be>` → TTL seconds, little-endian).
pub const LEASE_PREFIX: u8 = b'l';
/// Prefix of member rows (`M <id be>` → `MemberAttributes`).
pub const MEMBER_PREFIX: u8 = b'M';
/// Where member rows were kept before: after the revision rows, so every put landed in the
/// leaf that also held them and split it in the middle, leaving leaves two-thirds full.
/// [`load`] moves them.
pub const OLD_MEMBER_PREFIX: u8 = b'u';
/// Prefix of alarm rows (`a <member be> <type>`).
pub const ALARM_PREFIX: u8 = b'a';

// Puts append revision rows at the right end of the tree, where a split keeps the left leaf
// full; a row of any other kind sorting after them would make every such split a middle one.
const _: () = assert!(
    LEASE_PREFIX < REVISIONS
        && MEMBER_PREFIX < REVISIONS
        && ALARM_PREFIX < REVISIONS
        && AUTH_PREFIX < REVISIONS
        && META_REV[0] < REVISIONS
        && META_COMPACT[0] < REVISIONS
);

/// The row key of lease `id`.
pub(crate) fn lease_row(id: i64) -> Vec<u8> {
    let mut k = vec![LEASE_PREFIX];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// A lease row's id and TTL in seconds; `None` if the row is malformed.
pub(crate) fn parse_lease_row(k: &[u8], v: &[u8]) -> Option<(i64, i64)> {
    Some((
        i64::from_be_bytes(k.get(1..)?.try_into().ok()?),
        i64::from_le_bytes(v.try_into().ok()?),
    ))
}

fn alarm_row(member: u64, alarm: i32) -> Vec<u8> {
    let mut k = vec![ALARM_PREFIX];
    k.extend_from_slice(&member.to_be_bytes());
    k.extend_from_slice(&alarm.to_be_bytes());
    k
}

/// Applies entries to the key space through one write transaction per batch.
pub struct EtcdApplier {
    shared: Arc<Shared>,
}

type Outcome = (u64, Result<(Applied, i64), KvError>);

impl EtcdApplier {
    /// An applier over `shared`.
    pub fn new(shared: Arc<Shared>) -> EtcdApplier {
        EtcdApplier { shared }
    }

    /// The shared state it applies to.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Commits durably with nothing new (a checkpoint of earlier no-sync commits).
    fn commit_durably(&mut self, applied: u64) -> Result<(), KvError> {
        self.shared.mvcc.write()?.commit(applied)?;
        Ok(())
    }

    /// Applies `entries` (in log order) in one transaction, committed without sync (the log
    /// holds them durably; [`EtcdApplier::checkpoint`] makes the tree catch up); then wakes their
    /// waiters and publishes their events.
    fn apply_entries(&mut self, entries: &[Entry]) -> Result<(), KvError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let mut txn = self.shared.mvcc.write()?;
        let compacted_before = txn.compact_revision();
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(entries.len());
        let mut published: Vec<(i64, Vec<Event>)> = Vec::with_capacity(entries.len());
        let mut members_changed = false;
        for e in entries {
            if e.kind != EntryKind::Normal || e.data.is_empty() {
                continue;
            }
            let req = match InternalRequest::decode(e.data.as_slice()) {
                Ok(r) => r,
                Err(err) => {
                    tracing::error!(index = e.index, error = %err, "undecodable log entry skipped");
                    continue;
                }
            };
            let id = req.id;
            let result = match req.request {
                Some(Request::MemberAttributes(m)) => {
                    members_changed = true;
                    self.member_attributes(&mut txn, m)
                }
                Some(r) => match self.recheck(&req.username, req.auth_revision, &r) {
                    Ok(()) => self.request(&mut txn, r),
                    Err(e) => Err(e),
                },
                None => Err(KvError::Other("empty request".into())),
            };
            // A failed request must leave nothing behind: validation happens before any
            // change, so only storage errors can get here mid-way, and those stop apply.
            if let Err(KvError::Storage(m)) = &result {
                return Err(KvError::Storage(m.clone()));
            }
            txn.end_request();
            let result = result.map(|a| (a, txn.current_revision()));
            let events = txn.take_events();
            if let Some(ev) = events.first() {
                published.push((ev.kv.mod_revision, events));
            }
            if id != 0 {
                outcomes.push((id, result));
            }
        }
        let compacted_after = txn.compact_revision();
        txn.commit_no_sync(last.index)?;
        if members_changed {
            self.shared.members_changed();
        }
        for (rev, events) in published {
            self.shared.hub.publish(rev, events);
        }
        if compacted_after != compacted_before {
            self.shared.hub.compacted(compacted_after);
        }
        self.shared.applied.send_replace(last.index);
        // Waiters are taken out under the lock and answered after it: answering wakes their
        // tasks, and proposers take the same lock to register.
        let mut answers = Vec::with_capacity(outcomes.len());
        let mut waiters = self.shared.waiters.lock();
        for (id, result) in outcomes {
            if let Some(tx) = waiters.remove(&id) {
                answers.push((tx, result));
            }
        }
        // Entries handed to the leader in an earlier term that are not applied by now never
        // will be: log terms only grow, and a leader appends forwarded data in the sender's
        // term or drops it. Their proposers may safely go again.
        let mut forwarded = self.shared.forwarded.lock();
        if forwarded.first().is_some_and(|&(term, _)| term < last.term) {
            let later = forwarded.split_off(&(last.term, 0));
            for (_, id) in std::mem::replace(&mut *forwarded, later) {
                if let Some(tx) = waiters.remove(&id) {
                    answers.push((tx, Err(KvError::LeaderChanged)));
                }
            }
        }
        drop(forwarded);
        drop(waiters);
        for (tx, result) in answers {
            let _ = tx.send(result);
        }
        self.shared.answered.send_replace(last.index);
        Ok(())
    }

    /// Checks a key-space write again when the auth store changed after the proposer checked
    /// it (a permission revoked meanwhile, say), so permissions take effect in log order.
    fn recheck(&self, user: &str, checked_at: u64, r: &Request) -> Result<(), KvError> {
        let auth = self.shared.auth.state();
        if auth.enabled()
            && checked_at < auth.revision()
            && matches!(
                r,
                Request::Put(_) | Request::DeleteRange(_) | Request::Txn(_)
            )
        {
            return auth.check_request(user, r);
        }
        Ok(())
    }

    fn request(&mut self, txn: &mut MvccTxn, r: Request) -> Result<Applied, KvError> {
        match r {
            Request::AuthEnable(_)
            | Request::AuthDisable(_)
            | Request::Authenticate(_)
            | Request::UserAdd(_)
            | Request::UserDelete(_)
            | Request::UserChangePassword(_)
            | Request::UserGrantRole(_)
            | Request::UserRevokeRole(_)
            | Request::RoleAdd(_)
            | Request::RoleDelete(_)
            | Request::RoleGrantPermission(_)
            | Request::RoleRevokePermission(_) => {
                for (k, v) in self.shared.auth.apply(&r)? {
                    match v {
                        Some(v) => txn.tree().insert(&k, &v).map_err(storage)?,
                        None => {
                            txn.tree().remove(&k).map_err(storage)?;
                        }
                    }
                }
                Ok(Applied::Done)
            }
            Request::Put(p) => {
                self.check_put(txn, &p)?;
                Ok(Applied::Put(self.put(txn, p)?))
            }
            Request::DeleteRange(d) => Ok(Applied::DeleteRange(self.delete(txn, d)?)),
            Request::Txn(t) => Ok(Applied::Txn(self.txn(txn, t)?)),
            Request::Compaction(c) => {
                txn.compact(c.revision)?;
                Ok(Applied::Compact(txn.current_revision()))
            }
            Request::LeaseGrant(g) => {
                let mut lessor = self.shared.lessor.lock();
                if g.id <= 0 || lessor.contains(g.id) {
                    return Err(KvError::LeaseExists);
                }
                let ttl = lessor.effective_ttl(g.ttl);
                txn.tree()
                    .insert(&lease_row(g.id), &ttl.to_le_bytes())
                    .map_err(storage)?;
                lessor.grant(g.id, ttl);
                Ok(Applied::LeaseGrant(g.id, ttl))
            }
            Request::LeaseRevoke(r) => {
                let keys = {
                    let lessor = self.shared.lessor.lock();
                    if !lessor.contains(r.id) {
                        return Err(KvError::LeaseNotFound);
                    }
                    lessor.time_to_live(r.id).map(|t| t.2).unwrap_or_default()
                };
                for k in keys {
                    self.delete_one(txn, &k)?;
                }
                txn.tree().remove(&lease_row(r.id)).map_err(storage)?;
                self.shared.lessor.lock().revoke(r.id);
                Ok(Applied::Done)
            }
            Request::LeaseCheckpoint(_) => Ok(Applied::Done),
            Request::Alarm(a) => {
                use pb::alarm_request::AlarmAction;
                let row = alarm_row(a.member_id, a.alarm);
                let mut alarms = self.shared.alarms.lock();
                match AlarmAction::try_from(a.action) {
                    Ok(AlarmAction::Activate) if a.alarm != 0 => {
                        txn.tree().insert(&row, &[]).map_err(storage)?;
                        alarms.insert((a.member_id, a.alarm));
                    }
                    Ok(AlarmAction::Deactivate) => {
                        txn.tree().remove(&row).map_err(storage)?;
                        alarms.remove(&(a.member_id, a.alarm));
                    }
                    _ => {}
                }
                Ok(Applied::Done)
            }
            Request::MemberAttributes(_) => unreachable!("handled by the caller"),
        }
    }

    fn member_attributes(
        &mut self,
        txn: &mut MvccTxn,
        m: MemberAttributes,
    ) -> Result<Applied, KvError> {
        let mut row = vec![MEMBER_PREFIX];
        row.extend_from_slice(&m.id.to_be_bytes());
        txn.tree()
            .insert(&row, &m.encode_to_vec())
            .map_err(storage)?;
        let mut members = self.shared.members.write();
        let e = members.entry(m.id).or_insert_with(|| Member {
            id: m.id,
            ..Member::default()
        });
        e.name = m.name;
        e.client_urls = m.client_urls;
        if !m.peer_urls.is_empty() {
            e.peer_urls = m.peer_urls;
        }
        Ok(Applied::Done)
    }

    /// Checks a put against the state before it: the lease exists, and `ignore_*` find a key.
    fn check_put(&self, txn: &MvccTxn, p: &pb::PutRequest) -> Result<(), KvError> {
        if !self.shared.key_fits(&p.key) {
            return Err(KvError::KeyTooLarge);
        }
        if (p.ignore_value || p.ignore_lease) && txn.current(&p.key).is_none() {
            return Err(KvError::KeyNotFound);
        }
        if p.lease != 0 && !p.ignore_lease && !self.shared.lessor.lock().contains(p.lease) {
            return Err(KvError::LeaseNotFound);
        }
        Ok(())
    }

    fn put(&mut self, txn: &mut MvccTxn, p: pb::PutRequest) -> Result<PutResponse, KvError> {
        // The index has what a put needs of the version it replaces; the tree is read only
        // when the request wants that version's value.
        let prev = if p.prev_kv || p.ignore_value {
            txn.get(&p.key)?
        } else {
            None
        };
        let value = match &prev {
            Some(kv) if p.ignore_value => kv.value.clone(),
            _ => p.value,
        };
        let prev_kv = if p.prev_kv {
            prev.clone().map(range::to_pb)
        } else {
            None
        };
        let lease = (!p.ignore_lease).then_some(p.lease);
        let (replaced, lease) = txn.put_at(&p.key, &value, lease, prev)?;
        let prev_lease = replaced.map(|c| c.meta.lease);
        let mut lessor = self.shared.lessor.lock();
        if let Some(old) = prev_lease
            && old != lease
        {
            lessor.detach(old, &p.key);
        }
        lessor.attach(lease, &p.key);
        Ok(PutResponse {
            header: None,
            prev_kv,
        })
    }

    fn delete_one(&mut self, txn: &mut MvccTxn, key: &[u8]) -> Result<Vec<KeyValue>, KvError> {
        let gone = txn.delete_range(key, &[])?;
        let mut lessor = self.shared.lessor.lock();
        for kv in &gone {
            lessor.detach(kv.lease, &kv.key);
        }
        Ok(gone)
    }

    fn delete(
        &mut self,
        txn: &mut MvccTxn,
        d: pb::DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, KvError> {
        let gone = txn.delete_range(&d.key, &d.range_end)?;
        let mut lessor = self.shared.lessor.lock();
        for kv in &gone {
            lessor.detach(kv.lease, &kv.key);
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: gone.len() as i64,
            prev_kvs: if d.prev_kv {
                gone.into_iter().map(range::to_pb).collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Evaluates one compare as etcd does: over every key in its range (or a key's zero
    /// values when none exists, except that a value compare on no key fails), against the
    /// operand its target names (an operand of another kind, or none, counts as zero or
    /// empty). An unknown target compares as equal, and an unknown result holds.
    fn compare(&self, txn: &MvccTxn, c: &Compare) -> Result<bool, KvError> {
        use compare::{CompareResult, CompareTarget, TargetUnion};
        let target = CompareTarget::try_from(c.target).ok();
        let kvs = txn.range(&c.key, &c.range_end, 0)?;
        if kvs.is_empty() && target == Some(CompareTarget::Value) {
            return Ok(false);
        }
        let absent = [KeyValue::default()];
        let kvs: &[KeyValue] = if kvs.is_empty() { &absent } else { &kvs };
        let Ok(result) = CompareResult::try_from(c.result) else {
            return Ok(true);
        };
        let operand = &c.target_union;
        for kv in kvs {
            let ord = match target {
                Some(CompareTarget::Value) => {
                    let v = match operand {
                        Some(TargetUnion::Value(v)) => v.as_slice(),
                        _ => &[],
                    };
                    kv.value.as_slice().cmp(v)
                }
                Some(t) => {
                    let field = match t {
                        CompareTarget::Version => kv.version,
                        CompareTarget::Create => kv.create_revision,
                        CompareTarget::Mod => kv.mod_revision,
                        CompareTarget::Lease => kv.lease,
                        CompareTarget::Value => unreachable!("value compares are above"),
                    };
                    let given = match (t, operand) {
                        (CompareTarget::Version, Some(TargetUnion::Version(v)))
                        | (CompareTarget::Create, Some(TargetUnion::CreateRevision(v)))
                        | (CompareTarget::Mod, Some(TargetUnion::ModRevision(v)))
                        | (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => *v,
                        _ => 0,
                    };
                    field.cmp(&given)
                }
                None => std::cmp::Ordering::Equal,
            };
            let ok = match result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Validates the ops a transaction will run, against the state before it.
    fn check_ops(&self, txn: &MvccTxn, ops: &[RequestOp]) -> Result<(), KvError> {
        for op in ops {
            match &op.request {
                Some(request_op::Request::RequestPut(p)) => self.check_put(txn, p)?,
                Some(request_op::Request::RequestTxn(t)) => {
                    let branch = if self.all_compares(txn, &t.compare)? {
                        &t.success
                    } else {
                        &t.failure
                    };
                    self.check_ops(txn, branch)?;
                }
                Some(request_op::Request::RequestRange(r)) => {
                    let cur = txn.current_revision();
                    if r.revision > cur {
                        return Err(KvError::FutureRevision);
                    }
                    if r.revision > 0 && r.revision < txn.compact_revision() {
                        return Err(KvError::Compacted);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn all_compares(&self, txn: &MvccTxn, cs: &[Compare]) -> Result<bool, KvError> {
        for c in cs {
            if !self.compare(txn, c)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn txn(&mut self, txn: &mut MvccTxn, t: TxnRequest) -> Result<TxnResponse, KvError> {
        let succeeded = self.all_compares(txn, &t.compare)?;
        let ops = if succeeded { t.success } else { t.failure };
        self.check_ops(txn, &ops)?;
        let mut responses = Vec::with_capacity(ops.len());
        // As etcd does, each range, put and delete response carries the revision seen right
        // after it (the revision before the transaction until its first change); a nested
        // transaction's own header stays empty.
        let seen = |txn: &MvccTxn| {
            Some(pb::ResponseHeader {
                revision: txn.current_revision(),
                ..Default::default()
            })
        };
        for op in ops {
            let resp = match op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    let mut resp =
                        range::range(&r, |o: RangeOpts| txn.range_opts(&r.key, &r.range_end, o))?;
                    resp.header = seen(txn);
                    response_op::Response::ResponseRange(resp)
                }
                Some(request_op::Request::RequestPut(p)) => {
                    let mut resp = self.put(txn, p)?;
                    resp.header = seen(txn);
                    response_op::Response::ResponsePut(resp)
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    let mut resp = self.delete(txn, d)?;
                    resp.header = seen(txn);
                    response_op::Response::ResponseDeleteRange(resp)
                }
                Some(request_op::Request::RequestTxn(n)) => {
                    let mut resp = self.txn(txn, n)?;
                    resp.header = Some(pb::ResponseHeader::default());
                    response_op::Response::ResponseTxn(resp)
                }
                None => continue,
            };
            responses.push(ResponseOp {
                response: Some(resp),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }
}

impl Applier for EtcdApplier {
    type Error = KvError;

    fn apply(&mut self, entries: &[Entry]) -> Result<(), KvError> {
        self.apply_entries(entries)
    }

    fn checkpoint(&mut self, applied: u64) -> Result<(), KvError> {
        self.commit_durably(applied)
    }

    fn checkpoint_took(&self, took: std::time::Duration) {
        self.shared.backend_commits.record(took);
    }

    fn stop(&self) {
        self.shared.stop_apply();
    }

    fn before_install(&self) {
        self.shared.forget_forwarded();
    }

    fn after_install(&mut self, applied: u64) -> Result<(), String> {
        let shared = &self.shared;
        let rev = shared
            .mvcc
            .snapshot()
            .revision()
            .map_err(|e| e.to_string())?;
        shared.lessor.lock().clear();
        shared.alarms.lock().clear();
        load(shared).map_err(|e| e.to_string())?;
        shared.members_changed();
        shared.hub.reset(rev);
        shared.applied.send_replace(applied);
        shared.answered.send_replace(applied);
        Ok(())
    }
}

fn storage(e: quorumkv_btree::Error) -> KvError {
    KvError::Storage(e.to_string())
}

/// Loads leases (with their keys), members, alarms and the auth store from the tree (at start
/// and after a snapshot install), first moving member rows kept where older versions kept them.
pub fn load(shared: &Shared) -> Result<(), KvError> {
    let moved = shared.mvcc.move_prefix(OLD_MEMBER_PREFIX, MEMBER_PREFIX)?;
    if moved > 0 {
        tracing::info!(rows = moved, "member rows moved before the revision rows");
    }
    let snap = shared.mvcc.snapshot();
    let txn = snap.txn();
    let mut lessor = shared.lessor.lock();
    for item in txn.prefix(&[LEASE_PREFIX]) {
        let (k, v) = item.map_err(storage)?;
        let (id, ttl) = parse_lease_row(k, v).ok_or(KvError::Corrupt)?;
        lessor.grant(id, ttl);
    }
    let all = snap.range(
        &[0],
        &[0],
        RangeOpts {
            keys_only: true,
            ..RangeOpts::default()
        },
    )?;
    for kv in all.kvs {
        if kv.lease != 0 {
            lessor.attach(kv.lease, &kv.key);
        }
    }
    drop(lessor);
    let mut members = shared.members.write();
    let mut known = BTreeMap::new();
    for item in txn.prefix(&[MEMBER_PREFIX]) {
        let (_, v) = item.map_err(storage)?;
        let m = MemberAttributes::decode(v).map_err(|_| KvError::Corrupt)?;
        known.insert(m.id, m);
    }
    for (id, m) in known {
        let e = members.entry(id).or_insert_with(|| Member {
            id,
            ..Member::default()
        });
        e.name = m.name;
        e.client_urls = m.client_urls;
        if !m.peer_urls.is_empty() {
            e.peer_urls = m.peer_urls;
        }
    }
    drop(members);
    let rows = txn
        .prefix(&[AUTH_PREFIX])
        .collect::<Result<Vec<_>, _>>()
        .map_err(storage)?;
    shared.auth.replace(AuthState::load(rows)?);
    let mut alarms = shared.alarms.lock();
    for item in txn.prefix(&[ALARM_PREFIX]) {
        let (k, _) = item.map_err(storage)?;
        if k.len() == 13 {
            let m = u64::from_be_bytes(k[1..9].try_into().expect("8 bytes"));
            let a = i32::from_be_bytes(k[9..13].try_into().expect("4 bytes"));
            alarms.insert((m, a));
        }
    }
    Ok(())
}
