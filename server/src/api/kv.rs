//! etcd's `KV` service.

use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};

use super::token;
use crate::kv::{Applied, KvError, KvServer, range};
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

fn intervals_overlap(a: (&[u8], &[u8]), b: (&[u8], &[u8])) -> bool {
    let hi = |(s, e): (&[u8], &[u8])| crate::kv::auth::upper(s, e);
    let (ah, bh) = (hi(a), hi(b));
    let a_before_b_ends = bh.as_deref().is_none_or(|bh| a.0 < bh);
    let b_before_a_ends = ah.as_deref().is_none_or(|ah| b.0 < ah);
    a_before_b_ends && b_before_a_ends
}

/// Validates a transaction as etcd does: op counts, keys, and no key written twice in a
/// branch.
pub(crate) fn check_txn(t: &pb::TxnRequest, max_ops: usize) -> Result<(), KvError> {
    if t.compare.len() > max_ops || t.success.len() > max_ops || t.failure.len() > max_ops {
        return Err(KvError::TooManyOps);
    }
    for c in &t.compare {
        if c.key.is_empty() {
            return Err(KvError::EmptyKey);
        }
    }
    for branch in [&t.success, &t.failure] {
        let mut puts: Vec<&[u8]> = Vec::new();
        let mut dels: Vec<(&[u8], &[u8])> = Vec::new();
        for op in branch {
            match &op.request {
                Some(request_op::Request::RequestPut(p)) => {
                    check_put(p)?;
                    if puts.contains(&p.key.as_slice()) {
                        return Err(KvError::DuplicateKey);
                    }
                    puts.push(&p.key);
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    if d.key.is_empty() {
                        return Err(KvError::EmptyKey);
                    }
                    dels.push((&d.key, &d.range_end));
                }
                Some(request_op::Request::RequestRange(r)) if r.key.is_empty() => {
                    return Err(KvError::EmptyKey);
                }
                Some(request_op::Request::RequestTxn(n)) => check_txn(n, max_ops)?,
                Some(request_op::Request::RequestRange(_)) | None => {}
            }
        }
        for p in &puts {
            if dels.iter().any(|d| intervals_overlap((p, &[]), *d)) {
                return Err(KvError::DuplicateKey);
            }
        }
    }
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
        let snap = self.server.shared().mvcc.snapshot();
        let rev = snap.revision()?;
        let mut resp = range::range(&r, |o| snap.range(&r.key, &r.range_end, o))?;
        resp.header = Some(self.server.header(rev));
        Ok(resp)
    }

    /// A Range by the caller holding `token`.
    pub(crate) async fn range_by(
        &self,
        token: Option<&str>,
        r: pb::RangeRequest,
    ) -> Result<pb::RangeResponse, Status> {
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
        let r = Req::Compaction(req.into_inner());
        let caller = self.server.authorize(token.as_deref(), &r)?;
        let (_, rev) = self.server.propose_as(r, &caller).await?;
        Ok(Response::new(pb::CompactionResponse {
            header: Some(self.server.header(rev)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_follow_etcd_intervals() {
        assert!(intervals_overlap((b"a", b""), (b"a", b"")));
        assert!(!intervals_overlap((b"a", b""), (b"b", b"")));
        assert!(intervals_overlap((b"b", b""), (b"a", b"c")));
        assert!(!intervals_overlap((b"c", b""), (b"a", b"c")));
        assert!(intervals_overlap((b"z", b""), (b"a", &[0])));
        assert!(in_range(b"ab", b"a", b"b"));
        assert!(!in_range(b"b", b"a", b"b"));
        assert!(in_range(b"zz", b"a", &[0]));
    }
}
