//! Applies committed log entries of the key space: client writes, transactions, compaction,
//! leases, alarms and member attributes, many entries per B+tree transaction.
//!
//! Apply is deterministic: everything it decides depends only on the entry and the state
//! before it (lease ids are chosen by the proposer, times come in the entry), so every replica
//! reaches the same revision and hash. A request that fails validation (a missing lease, say)
//! changes nothing and its error goes back to the waiting client.

use std::sync::Arc;

use prost::Message;

use super::error::KvError;
use super::range;
use super::rbac::{AUTH_PREFIX, AuthState};
use super::server::EtcdAnswer;
use super::{Applied, Shared};
use crate::member::envelope::Envelope;
use crate::member::keyspace;
use crate::member::machine::Applier;
use crate::member::pending::Answer;
use crate::member::roster::MEMBER_PREFIX;
use crate::mvcc::keys::{META_COMPACT, META_REV, REVISIONS};
use crate::mvcc::{KeyValue, MvccTxn, RangeOpts};
use crate::pb::etcdserverpb::{
    self as pb, Compare, DeleteRangeResponse, PutResponse, RequestOp, ResponseOp, TxnRequest,
    TxnResponse, compare, request_op, response_op,
};
use crate::pb::quorumkv::{InternalRequest, internal_request::Request};

/// Prefix of lease rows (`l <id be>` → TTL seconds, little-endian).
pub const LEASE_PREFIX: u8 = b'l';
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

impl EtcdApplier {
    /// An applier over `shared`.
    pub fn new(shared: Arc<Shared>) -> EtcdApplier {
        EtcdApplier { shared }
    }

