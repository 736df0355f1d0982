//! etcd's `KV` service.

use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};

use super::token;
use crate::etcd::{Applied, KvError, KvServer, range};
use crate::member::keyspace;
use crate::pb::etcdserverpb::{self as pb, kv_server::Kv, request_op};
use crate::pb::quorumkv::internal_request::Request as Req;

/// The KV service of one member.
#[derive(Debug, Clone)]
pub struct KvService {
    pub(crate) server: Arc<KvServer>,
}

pub(crate) fn check_size(server: &KvServer, m: &impl Message) -> Result<(), KvError> {
    if m.encoded_len() > server.config().max_request_bytes {
        return Err(KvError::RequestTooLarge);
    }
    Ok(())
}

pub(crate) fn check_put(p: &pb::PutRequest) -> Result<(), KvError> {
    if p.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if p.key.len() > 1 << 20 {
        return Err(KvError::KeyTooLarge);
    }
    if keyspace::is_reserved(&p.key) {
        return Err(KvError::ReservedKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

/// Whether `key` falls in etcd's `[start, end)` interval (`end` empty: just `start`; `"\0"`:
/// everything from `start`).
pub(crate) fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

/// Whether `key` falls in a deleted interval `(start, end)` (etcd's `[start, end)`, `end`
/// empty: just `start`). A `"\0"` end reaches every key from `start`, where etcd's check
/// compares it literally and so lets a put through beside a from-key delete: refusing it here
/// keeps every transaction writing each key at most once.
fn deleted(key: &[u8], (start, end): (&[u8], &[u8])) -> bool {
    let upper = crate::etcd::rbac::upper(start, end);
    key >= start && upper.as_deref().is_none_or(|u| key < u)
}

/// Checks the sizes and keys of a transaction and of those nested in it, as etcd does: each
/// branch and the compares hold at most `max_ops`, and a nested transaction at most what its
/// parent leaves (`max_ops` less the parent's largest list).
fn check_txn_ops(t: &pb::TxnRequest, max_ops: usize) -> Result<(), KvError> {
    let ops = t.compare.len().max(t.success.len()).max(t.failure.len());
    if ops > max_ops {
        return Err(KvError::TooManyOps);
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(KvError::EmptyKey);
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(request_op::Request::RequestPut(p)) => check_put(p)?,
            Some(request_op::Request::RequestDeleteRange(d)) if d.key.is_empty() => {
                return Err(KvError::EmptyKey);
            }
            Some(request_op::Request::RequestRange(r)) if r.key.is_empty() => {
                return Err(KvError::EmptyKey);
            }
            Some(request_op::Request::RequestTxn(n)) => check_txn_ops(n, max_ops - ops)?,
            Some(
                request_op::Request::RequestDeleteRange(_) | request_op::Request::RequestRange(_),
            ) => {}
            // An op with nothing in it.
            None => return Err(KvError::KeyNotFound),
        }
    }
    Ok(())
}

type Writes<'a> = (Vec<&'a [u8]>, Vec<(&'a [u8], &'a [u8])>);

/// The keys `ops` put and the intervals they delete, nested transactions included, or
/// `DuplicateKey` when a key could be written twice: put twice, or put and deleted. The two
/// branches of a nested transaction exclude each other, so they may put the same key.
fn check_writes(ops: &[pb::RequestOp]) -> Result<Writes<'_>, KvError> {
    let mut dels: Vec<(&[u8], &[u8])> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(request_op::Request::RequestDeleteRange(d)) => {
                Some((d.key.as_slice(), d.range_end.as_slice()))
            }
            _ => None,
        })
        .collect();
    let mut puts: Vec<&[u8]> = Vec::new();
    for op in ops {
        let Some(request_op::Request::RequestTxn(n)) = &op.request else {
            continue;
        };
        let (then_puts, then_dels) = check_writes(&n.success)?;
        let (else_puts, else_dels) = check_writes(&n.failure)?;
        for k in &then_puts {
            if puts.contains(k) || dels.iter().any(|d| deleted(k, *d)) {
                return Err(KvError::DuplicateKey);
            }
        }
        puts.extend(&then_puts);
        for k in else_puts {
            let twice = puts.contains(&k) && !then_puts.contains(&k);
            if twice || dels.iter().any(|d| deleted(k, *d)) {
                return Err(KvError::DuplicateKey);
            }
            puts.push(k);
        }
        dels.extend(then_dels);
        dels.extend(else_dels);
    }
    for op in ops {
        if let Some(request_op::Request::RequestPut(p)) = &op.request {
            let k = p.key.as_slice();
            if puts.contains(&k) || dels.iter().any(|d| deleted(k, *d)) {
                return Err(KvError::DuplicateKey);
            }
            puts.push(k);
        }
    }
    Ok((puts, dels))
}

