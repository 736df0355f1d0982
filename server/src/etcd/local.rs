//! An in-process client of one member's key space: etcd's KV calls without a network hop,
//! through the same validation, linearizable reads, forwarding to the leader and errors
//! (gRPC statuses with etcd's messages) as the served API. For programs that embed a member.

use std::sync::Arc;

use tonic::{Request, Status};

use super::kv::KvService;
use crate::etcd::KvServer;
use crate::pb::etcdserverpb::{
    self as pb, DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest, kv_server::Kv,
};
use crate::pb::mvccpb::KeyValue;

/// The KV API of a member, called in-process.
#[derive(Debug, Clone)]
pub struct LocalClient {
    kv: KvService,
}

/// The end of the range holding every key that starts with `prefix` (etcd's `--prefix`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl LocalClient {
    /// A client of `server`.
    pub fn new(server: Arc<KvServer>) -> LocalClient {
        LocalClient {
            kv: KvService { server },
        }
    }

    /// Sets `key` to `value`; returns the revision of the change.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<i64, Status> {
        let r = self
            .kv
            .put(Request::new(PutRequest {
                key: key.into(),
                value: value.into(),
                ..PutRequest::default()
            }))
            .await?
            .into_inner();
        Ok(r.header.map_or(0, |h| h.revision))
    }

    /// The current value of `key` (a linearizable read).
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>, Status> {
        let r = self
            .range(RangeRequest {
                key: key.into(),
                ..RangeRequest::default()
            })
            .await?;
        Ok(r.kvs.into_iter().next())
    }

    /// Every key starting with `prefix`, in key order (a linearizable read).
    pub async fn get_prefix(&self, prefix: impl Into<Vec<u8>>) -> Result<Vec<KeyValue>, Status> {
        let key = prefix.into();
        let range_end = prefix_end(&key);
        Ok(self
            .range(RangeRequest {
                key,
                range_end,
                ..RangeRequest::default()
            })
            .await?
            .kvs)
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<i64, Status> {
        let r = self
            .kv
            .delete_range(Request::new(DeleteRangeRequest {
                key: key.into(),
                ..DeleteRangeRequest::default()
            }))
            .await?
            .into_inner();
        Ok(r.deleted)
    }

    /// etcd's Range with every option.
    pub async fn range(&self, r: RangeRequest) -> Result<pb::RangeResponse, Status> {
        Ok(self.kv.range(Request::new(r)).await?.into_inner())
    }

    /// etcd's Txn: compares, then one branch of operations, atomically.
    pub async fn txn(&self, t: TxnRequest) -> Result<pb::TxnResponse, Status> {
        Ok(self.kv.txn(Request::new(t)).await?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends_follow_etcd() {
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