    /// The shared state it applies to.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Applies one committed etcd request; its answer is an [`EtcdAnswer`]. A request that
    /// fails validation changes nothing; a storage failure is the only `Err`.
    fn apply_entry(&mut self, txn: &mut MvccTxn, entry: &[u8]) -> Result<EtcdAnswer, String> {
        let req = match InternalRequest::decode(entry) {
            Ok(r) => r,
            Err(err) => return Ok(Err(KvError::Other(format!("undecodable request: {err}")))),
        };
        let result = match req.request {
            // Recorded by the member core from the same entry; never reaches an API.
            Some(Request::MemberAttributes(_)) => Ok(Applied::Done),
            Some(r) => match self.recheck(&req.username, req.auth_revision, &r) {
                Ok(()) => self.request(txn, r),
                Err(e) => Err(e),
            },
            None => Err(KvError::Other("empty request".into())),
        };
        // A failed request must leave nothing behind: validation happens before any change,
        // so only storage errors can get here mid-way, and those stop apply.
        if let Err(KvError::Storage(m)) = &result {
            return Err(m.clone());
        }
        Ok(result.map(|a| (a, txn.current_revision())))
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
                let mut lessor = self.shared.core.lessor.lock();
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
                // A ZooKeeper session's lease ends only through ZooKeeper's close, which also
                // updates the parents of its ephemerals.
                if txn.get(&crate::zk::znode::session_key(r.id))?.is_some() {
                    return Err(KvError::LeaseNotFound);
                }
                let keys = {
                    let lessor = self.shared.core.lessor.lock();
                    if !lessor.contains(r.id) {
                        return Err(KvError::LeaseNotFound);
                    }
                    lessor.keys(r.id)
                };
                for k in keys {
                    self.delete_one(txn, &k)?;
                }
                txn.tree().remove(&lease_row(r.id)).map_err(storage)?;
                self.shared.core.lessor.lock().revoke(r.id);
                Ok(Applied::Done)
            }
            Request::LeaseCheckpoint(c) => {
                let mut lessor = self.shared.core.lessor.lock();
                for cp in &c.checkpoints {
                    lessor.checkpoint(cp.id, cp.remaining_ttl);
                }
                Ok(Applied::Done)
            }
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
            Request::MemberAttributes(_) => unreachable!("handled by the member core"),
        }
    }

    /// Checks a put against the state before it: the lease exists, and `ignore_*` find a key.
    fn check_put(&self, txn: &MvccTxn, p: &pb::PutRequest) -> Result<(), KvError> {
        if !self.shared.key_fits(&p.key) {
            return Err(KvError::KeyTooLarge);
        }
        if keyspace::is_reserved(&p.key) {
            return Err(KvError::ReservedKey);
        }
        if (p.ignore_value || p.ignore_lease) && txn.current(&p.key).is_none() {
            return Err(KvError::KeyNotFound);
        }
        if p.lease != 0 && !p.ignore_lease && !self.shared.core.lessor.lock().contains(p.lease) {
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
        let mut lessor = self.shared.core.lessor.lock();
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
        let mut lessor = self.shared.core.lessor.lock();
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
        let gone = match keyspace::clamp_end(&d.key, &d.range_end) {
            Some(end) => txn.delete_range(&d.key, end)?,
            None => Vec::new(),
        };
        let mut lessor = self.shared.core.lessor.lock();
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
        let kvs = match keyspace::clamp_end(&c.key, &c.range_end) {
            Some(end) => txn.range(&c.key, end, 0)?,
            None => Vec::new(),
        };
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
                        range::range(&r, |key, end, o: RangeOpts| txn.range_opts(key, end, o))?;
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
    fn apply(&mut self, txn: &mut MvccTxn, _: &Envelope, entry: &[u8]) -> Result<Answer, String> {
        Ok(Box::new(self.apply_entry(txn, entry)?))
    }

    fn reload(&mut self) -> Result<(), String> {
        self.shared.core.lessor.lock().clear();
        self.shared.alarms.lock().clear();
        load(&self.shared).map_err(|e| e.to_string())
    }
}

fn storage(e: quorumkv_btree::Error) -> KvError {
    KvError::Storage(e.to_string())
}

/// Loads leases (with their keys), alarms and the auth store from the tree (at start and after
/// a snapshot install).
pub fn load(shared: &Shared) -> Result<(), KvError> {
    let snap = shared.core.mvcc.snapshot();
    let txn = snap.txn();
    let mut lessor = shared.core.lessor.lock();
    for item in txn.prefix(&[LEASE_PREFIX]) {
        let (k, v) = item.map_err(storage)?;
        let (id, ttl) = parse_lease_row(k, v).ok_or(KvError::Corrupt)?;
        lessor.grant(id, ttl);
    }
    for (key, lease) in snap.leased_keys()? {
        lessor.attach(lease, &key);
    }
    drop(lessor);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::envelope::MemberAttributes as CoreAttributes;
    use crate::pb::quorumkv::MemberAttributes;

    /// etcd's entries and the core's envelope are one message read two ways: the core finds
    /// its fields in etcd's entries, and etcd's decoder reads the core's member attributes
    /// (as entries written before the envelope was named hold them).
    #[test]
    fn etcd_entries_and_the_member_envelope_share_their_fields() {
        let put = InternalRequest {
            id: 9,
            time_ms: 7,
            request: Some(Request::Put(pb::PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
            username: "u".into(),
            auth_revision: 3,
        };
        let env = Envelope::decode(put.encode_to_vec().as_slice()).unwrap();
        assert_eq!((env.id, env.time_ms, env.member_attributes), (9, 7, None));
        // A leader's restamp changes the time etcd's decoder reads, and nothing else.
        let mut bytes = put.encode_to_vec();
        crate::member::envelope::restamp(&mut bytes, 11);
        let restamped = InternalRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            restamped,
            InternalRequest {
                time_ms: 11,
                ..put.clone()
            }
        );

        let attrs = CoreAttributes {
            id: 1,
            name: "m1".into(),
            client_urls: vec!["http://127.0.0.1:2379".into()],
            peer_urls: vec!["http://127.0.0.1:2380".into()],
        };
        let older = InternalRequest {
            id: 5,
            time_ms: 6,
            request: Some(Request::MemberAttributes(MemberAttributes {
                id: attrs.id,
                name: attrs.name.clone(),
                client_urls: attrs.client_urls.clone(),
                peer_urls: attrs.peer_urls.clone(),
            })),
            ..Default::default()
        };
        let env = Envelope::decode(older.encode_to_vec().as_slice()).unwrap();
        assert_eq!(env.id, 5);
        assert_eq!(env.member_attributes.as_ref(), Some(&attrs));
        let core = Envelope {
            id: 5,
            time_ms: 6,
            member_attributes: Some(attrs),
            zookeeper: None,
        };
        assert_eq!(
            InternalRequest::decode(core.encode_to_vec().as_slice()).unwrap(),
            older
        );
    }
}