/// Validates a transaction as etcd does before proposing it: op counts and keys at every
/// level, then no key written twice in either branch.
pub(crate) fn check_txn(t: &pb::TxnRequest, max_ops: usize) -> Result<(), KvError> {
    check_txn_ops(t, max_ops)?;
    check_writes(&t.success)?;
    check_writes(&t.failure)?;
    Ok(())
}

impl KvService {
    /// Serves a Range (linearizable unless `serializable`).
    pub async fn range_inner(&self, r: pb::RangeRequest) -> Result<pb::RangeResponse, KvError> {
        if r.key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        if self.server.corrupt() {
            return Err(KvError::Corrupt);
        }
        if !r.serializable {
            self.server.read_barrier().await?;
        }
        let snap = self.server.shared().core.mvcc.snapshot();
        let rev = snap.revision()?;
        let bytes_max = self.server.config().max_range_response_bytes;
        let mut resp = range::range(&r, |key, end, o| {
            snap.range(key, end, crate::mvcc::RangeOpts { bytes_max, ..o })
        })?;
        resp.header = Some(self.server.header(rev));
        Ok(resp)
    }

    /// A Range by the caller holding `token`.
    pub(crate) async fn range_by(
        &self,
        token: Option<&str>,
        r: pb::RangeRequest,
    ) -> Result<pb::RangeResponse, Status> {
        // Checked before the caller, as etcd does.
        if r.key.is_empty() {
            return Err(KvError::EmptyKey.into());
        }
        self.server.authorize_read(token, &r.key, &r.range_end)?;
        Ok(self.range_inner(r).await?)
    }

    /// A Put by the caller holding `token`.
    pub(crate) async fn put_by(
        &self,
        token: Option<&str>,
        p: pb::PutRequest,
    ) -> Result<pb::PutResponse, Status> {
        check_put(&p)?;
        if !self.server.shared().key_fits(&p.key) {
            return Err(KvError::KeyTooLarge.into());
        }
        check_size(&self.server, &p)?;
        let r = Req::Put(p);
        let caller = self.server.authorize(token, &r)?;
        match self.server.propose_as(r, &caller).await? {
            (Applied::Put(mut r), rev) => {
                r.header = Some(self.server.header(rev));
                Ok(r)
            }
            _ => Err(Status::internal("unexpected apply result")),
        }
    }

