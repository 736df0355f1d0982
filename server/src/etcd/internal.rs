//! The member-to-member `Internal` service: the leader proposes writes followers hand it.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::kv::{check_put, check_size, check_txn};
use crate::etcd::{Applied, KvError, KvServer};
use crate::member::lessor::MAX_LEASE_TTL_SECS;
use crate::pb::etcdserverpb as pb;
use crate::pb::quorumkv::internal_request::Request as Req;
use crate::pb::quorumkv::{
    ForwardResponse, InternalRequest, TouchSessionsRequest, TouchSessionsResponse,
    forward_response::Result as Fr, internal_server::Internal,
};

/// The Internal service of one member.
#[derive(Debug, Clone)]
pub struct InternalService {
    pub(crate) server: Arc<KvServer>,
}

#[tonic::async_trait]
impl Internal for InternalService {
    async fn hash_kv(
        &self,
        req: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let revision = req.get_ref().revision;
        Ok(Response::new(self.server.hash_kv_blocking(revision).await?))
    }

    async fn touch_sessions(
        &self,
        req: Request<TouchSessionsRequest>,
    ) -> Result<Response<TouchSessionsResponse>, Status> {
        if !self.server.node().state().is_leader() {
            return Err(KvError::NotLeader.into());
        }
        let ids = req.into_inner().ids;
        if ids.len() > crate::zk::session::TOUCHES_PER_CALL_MAX {
            return Err(Status::invalid_argument("too many sessions in one call"));
        }
        let unknown = crate::zk::session::touch_all(&self.server.shared().core, &ids);
        Ok(Response::new(TouchSessionsResponse { unknown }))
    }

    async fn propose(
        &self,
        req: Request<InternalRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let token = super::token(req.metadata());
        let Some(r) = req.into_inner().request else {
            return Err(KvError::Other("empty request".into()).into());
        };
        // The same checks as the client services make: this port is reachable by anyone.
        match &r {
            Req::Put(p) => {
                check_put(p)?;
                check_size(&self.server, p)?;
            }
            Req::Txn(t) => {
                check_txn(t, self.server.config().max_txn_ops)?;
                check_size(&self.server, t)?;
            }
            Req::DeleteRange(d) if d.key.is_empty() => return Err(KvError::EmptyKey.into()),
            Req::LeaseGrant(g) if g.ttl > MAX_LEASE_TTL_SECS => {
                return Err(KvError::LeaseTtlTooLarge.into());
            }
            Req::LeaseGrant(g) if g.id <= 0 => {
                return Err(KvError::Other("lease id must be positive".into()).into());
            }
            // Only a leader proposes one (its lease clock, or a keep-alive's clear), on its
            // own log; none is taken from another member.
            Req::LeaseCheckpoint(_) => {
                return Err(Status::invalid_argument(
                    "lease checkpoints are not taken from other members",
                ));
            }
            _ => {}
        }
        // The follower's caller is checked again here, by the token it passed on.
        let caller = self.server.authorize(token.as_deref(), &r)?;
        // Never forwarded again: a member that is not the leader says so.
        let (applied, revision) = self
            .server
            .propose_local(r, &caller)
            .await
            .map_err(|(e, _)| e)?;
        let result = match applied {
            Applied::Put(p) => Fr::Put(p),
            Applied::DeleteRange(d) => Fr::DeleteRange(d),
            Applied::Txn(t) => Fr::Txn(t),
            Applied::LeaseGrant(id, ttl) => Fr::LeaseGrant(pb::LeaseGrantResponse {
                header: None,
                id,
                ttl,
                error: String::new(),
            }),
            Applied::Compact(_) | Applied::Done => Fr::Done(true),
        };
        Ok(Response::new(ForwardResponse {
            revision,
            result: Some(result),
        }))
    }
}

/// Carries a follower's ZooKeeper session touches to the leader's `TouchSessions`.
#[derive(Debug)]
pub struct TouchRelayClient {
    /// The member (weak: the relay task must not keep it alive).
    pub server: std::sync::Weak<KvServer>,
}

impl crate::zk::session::TouchRelay for TouchRelayClient {
    fn relay(
        &self,
        ids: Vec<i64>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Vec<i64>, crate::member::error::Error>> + Send>,
    > {
        let server = self.server.clone();
        Box::pin(async move {
            let fail = |e: String| crate::member::error::Error::Other(e);
            let server = server.upgrade().ok_or_else(|| fail("stopped".into()))?;
            let channel = server.leader_channel().map_err(|e| fail(e.to_string()))?;
            let mut client = crate::pb::quorumkv::internal_client::InternalClient::new(channel);
            let mut request = tonic::Request::new(TouchSessionsRequest { ids });
            request.set_timeout(server.config().request_timeout);
            let resp = client
                .touch_sessions(request)
                .await
                .map_err(|s| fail(s.message().to_string()))?;
            Ok(resp.into_inner().unknown)
        })
    }
}