    /// A DeleteRange by the caller holding `token`.
    pub(crate) async fn delete_range_by(
        &self,
        token: Option<&str>,
        d: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, Status> {
        if d.key.is_empty() {
            return Err(KvError::EmptyKey.into());
        }
        check_size(&self.server, &d)?;
        let r = Req::DeleteRange(d);
        let caller = self.server.authorize(token, &r)?;
        match self.server.propose_as(r, &caller).await? {
            (Applied::DeleteRange(mut r), rev) => {
                r.header = Some(self.server.header(rev));
                Ok(r)
            }
            _ => Err(Status::internal("unexpected apply result")),
        }
    }

    /// A Txn by the caller holding `token`.
    pub(crate) async fn txn_by(
        &self,
        token: Option<&str>,
        t: pb::TxnRequest,
    ) -> Result<pb::TxnResponse, Status> {
        check_txn(&t, self.server.config().max_txn_ops)?;
        check_size(&self.server, &t)?;
        let r = Req::Txn(t);
        let caller = self.server.authorize(token, &r)?;
        match self.server.propose_as(r, &caller).await? {
            (Applied::Txn(mut r), rev) => {
                r.header = Some(self.server.header(rev));
                Ok(r)
            }
            _ => Err(Status::internal("unexpected apply result")),
        }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let token = token(req.metadata());
        let r = req.into_inner();
        Ok(Response::new(self.range_by(token.as_deref(), r).await?))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let token = token(req.metadata());
        let p = req.into_inner();
        Ok(Response::new(self.put_by(token.as_deref(), p).await?))
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let token = token(req.metadata());
        let d = req.into_inner();
        Ok(Response::new(
            self.delete_range_by(token.as_deref(), d).await?,
        ))
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let token = token(req.metadata());
        let t = req.into_inner();
        Ok(Response::new(self.txn_by(token.as_deref(), t).await?))
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let token = token(req.metadata());
        let c = req.into_inner();
        let physical = c.physical;
        let r = Req::Compaction(c);
        let caller = self.server.authorize(token.as_deref(), &r)?;
        let (_, rev) = self.server.propose_as(r, &caller).await?;
        if physical {
            // etcd's `physical`: answer once this member's store no longer holds what the
            // compaction removes (or never, if apply stopped for good).
            let core = &self.server.shared().core;
            while core.mvcc.sweeping() {
                if core.pending.stopped() {
                    return Err(KvError::Stopped.into());
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        Ok(Response::new(pb::CompactionResponse {
            header: Some(self.server.header(rev)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletes_cover_etcd_intervals() {
        assert!(deleted(b"a", (b"a", b"")));
        assert!(!deleted(b"a", (b"b", b"")));
        assert!(deleted(b"b", (b"a", b"c")));
        assert!(!deleted(b"c", (b"a", b"c")));
        assert!(deleted(b"z", (b"a", &[0])));
        assert!(in_range(b"ab", b"a", b"b"));
        assert!(!in_range(b"b", b"a", b"b"));
        assert!(in_range(b"zz", b"a", &[0]));
    }

    fn put(k: &[u8]) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(request_op::Request::RequestPut(pb::PutRequest {
                key: k.to_vec(),
                ..Default::default()
            })),
        }
    }

    fn del(k: &[u8], end: &[u8]) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                pb::DeleteRangeRequest {
                    key: k.to_vec(),
                    range_end: end.to_vec(),
                    ..Default::default()
                },
            )),
        }
    }

    fn txn(success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>) -> pb::TxnRequest {
        pb::TxnRequest {
            success,
            failure,
            ..Default::default()
        }
    }

    fn nested(t: pb::TxnRequest) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(request_op::Request::RequestTxn(t)),
        }
    }

    fn check(t: &pb::TxnRequest) -> Result<(), KvError> {
        check_txn(t, 128)
    }

    #[test]
    fn a_key_written_twice_is_refused_through_nested_transactions() {
        let dup = |r: Result<(), KvError>| matches!(r, Err(KvError::DuplicateKey));
        assert!(dup(check(&txn(vec![put(b"a"), put(b"a")], vec![]))));
        assert!(dup(check(&txn(vec![put(b"b"), del(b"a", b"c")], vec![]))));
        // An outer put and a put in a nested branch.
        let t = txn(
            vec![put(b"a"), nested(txn(vec![put(b"a")], vec![]))],
            vec![],
        );
        assert!(dup(check(&t)));
        // A delete and a nested put it covers, either way round.
        let t = txn(
            vec![del(b"a", b"c"), nested(txn(vec![], vec![put(b"b")]))],
            vec![],
        );
        assert!(dup(check(&t)));
        let t = txn(
            vec![put(b"b"), nested(txn(vec![del(b"a", b"c")], vec![]))],
            vec![],
        );
        assert!(dup(check(&t)));
        // Two nested transactions putting the same key.
        let t = txn(
            vec![
                nested(txn(vec![put(b"a")], vec![])),
                nested(txn(vec![put(b"a")], vec![])),
            ],
            vec![],
        );
        assert!(dup(check(&t)));
        // The branches of one nested transaction exclude each other, as do the outer ones.
        let t = txn(vec![nested(txn(vec![put(b"a")], vec![put(b"a")]))], vec![]);
        assert!(check(&t).is_ok());
        assert!(check(&txn(vec![put(b"a")], vec![put(b"a")])).is_ok());
        // Deletes may overlap each other.
        assert!(check(&txn(vec![del(b"a", b"c"), del(b"b", b"d")], vec![])).is_ok());
    }

    #[test]
    fn empty_ops_and_nested_sizes_are_refused_as_etcd_does() {
        let empty = txn(vec![pb::RequestOp { request: None }], vec![]);
        assert!(matches!(check(&empty), Err(KvError::KeyNotFound)));
        // A nested transaction gets what its parent's largest list leaves of the limit.
        let t = txn(
            vec![put(b"a"), nested(txn(vec![put(b"b"), put(b"c")], vec![]))],
            vec![],
        );
        assert!(matches!(check_txn(&t, 3), Err(KvError::TooManyOps)));
        assert!(check_txn(&t, 4).is_ok());
        let t = txn(vec![nested(txn(vec![put(b"")], vec![]))], vec![]);
        assert!(matches!(check(&t), Err(KvError::EmptyKey)));
    }
}
